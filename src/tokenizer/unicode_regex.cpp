#include "unicode_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "qkd/common/error.h"
#include "unicode_text.h"

namespace qkd::tokenizer {

namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof buffer);
  return reinterpret_cast<const char*>(buffer);
}

// Oniguruma's `\s` is Unicode White_Space; PCRE2's UCP `\s` also takes U+180E. Spelling the property
// out keeps the two engines on the same characters (inside character classes too).
std::string with_white_space_property(const std::string& pattern) {
  std::string out;
  out.reserve(pattern.size() + 16);
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] != '\\' || i + 1 == pattern.size()) {
      out += pattern[i];
      continue;
    }
    const char next = pattern[++i];
    if (next == 's')
      out += "\\p{White_Space}";
    else if (next == 'S')
      out += "\\P{White_Space}";
    else
      out += {'\\', next};
  }
  return out;
}

}  // namespace

struct UnicodeRegex::Compiled {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Compiled() { pcre2_code_free(code); }
};

UnicodeRegex::UnicodeRegex(const std::string& pattern, const std::string& where)
    : compiled_(std::make_unique<Compiled>()), pattern_(pattern), where_(where) {
  const auto source = with_white_space_property(pattern);
  int error = 0;
  PCRE2_SIZE offset = 0;
  compiled_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(source.data()), source.size(), PCRE2_UTF | PCRE2_UCP,
                                  &error, &offset, nullptr);
  if (!compiled_->code) fail(where, "bad regex: " + pcre2_message(error) + " near offset " + std::to_string(offset));
  // Without JIT support (some architectures) the interpreter gives the same matches, only slower.
  compiled_->jit = pcre2_jit_compile(compiled_->code, PCRE2_JIT_COMPLETE) == 0;
}

UnicodeRegex::~UnicodeRegex() = default;
UnicodeRegex::UnicodeRegex(UnicodeRegex&&) noexcept = default;
UnicodeRegex& UnicodeRegex::operator=(UnicodeRegex&&) noexcept = default;

void UnicodeRegex::find_all(std::string_view text, std::vector<Span>& matches) const {
  if (text.empty()) return;
  const auto match_data = std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)>(
      pcre2_match_data_create_from_pattern(compiled_->code, nullptr), &pcre2_match_data_free);
  if (!match_data) fail(where_, "out of memory for regex matching");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t search_from = 0;
  bool has_previous = false;
  size_t previous_end = 0;
  while (search_from <= text.size()) {
    int rc = compiled_->jit
                 ? pcre2_jit_match(compiled_->code, subject, text.size(), search_from, 0, match_data.get(), nullptr)
                 : PCRE2_ERROR_JIT_BADOPTION;
    // The JIT's 32 KiB stack can run out on pathological input; the interpreter keeps its frames on
    // the heap and gives the same answer.
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT || rc == PCRE2_ERROR_JIT_BADOPTION)
      rc = pcre2_match(compiled_->code, subject, text.size(), search_from, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                       match_data.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) return;
    if (rc < 0) fail(where_, "regex match failed: " + pcre2_message(rc));
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match_data.get());
    const size_t start = ovector[0], end = ovector[1];
    if (start == end && has_previous && previous_end == end) {
      if (search_from >= text.size()) return;
      search_from += unicode::sequence_length(static_cast<unsigned char>(text[search_from]));
      continue;
    }
    matches.push_back({start, end});
    has_previous = true;
    previous_end = end;
    search_from = end;
    if (start == end) {
      // An accepted empty match: the next search starts here but may not end here again.
      continue;
    }
  }
}

}  // namespace qkd::tokenizer
