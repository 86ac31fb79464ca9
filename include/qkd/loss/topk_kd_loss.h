#pragma once
// Distillation from the teacher's top-k: the teacher's distribution kept as its k most likely tokens
// plus one bucket for the rest of the vocabulary (what an offline teacher cache stores), and the
// forward KL between that and the student's distribution over the same k + 1 buckets.
//
// With K the top-k ids, p_rest = 1 - sum_K p and q_rest = 1 - sum_K q:
//   KL = sum_{j in K} p_j log(p_j / q_j) + p_rest log(p_rest / q_rest)
//   dKL/dz_j = (q_j - p_j) / T                      for j in K
//            = q_j (1 - p_rest / q_rest) / T          otherwise
// computed like kd_loss (fp32 row chunks, the gradient handed to autograd), with the same T^2 and
// weight conventions, so that with k = vocab it is kd_loss's forward KL.
#include <torch/torch.h>

#include "qkd/loss/kd_loss.h"

namespace qkd::loss {

struct TopKTargets {
  torch::Tensor ids;               // [batch, seq, k] integer token ids, most likely first
  torch::Tensor logprobs;          // [batch, seq, k] log_softmax(teacher_logits / T) at those ids (any float dtype)
  torch::Tensor residual_logmass;  // [batch, seq] log of the probability of all other tokens (-inf when k = vocab)
};

// The teacher's top-k targets from its logits [batch, seq, vocab], at temperature T, in fp32. The
// residual is a log-sum-exp over the other tokens, exact even when it is far below fp32's epsilon.
TopKTargets teacher_topk(const torch::Tensor& teacher_logits, int64_t k, double temperature,
                         int64_t chunk_tokens = 2048);

// The loss of kd_loss with the teacher given by its top-k. Only options.divergence forward_kl is
// defined over the buckets (qkd::Error naming kd.divergence otherwise). The stored log-probabilities of
// each row are renormalized over the k + 1 buckets first (a float16 cache rounds them), so that the
// divergence and its gradient are those of a distribution.
KdLossResult topk_kd_loss(const TopKTargets& teacher, const torch::Tensor& student_logits,
                          const torch::Tensor& input_ids, const KdLossOptions& options,
                          const LossDenominators* over = nullptr);

// Rows [begin, begin + count) of every tensor of `t` (views, no copy).
TopKTargets topk_rows(const TopKTargets& t, int64_t begin, int64_t count);

// The rules of kd.teacher across fields (KdLossOptions::check holds the others): a cache needs
// kd.teacher_cache naming an existing directory, and kd.divergence forward_kl. Errors name the field
// under `path` ("kd.teacher_cache: ...").
void check_teacher_source(const KdLossOptions& options, const std::string& path);

}  // namespace qkd::loss
