#pragma once
// tokenizer.json's "normalizer": NFC / NFD / NFKC / NFKD, Prepend, Replace, Sequence (null: none).
// Applied to each stretch of text between added tokens, as tokenizers' AddedVocabulary does.
#include <nlohmann/json.hpp>

#include <memory>
#include <string>

#include "json_place.h"

namespace qkd::tokenizer {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // Rewrites `text` (valid UTF-8); `scratch` is working memory.
  virtual void normalize(std::string& text, std::string& scratch) const = 0;
};

// Null for a JSON null; fails naming the place for a type it does not support.
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& config, const JsonPlace& place);

}  // namespace qkd::tokenizer
