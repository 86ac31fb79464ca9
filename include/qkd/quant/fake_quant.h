#pragma once
// The fake-quantization arithmetic shared by weight and activation quantizers.
//   symmetric:  q(x) = clamp(round(x / scale), qmin, qmax) * scale
//   asymmetric: q(x) = (clamp(round(x / scale) + zero, qmin, qmax) - zero) * scale
// round is torch::round (half to even). `scale` (and `zero`) broadcast against x.
#include <torch/torch.h>

#include <cstdint>

namespace qkd::quant {

struct Levels {
  int64_t qmin = 0;
  int64_t qmax = 0;
};

// Symmetric: -2^(b-1)..2^(b-1)-1; asymmetric: 0..2^b-1.
Levels levels_for(int64_t bits, bool symmetric);

// Smallest scale a range may produce, so that all-zero rows/groups give zeros instead of 0/0. 1e-8,
// except for fp16 where 1e-8 rounds to zero and the smallest normal number is used instead.
double min_scale(torch::ScalarType dtype);

// The forward value only, in x's dtype (x and scale must share it). `zero` undefined: symmetric.
// A stored zero point is rounded first, so the zero point in effect is always an integer.
torch::Tensor fake_quant_value(const torch::Tensor& x, const torch::Tensor& scale, const torch::Tensor& zero,
                               Levels levels);

// Where fake_quant_ste with `mask_clipped` passes no gradient to x: x / scale + round(zero) below qmin
// or above qmax (bool, x's shape), by the same operations as its backward.
torch::Tensor clipped_mask(const torch::Tensor& x, const torch::Tensor& scale, const torch::Tensor& zero,
                           Levels levels);

// Differentiable fake quantization. The forward value is exactly fake_quant_value (bitwise).
// Backward, with v = x / scale (+ round(zero)):
//   d/dx     = 1, or 0 where v < qmin or v > qmax when `mask_clipped` (straight-through estimator);
//   d/dscale = round(v) - v inside, qmin - zero / qmax - zero outside, times `grad_factor` (LSQ);
//   d/dzero  = 0 inside, -scale outside, times `grad_factor` (LSQ+).
// Gradients reach scale/zero only when they require grad.
torch::Tensor fake_quant_ste(const torch::Tensor& x, const torch::Tensor& scale, const torch::Tensor& zero,
                             Levels levels, bool mask_clipped, double grad_factor = 1.0);

}  // namespace qkd::quant
