#pragma once
// The arithmetic a training run computes in (train.precision).
#include <string>

namespace qkd {

enum class Precision { fp32, bf16, fp16 };

std::string precision_name(Precision precision);  // "fp32" | "bf16" | "fp16"
// Throws qkd::Error naming `where` for anything else.
Precision parse_precision(const std::string& name, const std::string& where);

}  // namespace qkd
