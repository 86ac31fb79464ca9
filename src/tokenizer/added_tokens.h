#pragma once
// tokenizer.json's "added_tokens", found in the text before the model sees it, as tokenizers'
// AddedVocabulary does: leftmost-longest matching over all added tokens, first the ones with
// normalized=false on the raw text, then the ones with normalized=true on each normalized stretch;
// single_word keeps a token from matching inside a word, lstrip/rstrip swallow the white space beside it.
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace qkd::tokenizer {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

// A stretch of text, or an added token (token >= 0) that covers [begin, end).
struct Segment {
  size_t begin;
  size_t end;
  int32_t token;
};

class AddedTokenMatcher {
 public:
  // `patterns` are (text to find, index of the token in `tokens`).
  void build(const std::vector<AddedToken>* tokens, const std::vector<std::pair<std::string, size_t>>& patterns);
  bool empty() const { return nodes_.size() <= 1; }

  // Cuts `text` (valid UTF-8) into stretches and added tokens, appended to `segments`.
  void split(std::string_view text, std::vector<Segment>& segments) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;  // sorted by byte
    int32_t token = -1;                                       // index into tokens_, when a pattern ends here
  };
  int32_t child(int32_t node, unsigned char byte) const;
  // The longest pattern starting at `pos`: (end, token index), or token index -1.
  std::pair<size_t, int32_t> longest_match(std::string_view text, size_t pos) const;

  const std::vector<AddedToken>* tokens_ = nullptr;
  std::vector<Node> nodes_;
  bool starts_[256] = {};
};

}  // namespace qkd::tokenizer
