#pragma once
// tokenizer.json's "pre_tokenizer": Split (a String or Regex pattern, every delimiter behaviour,
// invert), ByteLevel, Metaspace and Sequence (null: the whole text is one word). Each step rewrites
// the list of words in place, as tokenizers' PreTokenizedString does.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "json_place.h"
#include "unicode_regex.h"

namespace qkd::tokenizer {

// The words of one stretch of text, stored back to back in one buffer.
struct PieceList {
  struct Piece {
    uint32_t begin;
    uint32_t end;
    bool at_text_start;  // starts at offset 0 of the caller's text (Metaspace's "first" scheme)
  };
  std::string text;
  std::vector<Piece> pieces;

  void clear() {
    text.clear();
    pieces.clear();
  }
  std::string_view view(const Piece& p) const { return std::string_view(text).substr(p.begin, p.end - p.begin); }
  void add(std::string_view word, bool at_text_start) {
    if (word.empty()) return;  // tokenizers drops empty words after every split
    pieces.push_back(
        {static_cast<uint32_t>(text.size()), static_cast<uint32_t>(text.size() + word.size()), at_text_start});
    text.append(word);
  }
};

struct PreTokenizeScratch {
  PieceList spare;
  std::vector<Span> matches;
  std::vector<std::pair<Span, bool>> splits;  // (span, is it a delimiter)
  std::string word;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void pre_tokenize(PieceList& pieces, PreTokenizeScratch& scratch) const = 0;
};

// What the pre-tokenizer is made of, for naming llama.cpp's pre-tokenizer: the Split regexes in
// order, and whether a ByteLevel step without its own regex and prefix space follows them.
struct PreTokenizerShape {
  std::vector<std::string> split_regexes;
  bool plain_byte_level = false;
  bool other_steps = false;
};

// Null for a JSON null; fails naming the place for a type or behaviour it does not support.
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& config, const JsonPlace& place,
                                                 PreTokenizerShape& shape);

}  // namespace qkd::tokenizer
