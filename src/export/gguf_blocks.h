#pragma once
// Tensor data in ggml's encodings: fp16 bits, and Q4_0 / Q8_0 blocks (an fp16 scale per 32 values),
// either packed exactly from a student's integer codes or quantized from floats as ggml's reference
// quantizers do; MXFP4 / NVFP4 blocks packed from E2M1 codes and their scale bytes.
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "gguf_format.h"

namespace qkd::exporting::gguf {

// fp16 bits of each value of a float tensor (round to nearest even, as ggml's GGML_FP32_TO_FP16).
std::vector<uint16_t> to_fp16_bits(const torch::Tensor& values);
float fp16_value(float x);

struct ErrorSums {
  double diff2 = 0, ref2 = 0;
  double relative() const { return ref2 > 0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2); }
};

// Blocks of codes with their fp16 scales, [rows, in] codes and [rows, in / 32] scales, written as
// Q4_0 (codes in -8..7) or Q8_0 (codes in -128..127), exactly.
std::string pack_codes(TensorType type, const torch::Tensor& codes, const torch::Tensor& chunk_scale);

// E2M1 codes (int16 [rows, in], 0..15, sign in bit 3) with their scale bytes (uint8): MXFP4 one E8M0
// byte per 32 codes, [rows, in / 32]; NVFP4 one E4M3 byte (UE4M3: ours are never negative) per 16,
// [rows, in / 16]. Laid out as ggml-common.h's block_mxfp4 {e, qs[16]} (qs[j]: code j low nibble,
// code j + 16 high) and block_nvfp4 {d[4], qs[32]} (sub-block s: qs[8s + j]: code 16s + j low, 16s + j + 8
// high), what dequantize_row_mxfp4 / dequantize_row_nvfp4 read.
std::string pack_fp4(TensorType type, const torch::Tensor& codes, const torch::Tensor& scale_bytes);

// ggml's reference quantizers (quantize_row_q4_0_ref, quantize_row_q8_0_ref) over [rows, in] floats.
// Adds ||w - dequantized||^2 and ||w||^2 to `sums`.
std::string quantize_floats(TensorType type, const torch::Tensor& weight, ErrorSums& sums);

}  // namespace qkd::exporting::gguf
