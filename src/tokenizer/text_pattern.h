#pragma once
// tokenizer.json's pattern object, {"String": "..."} (matched literally) or {"Regex": "..."}, as the
// Split pre-tokenizer and the Replace normalizer and decoder use it.
#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "json_place.h"
#include "unicode_regex.h"

namespace qkd::tokenizer {

class TextPattern {
 public:
  static TextPattern from_json(const nlohmann::json& pattern, const JsonPlace& place);

  // Non-overlapping matches, left to right (an empty String pattern matches nothing).
  void find_all(std::string_view text, std::vector<Span>& matches) const;
  // `text` with every match replaced by `content`, appended to `out`.
  void replace_all(std::string_view text, const std::string& content, std::string& out) const;

  bool is_regex() const { return regex_.has_value(); }
  // The regex source or the literal string, as the file spells it.
  const std::string& source() const { return is_regex() ? regex_->pattern() : literal_; }

 private:
  std::string literal_;
  std::optional<UnicodeRegex> regex_;
};

}  // namespace qkd::tokenizer
