#include "decoder.h"

#include <algorithm>

#include "byte_level.h"
#include "text_pattern.h"
#include "unicode_text.h"

namespace qkd::tokenizer {

namespace {

class ByteLevel final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const auto& token : tokens)
      if (!byte_level::append_decoded(token, bytes)) bytes += token;  // e.g. an added token: its own text
    tokens.assign(1, unicode::repair_utf8(bytes));
  }
};

class Replace final : public Decoder {
 public:
  Replace(TextPattern pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string replaced;
    for (auto& token : tokens) {
      replaced.clear();
      pattern_.replace_all(token, content_, replaced);
      token.swap(replaced);
    }
  }

 private:
  TextPattern pattern_;
  std::string content_;
};

// <0xNN> tokens back to bytes: each run of them becomes its text, or one U+FFFD per byte when the run
// is not valid UTF-8 (as tokenizers' ByteFallback decoder has it).
class ByteFallback final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string run;
    auto flush = [&] {
      if (run.empty()) return;
      if (unicode::is_valid_utf8(run)) {
        out.push_back(run);
      } else {
        for (size_t i = 0; i < run.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
      }
      run.clear();
    };
    for (auto& token : tokens) {
      int byte = -1;
      if (token.size() == 6 && token.compare(0, 3, "<0x") == 0 && token[5] == '>') byte = hex_byte(token[3], token[4]);
      if (byte >= 0) {
        run += static_cast<char>(byte);
        continue;
      }
      flush();
      out.push_back(std::move(token));
    }
    flush();
    tokens.swap(out);
  }

 private:
  static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  static int hex_byte(char high, char low) {
    const int h = hex_digit(high), l = hex_digit(low);
    return h < 0 || l < 0 ? -1 : h * 16 + l;
  }
};

class Fuse final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& token : tokens) all += token;
    tokens.assign(1, all);
  }
};

// Removes up to `start` leading and `stop` trailing copies of one character from each token.
class Strip final : public Decoder {
 public:
  Strip(char32_t content, size_t start, size_t stop) : content_(content), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<size_t> starts;  // byte offset of each code point
    for (auto& token : tokens) {
      starts.clear();
      std::vector<char32_t> chars;
      for (size_t pos = 0; pos < token.size();) {
        starts.push_back(pos);
        chars.push_back(unicode::next_code_point(token, pos));
      }
      starts.push_back(token.size());
      size_t first = 0, last = chars.size();
      while (first < std::min(start_, chars.size()) && chars[first] == content_) ++first;
      for (size_t i = 0; i < stop_ && last > first && chars[last - 1] == content_; ++i) --last;
      token = token.substr(starts[first], starts[last] - starts[first]);
    }
  }

 private:
  char32_t content_;
  size_t start_, stop_;
};

class Metaspace final : public Decoder {
 public:
  Metaspace(char32_t replacement, bool strip_first) : replacement_(replacement), strip_first_(strip_first) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      for (size_t pos = 0; pos < tokens[i].size();) {
        const char32_t c = unicode::next_code_point(tokens[i], pos);
        // tokenizers drops every replacement character of the first token when it prepends one.
        if (c != replacement_)
          unicode::append_utf8(out, c);
        else if (!(i == 0 && strip_first_))
          out += ' ';
      }
      tokens[i].swap(out);
    }
  }

 private:
  char32_t replacement_;
  bool strip_first_;
};

class Sequence final : public Decoder {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Decoder>> steps) : steps_(std::move(steps)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& step : steps_) step->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

char32_t one_character(const std::string& text, const JsonPlace& place) {
  if (text.empty() || !unicode::is_valid_utf8(text) || unicode::code_point_count(text) != 1)
    place.fail_here("expected one character, got " + json_excerpt(text));
  size_t pos = 0;
  return unicode::next_code_point(text, pos);
}

std::unique_ptr<Decoder> make_metaspace(const nlohmann::json& config, const JsonPlace& place) {
  auto fields = place.reader(config);
  const auto replacement = one_character(fields.required_string("replacement"), place.field("replacement"));
  auto scheme = fields.one_of("prepend_scheme", "always", {"always", "first", "never"});
  if (fields.has("add_prefix_space") && !fields.boolean("add_prefix_space", true)) scheme = "never";
  return std::make_unique<Metaspace>(replacement, scheme != "never");
}

}  // namespace

std::unique_ptr<Decoder> make_decoder(const nlohmann::json& config, const JsonPlace& place) {
  if (config.is_null()) return nullptr;
  const auto type = component_type(config, place);
  if (type == "ByteLevel") return std::make_unique<ByteLevel>();
  if (type == "ByteFallback") return std::make_unique<ByteFallback>();
  if (type == "Fuse") return std::make_unique<Fuse>();
  if (type == "Metaspace") return make_metaspace(config, place);
  if (type == "Replace") {
    const auto pattern = config.find("pattern");
    if (pattern == config.end()) place.field("pattern").fail_here("missing (required)");
    return std::make_unique<Replace>(TextPattern::from_json(*pattern, place.field("pattern")),
                                     place.reader(config).required_string("content"));
  }
  if (type == "Strip") {
    auto fields = place.reader(config);
    const auto content = one_character(fields.required_string("content"), place.field("content"));
    const auto start = fields.integer("start", 0, 0, 1 << 20);
    const auto stop = fields.integer("stop", 0, 0, 1 << 20);
    return std::make_unique<Strip>(content, static_cast<size_t>(start), static_cast<size_t>(stop));
  }
  if (type == "Sequence") {
    const auto& list = required_array(config, "decoders", place);
    std::vector<std::unique_ptr<Decoder>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      auto step = make_decoder(list[i], place.field("decoders").element(i));
      if (step) steps.push_back(std::move(step));
    }
    return std::make_unique<Sequence>(std::move(steps));
  }
  unsupported_type(place, type);
}

}  // namespace qkd::tokenizer
