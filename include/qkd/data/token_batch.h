#pragma once
// A batch of packed windows with what the stream knows about each token beside its id: where
// documents begin (data.document_mask) and which tokens are prompt rather than response (kd.ce_on).
#include <torch/torch.h>

#include <cstdint>

namespace qkd::data {

// Bits of TokenBatch::marks.
enum TokenMark : uint8_t {
  kDocumentStart = 1,  // the first token of a document (text sources: as packed; token files: each BOS)
  kPromptToken = 2,    // an instruction or user-turn token, or a BOS: given to the model, not a response
};

struct TokenBatch {
  torch::Tensor input_ids;  // [B, T] int64
  torch::Tensor marks;      // [B, T] uint8, TokenMark bits

  torch::Tensor document_starts() const { return marks.bitwise_and(kDocumentStart).ne(0); }
  torch::Tensor prompt_tokens() const { return marks.bitwise_and(kPromptToken).ne(0); }
};

}  // namespace qkd::data
