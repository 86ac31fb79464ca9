#include "qkd/train/micro_batch.h"

namespace qkd::train {

MicroBatch make_micro_batch(const data::TokenBatch& windows, const MicroBatchOptions& options) {
  MicroBatch batch;
  batch.input_ids = windows.input_ids.to(options.device);
  if (options.document_mask) batch.documents = model::document_layout(windows.document_starts());
  batch.labels = options.ce_on == loss::CeTargets::responses
                     ? windows.input_ids.masked_fill(windows.prompt_tokens(), -1).to(options.device)
                     : batch.input_ids;
  return batch;
}

}  // namespace qkd::train
