#include "qkd/chat/python_text.h"

#include <locale.h>
#include <wctype.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace qkd::chat {

char32_t decode_utf8(std::string_view text, size_t& pos) {
  const auto lead = static_cast<unsigned char>(text[pos]);
  int extra = 0;
  char32_t code = lead;
  if ((lead & 0xe0) == 0xc0) {
    extra = 1, code = lead & 0x1f;
  } else if ((lead & 0xf0) == 0xe0) {
    extra = 2, code = lead & 0x0f;
  } else if ((lead & 0xf8) == 0xf0) {
    extra = 3, code = lead & 0x07;
  }
  bool valid = pos + extra < text.size();
  for (int i = 1; valid && i <= extra; ++i) {
    const auto next = static_cast<unsigned char>(text[pos + i]);
    valid = (next & 0xc0) == 0x80;
    code = (code << 6) | (next & 0x3f);
  }
  if (!valid) {
    ++pos;
    return lead;
  }
  pos += 1 + extra;
  return code;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xc0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3f));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xe0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (c & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (c & 0x3f));
  }
}

std::vector<char32_t> code_points(std::string_view text) {
  std::vector<char32_t> points;
  points.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) points.push_back(decode_utf8(text, pos));
  return points;
}

std::string from_code_points(const std::vector<char32_t>& points, size_t begin, size_t end) {
  std::string out;
  for (size_t i = begin; i < end; ++i) append_utf8(out, points[i]);
  return out;
}

size_t utf8_length(std::string_view text) {
  size_t count = 0;
  for (const char c : text) count += (static_cast<unsigned char>(c) & 0xc0) != 0x80;
  return count;
}

bool is_ascii(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

bool is_python_space(char32_t c) {
  if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f);
  return c == 0x85 || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
         c == 0x202f || c == 0x205f || c == 0x3000;
}

std::string python_strip(std::string_view text, const std::optional<std::string>& chars, bool left, bool right) {
  const auto points = code_points(text);
  const auto set = chars ? code_points(*chars) : std::vector<char32_t>{};
  const auto strippable = [&](char32_t c) {
    return chars ? std::find(set.begin(), set.end(), c) != set.end() : is_python_space(c);
  };
  size_t begin = 0, end = points.size();
  if (left)
    while (begin < end && strippable(points[begin])) ++begin;
  if (right)
    while (end > begin && strippable(points[end - 1])) --end;
  return from_code_points(points, begin, end);
}

namespace {

std::vector<std::string> split_on_whitespace(std::string_view text, int64_t maxsplit, bool from_right) {
  auto points = code_points(text);
  if (from_right) std::reverse(points.begin(), points.end());
  std::vector<std::string> parts;
  size_t i = 0;
  while (i < points.size()) {
    while (i < points.size() && is_python_space(points[i])) ++i;
    if (i == points.size()) break;
    if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
      // The rest, with its trailing whitespace stripped (leading for rsplit), is the last part.
      size_t end = points.size();
      while (end > i && is_python_space(points[end - 1])) --end;
      parts.push_back(from_code_points(points, i, end));
      break;
    }
    size_t start = i;
    while (i < points.size() && !is_python_space(points[i])) ++i;
    parts.push_back(from_code_points(points, start, i));
  }
  if (from_right) {
    std::reverse(parts.begin(), parts.end());
    for (auto& part : parts) {
      auto p = code_points(part);
      std::reverse(p.begin(), p.end());
      part = from_code_points(p, 0, p.size());
    }
  }
  return parts;
}

}  // namespace

std::vector<std::string> python_split(std::string_view text, const std::optional<std::string>& separator,
                                      int64_t maxsplit, bool from_right) {
  if (!separator) return split_on_whitespace(text, maxsplit, from_right);
  const std::string& sep = *separator;
  std::vector<std::string> parts;
  if (!from_right) {
    size_t start = 0;
    while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
      const size_t hit = text.find(sep, start);
      if (hit == std::string_view::npos) break;
      parts.emplace_back(text.substr(start, hit - start));
      start = hit + sep.size();
    }
    parts.emplace_back(text.substr(start));
    return parts;
  }
  size_t end = text.size();
  while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
    if (end < sep.size()) break;
    const size_t hit = text.rfind(sep, end - sep.size());
    if (hit == std::string_view::npos) break;
    parts.emplace_back(text.substr(hit + sep.size(), end - hit - sep.size()));
    end = hit;
  }
  parts.emplace_back(text.substr(0, end));
  std::reverse(parts.begin(), parts.end());
  return parts;
}

