#include "qkd/common/precision.h"

#include "qkd/common/error.h"

namespace qkd {

std::string precision_name(Precision precision) {
  switch (precision) {
    case Precision::fp32: return "fp32";
    case Precision::bf16: return "bf16";
    case Precision::fp16: return "fp16";
  }
  return "?";
}

Precision parse_precision(const std::string& name, const std::string& where) {
  for (auto p : {Precision::fp32, Precision::bf16, Precision::fp16})
    if (precision_name(p) == name) return p;
  fail(where, "expected one of fp32, bf16, fp16, got \"" + name + "\"");
}

}  // namespace qkd
