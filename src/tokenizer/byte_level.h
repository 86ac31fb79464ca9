#pragma once
// GPT-2's byte-level alphabet: every byte has a printable character of its own (printable ASCII and
// Latin-1 keep theirs, the other 68 bytes move to U+0100..U+0143), so that BPE never sees spaces or
// control bytes and any byte string round-trips through text.
#include <cstdint>
#include <string>
#include <string_view>

namespace qkd::tokenizer::byte_level {

// `bytes` in the byte-level alphabet (UTF-8), appended to `out`.
void append_encoded(std::string_view bytes, std::string& out);

// The byte a character of the alphabet stands for, or -1 for any other character.
int byte_of(char32_t c);

// Appends the bytes of `token` if every character of it is in the alphabet; false (nothing appended)
// otherwise.
bool append_decoded(std::string_view token, std::string& out);

}  // namespace qkd::tokenizer::byte_level
