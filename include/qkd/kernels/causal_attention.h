#pragma once
// Causal grouped-query attention for the CPU in fp32: each (sequence, key/value head) pair is one task
// on one core, whose query heads share that pair's keys and values without the copies
// repeat_interleave makes, and whose output goes straight into the [B, T, H, D] layout that o_proj
// reads. Same operations per head as the eager formula (scores = q k^T * scale, masked, softmax in
// fp32, probs v); differentiable, with the softmax probabilities kept for backward as autograd keeps them.
#include <torch/torch.h>

namespace qkd::kernels {

// q [B, H, T, D], k and v [B, Hkv, T, D] (H a multiple of Hkv; any strides with unit stride in D)
// -> [B, H, T, D], a transposed view of a contiguous [B, T, H, D] tensor.
torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);

// Whether causal_attention takes its per-head path for these inputs (CPU, fp32, several threads).
bool has_fast_path(const torch::Tensor& q);

}  // namespace qkd::kernels
