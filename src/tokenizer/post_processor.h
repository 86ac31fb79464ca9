#pragma once
// tokenizer.json's "post_processor" as far as token ids go: TemplateProcessing's single template
// (special tokens around the sequence $A), ByteLevel (offsets only: no id changes), Sequence, null.
// Applied only when the caller asks for special tokens.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <vector>

#include "json_place.h"

namespace qkd::tokenizer {

// What encoding with special tokens puts before and after the text's ids.
struct SpecialTokenTemplate {
  std::vector<int32_t> before;
  std::vector<int32_t> after;
};

// The template of a post_processor (empty for null and for processors that add nothing); fails naming
// the place for a type it does not support.
SpecialTokenTemplate make_post_processor(const nlohmann::json& config, const JsonPlace& place);

}  // namespace qkd::tokenizer