std::vector<std::string> python_splitlines(std::string_view text, bool keepends) {
  const auto points = code_points(text);
  const auto is_break = [](char32_t c) {
    return c == '\n' || c == '\r' || c == 0x0b || c == 0x0c || c == 0x1c || c == 0x1d || c == 0x1e || c == 0x85 ||
           c == 0x2028 || c == 0x2029;
  };
  std::vector<std::string> lines;
  size_t start = 0, i = 0;
  while (i < points.size()) {
    if (!is_break(points[i])) {
      ++i;
      continue;
    }
    size_t end = i;
    i += (points[i] == '\r' && i + 1 < points.size() && points[i + 1] == '\n') ? 2 : 1;
    lines.push_back(from_code_points(points, start, keepends ? i : end));
    start = i;
  }
  if (start < points.size()) lines.push_back(from_code_points(points, start, points.size()));
  return lines;
}

std::string python_replace(std::string_view text, std::string_view old_text, std::string_view new_text, int64_t count) {
  std::string out;
  int64_t done = 0;
  if (old_text.empty()) {
    // Python inserts the replacement before every code point and at the end.
    size_t pos = 0;
    while (pos < text.size() && (count < 0 || done < count)) {
      out += new_text;
      ++done;
      const size_t start = pos;
      decode_utf8(text, pos);
      out += text.substr(start, pos - start);
    }
    if (pos < text.size()) {
      out += text.substr(pos);
    } else if (count < 0 || done < count) {
      out += new_text;
    }
    return out;
  }
  size_t start = 0;
  while (count < 0 || done < count) {
    const size_t hit = text.find(old_text, start);
    if (hit == std::string_view::npos) break;
    out += text.substr(start, hit - start);
    out += new_text;
    start = hit + old_text.size();
    ++done;
  }
  out += text.substr(start);
  return out;
}

int64_t python_find(std::string_view text, std::string_view needle, bool from_right) {
  const size_t hit = from_right ? text.rfind(needle) : text.find(needle);
  if (hit == std::string_view::npos) return -1;
  return static_cast<int64_t>(utf8_length(text.substr(0, hit)));
}

int64_t python_count(std::string_view text, std::string_view needle) {
  if (needle.empty()) return static_cast<int64_t>(utf8_length(text)) + 1;
  int64_t count = 0;
  for (size_t pos = text.find(needle); pos != std::string_view::npos; pos = text.find(needle, pos + needle.size()))
    ++count;
  return count;
}

namespace {

// The C library's Unicode character tables (glibc's C.UTF-8 locale), without touching the global locale.
locale_t unicode_locale() {
  static const locale_t locale = [] {
    locale_t l = newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(0));
    return l ? l : newlocale(LC_CTYPE_MASK, "C", static_cast<locale_t>(0));
  }();
  return locale;
}

char32_t to_upper(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') ? c - 32 : c;
  return static_cast<char32_t>(towupper_l(static_cast<wint_t>(c), unicode_locale()));
}

char32_t to_lower(char32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  return static_cast<char32_t>(towlower_l(static_cast<wint_t>(c), unicode_locale()));
}

// Python upper-cases with Unicode's full mappings; these are the ones text commonly holds that
// expand to several letters (SpecialCasing.txt), the rest map one to one.
void append_upper(std::string& out, char32_t c) {
  switch (c) {
    case 0xdf: out += "SS"; return;        // ß
    case 0x149: out += "\u02bcN"; return;  // ŉ
    case 0xfb00: out += "FF"; return;      // ﬀ
    case 0xfb01: out += "FI"; return;      // ﬁ
    case 0xfb02: out += "FL"; return;      // ﬂ
    case 0xfb03: out += "FFI"; return;     // ﬃ
    case 0xfb04: out += "FFL"; return;     // ﬄ
    case 0xfb05:
    case 0xfb06: out += "ST"; return;  // ﬅ ﬆ
    default: append_utf8(out, to_upper(c));
  }
}

}  // namespace

bool is_cased_upper(char32_t c) {
  if (c < 0x80) return c >= 'A' && c <= 'Z';
  return iswupper_l(static_cast<wint_t>(c), unicode_locale()) != 0;
}

bool is_cased_lower(char32_t c) {
  if (c < 0x80) return c >= 'a' && c <= 'z';
  return iswlower_l(static_cast<wint_t>(c), unicode_locale()) != 0;
}

bool is_alpha(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  return iswalpha_l(static_cast<wint_t>(c), unicode_locale()) != 0;
}

bool is_digit(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  return iswdigit_l(static_cast<wint_t>(c), unicode_locale()) != 0;
}

std::string python_upper(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) append_upper(out, decode_utf8(text, pos));
  return out;
}

