#pragma once
// The parsed template: jinja2's node types, reduced to what chat templates use. Every node keeps the
// line it came from so that a failure while rendering can name it.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "qkd/chat/value.h"

namespace qkd::chat {

enum class ExprKind {
  constant,     // value
  name,         // name
  list,         // args
  tuple,        // args
  dict,         // args: key, value, key, value, ...
  getattr,      // target.name
  getitem,      // target[args[0]]
  slice,        // args: start, stop, step (each may be null), inside a getitem
  call,         // target(args, kwargs)
  filter,       // target | name(args, kwargs); target is null in a filter block
  test,         // target is name(args)
  logical_not,  // args[0]
  negate,       // -args[0]
  positive,     // +args[0]
  binary,       // args[0] <name> args[1] with name one of + - * / // % **
  compare,      // args[0] ops[0] args[1] ops[1] args[2] ... (chained like Python)
  logical_and,  // args[0] and args[1]
  logical_or,   // args[0] or args[1]
  concat,       // args joined with ~
  conditional,  // args[0] if args[1] else args[2] (args[2] null: undefined when false)
};

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  ExprKind kind = ExprKind::constant;
  int line = 1;
  Value value;
  std::string name;
  ExprPtr target;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;
};

// Where `set` and `for` store: a name, a tuple of names (unpacking) or `namespace.attribute`.
struct AssignTarget {
  enum class Kind { name, tuple, namespace_attribute } kind = Kind::name;
  std::vector<std::string> names;  // one for name and namespace_attribute, several for tuple
  std::string attribute;
};

enum class StmtKind {
  text,          // text
  output,        // {{ expr }}
  for_loop,      // for target in expr [if condition]: body, else_body
  if_chain,      // branches (condition, body); else_body
  assign,        // set target = expr
  assign_block,  // set target [| filter]: body ... endset (filter in expr, may be null)
  macro,         // macro name(params = defaults): body
  call_block,    // call[(params)] expr: body ... endcall (`caller()` renders body)
  filter_block,  // filter expr: body ... endfilter
  with_block,    // with targets = values: body
  loop_break,
  loop_continue,
  generation,  // transformers' {% generation %} body {% endgeneration %}: renders its body
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct MacroParam {
  std::string name;
  ExprPtr default_value;  // null: required
};

struct Stmt {
  StmtKind kind = StmtKind::text;
  int line = 1;
  std::string text;  // text output; macro name
  ExprPtr expr;
  ExprPtr condition;
  AssignTarget target;
  Body body;
  Body else_body;
  std::vector<std::pair<ExprPtr, Body>> branches;
  std::vector<MacroParam> params;
  std::vector<std::pair<AssignTarget, ExprPtr>> assignments;  // with_block
};

}  // namespace qkd::chat
