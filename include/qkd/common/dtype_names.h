#pragma once
// Floating-point dtypes by the names configs and Hugging Face's torch_dtype use.
#include <torch/torch.h>

#include <string>

#include "qkd/common/enum_table.h"

namespace qkd {

// "float32" | "float16" | "bfloat16", with the aliases fp32/f32, fp16/f16/half and bf16 for parsing.
const EnumTable<torch::Dtype>& float_dtypes();
// The dtypes a model may be held in, as config choices: float32, bfloat16, float16.
const EnumTable<torch::Dtype>& model_dtypes();

// Anything but a float_dtypes() name throws qkd::Error naming `where`.
torch::Dtype parse_dtype(const std::string& name, const std::string& where);
// "float32" | "float16" | "bfloat16"; other dtypes throw.
std::string dtype_name(torch::Dtype dtype);

}  // namespace qkd
