#pragma once
// tokenizer.json's "decoder": ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace and Sequence,
// each rewriting the list of token texts as tokenizers' decode_chain does (null: texts joined by
// spaces, which the tokenizer does itself).
#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "json_place.h"

namespace qkd::tokenizer {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

// Null for a JSON null; fails naming the place for a type it does not support.
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& config, const JsonPlace& place);

}  // namespace qkd::tokenizer
