#pragma once
// The per-chunk arithmetic shared by kd_loss (from logits) and kd_loss_from_hidden (from hidden
// states through the output heads): one chunk of rows of teacher and student logits in, the chunk's
// loss sums and its fp32 gradient w.r.t. the student logits out.
#include <torch/torch.h>

#include "qkd/loss/kd_loss.h"

namespace qkd::loss::detail {

// What turns per-token sums into the loss: the divergence is a mean over all rows (times T^2), the
// cross-entropy a mean over the rows whose next token is a target (non-negative in `labels`).
struct LossScales {
  int64_t rows = 0;       // rows of this batch (batch x seq)
  int64_t mean_rows = 0;  // what the divergence is a mean over: rows, or the whole micro-batch's
  int64_t ce_rows = 0;    // what the cross-entropy is a mean over
  bool with_ce = false;
  double t2 = 1.0;
};
// labels [batch, seq]: the input ids, negative where a token is not a cross-entropy target. `over`:
// the denominators of the micro-batch these labels are a row shard of (null: these labels').
LossScales loss_scales(const torch::Tensor& labels, const KdLossOptions& options, const LossDenominators* over);

// [batch * seq] next-token targets (position t predicts input_ids[t + 1]; -1 where there is none, or
// where that label is negative), or undefined without cross-entropy.
torch::Tensor next_token_targets(const torch::Tensor& input_ids, const LossScales& scales, torch::Device device);

struct ChunkLoss {
  torch::Tensor divergence_sum;  // 0-dim fp64
  torch::Tensor ce_sum;          // 0-dim fp64 (0 without cross-entropy)
  torch::Tensor grad;            // [rows, vocab] fp32: d(loss)/d(student logits) of these rows
};

// `targets` is the chunk's slice of next_token_targets (undefined without cross-entropy).
ChunkLoss loss_chunk(const torch::Tensor& t_logits, const torch::Tensor& s_logits, const torch::Tensor& targets,
                     const KdLossOptions& options, const LossScales& scales);

// Means (for logging) and the weighted total (the loss value) from the summed chunks.
struct LossTotals {
  KdLossResult result;  // without .loss, which the caller attaches to autograd
  double total = 0.0;
};
LossTotals loss_totals(const torch::Tensor& divergence_sum, const torch::Tensor& ce_sum,
                         const KdLossOptions& options, const LossScales& scales);

}  // namespace qkd::loss::detail
