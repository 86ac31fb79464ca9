#pragma once
// A plain Hugging Face LLaMA directory whose quantized projections hold their dequantized values, so
// transformers (or any runtime that reads HF checkpoints) computes the quantized model unchanged.
#include <string>

#include "qkd/export/export.h"

namespace qkd::exporting {

// config.json, generation_config.json, tokenizer.model and model.safetensors (or shards of at most
// options.max_shard_bytes with model.safetensors.index.json), in options.dtype; atomically.
void write_hf(const ExportSource& source, const std::string& dir, const ExportOptions& options);

}  // namespace qkd::exporting
