#pragma once
// Floating-point dtypes by the names configs and Hugging Face's torch_dtype use.
#include <torch/torch.h>

#include <string>

namespace qkd {

// "float32" | "fp32" | "f32", "float16" | "fp16" | "f16" | "half", "bfloat16" | "bf16"; anything else
// throws qkd::Error naming `where`.
torch::Dtype parse_dtype(const std::string& name, const std::string& where);
// "float32" | "float16" | "bfloat16"; other dtypes throw.
std::string dtype_name(torch::Dtype dtype);

}  // namespace qkd