std::string python_lower(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  if (is_ascii(text)) {
    for (const char c : text) out += (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
    return out;
  }
  const auto points = code_points(text);
  const auto cased = [](char32_t c) { return is_cased_upper(c) || is_cased_lower(c); };
  for (size_t i = 0; i < points.size(); ++i) {
    const char32_t c = points[i];
    if (c == 0x130) {  // İ lower-cases to i and a combining dot, as in Python
      out += "i\u0307";
    } else if (c == 0x3a3 && i > 0 && cased(points[i - 1]) && !(i + 1 < points.size() && cased(points[i + 1]))) {
      append_utf8(out, 0x3c2);  // a word-final capital sigma becomes final sigma (Python's Final_Sigma rule)
    } else {
      append_utf8(out, to_lower(c));
    }
  }
  return out;
}

std::string python_title(std::string_view text) {
  std::string out;
  bool previous_cased = false;
  for (size_t pos = 0; pos < text.size();) {
    const char32_t c = decode_utf8(text, pos);
    const bool cased = is_cased_upper(c) || is_cased_lower(c);
    if (previous_cased) {
      append_utf8(out, to_lower(c));
    } else {
      append_upper(out, c);
    }
    previous_cased = cased;
  }
  return out;
}

std::string python_capitalize(std::string_view text) {
  std::string out;
  for (size_t pos = 0; pos < text.size();) {
    const char32_t c = decode_utf8(text, pos);
    if (out.empty()) {
      append_upper(out, c);
    } else {
      append_utf8(out, to_lower(c));
    }
  }
  return out;
}

std::string python_float_repr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  // Shortest round-trip digits in scientific form, then Python's choice between fixed and exponent
  // layout: fixed when -4 <= exponent < 16.
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value, std::chars_format::scientific);
  std::string scientific(buffer, result.ptr);
  const size_t e = scientific.find('e');
  std::string mantissa = scientific.substr(0, e);
  const int exponent = std::stoi(scientific.substr(e + 1));
  const bool negative = mantissa[0] == '-';
  if (negative) mantissa.erase(0, 1);
  std::string digits;
  for (const char c : mantissa)
    if (c != '.') digits += c;
  std::string out = negative ? "-" : "";
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) {
      out += "0." + std::string(static_cast<size_t>(-exponent - 1), '0') + digits;
    } else if (static_cast<int>(digits.size()) <= exponent + 1) {
      out += digits + std::string(static_cast<size_t>(exponent + 1) - digits.size(), '0') + ".0";
    } else {
      out +=
          digits.substr(0, static_cast<size_t>(exponent + 1)) + "." + digits.substr(static_cast<size_t>(exponent + 1));
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char exponent_text[16];
  std::snprintf(exponent_text, sizeof(exponent_text), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
  return out + exponent_text;
}

namespace {

// str.isprintable() of one non-ASCII code point: false for the Unicode categories Python escapes in
// repr() (controls, format characters, separators other than the ASCII space, private use, surrogates).
bool is_printable_non_ascii(char32_t c) {
  if (c < 0xa1) return false;  // C1 controls and U+00A0
  if (c == 0xad || c == 0x61c || c == 0x6dd || c == 0x70f || c == 0x8e2 || c == 0x180e || c == 0x1680 || c == 0xfeff ||
      c == 0x202f || c == 0x205f || c == 0x3000)
    return false;
  if ((c >= 0x600 && c <= 0x605) || (c >= 0x2000 && c <= 0x200f) || (c >= 0x2028 && c <= 0x202e) ||
      (c >= 0x2060 && c <= 0x206f) || (c >= 0xfff9 && c <= 0xfffb) || (c >= 0xd800 && c <= 0xf8ff) ||
      (c >= 0xe0000 && c <= 0xe007f) || c >= 0xf0000)
    return false;
  return true;
}

}  // namespace

std::string python_string_repr(std::string_view text) {
  const bool has_single = text.find('\'') != std::string_view::npos;
  const bool has_double = text.find('"') != std::string_view::npos;
  const char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  for (size_t pos = 0; pos < text.size();) {
    const char32_t c = decode_utf8(text, pos);
    char escape[16];
    if (c == static_cast<char32_t>(quote) || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      std::snprintf(escape, sizeof(escape), "\\x%02x", static_cast<unsigned>(c));
      out += escape;
    } else if (c < 0x80 || is_printable_non_ascii(c)) {
      append_utf8(out, c);
    } else {
      const char* format = c <= 0xff ? "\\x%02x" : (c <= 0xffff ? "\\u%04x" : "\\U%08x");
      std::snprintf(escape, sizeof(escape), format, static_cast<unsigned>(c));
      out += escape;
    }
  }
  out += quote;
  return out;
}

}  // namespace qkd::chat
