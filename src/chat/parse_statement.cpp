// Statements: text, {{ output }}, and the block tags chat templates use. jinja2 tags this engine does
// not run (template inheritance, include/import, autoescape, `do`) fail at load time.
#include <algorithm>

#include "builtins.h"
#include "parser.h"
#include "template_error.h"

namespace qkd::chat {

namespace {

StmtPtr make_stmt(StmtKind kind, int line) {
  auto s = std::make_unique<Stmt>();
  s->kind = kind;
  s->line = line;
  return s;
}

std::string quoted_list(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) out += (i ? " or '" : "'") + names[i] + "'";
  return out;
}

}  // namespace

void Parser::fail(const std::string& what, int line) const { fail_at_line(where_, line, what); }

std::string Parser::describe(const Token& token) const {
  switch (token.type) {
    case TokenType::eof: return "end of template";
    case TokenType::block_end: return "end of statement block";
    case TokenType::variable_end: return "end of print statement";
    case TokenType::block_begin: return "begin of statement block";
    case TokenType::variable_begin: return "begin of print statement";
    case TokenType::data: return "template data";
    case TokenType::integer: return "'" + std::to_string(token.integer) + "'";
    case TokenType::floating: return "float literal";
    case TokenType::string: return "string literal";
    default: return "'" + token.text + "'";
  }
}

bool Parser::skip_op(const char* op) {
  if (!is_op(op)) return false;
  next();
  return true;
}

bool Parser::skip_name(const char* name) {
  if (!is_name(name)) return false;
  next();
  return true;
}

void Parser::expect_op(const char* op) {
  if (!skip_op(op)) fail_here(std::string("expected '") + op + "', got " + describe(current()));
}

Token Parser::expect_name() {
  if (current().type != TokenType::name) fail_here("expected a name, got " + describe(current()));
  return next();
}

void Parser::expect_block_end() {
  if (current().type != TokenType::block_end) fail_here("expected end of statement block, got " + describe(current()));
  next();
}

Body Parser::parse_template() {
  Body body = subparse({});
  for (const auto& [name, line] : called_names_) {
    if (!is_global_function(name) && !macro_names_.count(name) && name != "caller")
      fail("unsupported function '" + name + "'", line);
  }
  return body;
}

Body Parser::subparse(const std::vector<std::string>& end_tags) {
  Body body;
  while (current().type != TokenType::eof) {
    const Token& t = current();
    if (t.type == TokenType::data) {
      auto s = make_stmt(StmtKind::text, t.line);
      s->text = next().text;
      body.push_back(std::move(s));
    } else if (t.type == TokenType::variable_begin) {
      auto s = make_stmt(StmtKind::output, next().line);
      s->expr = parse_tuple(true, {}, false);
      if (current().type != TokenType::variable_end)
        fail_here("expected end of print statement, got " + describe(current()));
      next();
      body.push_back(std::move(s));
    } else if (t.type == TokenType::block_begin) {
      next();
      if (current().type == TokenType::name &&
          std::find(end_tags.begin(), end_tags.end(), current().text) != end_tags.end())
        return body;
      body.push_back(parse_statement());
      expect_block_end();
    } else {
      fail_here("unexpected " + describe(t));
    }
  }
  return body;
}

Body Parser::parse_body(const std::vector<std::string>& end_tags, bool drop_end_tag) {
  skip_op(":");
  expect_block_end();
  Body body = subparse(end_tags);
  if (current().type == TokenType::eof) {
    fail_here("unexpected end of template, expected " + quoted_list(end_tags) + " to close '" + tag_stack_.back() +
              "'");
  }
  if (drop_end_tag) next();
  return body;
}

StmtPtr Parser::parse_statement() {
  const Token& t = current();
  if (t.type != TokenType::name) fail_here("tag name expected");
  const std::string tag = t.text;
  const int line = t.line;
  static const std::vector<std::string> unsupported = {"extends",    "block", "include", "import",    "from",
                                                       "autoescape", "do",    "trans",   "pluralize", "debug"};
  if (std::find(unsupported.begin(), unsupported.end(), tag) != unsupported.end())
    fail("unsupported tag '" + tag + "'", line);
  if (tag_stack_.size() >= kMaxNesting) fail("blocks nested too deeply", line);
  tag_stack_.push_back(tag);
  next();
  StmtPtr stmt;
  if (tag == "for") {
    stmt = parse_for(line);
  } else if (tag == "if") {
    stmt = parse_if(line);
  } else if (tag == "set") {
    stmt = parse_set(line);
  } else if (tag == "macro") {
    stmt = parse_macro(line);
  } else if (tag == "call") {
    stmt = parse_call_block(line);
  } else if (tag == "filter") {
    stmt = parse_filter_block(line);
  } else if (tag == "with") {
    stmt = parse_with(line);
  } else if (tag == "generation") {
    stmt = parse_generation(line);
  } else if (tag == "break" || tag == "continue") {
    if (loop_depth_ == 0) fail("'" + tag + "' outside of a loop", line);
    stmt = make_stmt(tag == "break" ? StmtKind::loop_break : StmtKind::loop_continue, line);
  } else if (tag == "print") {
    stmt = make_stmt(StmtKind::output, line);
    stmt->expr = parse_tuple(true, {}, false);
  } else {
    fail("unknown tag '" + tag + "'", line);
  }
  tag_stack_.pop_back();
  return stmt;
}

