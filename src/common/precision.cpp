#include "qkd/common/precision.h"

namespace qkd {

const EnumTable<Precision>& precisions() {
  static const EnumTable<Precision> table{{Precision::fp32, "fp32"}, {Precision::bf16, "bf16"}, {Precision::fp16, "fp16"}};
  return table;
}

}  // namespace qkd
