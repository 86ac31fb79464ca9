#pragma once
// Block-wise 8-bit quantization of optimizer moments, as bitsandbytes' 8-bit Adam stores them
// (Dettmers et al., "8-bit Optimizers via Block-wise Quantization", 2022): each block of 256
// consecutive elements is divided by its largest magnitude (absmax, kept in fp32) and every normalized
// value is stored as the index of the nearest of 256 code values. The code is bitsandbytes' dynamic
// tree map: a decimal exponent from 10^-6 to 10^0 with a linear fraction whose resolution grows with
// the exponent, so values many orders of magnitude below the block's absmax keep a few significant
// bits instead of rounding to zero as a linear int8 grid would (which matters for exp_avg_sq: a zero
// there turns the Adam step m / (sqrt(v) + eps) into m / eps). exp_avg uses the signed map (127
// positive and 127 negative values, 0 and 1), exp_avg_sq the unsigned one (254 positive values, 0
// and 1). Indices are stored as int8 (index - 128), so a state file holds 1 byte per element plus
// 4 bytes per block.
#include <torch/torch.h>

#include <cstdint>

namespace qkd::optim {

constexpr int64_t kInt8BlockSize = 256;

// The 256 code values of bitsandbytes' create_dynamic_map(signed, 7 exponent bits, 8 bits), ascending,
// as fp32 on the CPU. Both maps contain 0 and 1 exactly.
const torch::Tensor& dynamic_code(bool is_signed);

struct BlockwiseInt8 {
  torch::Tensor codes;   // int8, the input's shape: index into the code map minus 128
  torch::Tensor absmax;  // fp32 [ceil(numel / 256)]: each block's largest magnitude
};

// `values` (any float dtype, any shape) to codes and block maxima on its device. Deterministic (nearest
// code value; a value exactly half way goes to the lower one), so a resumed run requantizes bitwise.
BlockwiseInt8 quantize_blockwise(const torch::Tensor& values, bool is_signed);
// Codes and block maxima back to fp32 values of `codes`' shape.
torch::Tensor dequantize_blockwise(const BlockwiseInt8& q, bool is_signed);
// Blocks of a tensor of `numel` elements.
inline int64_t int8_blocks(int64_t numel) { return (numel + kInt8BlockSize - 1) / kInt8BlockSize; }

}  // namespace qkd::optim
