// Expressions, with jinja2's precedence (loosest first): `a if c else b`, or, and, not, comparisons
// and `in`, + -, ~, * / // %, ** (left-associative, as in jinja2), unary - +, then postfix
// (.attr, [item], call) and filters/tests, which bind tighter than every binary operator.
#include <algorithm>

#include "builtins.h"
#include "parser.h"
#include "qkd/chat/python_text.h"

namespace qkd::chat {

namespace {

ExprPtr make(ExprKind kind, int line) {
  auto e = std::make_unique<Expr>();
  e->kind = kind;
  e->line = line;
  return e;
}

ExprPtr make_binary(ExprKind kind, const std::string& op, ExprPtr left, ExprPtr right, int line) {
  auto e = make(kind, line);
  e->name = op;
  e->args.push_back(std::move(left));
  e->args.push_back(std::move(right));
  return e;
}

}  // namespace

ExprPtr Parser::parse_expression(bool with_condexpr) {
  // Parsing and evaluating recurse over the nesting; a bound keeps a hostile template from
  // exhausting the stack.
  if (++expression_depth_ > kMaxNesting) fail_here("expression nested too deeply");
  ExprPtr e = with_condexpr ? parse_condexpr() : parse_or();
  --expression_depth_;
  return e;
}

bool Parser::is_tuple_end(const std::vector<std::string>& extra_end_names) const {
  const auto& t = current();
  if (t.type == TokenType::variable_end || t.type == TokenType::block_end || (t.type == TokenType::op && t.text == ")"))
    return true;
  return t.type == TokenType::name &&
         std::find(extra_end_names.begin(), extra_end_names.end(), t.text) != extra_end_names.end();
}

ExprPtr Parser::parse_tuple(bool with_condexpr, const std::vector<std::string>& extra_end_names, bool explicit_parens) {
  const int line = current().line;
  std::vector<ExprPtr> items;
  bool is_tuple = false;
  while (true) {
    if (!items.empty()) expect_op(",");
    if (is_tuple_end(extra_end_names)) break;
    items.push_back(parse_expression(with_condexpr));
    if (!is_op(",")) break;
    is_tuple = true;
  }
  if (!is_tuple) {
    if (!items.empty()) return std::move(items[0]);
    if (!explicit_parens) fail_here("expected an expression, got " + describe(current()));
  }
  auto tuple = make(ExprKind::tuple, line);
  tuple->args = std::move(items);
  return tuple;
}

ExprPtr Parser::parse_condexpr() {
  int line = current().line;
  auto expr1 = parse_or();
  while (skip_name("if")) {
    auto cond = make(ExprKind::conditional, line);
    auto expr2 = parse_or();
    ExprPtr expr3 = skip_name("else") ? parse_condexpr() : nullptr;
    cond->args.push_back(std::move(expr1));
    cond->args.push_back(std::move(expr2));
    cond->args.push_back(std::move(expr3));
    expr1 = std::move(cond);
    line = current().line;
  }
  return expr1;
}

ExprPtr Parser::parse_or() {
  const int line = current().line;
  auto left = parse_and();
  while (skip_name("or")) left = make_binary(ExprKind::logical_or, "or", std::move(left), parse_and(), line);
  return left;
}

ExprPtr Parser::parse_and() {
  const int line = current().line;
  auto left = parse_not();
  while (skip_name("and")) left = make_binary(ExprKind::logical_and, "and", std::move(left), parse_not(), line);
  return left;
}

ExprPtr Parser::parse_not() {
  if (is_name("not")) {
    const int line = next().line;
    auto e = make(ExprKind::logical_not, line);
    e->args.push_back(parse_not());
    return e;
  }
  return parse_compare();
}

ExprPtr Parser::parse_compare() {
  const int line = current().line;
  auto first = parse_math1();
  auto compare = make(ExprKind::compare, line);
  while (true) {
    const auto& t = current();
    if (t.type == TokenType::op &&
        (t.text == "==" || t.text == "!=" || t.text == "<" || t.text == "<=" || t.text == ">" || t.text == ">=")) {
      compare->ops.push_back(next().text);
    } else if (skip_name("in")) {
      compare->ops.push_back("in");
    } else if (is_name("not") && look().type == TokenType::name && look().text == "in") {
      next(), next();
      compare->ops.push_back("not in");
    } else {
      break;
    }
    compare->args.push_back(parse_math1());
  }
  if (compare->ops.empty()) return first;
  compare->args.insert(compare->args.begin(), std::move(first));
  return compare;
}

ExprPtr Parser::parse_math1() {
  const int line = current().line;
  auto left = parse_concat();
  while (is_op("+") || is_op("-")) {
    const std::string op = next().text;
    left = make_binary(ExprKind::binary, op, std::move(left), parse_concat(), line);
  }
  return left;
}

ExprPtr Parser::parse_concat() {
  const int line = current().line;
  auto first = parse_math2();
  if (!is_op("~")) return first;
  auto concat = make(ExprKind::concat, line);
  concat->args.push_back(std::move(first));
  while (skip_op("~")) concat->args.push_back(parse_math2());
  return concat;
}

ExprPtr Parser::parse_math2() {
  const int line = current().line;
  auto left = parse_pow();
  while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
    const std::string op = next().text;
    left = make_binary(ExprKind::binary, op, std::move(left), parse_pow(), line);
  }
  return left;
}

