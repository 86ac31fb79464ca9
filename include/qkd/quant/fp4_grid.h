#pragma once
// The 4-bit float weight grids, with the rounding and scale encodings of each format, so that a
// trained student is exactly what the runtimes compute with:
//
//  - E2M1 elements (OCP MX v1.0, 5.3.3): sign, 2 exponent bits, 1 mantissa bit; magnitudes 0, 0.5, 1,
//    1.5, 2, 3, 4, 6. x / scale is rounded to nearest, ties to even (even = mantissa bit 0), and
//    saturates at +-6. A 4-bit code is the E2M1 bit pattern: sign in bit 3, magnitude index 0..7.
//  - NVFP4: blocks of 16 along the input dimension, each with an E4M3 (FN: bias 7, max 448, subnormals
//    down to 2^-9, no infinities) block scale, times one fp32 per-tensor scale. The per-tensor scale is
//    compressed-tensors' global scale g = 448 * 6 / amax(W) (generate_gparam, fp32; 1 when not finite)
//    taken as the multiplier s_t = 1 / g that vLLM (CompressedTensorsW4A16Fp4) and llama.cpp
//    (convert_hf_to_gguf's weight_scale_2 = 1 / weight_global_scale) compute from it. A block scale is
//    E4M3(min(g * (amax(block) / 6), 448)), rounded to nearest even (calculate_qparams). The value is
//    (e2m1 * s_block) * s_t: the first product is exact, so runtimes that dequantize a block and then
//    multiply by s_t (llama.cpp's ggml_mul of the ".scale" tensor, Marlin's global scale) agree bitwise.
//  - MXFP4: blocks of 32, each with an E8M0 scale 2^k (byte k + 127). Min-max takes the OCP rule
//    k = floor(log2(amax(block))) - 2 (as llama.cpp's quantize_row_mxfp4_ref), which can saturate
//    values in (6, 8) * 2^k at 6 * 2^k. The value is e2m1 * 2^k, exact.
//
// Range search (`search`): per block, among the scale each clipping ratio r of the grid gives (the
// min-max formula applied to r * amax(block)) plus the next representable scale above min-max, the one
// whose block has the least squared error (the first on ties, min-max first).
#include <torch/torch.h>

#include <vector>

#include "qkd/quant/quant_spec.h"

namespace qkd::quant::fp4 {

constexpr double kE2M1Max = 6.0;
constexpr double kE4M3Max = 448.0;

// E2M1 rounding of fp32 values: nearest, ties to even, saturating at +-6 (fp32 out); zero is +0.
torch::Tensor round_e2m1(const torch::Tensor& x);
// E2M1 values (on the grid) -> 4-bit codes (int16 0..15); zero, of either sign, is code 0.
torch::Tensor e2m1_codes(const torch::Tensor& values);
// 4-bit codes -> fp32 values (code 8, negative zero, gives -0).
torch::Tensor e2m1_values(const torch::Tensor& codes);

// E4M3 rounding of non-negative fp32 values: nearest, ties to even, saturating at 448.
torch::Tensor round_e4m3(const torch::Tensor& x);
// E4M3 values (on the grid, >= 0) -> their bytes (uint8); bytes -> fp32 values (0x7F, 0xFF: NaN).
torch::Tensor e4m3_bytes(const torch::Tensor& values);
torch::Tensor e4m3_from_bytes(const torch::Tensor& bytes);

// E8M0 of 2^k: byte k + 127 (uint8); bytes -> fp32 2^(byte - 127) (0xFF: NaN). Scales must be powers
// of two in [2^-127, 2^127].
torch::Tensor e8m0_bytes(const torch::Tensor& scales);
torch::Tensor e8m0_from_bytes(const torch::Tensor& bytes);

// The scales one weight is quantized with.
struct Fp4Scales {
  torch::Tensor block;   // fp32 [rows, blocks, 1]: the decoded E4M3 or E8M0 block scales
  torch::Tensor tensor;  // fp32 [] : NVFP4's s_t; 1 for MXFP4
  torch::Tensor global;  // fp32 [] : NVFP4's g (what compressed-tensors stores); undefined for MXFP4
};

// Scales for weight blocks [rows, blocks, group] (fp32) by the format's min-max rule, or by search
// over `grid` (clipping ratios in (0, 1]).
Fp4Scales fp4_scales(const torch::Tensor& blocks, WeightFormat format, RangeMethod range,
                     const std::vector<double>& grid);

// The E2M1 value of each element, x / (s_block * s_t) rounded (0 where that scale is 0), fp32.
torch::Tensor e2m1_elements(const torch::Tensor& blocks, const Fp4Scales& scales);
// (e2m1 * s_block) * s_t: the value every consumer of the codes computes.
torch::Tensor dequantize(const torch::Tensor& e2m1, const torch::Tensor& block_scale,
                         const torch::Tensor& tensor_scale);
// Where x / (s_block * s_t) lies beyond +-6 (saturated), bool like blocks.
torch::Tensor saturated(const torch::Tensor& blocks, const Fp4Scales& scales);

// Differentiable fake quantization of fp32 blocks: the forward value is dequantize(e2m1_elements(...))
// bitwise; the gradient passes straight through to x, or is zero where x saturated when
// `mask_saturated`. The scales take no gradient.
torch::Tensor fake_quant_ste(const torch::Tensor& blocks, const Fp4Scales& scales, bool mask_saturated);

}  // namespace qkd::quant::fp4
