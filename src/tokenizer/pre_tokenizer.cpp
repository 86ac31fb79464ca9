#include "pre_tokenizer.h"

#include <algorithm>

#include "byte_level.h"
#include "text_pattern.h"
#include "unicode_text.h"

namespace qkd::tokenizer {

namespace {

// GPT-2's word regex, which ByteLevel applies when use_regex is true.
constexpr const char* kGpt2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

enum class SplitBehavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

SplitBehavior split_behavior(const std::string& name, const JsonPlace& place) {
  if (name == "Removed") return SplitBehavior::removed;
  if (name == "Isolated") return SplitBehavior::isolated;
  if (name == "MergedWithPrevious") return SplitBehavior::merged_with_previous;
  if (name == "MergedWithNext") return SplitBehavior::merged_with_next;
  if (name == "Contiguous") return SplitBehavior::contiguous;
  place.fail_here("behavior '" + printable(name, 40) +
                  "' is not one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous");
}

// Cuts `word` at `matches` into spans that cover it, each flagged as a match (delimiter) or not.
void flag_spans(size_t length, const std::vector<Span>& matches, bool invert,
                std::vector<std::pair<Span, bool>>& splits) {
  splits.clear();
  size_t done = 0;
  for (const auto& m : matches) {
    if (done != m.begin) splits.push_back({{done, m.begin}, invert});
    splits.push_back({m, !invert});
    done = m.end;
  }
  if (done != length) splits.push_back({{done, length}, invert});
}

// Applies a delimiter behaviour to flagged spans (tokenizers' NormalizedString::split), then adds
// the surviving non-empty words to `out`.
void emit_splits(std::string_view word, bool at_text_start, std::vector<std::pair<Span, bool>>& splits,
                 SplitBehavior behavior, PieceList& out) {
  std::vector<std::pair<Span, bool>>& merged = splits;  // folded in place: the result is never longer
  size_t kept = 0;
  auto fold = [&](bool absorb_into_previous_when_match) {
    bool previous_match = false;
    for (size_t i = 0; i < merged.size(); ++i) {
      const auto [span, is_match] = merged[i];
      const bool absorb =
          absorb_into_previous_when_match ? (is_match && !previous_match) : (is_match == previous_match);
      if (absorb && kept > 0)
        merged[kept - 1].first.end = span.end;
      else
        merged[kept++] = {span, false};
      previous_match = is_match;
    }
    merged.resize(kept);
  };
  switch (behavior) {
    case SplitBehavior::isolated:
      for (auto& s : merged) s.second = false;
      break;
    case SplitBehavior::removed: break;
    case SplitBehavior::contiguous: fold(false); break;
    case SplitBehavior::merged_with_previous: fold(true); break;
    case SplitBehavior::merged_with_next: {
      std::reverse(merged.begin(), merged.end());
      bool previous_match = false;
      for (size_t i = 0; i < merged.size(); ++i) {
        const auto [span, is_match] = merged[i];
        if (is_match && !previous_match && kept > 0)
          merged[kept - 1].first.begin = span.begin;
        else
          merged[kept++] = {span, false};
        previous_match = is_match;
      }
      merged.resize(kept);
      std::reverse(merged.begin(), merged.end());
      break;
    }
  }
  for (const auto& [span, remove] : merged)
    if (!remove) out.add(word.substr(span.begin, span.end - span.begin), at_text_start && span.begin == 0);
}

class Split final : public PreTokenizer {
 public:
  Split(TextPattern pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}

  void pre_tokenize(PieceList& pieces, PreTokenizeScratch& scratch) const override {
    auto& out = scratch.spare;
    out.clear();
    for (const auto& piece : pieces.pieces) {
      const auto word = pieces.view(piece);
      scratch.matches.clear();
      pattern_.find_all(word, scratch.matches);
      flag_spans(word.size(), scratch.matches, invert_, scratch.splits);
      emit_splits(word, piece.at_text_start, scratch.splits, behavior_, out);
    }
    std::swap(pieces, out);
  }

 private:
  TextPattern pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

class ByteLevel final : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, bool use_regex, const JsonPlace& place) : add_prefix_space_(add_prefix_space) {
    if (use_regex) regex_ = std::make_unique<UnicodeRegex>(kGpt2Regex, place.where() + " (GPT-2 regex)");
  }

