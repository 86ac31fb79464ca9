#pragma once
// llama.cpp's name for a byte-level BPE pre-tokenizer (GGUF tokenizer.ggml.pre).
#include <string>

#include "pre_tokenizer.h"

namespace qkd::tokenizer {

// llama.cpp's convert_hf_to_gguf.py recognises a tokenizer by hashing its ids for a fixed text and
// then runs, under the name it finds, one of the Split regexes of src/llama-vocab.cpp. The regex is the
// part that decides how text is cut, so the name is looked up from it: a Split with the Llama-3,
// Qwen2 or Tekken regex (Isolated), then a plain ByteLevel step. Fails naming `file` otherwise.
std::string llama_cpp_pre_tokenizer_name(const PreTokenizerShape& shape, const std::string& file);

}  // namespace qkd::tokenizer
