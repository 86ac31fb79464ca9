#pragma once
// A deterministic mix of texts for comparing tokenizers with a reference: KJV verses, many scripts
// (CJK, Arabic, Hebrew, Devanagari, Thai, Cyrillic, Greek, combining marks in NFC and NFD), emoji with
// ZWJ sequences and flags, code with tabs and indentation, numbers of many lengths, runs of white
// space, contractions in mixed case, unusual but valid UTF-8, and special-token strings in the middle
// and at the edges.
//
// Left out on purpose, because the two references disagree there and the tests compare with one of
// them: U+0085 and U+FEFF (white space to Hugging Face tokenizers' Oniguruma but not to JavaScript's
// \s, and the other way round), and U+017F after an apostrophe (Oniguruma's (?i:'s) matches it,
// transformers.js spells that group out as case pairs), and characters newer than Unicode 14.
#include <cstdint>
#include <string>
#include <vector>

namespace qkd::test {

// `count` texts from `seed`; `kjv_jsonl` is assets/data/kjv/kjv-val.jsonl (records with "text").
std::vector<std::string> tokenizer_test_texts(size_t count, uint64_t seed, const std::string& kjv_jsonl);

// `count` byte strings that are not UTF-8: ordinary words around bytes that start nothing, cut
// sequences, overlong forms, surrogates and code points past U+10FFFF.
std::vector<std::string> tokenizer_test_invalid_utf8(size_t count, uint64_t seed);

}  // namespace qkd::test
