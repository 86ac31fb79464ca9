#include "added_tokens.h"

#include <algorithm>

#include "unicode_text.h"

namespace qkd::tokenizer {

namespace {

// The code point that ends at `end` (exclusive) in valid UTF-8.
char32_t code_point_before(std::string_view text, size_t end) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  return unicode::next_code_point(text, start);
}

// Start of the white space run that ends at `end` (tokenizers' `\s*$` on the text before a token).
size_t white_space_start(std::string_view text, size_t end) {
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
    size_t pos = start;
    if (!unicode::is_white_space(unicode::next_code_point(text, pos))) break;
    end = start;
  }
  return end;
}

// End of the white space run that starts at `begin` (`^\s*` on the text after a token).
size_t white_space_end(std::string_view text, size_t begin) {
  while (begin < text.size()) {
    size_t pos = begin;
    if (!unicode::is_white_space(unicode::next_code_point(text, pos))) break;
    begin = pos;
  }
  return begin;
}

}  // namespace

void AddedTokenMatcher::build(const std::vector<AddedToken>* tokens,
                              const std::vector<std::pair<std::string, size_t>>& patterns) {
  tokens_ = tokens;
  nodes_.assign(1, Node{});
  std::fill(std::begin(starts_), std::end(starts_), false);
  for (const auto& [text, token] : patterns) {
    if (text.empty()) continue;
    starts_[static_cast<unsigned char>(text[0])] = true;
    int32_t node = 0;
    for (const char c : text) {
      const auto byte = static_cast<unsigned char>(c);
      int32_t next = child(node, byte);
      if (next < 0) {
        next = static_cast<int32_t>(nodes_.size());
        nodes_.emplace_back();
        auto& children = nodes_[node].children;
        children.insert(std::lower_bound(children.begin(), children.end(), std::make_pair(byte, int32_t{-1})),
                        {byte, next});
      }
      node = next;
    }
    nodes_[node].token = static_cast<int32_t>(token);
  }
}

int32_t AddedTokenMatcher::child(int32_t node, unsigned char byte) const {
  for (const auto& [b, next] : nodes_[node].children) {
    if (b == byte) return next;
    if (b > byte) break;
  }
  return -1;
}

std::pair<size_t, int32_t> AddedTokenMatcher::longest_match(std::string_view text, size_t pos) const {
  std::pair<size_t, int32_t> best{pos, -1};
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    node = child(node, static_cast<unsigned char>(text[i]));
    if (node < 0) break;
    if (nodes_[node].token >= 0) best = {i + 1, nodes_[node].token};
  }
  return best;
}

void AddedTokenMatcher::split(std::string_view text, std::vector<Segment>& segments) const {
  size_t done = 0;  // end of the last segment emitted
  size_t pos = 0;
  while (pos < text.size()) {
    if (!starts_[static_cast<unsigned char>(text[pos])]) {
      ++pos;
      continue;
    }
    const auto [match_end, index] = longest_match(text, pos);
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = (*tokens_)[index];
    size_t start = pos, stop = match_end;
    // Matches never overlap: the scan goes on after this one even when single_word discards it.
    pos = match_end;
    if (token.single_word) {
      const bool space_before = start == 0 || !unicode::is_word_character(code_point_before(text, start));
      size_t after = stop;
      const bool space_after =
          stop == text.size() || !unicode::is_word_character(unicode::next_code_point(text, after));
      if (!space_before || !space_after) continue;
    }
    // lstrip never reaches back past a previous token; rstrip swallows the white space after.
    if (token.lstrip) start = std::max(white_space_start(text, start), done);
    if (token.rstrip) stop = white_space_end(text, stop);
    if (done < start) segments.push_back({done, start, -1});
    segments.push_back({start, stop, static_cast<int32_t>(index)});
    done = stop;
    pos = std::max(pos, stop);
  }
  if (done < text.size()) segments.push_back({done, text.size(), -1});
}

}  // namespace qkd::tokenizer
