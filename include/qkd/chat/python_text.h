#pragma once
// Python's str semantics on UTF-8 text: templates index, slice, measure, strip, split and case-map
// message contents, and Python counts code points and uses Unicode's whitespace and case tables. The
// output must match transformers' rendering byte for byte, so these follow CPython's definitions.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qkd::chat {

// One code point from `text` at byte `pos` (advanced past it). Invalid bytes decode as themselves
// (U+0080..U+00FF) so that no input makes the renderer fail.
char32_t decode_utf8(std::string_view text, size_t& pos);
void append_utf8(std::string& out, char32_t code_point);
std::vector<char32_t> code_points(std::string_view text);
std::string from_code_points(const std::vector<char32_t>& points, size_t begin, size_t end);
// Number of code points (Python's len() of a str).
size_t utf8_length(std::string_view text);
bool is_ascii(std::string_view text);

// str.isspace() of one code point (Unicode White_Space plus the ASCII separators Python adds).
bool is_python_space(char32_t c);
// str.strip/lstrip/rstrip; `chars` absent strips whitespace.
std::string python_strip(std::string_view text, const std::optional<std::string>& chars, bool left, bool right);
// str.split / str.rsplit; `separator` absent splits on runs of whitespace and drops empty parts.
// maxsplit < 0: no limit. An empty separator is the caller's error to report.
std::vector<std::string> python_split(std::string_view text, const std::optional<std::string>& separator,
                                      int64_t maxsplit, bool from_right);
// str.splitlines(keepends).
std::vector<std::string> python_splitlines(std::string_view text, bool keepends);
// str.replace(old, new, count); count < 0 replaces all. An empty `old` inserts between code points.
std::string python_replace(std::string_view text, std::string_view old_text, std::string_view new_text, int64_t count);
// Code-point index of the first (or last) occurrence, -1 when absent (str.find / str.rfind).
int64_t python_find(std::string_view text, std::string_view needle, bool from_right);
// Non-overlapping occurrences (str.count); an empty needle counts len + 1.
int64_t python_count(std::string_view text, std::string_view needle);

// Case mapping with the C library's Unicode tables (simple mappings; 'ß'.upper() gives "SS" as in Python).
std::string python_upper(std::string_view text);
std::string python_lower(std::string_view text);
std::string python_title(std::string_view text);       // str.title()
std::string python_capitalize(std::string_view text);  // str.capitalize()
bool is_cased_upper(char32_t c);
bool is_cased_lower(char32_t c);
bool is_alpha(char32_t c);
bool is_digit(char32_t c);

// repr() of a float: the shortest text that reads back to the same double, in Python's layout
// ("1.0", "1e+16", "1e-05", "inf", "nan").
std::string python_float_repr(double value);
// repr() of a str: quotes chosen as Python chooses them, non-printable characters escaped.
std::string python_string_repr(std::string_view text);

}  // namespace qkd::chat
