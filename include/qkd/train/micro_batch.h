#pragma once
// What one micro-batch feeds both models and the loss: the token ids on the run's device, the
// per-document attention layout (data.document_mask) and the labels (kd.ce_on).
#include <torch/torch.h>

#include <optional>

#include "qkd/data/token_batch.h"
#include "qkd/loss/kd_loss.h"
#include "qkd/model/document_layout.h"

namespace qkd::train {

struct MicroBatch {
  torch::Tensor input_ids;                         // [B, T] on the run's device
  std::optional<model::DocumentLayout> documents;  // data.document_mask: attention and positions per document
  torch::Tensor labels;  // input_ids, with -1 on the tokens kd.ce_on responses does not predict
  // A row shard of a micro-batch (train/row_shards.h): the whole micro-batch's counts, which its loss
  // is averaged over. Unset: the batch's own.
  std::optional<loss::LossDenominators> denominators;
  const model::DocumentLayout* layout() const { return documents ? &*documents : nullptr; }
  const loss::LossDenominators* loss_denominators() const { return denominators ? &*denominators : nullptr; }
};

// How windows become a micro-batch.
struct MicroBatchOptions {
  torch::Device device{torch::kCPU};
  bool document_mask = false;                   // data.document_mask
  loss::CeTargets ce_on = loss::CeTargets::all;  // kd.ce_on
};

// `windows` (on the CPU) on options.device, laid out per document and labelled as options say.
MicroBatch make_micro_batch(const data::TokenBatch& windows, const MicroBatchOptions& options);

}  // namespace qkd::train
