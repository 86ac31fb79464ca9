#pragma once
// The arithmetic a training run computes in (train.precision).
#include <string>

#include "qkd/common/enum_table.h"

namespace qkd {

enum class Precision { fp32, bf16, fp16 };

const EnumTable<Precision>& precisions();  // "fp32" | "bf16" | "fp16"
inline std::string precision_name(Precision precision) { return precisions().name(precision); }

}  // namespace qkd
