#pragma once
// The tokenizer as llama.cpp reads it from GGUF: a sentencepiece tokenizer.model as model "llama"
// (pieces, scores, types), or a byte-level BPE tokenizer.json as model "gpt2" (tokens, types, merges, and
// the pre-tokenizer name llama.cpp knows it by), with the special ids, whether BOS/EOS are added, and
// the chat template. Private to the export area.
#include <string>

#include "gguf_format.h"
#include "qkd/export/export.h"

namespace qkd::exporting::gguf {

// Fails (naming the file or setting) when the source's tokenizer cannot be written: a vocabulary
// larger than the model's, special ids outside it, a pre-tokenizer llama.cpp does not implement, a
// sentencepiece-style tokenizer.json without its tokenizer.model.
void check_tokenizer(const ExportSource& source);

// The tokenizer.* keys.
void add_tokenizer_metadata(Metadata& metadata, const ExportSource& source);

}  // namespace qkd::exporting::gguf
