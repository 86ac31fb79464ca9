#include "qkd/common/dtype_names.h"

#include "qkd/common/error.h"

namespace qkd {

const EnumTable<torch::Dtype>& float_dtypes() {
  static const EnumTable<torch::Dtype> table{
      {{torch::kFloat32, "float32"}, {torch::kFloat16, "float16"}, {torch::kBFloat16, "bfloat16"}},
      {{torch::kFloat32, "fp32"},
       {torch::kFloat32, "f32"},
       {torch::kFloat16, "fp16"},
       {torch::kFloat16, "f16"},
       {torch::kFloat16, "half"},
       {torch::kBFloat16, "bf16"}}};
  return table;
}

const EnumTable<torch::Dtype>& model_dtypes() {
  static const EnumTable<torch::Dtype> table{
      {torch::kFloat32, "float32"}, {torch::kBFloat16, "bfloat16"}, {torch::kFloat16, "float16"}};
  return table;
}

torch::Dtype parse_dtype(const std::string& name, const std::string& where) {
  if (const auto dtype = float_dtypes().find(name)) return *dtype;
  fail(where, "unknown dtype \"" + name + "\" (expected float32, float16 or bfloat16)");
}

std::string dtype_name(torch::Dtype dtype) {
  const std::string name = float_dtypes().name(dtype);
  if (name == "?") fail("dtype", std::string("unsupported dtype ") + c10::toString(dtype));
  return name;
}

}  // namespace qkd
