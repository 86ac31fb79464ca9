#pragma once
// UTF-8 text for the tokenizer.json pipeline: validation and repair of the bytes a caller hands in,
// code point iteration, Unicode normalization forms and the two character classes the added-token
// matcher needs. Character properties and normalization come from ICU (see unicode_text.cpp), never
// from tables of our own.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace qkd::tokenizer::unicode {

// Bytes in the UTF-8 sequence that `lead` starts (1 for ASCII and for bytes that start nothing).
inline size_t sequence_length(unsigned char lead) {
  if (lead < 0xC0) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

bool is_valid_utf8(std::string_view text);

// `text` with every ill-formed sequence replaced by U+FFFD, one per maximal subpart (the Unicode
// recommendation, which WHATWG's TextDecoder and Rust's String::from_utf8_lossy follow).
std::string repair_utf8(std::string_view text);

// The code point at `pos` of valid UTF-8 text; `pos` moves past it.
char32_t next_code_point(std::string_view text, size_t& pos);

void append_utf8(std::string& out, char32_t code_point);

// Number of code points in valid UTF-8 text.
size_t code_point_count(std::string_view text);

enum class NormalForm { nfc, nfd, nfkc, nfkd };

// `text` (valid UTF-8) in the normal form, written to `out` (replaced).
void normalize(NormalForm form, std::string_view text, std::string& out);

// Unicode White_Space (what `\s` means in the regex engines of Hugging Face tokenizers).
bool is_white_space(char32_t c);

// A word character as the Rust regex crate's Unicode `\w` defines it: Alphabetic, a mark, a decimal
// digit, a connector punctuation or a join control.
bool is_word_character(char32_t c);

}  // namespace qkd::tokenizer::unicode
