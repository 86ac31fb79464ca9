#pragma once
// compressed-tensors "pack-quantized" checkpoints (the layout vLLM and transformers' compressed-tensors
// integration load): int4/int8 codes packed into int32 `weight_packed`, with `weight_scale`,
// `weight_zero_point`, `weight_shape`, and a `quantization_config` in config.json.
#include <string>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/export/export.h"

namespace qkd::exporting {

// Throws qkd::Error naming the tensor or setting the format cannot express; writes nothing.
void check_packed(const ExportSource& source);

// Writes a Hugging Face directory whose quantized projections are packed (atomically, whole or not at all).
void write_packed(const ExportSource& source, const std::string& dir, const ExportOptions& options);

// A directory whose config.json has a compressed-tensors quantization_config.
bool is_packed_checkpoint(const std::string& dir);

// The model a packed checkpoint describes: codes unpacked and dequantized into a float model.
model::LlamaForCausalLM load_packed_checkpoint(const std::string& dir, const checkpoint::LoadOptions& options = {});

}  // namespace qkd::exporting
