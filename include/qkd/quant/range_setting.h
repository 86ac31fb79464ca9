#pragma once
// Scale and zero point of each block of a weight. A "block" is the set of values sharing one scale:
// weights are viewed as [rows, blocks_per_row, block_len] (per channel [out, 1, in], per group
// [out, in / g, g], per tensor [1, 1, out * in]) and the parameters have shape [rows, blocks_per_row, 1].
#include <torch/torch.h>

#include <vector>

#include "qkd/quant/fake_quant.h"

namespace qkd::quant {

struct QuantParams {
  torch::Tensor scale;
  torch::Tensor zero;  // undefined when symmetric; otherwise integer-valued, same dtype as scale
};

// Min-max range in blocks' dtype. Symmetric: scale = max|x|.clamp(min_scale) / qmax (exactly these ops,
// which a golden reference reproduces); asymmetric: lo = min(min x, 0), hi = max(max x, 0),
// scale = (hi - lo).clamp(min_scale) / qmax, zero = round(-lo / scale).
QuantParams minmax_params(const torch::Tensor& blocks, int64_t bits, bool symmetric);

// The same with the range shrunk by `ratio` (0 < ratio <= 1).
QuantParams clipped_params(const torch::Tensor& blocks, int64_t bits, bool symmetric, double ratio);

// Per block, the clipping ratio from `grid` (min-max always included) whose fake-quantized block has
// the smallest squared error; computed in fp32, returned in fp32. Never worse than min-max.
QuantParams search_params(const torch::Tensor& blocks, int64_t bits, bool symmetric, const std::vector<double>& grid);

}  // namespace qkd::quant
