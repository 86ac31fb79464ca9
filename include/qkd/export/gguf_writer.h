#pragma once
// GGUF v3 for llama.cpp (architecture "llama"): metadata, the sentencepiece vocabulary, and tensors
// in llama.cpp's names and order. Quantized projections in Q4_0 or Q8_0 carry the student's own
// scales; norms are F32, embeddings and output F16 (or Q8_0 with q8_0).
#include <string>

#include "qkd/export/export.h"

namespace qkd::exporting {

// Throws qkd::Error naming the tensor when the student cannot be written with options.gguf_type
// (in_features not a multiple of 32, say); writes nothing.
void check_gguf(const ExportSource& source, const ExportOptions& options);

// Writes one .gguf file atomically (temporary name, then rename).
void write_gguf(const ExportSource& source, const std::string& path, const ExportOptions& options);

}  // namespace qkd::exporting
