#pragma once
// A lower estimate of the bytes one forward pass (and its backward) of a batch holds at its peak: the
// activations each decoder layer keeps for backward, one sequence's attention scores, and the logits
// held at once. Lower on purpose: a configuration is refused only when even this cannot fit.
#include <cstdint>

#include "qkd/model/llama_config.h"

namespace qkd::model {

struct BatchShape {
  int64_t batch = 1, seq = 1;
  bool backward = false;               // training: each layer's activations are kept for backward
  bool checkpointed = false;           // ... only each layer's input (activation checkpointing)
  int64_t logit_rows = 0;              // rows of [rows, vocab] logits held at once
  int64_t element_bytes = 4;
};

int64_t forward_bytes(const LlamaConfig& config, const BatchShape& shape);

}  // namespace qkd::model
