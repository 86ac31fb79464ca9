#pragma once
// Quantization encodings for NPU toolchains in AIMET's encodings JSON, next to the fp32 weights they
// apply to (a Hugging Face directory).
#include <string>

#include "qkd/export/export.h"

namespace qkd::exporting {

// Throws qkd::Error naming the tensor or setting the format cannot express; writes nothing.
void check_encodings(const ExportSource& source);

// Writes <dir>/model.safetensors (fp32), config.json, tokenizer.model and <dir>/model.encodings
// (atomically, whole or not at all).
void write_encodings(const ExportSource& source, const std::string& dir, const ExportOptions& options);

}  // namespace qkd::exporting
