#include "lexer.h"

#include <cstdio>
#include <cstdlib>

#include "qkd/chat/python_text.h"
#include "template_error.h"

namespace qkd::chat {

std::string normalize_newlines(const std::string& source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out += source[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

namespace {

bool is_digit_char(char c) { return c >= '0' && c <= '9'; }
bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_name_start(c) || is_digit_char(c); }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

class Lexer {
 public:
  Lexer(std::string source, const std::string& where) : src_(std::move(source)), where_(where) {}

  std::vector<Token> run() {
    while (pos_ < src_.size()) {
      const size_t tag = find_tag_start(pos_);
      if (tag == std::string::npos) {
        emit_data(src_.substr(pos_), line_);
        break;
      }
      start_tag(tag);
    }
    tokens_.push_back(Token{TokenType::eof, "", 0, 0.0, line_});
    return std::move(tokens_);
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { fail_at_line(where_, line_, what); }

  bool at(size_t p, const char* text) const { return src_.compare(p, std::char_traits<char>::length(text), text) == 0; }

  size_t find_tag_start(size_t from) const {
    for (size_t p = src_.find('{', from); p != std::string::npos; p = src_.find('{', p + 1)) {
      if (p + 1 < src_.size() && (src_[p + 1] == '{' || src_[p + 1] == '%' || src_[p + 1] == '#')) return p;
    }
    return std::string::npos;
  }

  // Python's \s*: skips whitespace from p, counting lines.
  size_t skip_space(size_t p) {
    while (p < src_.size()) {
      size_t next = p;
      const char32_t c = decode_utf8(src_, next);
      if (!is_python_space(c)) break;
      if (c == '\n') ++line_;
      p = next;
    }
    return p;
  }

  void count_lines(size_t from, size_t to) {
    for (size_t i = from; i < to; ++i) line_ += src_[i] == '\n';
  }

  void emit_data(std::string text, int line) {
    if (!text.empty()) tokens_.push_back(Token{TokenType::data, std::move(text), 0, 0.0, line});
  }

  // The text before a tag, with the tag's whitespace control applied: '-' strips all trailing
  // whitespace; otherwise lstrip_blocks removes the indentation before a block or comment tag that
  // starts its line (only spaces and tabs and other non-newline whitespace between line start and tag).
  std::string text_before_tag(size_t from, size_t tag, char sign, bool is_variable) const {
    std::string text = src_.substr(from, tag - from);
    if (sign == '-') return python_strip(text, std::nullopt, false, true);
    if (sign == '+' || is_variable) return text;
    const size_t newline = text.rfind('\n');
    const size_t line_start = newline == std::string::npos ? 0 : newline + 1;
    if (line_start == 0 && !line_starting_) return text;
    if (line_start == text.size()) return text;
    for (size_t p = line_start; p < text.size();)
      if (!is_python_space(decode_utf8(text, p))) return text;
    return text.substr(0, line_start);
  }

  // `{% raw %}` (with optional signs and spaces): returns the end of the opening tag, or npos.
  size_t match_raw_begin(size_t tag) {
    size_t p = tag + 2;
    if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) ++p;
    const int saved_line = line_;
    p = skip_space(p);
    if (!at(p, "raw")) return line_ = saved_line, std::string::npos;
    p = skip_space(p + 3);
    if (at(p, "-%}")) return skip_space(p + 3);
    if (at(p, "%}")) return p + 2;
    line_ = saved_line;
    return std::string::npos;
  }

  void start_tag(size_t tag) {
    const char kind = src_[tag + 1];
    const char sign = (tag + 2 < src_.size() && (src_[tag + 2] == '-' || src_[tag + 2] == '+')) ? src_[tag + 2] : 0;
    emit_data(text_before_tag(pos_, tag, sign, kind == '{'), line_);
    count_lines(pos_, tag);
    const size_t body = tag + 2 + (sign ? 1 : 0);
    if (kind == '#') return skip_comment(body);
    if (kind == '%') {
      const int tag_line = line_;
      const size_t raw_end = match_raw_begin(tag);
      if (raw_end != std::string::npos) return read_raw(raw_end, tag_line);
    }
    const bool block = kind == '%';
    tokens_.push_back(Token{block ? TokenType::block_begin : TokenType::variable_begin, "", 0, 0.0, line_});
    pos_ = body;
    lex_inside_tag(block);
  }

  // After a tag's end, trim_blocks and lstrip_blocks look at whether a new line begins here.
  void finish_tag(size_t end) {
    pos_ = end;
    line_starting_ = end > 0 && src_[end - 1] == '\n';
  }

  // Block and comment ends: "+%}" keeps what follows, "-%}" strips all whitespace after it, "%}" eats
  // one newline (trim_blocks). Returns the end of the tag or npos.
  size_t match_block_end(size_t p, char close) {
    const char end[3] = {close, '}', 0};
    if (src_[p] == '+' && at(p + 1, end)) return p + 3;
    if (src_[p] == '-' && at(p + 1, end)) return skip_space(p + 3);
    if (at(p, end)) {
      if (p + 2 < src_.size() && src_[p + 2] == '\n') return ++line_, p + 3;
      return p + 2;
    }
    return std::string::npos;
  }

  void skip_comment(size_t p) {
    for (; p < src_.size(); ++p) {
      if (src_[p] == '\n') ++line_;
      const size_t end = match_block_end(p, '#');
      if (end != std::string::npos) return finish_tag(end);
    }
    fail("missing end of comment tag");
  }

  void read_raw(size_t p, int tag_line) {
    line_starting_ = p > 0 && src_[p - 1] == '\n';
    for (size_t q = p; q + 1 < src_.size(); ++q) {
      if (src_[q] != '{' || src_[q + 1] != '%') continue;
      const char sign = (q + 2 < src_.size() && (src_[q + 2] == '-' || src_[q + 2] == '+')) ? src_[q + 2] : 0;
      const int saved_line = line_;
      count_lines(p, q);
      size_t r = skip_space(q + 2 + (sign ? 1 : 0));
      if (at(r, "endraw")) {
        r = skip_space(r + 6);
        const size_t end = match_block_end(r, '%');
        if (end != std::string::npos) {
          const int data_line = saved_line;
          emit_data(text_before_tag(p, q, sign, false), data_line);
          return finish_tag(end);
        }
      }
      line_ = saved_line;
    }
    line_ = tag_line;
    fail("missing end of raw directive");
  }

  void lex_inside_tag(bool block) {
    std::string balance;  // the closing brackets still expected, innermost last
    while (true) {
      if (pos_ >= src_.size())
        fail(block ? "unexpected end of template, expected '%}'" : "unexpected end of template, expected '}}'");
      if (balance.empty()) {
        size_t end = std::string::npos;
        if (block) {
          end = match_block_end(pos_, '%');
        } else if (at(pos_, "-}}")) {
          end = skip_space(pos_ + 3);
        } else if (at(pos_, "}}")) {
          end = pos_ + 2;
        }
        if (end != std::string::npos) {
          tokens_.push_back(Token{block ? TokenType::block_end : TokenType::variable_end, "", 0, 0.0, line_});
          return finish_tag(end);
        }
      }
      const size_t after_space = skip_space(pos_);
      if (after_space != pos_) {
        pos_ = after_space;
        continue;
      }
      if (lex_number() || lex_name() || lex_string()) continue;
      lex_operator(balance);
    }
  }

  // jinja2's float and integer rules (decimal; 0x/0o/0b integers; '_' between digits).
  bool lex_number() {
    const char c = src_[pos_];
    if (!is_digit_char(c)) return false;
    if (pos_ > 0 && src_[pos_ - 1] == '.') return lex_integer();
    size_t p = digits(pos_);
    size_t end = std::string::npos;
    if (p < src_.size() && src_[p] == '.' && p + 1 < src_.size() && is_digit_char(src_[p + 1])) {
      const size_t fraction_end = digits(p + 1);
      const size_t exp_end = exponent(fraction_end);
      end = exp_end != std::string::npos ? exp_end : fraction_end;
    } else {
      end = exponent(p);
    }
    if (end == std::string::npos) return lex_integer();
    std::string text;
    for (size_t i = pos_; i < end; ++i)
      if (src_[i] != '_') text += src_[i];
    tokens_.push_back(Token{TokenType::floating, "", 0, std::strtod(text.c_str(), nullptr), line_});
    pos_ = end;
    return true;
  }

  size_t digits(size_t p) const {
    size_t q = p;
    while (q < src_.size() &&
           (is_digit_char(src_[q]) || (src_[q] == '_' && q + 1 < src_.size() && is_digit_char(src_[q + 1]) && q > p)))
      ++q;
    return q;
  }

  size_t exponent(size_t p) const {
    if (p >= src_.size() || (src_[p] != 'e' && src_[p] != 'E')) return std::string::npos;
    size_t q = p + 1;
    if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) ++q;
    if (q >= src_.size() || !is_digit_char(src_[q])) return std::string::npos;
    return digits(q);
  }

  bool lex_integer() {
    size_t p = pos_;
    int base = 10;
    if (src_[p] == '0' && p + 1 < src_.size() && std::string("xXoObB").find(src_[p + 1]) != std::string::npos &&
        p + 2 < src_.size() && hex_value(src_[p + 2]) >= 0) {
      base = (src_[p + 1] | 0x20) == 'x' ? 16 : ((src_[p + 1] | 0x20) == 'o' ? 8 : 2);
      p += 2;
    }
    std::string text;
    if (base == 10 && src_[p] == '0') {  // "0", "00", "0_0": a leading zero only continues with zeros
      while (p < src_.size() && (src_[p] == '0' || (src_[p] == '_' && p + 1 < src_.size() && src_[p + 1] == '0'))) ++p;
      text = "0";
    } else {
      while (p < src_.size() && ((hex_value(src_[p]) >= 0 && hex_value(src_[p]) < base) || src_[p] == '_')) {
        if (src_[p] != '_') text += src_[p];
        ++p;
      }
    }
    errno = 0;
    const long long value = std::strtoll(text.c_str(), nullptr, base);
    if (errno == ERANGE) fail("integer literal out of range: " + src_.substr(pos_, p - pos_));
    tokens_.push_back(Token{TokenType::integer, "", value, 0.0, line_});
    pos_ = p;
    return true;
  }

  bool lex_name() {
    if (!is_name_start(src_[pos_])) return false;
    size_t p = pos_;
    while (p < src_.size() && is_name_char(src_[p])) ++p;
    tokens_.push_back(Token{TokenType::name, src_.substr(pos_, p - pos_), 0, 0.0, line_});
    pos_ = p;
    return true;
  }

  bool lex_string() {
    const char quote = src_[pos_];
    if (quote != '\'' && quote != '"') return false;
    size_t p = pos_ + 1;
    while (p < src_.size() && src_[p] != quote) p += src_[p] == '\\' ? 2 : 1;
    if (p >= src_.size()) fail(std::string("unexpected char ") + python_string_repr(std::string(1, quote)));
    const int line = line_;
    const std::string body = src_.substr(pos_ + 1, p - pos_ - 1);
    tokens_.push_back(Token{TokenType::string, decode_escapes(body), 0, 0.0, line});
    count_lines(pos_, p);
    pos_ = p + 1;
    return true;
  }

  // Python's unicode-escape decoding of a string literal's body, after jinja2's backslashreplace of
  // non-ASCII characters (so a backslash before a non-ASCII character yields "\xNN"-style text).
  std::string decode_escapes(const std::string& body) const {
    std::string out;
    for (size_t i = 0; i < body.size();) {
      if (body[i] != '\\') {
        size_t next = i;
        decode_utf8(body, next);
        out.append(body, i, next - i);
        i = next;
        continue;
      }
      const char e = body[i + 1];
      i += 2;
      switch (e) {
        case '\\': out += '\\'; continue;
        case '\'': out += '\''; continue;
        case '"': out += '"'; continue;
        case 'a': out += '\a'; continue;
        case 'b': out += '\b'; continue;
        case 'f': out += '\f'; continue;
        case 'n': out += '\n'; continue;
        case 'r': out += '\r'; continue;
        case 't': out += '\t'; continue;
        case 'v': out += '\v'; continue;
        case '\n': continue;
        default: break;
      }
      if (e >= '0' && e <= '7') {
        unsigned value = static_cast<unsigned>(e - '0');
        for (int k = 0; k < 2 && i < body.size() && body[i] >= '0' && body[i] <= '7'; ++k, ++i)
          value = value * 8 + static_cast<unsigned>(body[i] - '0');
        append_utf8(out, value);
      } else if (e == 'x' || e == 'u' || e == 'U') {
        const size_t width = e == 'x' ? 2 : (e == 'u' ? 4 : 8);
        char32_t value = 0;
        for (size_t k = 0; k < width; ++k) {
          const int h = i + k < body.size() ? hex_value(body[i + k]) : -1;
          if (h < 0) fail(std::string("truncated \\") + e + " escape in a string literal");
          value = value * 16 + static_cast<char32_t>(h);
        }
        if (value > 0x10ffff) fail("illegal Unicode character in a string literal");
        append_utf8(out, value);
        i += width;
      } else if (e == 'N') {
        fail("unsupported \\N{...} escape in a string literal");
      } else if (static_cast<unsigned char>(e) >= 0x80) {
        size_t at = i - 1;
        const char32_t c = decode_utf8(body, at);
        char escaped[16];
        std::snprintf(escaped, sizeof(escaped), c <= 0xff ? "\\x%02x" : (c <= 0xffff ? "\\u%04x" : "\\U%08x"),
                      static_cast<unsigned>(c));
        out += escaped;
        i = at;
      } else {
        out += '\\';
        out += e;
      }
    }
    return out;
  }

  void lex_operator(std::string& balance) {
    static const char* const two_char[] = {"//", "**", "==", "!=", ">=", "<="};
    for (const char* op : two_char) {
      if (at(pos_, op)) {
        tokens_.push_back(Token{TokenType::op, op, 0, 0.0, line_});
        pos_ += 2;
        return;
      }
    }
    const char c = src_[pos_];
    if (std::string("+-/*%~[](){}><=.:|,;").find(c) == std::string::npos) {
      size_t next = pos_;
      const char32_t point = decode_utf8(src_, next);
      std::string text;
      append_utf8(text, point);
      fail("unexpected char " + python_string_repr(text));
    }
    if (c == '(' || c == '[' || c == '{') balance += c == '(' ? ')' : (c == '[' ? ']' : '}');
    if (c == ')' || c == ']' || c == '}') {
      if (balance.empty()) fail(std::string("unexpected '") + c + "'");
      if (balance.back() != c) fail(std::string("unexpected '") + c + "', expected '" + balance.back() + "'");
      balance.pop_back();
    }
    tokens_.push_back(Token{TokenType::op, std::string(1, c), 0, 0.0, line_});
    ++pos_;
  }

  std::string src_;
  const std::string& where_;
  size_t pos_ = 0;
  int line_ = 1;
  bool line_starting_ = true;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> tokenize(const std::string& source, const std::string& where) {
  return Lexer(normalize_newlines(source), where).run();
}

}  // namespace qkd::chat
