#pragma once
// Packed windows hold documents back to back. With document masking (data.document_mask) each token
// attends only to earlier tokens of its own document, and its rotary position counts from that
// document's first token: every document is computed as if it sat alone at the start of a window.
#include <torch/torch.h>

namespace qkd::model {

struct DocumentLayout {
  torch::Tensor starts;     // [B, T] int64: window index of the first token of each token's document
  torch::Tensor positions;  // [B, T] int64: each token's position inside its document (t - starts)
};

// From a [B, T] bool tensor marking the first token of each document. Column 0 always starts one: a
// window that opens inside a document treats its first token as that document's start.
DocumentLayout document_layout(const torch::Tensor& document_starts);

// The layout of documents that begin at every `bos_id` token (token files keep their BOS as stored).
DocumentLayout document_layout_from_bos(const torch::Tensor& input_ids, int64_t bos_id);

// [B, T, T] bool, true where query t may not see key s: a later key, or one of another document.
torch::Tensor blocked_keys(const DocumentLayout& layout);

}  // namespace qkd::model
