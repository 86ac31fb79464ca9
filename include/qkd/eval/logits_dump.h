#pragma once
// The hook independent checks use: logits for every `input_ids_K` tensor of a safetensors file.
#include <string>

#include "qkd/model/llama.h"

namespace qkd::eval {

// For every int64 tensor `input_ids_K` [batch, seq] in `input_path`, writes float32 `logits_K`
// [batch, seq, vocab] to `output_path` (atomically). Returns the number of tensors written.
int dump_logits(model::LlamaForCausalLMImpl& model, const std::string& input_path, const std::string& output_path);

}  // namespace qkd::eval