  void pre_tokenize(PieceList& pieces, PreTokenizeScratch& scratch) const override {
    auto& out = scratch.spare;
    out.clear();
    for (const auto& piece : pieces.pieces) {
      std::string_view word = pieces.view(piece);
      if (add_prefix_space_ && word.front() != ' ') {
        scratch.word.assign(" ").append(word);
        word = scratch.word;
      }
      scratch.matches.clear();
      if (regex_) {
        regex_->find_all(word, scratch.matches);
        flag_spans(word.size(), scratch.matches, false, scratch.splits);
      } else {
        scratch.splits.assign(1, {{0, word.size()}, false});
      }
      for (const auto& [span, is_match] : scratch.splits) {
        if (span.begin == span.end) continue;
        const auto begin = out.text.size();
        byte_level::append_encoded(word.substr(span.begin, span.end - span.begin), out.text);
        out.pieces.push_back({static_cast<uint32_t>(begin), static_cast<uint32_t>(out.text.size()),
                              piece.at_text_start && span.begin == 0});
      }
    }
    std::swap(pieces, out);
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<UnicodeRegex> regex_;
};

enum class PrependScheme { always, first, never };

class Metaspace final : public PreTokenizer {
 public:
  Metaspace(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}

  void pre_tokenize(PieceList& pieces, PreTokenizeScratch& scratch) const override {
    auto& out = scratch.spare;
    out.clear();
    for (const auto& piece : pieces.pieces) {
      const auto word = pieces.view(piece);
      auto& text = scratch.word;
      text.clear();
      for (const char c : word) {
        if (c == ' ')
          text.append(replacement_);
        else
          text.push_back(c);
      }
      const bool starts_with_replacement = text.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts_with_replacement &&
          (scheme_ == PrependScheme::always || (scheme_ == PrependScheme::first && piece.at_text_start)))
        text.insert(0, replacement_);
      if (!split_) {
        out.add(text, piece.at_text_start);
        continue;
      }
      scratch.matches.clear();
      for (size_t at = text.find(replacement_); at != std::string::npos;
           at = text.find(replacement_, at + replacement_.size()))
        scratch.matches.push_back({at, at + replacement_.size()});
      flag_spans(text.size(), scratch.matches, false, scratch.splits);
      emit_splits(text, piece.at_text_start, scratch.splits, SplitBehavior::merged_with_next, out);
    }
    std::swap(pieces, out);
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

class Sequence final : public PreTokenizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}
  void pre_tokenize(PieceList& pieces, PreTokenizeScratch& scratch) const override {
    for (const auto& step : steps_) step->pre_tokenize(pieces, scratch);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

std::unique_ptr<PreTokenizer> make_metaspace(const nlohmann::json& config, const JsonPlace& place) {
  auto fields = place.reader(config);
  const auto replacement = fields.required_string("replacement");
  if (replacement.empty() || unicode::code_point_count(replacement) != 1)
    place.field("replacement").fail_here("expected one character, got " + json_excerpt(replacement));
  auto scheme_name = fields.one_of("prepend_scheme", "always", {"always", "first", "never"});
  // Files from before prepend_scheme say add_prefix_space instead.
  if (fields.has("add_prefix_space") && !fields.boolean("add_prefix_space", true)) {
    if (fields.has("prepend_scheme") && scheme_name != "never")
      place.fail_here("add_prefix_space false does not match prepend_scheme '" + scheme_name + "'");
    scheme_name = "never";
  }
  const auto scheme = scheme_name == "always"  ? PrependScheme::always
                      : scheme_name == "first" ? PrependScheme::first
                                               : PrependScheme::never;
  return std::make_unique<Metaspace>(replacement, scheme, fields.boolean("split", true));
}

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& config, const JsonPlace& place,
                                                 PreTokenizerShape& shape) {
  if (config.is_null()) return nullptr;
  const auto type = component_type(config, place);
  if (type == "Split") {
    const auto pattern = config.find("pattern");
    if (pattern == config.end()) place.field("pattern").fail_here("missing (required)");
    auto fields = place.reader(config);
    const auto behavior = split_behavior(fields.required_string("behavior"), place.field("behavior"));
    auto compiled = TextPattern::from_json(*pattern, place.field("pattern"));
    if (compiled.is_regex() && behavior == SplitBehavior::isolated && !fields.boolean("invert", false))
      shape.split_regexes.push_back(compiled.source());
    else
      shape.other_steps = true;
    return std::make_unique<Split>(std::move(compiled), behavior, fields.boolean("invert", false));
  }
  if (type == "ByteLevel") {
    auto fields = place.reader(config);
    const bool add_prefix_space = fields.boolean("add_prefix_space", true);
    const bool use_regex = fields.boolean("use_regex", true);
    if (!add_prefix_space && !use_regex)
      shape.plain_byte_level = true;
    else
      shape.other_steps = true;
    return std::make_unique<ByteLevel>(add_prefix_space, use_regex, place);
  }
  if (type == "Metaspace") {
    shape.other_steps = true;
    return make_metaspace(config, place);
  }
  if (type == "Sequence") {
    const auto& list = required_array(config, "pretokenizers", place);
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      auto step = make_pre_tokenizer(list[i], place.field("pretokenizers").element(i), shape);
      if (step) steps.push_back(std::move(step));
    }
    return std::make_unique<Sequence>(std::move(steps));
  }
  unsupported_type(place, type);
}

}  // namespace qkd::tokenizer
