#include "qkd/chat/template.h"

#include "ast.h"
#include "lexer.h"
#include "parser.h"
#include "runtime.h"

namespace qkd::chat {

struct Template::Parsed {
  std::string where;
  Body body;
};

Template Template::parse(const std::string& source, const std::string& where) {
  auto parsed = std::make_shared<Parsed>();
  parsed->where = where;
  parsed->body = Parser(tokenize(source, where), parsed->where).parse_template();
  Template t;
  t.parsed_ = std::move(parsed);
  return t;
}

std::string Template::render(const Dict& variables, const std::function<std::tm()>& now) const {
  return Interpreter(parsed_->where, variables, now).run(parsed_->body);
}

const std::string& Template::where() const { return parsed_->where; }

}  // namespace qkd::chat
