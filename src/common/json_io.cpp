#include "qkd/common/json_io.h"

#include <cstdio>
#include <functional>
#include <set>
#include <vector>

#include "qkd/common/error.h"
#include "qkd/common/input_file.h"

namespace qkd {

namespace {
// Depth of the deepest array/object, scanning the text once outside of strings; stops early past the
// limit, so a 100,000-deep input costs 65 characters of scanning.
bool nesting_within_limit(const std::string& text) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"')
      in_string = true;
    else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) return false;
    } else if (c == ']' || c == '}')
      --depth;
  }
  return true;
}

std::string one_line(std::string message) {
  for (auto& c : message)
    if (c == '\n' || c == '\r') c = ' ';
  return message.size() > 200 ? message.substr(0, 200) + "..." : message;
}
}  // namespace

namespace {
// nlohmann keeps the last of two equal keys without a word ({"bits": 4, "bits": 2} trains W2): a
// parser callback that refuses the second, naming where it stands.
class DuplicateKeyGuard {
 public:
  bool operator()(int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using Event = nlohmann::json::parse_event_t;
    switch (event) {
      case Event::object_start:
      case Event::array_start: levels_.push_back({event == Event::object_start, {}, ""}); break;
      case Event::object_end:
      case Event::array_end: levels_.pop_back(); break;
      case Event::key: {
        auto& level = levels_.back();
        const auto key = parsed.get<std::string>();
        if (!level.keys.insert(key).second) throw Duplicate{path() + (path().empty() ? "" : ".") + printable(key, 60)};
        level.current = key;
        break;
      }
      default: break;
    }
    return true;
  }
  struct Duplicate {
    std::string where;
  };

 private:
  struct Level {
    bool object;
    std::set<std::string> keys;
    std::string current;
  };
  std::string path() const {
    std::string out;
    for (size_t i = 0; i + 1 < levels_.size(); ++i)
      if (levels_[i].object) out += (out.empty() ? "" : ".") + printable(levels_[i].current, 60);
    return out;
  }
  std::vector<Level> levels_;
};
}  // namespace

nlohmann::json parse_json(const std::string& text, const std::string& where) {
  if (!nesting_within_limit(text)) fail(where, "JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  try {
    DuplicateKeyGuard guard;
    return nlohmann::json::parse(text, std::ref(guard));
  } catch (const DuplicateKeyGuard::Duplicate& d) {
    fail(where, d.where + ": the key appears twice in one object (JSON keeps only one of them)");
  } catch (const nlohmann::json::exception& e) {
    fail(where, "bad JSON: " + one_line(json_error_text(e)));
  }
}

std::string json_error_text(const nlohmann::json::exception& e) {
  std::string what = e.what();
  const auto bracket = what.find("] ");
  return bracket == std::string::npos ? what : what.substr(bracket + 2);
}

nlohmann::json parse_json_or_discarded(const std::string& text) {
  if (!nesting_within_limit(text)) return nlohmann::json::value_t::discarded;
  return nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
}

nlohmann::ordered_json parse_ordered_json_or_discarded(const std::string& text) {
  if (!nesting_within_limit(text)) return nlohmann::ordered_json::value_t::discarded;
  return nlohmann::ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
}

nlohmann::json read_json_file(const std::string& path) { return parse_json(read_text_file(path), path); }

std::string json_excerpt(const nlohmann::json& value, size_t max_chars) {
  // Replace: invalid UTF-8 in strings becomes U+FFFD instead of throwing from dump().
  std::string text = value.dump(-1, ' ', /*ensure_ascii=*/true, nlohmann::json::error_handler_t::replace);
  if (text.size() > max_chars) text = text.substr(0, max_chars) + "...";
  return text;
}

std::string printable(const std::string& text, size_t max_chars) {
  std::string out;
  for (const unsigned char c : text) {
    if (out.size() >= max_chars) return out + "...";
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char code[8];
      std::snprintf(code, sizeof code, "\\x%02x", c);
      out += code;
    }
  }
  return out;
}

}  // namespace qkd
