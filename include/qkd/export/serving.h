#pragma once
// Which runtimes load an export as written, and the known kernel constraints a student breaks, per
// format. The rules are read from the runtimes' sources:
//  - vLLM, compressed-tensors int weights (compressed_tensors.py _is_wNa16_group_channel,
//    compressed_tensors_wNa16.py WNA16_SUPPORTED_BITS / WNA16_ZP_SUPPORTED_TYPES_MAP): 4 or 8 bits,
//    strategy channel or group, no static input scales; then a mixed-precision kernel must take each
//    layer: Marlin (CUDA sm80+; utils/marlin_utils.py: group size -1, 32, 64 or 128, out_features a
//    multiple of 64 (GPTQ_MARLIN_MIN_THREAD_N), in_features of 128 (GPTQ_MARLIN_MIN_THREAD_K), zero
//    points only for 4-bit (uint4)) or Machete (Hopper sm90; utils/machete_utils.py: group size -1 or
//    128, in_features a multiple of 64, out_features of 128).
//  - vLLM, fp4: CompressedTensorsW4A16Fp4 (NVFP4, Marlin FP4 from sm75) and CompressedTensorsW4A16Mxfp4
//    (MXFP4, Marlin from sm80, bfloat16 activations only).
//  - llama.cpp: Q4_0 / Q8_0 / MXFP4 hold symmetric codes with one scale per 32 values, NVFP4 per 16
//    inside 64-value blocks; a grid that is not the type's is re-quantized by the gguf writer.
#include <string>
#include <vector>

#include "qkd/export/export.h"

namespace qkd::exporting {

struct ServingReport {
  std::vector<std::string> runtimes;  // what loads the output as written
  std::vector<std::string> warnings;  // "<runtime/kernel>: <rule broken> (<rule's source>): <layers>"
};

ServingReport serving_report(const ExportSource& source, Format format, const ExportOptions& options = {});

}  // namespace qkd::exporting
