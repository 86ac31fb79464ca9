#pragma once
// Tokens -> statements and expressions, following jinja2's parser (operator precedence, where tuples
// and conditional expressions are allowed, how tests take their argument). Anything this engine does
// not implement -- an unknown filter, test, method, function or tag, `*args`, recursive loops -- fails
// here, when the template is loaded, naming the line, rather than on some later conversation.
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ast.h"
#include "lexer.h"

namespace qkd::chat {

class Parser {
 public:
  Parser(std::vector<Token> tokens, const std::string& where) : tokens_(std::move(tokens)), where_(where) {}

  // The whole template; fails with "<where> line N: ..." on a syntax error or an unsupported construct.
  Body parse_template();

 private:
  // Token stream.
  const Token& current() const { return tokens_[pos_]; }
  const Token& look() const { return tokens_[pos_ + 1 < tokens_.size() ? pos_ + 1 : pos_]; }
  Token next() { return tokens_[pos_ < tokens_.size() - 1 ? pos_++ : pos_]; }
  bool is_op(const char* op) const { return current().type == TokenType::op && current().text == op; }
  bool is_name(const char* name) const { return current().type == TokenType::name && current().text == name; }
  bool skip_op(const char* op);
  bool skip_name(const char* name);
  void expect_op(const char* op);
  Token expect_name();
  void expect_block_end();
  [[noreturn]] void fail(const std::string& what, int line) const;
  [[noreturn]] void fail_here(const std::string& what) const { fail(what, current().line); }
  std::string describe(const Token& token) const;

  // Statements (parse_statement.cpp).
  Body subparse(const std::vector<std::string>& end_tags);
  Body parse_body(const std::vector<std::string>& end_tags, bool drop_end_tag);
  StmtPtr parse_statement();
  StmtPtr parse_for(int line);
  StmtPtr parse_if(int line);
  StmtPtr parse_set(int line);
  StmtPtr parse_macro(int line);
  StmtPtr parse_call_block(int line);
  StmtPtr parse_filter_block(int line);
  StmtPtr parse_with(int line);
  StmtPtr parse_generation(int line);
  AssignTarget parse_assign_target(const std::vector<std::string>& extra_end_names, bool with_namespace);
  std::vector<MacroParam> parse_signature();

  // Expressions (parse_expression.cpp).
  ExprPtr parse_expression(bool with_condexpr = true);
  ExprPtr parse_tuple(bool with_condexpr, const std::vector<std::string>& extra_end_names, bool explicit_parens);
  bool is_tuple_end(const std::vector<std::string>& extra_end_names) const;
  ExprPtr parse_condexpr();
  ExprPtr parse_or();
  ExprPtr parse_and();
  ExprPtr parse_not();
  ExprPtr parse_compare();
  ExprPtr parse_math1();
  ExprPtr parse_concat();
  ExprPtr parse_math2();
  ExprPtr parse_pow();
  ExprPtr parse_unary(bool with_filter);
  ExprPtr parse_primary();
  ExprPtr parse_list();
  ExprPtr parse_dict();
  ExprPtr parse_postfix(ExprPtr node);
  ExprPtr parse_filter_expr(ExprPtr node);
  ExprPtr parse_subscript(ExprPtr node);
  ExprPtr parse_subscribed();
  ExprPtr parse_call(ExprPtr callee);
  void parse_call_args(Expr& call);
  ExprPtr parse_filter(ExprPtr node, bool start_inline);
  ExprPtr parse_test(ExprPtr node);
  std::string parse_dotted_name();
  // Checks the name of a filter, test or called method / function against what the engine implements.
  void check_call_target(const Expr& call) const;
  void check_filter_arguments(const Expr& filter) const;

  std::vector<Token> tokens_;
  size_t pos_ = 0;
  const std::string& where_;
  std::vector<std::string> tag_stack_;  // open block tags, for "expected 'endfor'" messages
  int loop_depth_ = 0;                  // break/continue are only valid inside a loop body
  size_t expression_depth_ = 0;         // bounded, so that a hostile template cannot exhaust the stack
  static constexpr size_t kMaxNesting = 256;
  std::set<std::string> macro_names_;
  std::vector<std::pair<std::string, int>> called_names_;  // checked once all macros are known
};

}  // namespace qkd::chat
