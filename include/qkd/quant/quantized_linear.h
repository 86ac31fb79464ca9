#pragma once
// The projection of a Linear whose weight is fake-quantized, without keeping the fake-quantized weight
// for the backward pass.
//
// Through plain autograd, linear(x, q(W), b) keeps q(W) alive from the forward to the backward (the
// matrix product needs it for the input gradient): one extra weight-sized tensor per projection for the
// whole backward, about 13 GB for LLaMA-2-7B in bf16. When q's parameters receive no gradient, q(W)
// and the straight-through mask are functions of W alone, which the parameter keeps alive anyway, so
// quantized_linear saves x, W and b (plus the per-block scale and zero point) and recomputes q(W) in
// the backward pass: one extra fake-quantization per projection, paid once per backward.
#include <torch/torch.h>

#include <vector>

#include "qkd/quant/fake_quant.h"

namespace qkd::quant {

// How a weight W [out, in] is fake-quantized: viewed as blocks [rows, blocks_per_row, block_len]
// (see range_setting.h), cast to `dtype`, fake_quant_ste with these parameters, cast back to W's
// dtype and shape.
struct WeightQuantRecipe {
  std::vector<int64_t> block_shape;
  torch::ScalarType dtype = torch::kFloat;
  torch::Tensor scale;  // [rows, blocks_per_row, 1], in `dtype`
  torch::Tensor zero;   // like scale; undefined when symmetric
  Levels levels;
  bool mask_clipped = false;  // straight-through gradient zero outside the levels, else identity
  double grad_factor = 1.0;   // LSQ factor on the gradients of scale and zero
};

// The fake-quantized weight, differentiable as described in fake_quant.h.
torch::Tensor fake_quantize_weight(const torch::Tensor& w, const WeightQuantRecipe& recipe);

// linear(x, fake_quantize_weight(w, recipe), bias) (bias may be undefined). The output and the
// gradients of x, w and bias are bitwise those of that composition. The recomputing backward is used
// when the recipe's scale and zero point take no gradient and x is a contiguous [N, in] or [B, T, in]
// tensor (the shapes for which LibTorch's linear reduces to one matrix product in 1.13 and 2.x alike,
// so that the hand-written backward repeats its exact operations); otherwise, and when no gradient is
// recorded, this is the plain composition.
torch::Tensor quantized_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias,
                               const WeightQuantRecipe& recipe);

}  // namespace qkd::quant
