#pragma once
// GGUF v3 for llama.cpp (architecture "llama"): metadata, the sentencepiece vocabulary, and tensors
// in llama.cpp's names and order. Quantized projections in Q4_0, Q8_0, MXFP4 or NVFP4 (with a
// per-tensor F32 "<name>.scale") carry the student's own codes and scales when its grid is the type's;
// norms are F32, embeddings and output F16 (or Q8_0 with q8_0).
#include <string>

#include "qkd/export/export.h"

namespace qkd::exporting {

// Throws qkd::Error naming the tensor when the student cannot be written with options.gguf_type
// (in_features not a multiple of the type's block, 32 or 64 for NVFP4); writes nothing.
void check_gguf(const ExportSource& source, const ExportOptions& options);

// Writes one .gguf file atomically (temporary name, then rename).
void write_gguf(const ExportSource& source, const std::string& path, const ExportOptions& options);

}  // namespace qkd::exporting
