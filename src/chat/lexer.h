#pragma once
// Template source -> tokens, with jinja2's whitespace control as transformers configures it
// (trim_blocks=True, lstrip_blocks=True): `{%-`/`-%}` strip all whitespace before/after a tag, a block
// or comment tag's closing `%}` eats one following newline, a block or comment tag alone on its line
// loses the indentation before it, and `+` turns either trimming off for one tag.
#include <cstdint>
#include <string>
#include <vector>

namespace qkd::chat {

enum class TokenType {
  data,
  variable_begin,
  variable_end,
  block_begin,
  block_end,
  name,
  string,
  integer,
  floating,
  op,
  eof
};

struct Token {
  TokenType type = TokenType::eof;
  std::string text;  // data text, name, decoded string literal or operator
  int64_t integer = 0;
  double floating = 0.0;
  int line = 1;
};

// Fails with "<where> line N: ..." for text jinja2 would not tokenize either (an unclosed tag, an
// unterminated string, a character no token starts with, unbalanced brackets).
std::vector<Token> tokenize(const std::string& source, const std::string& where);

// jinja2's source preparation: \r\n and \r become \n and one trailing newline is dropped
// (keep_trailing_newline=False).
std::string normalize_newlines(const std::string& source);

}  // namespace qkd::chat
