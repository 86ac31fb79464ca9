#include "qkd/common/dtype_names.h"

#include "qkd/common/error.h"

namespace qkd {

torch::Dtype parse_dtype(const std::string& name, const std::string& where) {
  if (name == "float32" || name == "fp32" || name == "f32") return torch::kFloat32;
  if (name == "float16" || name == "fp16" || name == "f16" || name == "half") return torch::kFloat16;
  if (name == "bfloat16" || name == "bf16") return torch::kBFloat16;
  fail(where, "unknown dtype \"" + name + "\" (expected float32, float16 or bfloat16)");
}

std::string dtype_name(torch::Dtype dtype) {
  switch (dtype) {
    case torch::kFloat32: return "float32";
    case torch::kFloat16: return "float16";
    case torch::kBFloat16: return "bfloat16";
    default: fail("dtype", std::string("unsupported dtype ") + c10::toString(dtype));
  }
}

}  // namespace qkd