ExprPtr Parser::parse_pow() {
  const int line = current().line;
  auto left = parse_unary(true);
  while (skip_op("**")) left = make_binary(ExprKind::binary, "**", std::move(left), parse_unary(true), line);
  return left;
}

ExprPtr Parser::parse_unary(bool with_filter) {
  const int line = current().line;
  ExprPtr node;
  if (is_op("-") || is_op("+")) {
    const bool minus = next().text == "-";
    node = make(minus ? ExprKind::negate : ExprKind::positive, line);
    node->args.push_back(parse_unary(false));
  } else {
    node = parse_primary();
  }
  node = parse_postfix(std::move(node));
  return with_filter ? parse_filter_expr(std::move(node)) : std::move(node);
}

ExprPtr Parser::parse_primary() {
  const Token& t = current();
  const int line = t.line;
  if (t.type == TokenType::name) {
    auto e = make(ExprKind::constant, line);
    if (t.text == "true" || t.text == "True" || t.text == "false" || t.text == "False") {
      e->value = Value(t.text == "true" || t.text == "True");
    } else if (t.text == "none" || t.text == "None") {
      e->value = Value(nullptr);
    } else {
      e->kind = ExprKind::name;
      e->name = t.text;
    }
    next();
    return e;
  }
  if (t.type == TokenType::string) {
    std::string text;
    while (current().type == TokenType::string) text += next().text;  // adjacent literals concatenate
    auto e = make(ExprKind::constant, line);
    e->value = Value(std::move(text));
    return e;
  }
  if (t.type == TokenType::integer || t.type == TokenType::floating) {
    auto e = make(ExprKind::constant, line);
    e->value = t.type == TokenType::integer ? Value(t.integer) : Value(t.floating);
    next();
    return e;
  }
  if (skip_op("(")) {
    auto e = parse_tuple(true, {}, true);
    expect_op(")");
    return e;
  }
  if (is_op("[")) return parse_list();
  if (is_op("{")) return parse_dict();
  fail_here("unexpected " + describe(t));
}

ExprPtr Parser::parse_list() {
  auto list = make(ExprKind::list, next().line);
  while (!is_op("]")) {
    if (!list->args.empty()) expect_op(",");
    if (is_op("]")) break;
    list->args.push_back(parse_expression());
  }
  expect_op("]");
  return list;
}

ExprPtr Parser::parse_dict() {
  auto dict = make(ExprKind::dict, next().line);
  while (!is_op("}")) {
    if (!dict->args.empty()) expect_op(",");
    if (is_op("}")) break;
    dict->args.push_back(parse_expression());
    expect_op(":");
    dict->args.push_back(parse_expression());
  }
  expect_op("}");
  return dict;
}

ExprPtr Parser::parse_postfix(ExprPtr node) {
  while (true) {
    if (is_op(".") || is_op("[")) {
      node = parse_subscript(std::move(node));
    } else if (is_op("(")) {
      node = parse_call(std::move(node));
    } else {
      return node;
    }
  }
}

ExprPtr Parser::parse_filter_expr(ExprPtr node) {
  while (true) {
    if (is_op("|")) {
      node = parse_filter(std::move(node), false);
    } else if (is_name("is")) {
      node = parse_test(std::move(node));
    } else if (is_op("(")) {
      node = parse_call(std::move(node));
    } else {
      return node;
    }
  }
}

ExprPtr Parser::parse_subscript(ExprPtr node) {
  const Token token = next();
  if (token.text == ".") {
    const Token attr = next();
    if (attr.type == TokenType::name) {
      auto e = make(ExprKind::getattr, token.line);
      e->target = std::move(node);
      e->name = attr.text;
      return e;
    }
    if (attr.type != TokenType::integer) fail("expected name or number", attr.line);
    auto e = make(ExprKind::getitem, token.line);
    e->target = std::move(node);
    auto index = make(ExprKind::constant, attr.line);
    index->value = Value(attr.integer);
    e->args.push_back(std::move(index));
    return e;
  }
  std::vector<ExprPtr> subscripts;
  while (!is_op("]")) {
    if (!subscripts.empty()) expect_op(",");
    subscripts.push_back(parse_subscribed());
  }
  expect_op("]");
  auto e = make(ExprKind::getitem, token.line);
  e->target = std::move(node);
  if (subscripts.size() == 1) {
    e->args.push_back(std::move(subscripts[0]));
  } else {
    auto tuple = make(ExprKind::tuple, token.line);
    tuple->args = std::move(subscripts);
    e->args.push_back(std::move(tuple));
  }
  return e;
}

