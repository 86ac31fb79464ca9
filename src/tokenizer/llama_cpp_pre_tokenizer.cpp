#include "llama_cpp_pre_tokenizer.h"

#include "qkd/common/error.h"
#include "qkd/common/json_io.h"

namespace qkd::tokenizer {

namespace {

struct KnownPreTokenizer {
  const char* name;
  const char* split_regex;  // as tokenizer.json spells it
};

// The Split regexes of the tokenizer.json files these models ship (Meta-Llama-3/3.1/3.2, Qwen2/2.5/3,
// Mistral-Nemo), which llama-vocab.cpp implements as LLAMA3, QWEN2 and TEKKEN.
constexpr KnownPreTokenizer kKnown[] = {
    {"llama-bpe",
     R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
    {"qwen2",
     R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
    {"tekken",
     R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
};

}  // namespace

std::string llama_cpp_pre_tokenizer_name(const PreTokenizerShape& shape, const std::string& file) {
  const std::string known = "llama-bpe, qwen2 or tekken";
  if (shape.split_regexes.empty())
    fail(file, "pre_tokenizer has no Split regex, so it is none of llama.cpp's byte-level BPE pre-tokenizers (" +
                   known + ")");
  if (shape.split_regexes.size() != 1 || !shape.plain_byte_level || shape.other_steps)
    fail(file,
         "pre_tokenizer is not one Split regex followed by a plain ByteLevel step, as llama.cpp's " + known + " are");
  for (const auto& candidate : kKnown)
    if (shape.split_regexes.front() == candidate.split_regex) return candidate.name;
  fail(file, "pre_tokenizer Split regex " + json_excerpt(shape.split_regexes.front(), 100) +
                 " is none of llama.cpp's " + known);
}

}  // namespace qkd::tokenizer
