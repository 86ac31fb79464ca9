#include "text_pattern.h"

namespace qkd::tokenizer {

TextPattern TextPattern::from_json(const nlohmann::json& pattern, const JsonPlace& place) {
  if (!pattern.is_object() || pattern.size() != 1)
    place.fail_here("expected {\"String\": ...} or {\"Regex\": ...}, got " + json_excerpt(pattern));
  TextPattern out;
  if (const auto it = pattern.find("String"); it != pattern.end() && it->is_string()) {
    out.literal_ = it->get<std::string>();
  } else if (const auto re = pattern.find("Regex"); re != pattern.end() && re->is_string()) {
    out.regex_.emplace(re->get<std::string>(), place.field("Regex").where());
  } else {
    place.fail_here("expected {\"String\": ...} or {\"Regex\": ...}, got " + json_excerpt(pattern));
  }
  return out;
}

void TextPattern::find_all(std::string_view text, std::vector<Span>& matches) const {
  if (regex_) {
    regex_->find_all(text, matches);
    return;
  }
  if (literal_.empty()) return;
  for (size_t at = text.find(literal_); at != std::string_view::npos; at = text.find(literal_, at + literal_.size()))
    matches.push_back({at, at + literal_.size()});
}

void TextPattern::replace_all(std::string_view text, const std::string& content, std::string& out) const {
  std::vector<Span> matches;
  find_all(text, matches);
  size_t done = 0;
  for (const auto& m : matches) {
    out.append(text.data() + done, m.begin - done);
    out += content;
    done = m.end;
  }
  out.append(text.data() + done, text.size() - done);
}

}  // namespace qkd::tokenizer