ExprPtr Parser::parse_subscribed() {
  const int line = current().line;
  auto slice = make(ExprKind::slice, line);
  if (skip_op(":")) {
    slice->args.push_back(nullptr);
  } else {
    auto node = parse_expression();
    if (!skip_op(":")) return node;
    slice->args.push_back(std::move(node));
  }
  const auto at_end = [&] { return is_op("]") || is_op(","); };
  if (is_op(":") || at_end()) {
    slice->args.push_back(nullptr);
  } else {
    slice->args.push_back(parse_expression());
  }
  if (skip_op(":") && !at_end()) {
    slice->args.push_back(parse_expression());
  } else {
    slice->args.push_back(nullptr);
  }
  return slice;
}

void Parser::parse_call_args(Expr& call) {
  const int line = current().line;
  expect_op("(");
  bool require_comma = false;
  while (!is_op(")")) {
    if (require_comma) {
      expect_op(",");
      if (is_op(")")) break;
    }
    if (is_op("*") || is_op("**")) fail("unsupported: *args and **kwargs in a call", line);
    if (current().type == TokenType::name && look().type == TokenType::op && look().text == "=") {
      const std::string key = next().text;
      next();
      call.kwargs.emplace_back(key, parse_expression());
    } else {
      if (!call.kwargs.empty()) fail("invalid syntax for function call expression", line);
      call.args.push_back(parse_expression());
    }
    require_comma = true;
  }
  expect_op(")");
}

ExprPtr Parser::parse_call(ExprPtr callee) {
  auto call = make(ExprKind::call, current().line);
  call->target = std::move(callee);
  parse_call_args(*call);
  check_call_target(*call);
  if (call->target->kind == ExprKind::name) called_names_.emplace_back(call->target->name, call->line);
  return call;
}

std::string Parser::parse_dotted_name() {
  std::string name = expect_name().text;
  while (skip_op(".")) name += "." + expect_name().text;
  return name;
}

ExprPtr Parser::parse_filter(ExprPtr node, bool start_inline) {
  while (is_op("|") || start_inline) {
    if (!start_inline) next();
    const int line = current().line;
    auto filter = make(ExprKind::filter, line);
    filter->name = parse_dotted_name();
    if (!is_supported_filter(filter->name)) fail("unsupported filter '" + filter->name + "'", line);
    if (is_op("(")) parse_call_args(*filter);
    check_filter_arguments(*filter);
    filter->target = std::move(node);
    node = std::move(filter);
    start_inline = false;
  }
  return node;
}

ExprPtr Parser::parse_test(ExprPtr node) {
  const int line = next().line;  // "is"
  const bool negated = skip_name("not");
  auto test = make(ExprKind::test, line);
  test->name = parse_dotted_name();
  if (!is_supported_test(test->name)) fail("unsupported test '" + test->name + "'", line);
  const auto& t = current();
  const bool argument_follows =
      (t.type == TokenType::name || t.type == TokenType::string || t.type == TokenType::integer ||
       t.type == TokenType::floating || (t.type == TokenType::op && (t.text == "[" || t.text == "{"))) &&
      !(t.type == TokenType::name && (t.text == "else" || t.text == "or" || t.text == "and"));
  if (is_op("(")) {
    parse_call_args(*test);
  } else if (argument_follows) {
    if (is_name("is")) fail_here("you cannot chain multiple tests with is");
    test->args.push_back(parse_postfix(parse_primary()));
  }
  test->target = std::move(node);
  if (!negated) return test;
  auto negation = make(ExprKind::logical_not, line);
  negation->args.push_back(std::move(test));
  return negation;
}

void Parser::check_call_target(const Expr& call) const {
  const Expr& callee = *call.target;
  if (callee.kind == ExprKind::getattr && !is_supported_method(callee.name))
    fail("unsupported method '" + callee.name + "'", call.line);
}

// map/select/reject/selectattr/rejectattr name a filter or test in a string argument: check it now.
void Parser::check_filter_arguments(const Expr& filter) const {
  const auto constant_string = [&](size_t i) -> const std::string* {
    if (i >= filter.args.size() || filter.args[i]->kind != ExprKind::constant || !filter.args[i]->value.is_string())
      return nullptr;
    return &filter.args[i]->value.as_string();
  };
  const std::string& f = filter.name;
  const std::string* test_name = (f == "select" || f == "reject")           ? constant_string(0)
                                 : (f == "selectattr" || f == "rejectattr") ? constant_string(1)
                                                                            : nullptr;
  if (test_name && !is_supported_test(*test_name)) fail("unsupported test '" + *test_name + "'", filter.line);
  if (f == "map" && filter.kwargs.empty()) {
    const std::string* name = constant_string(0);
    if (name && !is_supported_filter(*name)) fail("unsupported filter '" + *name + "'", filter.line);
  }
}

}  // namespace qkd::chat
