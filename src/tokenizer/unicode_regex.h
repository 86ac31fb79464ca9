#pragma once
// A tokenizer.json regular expression (Split and Replace patterns, the GPT-2 byte-level regex) on
// PCRE2 in UTF + UCP mode with the JIT: Unicode classes (\p{L}, \p{N}, \p{Lu}...), (?i:...) groups and
// lookahead as Hugging Face tokenizers' Oniguruma reads them.
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace qkd::tokenizer {

struct Span {
  size_t begin = 0;
  size_t end = 0;
};

class UnicodeRegex {
 public:
  // `where` names the pattern in errors ("<file>: pre_tokenizer.pattern.Regex").
  UnicodeRegex(const std::string& pattern, const std::string& where);
  ~UnicodeRegex();
  UnicodeRegex(UnicodeRegex&&) noexcept;
  UnicodeRegex& operator=(UnicodeRegex&&) noexcept;

  // The non-overlapping matches in `text` (valid UTF-8), left to right, appended to `matches`. An
  // empty match right where the previous match ended is skipped, as the onig crate's find_iter does.
  void find_all(std::string_view text, std::vector<Span>& matches) const;

  const std::string& pattern() const { return pattern_; }

 private:
  struct Compiled;
  std::unique_ptr<Compiled> compiled_;
  std::string pattern_;
  std::string where_;
};

}  // namespace qkd::tokenizer