AssignTarget Parser::parse_assign_target(const std::vector<std::string>& extra_end_names, bool with_namespace) {
  AssignTarget target;
  if (with_namespace && look().type == TokenType::op && look().text == ".") {
    target.kind = AssignTarget::Kind::namespace_attribute;
    target.names.push_back(expect_name().text);
    next();
    target.attribute = expect_name().text;
    return target;
  }
  bool parenthesized = skip_op("(");
  while (true) {
    if (!target.names.empty()) expect_op(",");
    if (is_tuple_end(extra_end_names) || (parenthesized && is_op(")"))) break;
    if (current().type != TokenType::name) fail_here("can't assign to " + describe(current()));
    target.names.push_back(next().text);
    if (!is_op(",")) break;
    target.kind = AssignTarget::Kind::tuple;
  }
  if (parenthesized) {
    expect_op(")");
    target.kind = AssignTarget::Kind::tuple;
  }
  if (target.names.empty()) fail_here("expected an assignment target, got " + describe(current()));
  for (const auto& name : target.names) {
    if (name == "true" || name == "false" || name == "none" || name == "True" || name == "False" || name == "None")
      fail_here("can't assign to '" + name + "'");
  }
  return target;
}

StmtPtr Parser::parse_for(int line) {
  auto s = make_stmt(StmtKind::for_loop, line);
  s->target = parse_assign_target({"in"}, false);
  if (!skip_name("in")) fail_here("expected 'in', got " + describe(current()));
  s->expr = parse_tuple(false, {"recursive"}, false);
  if (skip_name("if")) s->condition = parse_expression();
  if (is_name("recursive")) fail_here("unsupported: recursive loops");
  ++loop_depth_;
  s->body = parse_body({"endfor", "else"}, false);
  --loop_depth_;
  if (next().text == "else") s->else_body = parse_body({"endfor"}, true);
  return s;
}

StmtPtr Parser::parse_if(int line) {
  auto s = make_stmt(StmtKind::if_chain, line);
  while (true) {
    auto condition = parse_tuple(false, {}, false);
    auto body = parse_body({"elif", "else", "endif"}, false);
    s->branches.emplace_back(std::move(condition), std::move(body));
    const Token token = next();
    if (token.text == "elif") continue;
    if (token.text == "else") s->else_body = parse_body({"endif"}, true);
    break;
  }
  return s;
}

StmtPtr Parser::parse_set(int line) {
  auto s = make_stmt(StmtKind::assign, line);
  s->target = parse_assign_target({}, true);
  if (skip_op("=")) {
    s->expr = parse_tuple(true, {}, false);
    return s;
  }
  s->kind = StmtKind::assign_block;
  if (is_op("|")) s->expr = parse_filter(nullptr, false);
  s->body = parse_body({"endset"}, true);
  return s;
}

std::vector<MacroParam> Parser::parse_signature() {
  std::vector<MacroParam> params;
  expect_op("(");
  while (!is_op(")")) {
    if (!params.empty()) expect_op(",");
    MacroParam param;
    param.name = expect_name().text;
    if (skip_op("=")) {
      param.default_value = parse_expression();
    } else if (!params.empty() && params.back().default_value) {
      fail_here("non-default argument follows default argument");
    }
    params.push_back(std::move(param));
  }
  expect_op(")");
  return params;
}

StmtPtr Parser::parse_macro(int line) {
  auto s = make_stmt(StmtKind::macro, line);
  s->text = expect_name().text;
  macro_names_.insert(s->text);
  s->params = parse_signature();
  const int saved_depth = loop_depth_;
  loop_depth_ = 0;
  s->body = parse_body({"endmacro"}, true);
  loop_depth_ = saved_depth;
  return s;
}

StmtPtr Parser::parse_call_block(int line) {
  auto s = make_stmt(StmtKind::call_block, line);
  if (is_op("(")) s->params = parse_signature();
  s->expr = parse_expression();
  if (s->expr->kind != ExprKind::call) fail("expected call", line);
  const int saved_depth = loop_depth_;
  loop_depth_ = 0;
  s->body = parse_body({"endcall"}, true);
  loop_depth_ = saved_depth;
  return s;
}

StmtPtr Parser::parse_filter_block(int line) {
  auto s = make_stmt(StmtKind::filter_block, line);
  s->expr = parse_filter(nullptr, true);
  s->body = parse_body({"endfilter"}, true);
  return s;
}

StmtPtr Parser::parse_with(int line) {
  auto s = make_stmt(StmtKind::with_block, line);
  while (current().type != TokenType::block_end) {
    if (!s->assignments.empty()) expect_op(",");
    AssignTarget target = parse_assign_target({}, false);
    expect_op("=");
    s->assignments.emplace_back(std::move(target), parse_expression());
  }
  s->body = parse_body({"endwith"}, true);
  return s;
}

StmtPtr Parser::parse_generation(int line) {
  auto s = make_stmt(StmtKind::generation, line);
  s->body = parse_body({"endgeneration"}, true);
  return s;
}

}  // namespace qkd::chat
