#pragma once
// Causal grouped-query attention for the CPU in fp32: each (sequence, key/value head) pair is one task
// on one core, whose query heads share that pair's keys and values without the copies
// repeat_interleave makes, and whose output goes straight into the [B, T, H, D] layout that o_proj
// reads. Same operations per head as the eager formula (scores = q k^T * scale, masked, softmax in
// fp32, probs v); differentiable, with the softmax probabilities kept for backward as autograd keeps them.
#include <torch/torch.h>

namespace qkd::kernels {

// q [B, H, T, D], k and v [B, Hkv, T, D] (H a multiple of Hkv; any strides with unit stride in D)
// -> [B, H, T, D], a transposed view of a contiguous [B, T, H, D] tensor. `blocked` (undefined: causal)
// is a [B, T, T] bool mask, true where a query may not see a key (model::blocked_keys); each row must
// leave at least one key visible.
torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& blocked = torch::Tensor());

// The eager formula under a [B, T, T] `blocked` mask, for any device and dtype (softmax in fp32): what
// runs where causal_attention's fast path does not. Keeps [B, H, T, T] scores, like eager attention.
torch::Tensor masked_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& blocked);

// Whether causal_attention takes its per-head path for these inputs (CPU, fp32, several threads).
bool has_fast_path(const torch::Tensor& q);

}  // namespace qkd::kernels
