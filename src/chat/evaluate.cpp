// Expression evaluation. `and`/`or` return an operand as Python does, comparisons chain like Python's,
// `a if c` without else is undefined when c is false, and `~` joins str() of both sides.
#include "attributes.h"
#include "operators.h"
#include "runtime.h"
#include "template_error.h"

namespace qkd::chat {

CallArgs Interpreter::eval_args(const Expr& call, const std::shared_ptr<Scope>& scope) {
  CallArgs args;
  args.positional.reserve(call.args.size());
  for (const auto& arg : call.args) args.positional.push_back(eval(*arg, scope));
  for (const auto& [key, arg] : call.kwargs) args.keywords.emplace_back(key, eval(*arg, scope));
  return args;
}

Value Interpreter::call(const Value& callee, CallArgs& args) {
  if (callee.is_undefined()) fail_undefined(callee);
  if (callee.kind() != Kind::function) render_fail("'" + type_name(callee) + "' object is not callable");
  return callee.as_function().call(args);
}

Value Interpreter::eval_call(const Expr& expr, const std::shared_ptr<Scope>& scope) {
  const Value callee = eval(*expr.target, scope);
  CallArgs args = eval_args(expr, scope);
  line_ = expr.line;
  return call(callee, args);
}

Value Interpreter::eval_subscript(const Expr& expr, const std::shared_ptr<Scope>& scope) {
  const Value object = eval(*expr.target, scope);
  const Expr& key = *expr.args[0];
  if (key.kind == ExprKind::slice) {
    const auto bound = [&](size_t i) { return key.args[i] ? eval(*key.args[i], scope) : Value(nullptr); };
    const Value start = bound(0), stop = bound(1), step = bound(2);
    line_ = expr.line;
    return get_slice(object, start, stop, step);
  }
  const Value index = eval(key, scope);
  line_ = expr.line;
  return get_item(object, index);
}

Value Interpreter::eval_filter(const Expr& expr, const Value& input, const std::shared_ptr<Scope>& scope) {
  CallArgs args = eval_args(expr, scope);
  line_ = expr.line;
  return apply_filter(expr.name, input, args);
}

Value Interpreter::eval_compare(const Expr& expr, const std::shared_ptr<Scope>& scope) {
  Value left = eval(*expr.args[0], scope);
  for (size_t i = 0; i < expr.ops.size(); ++i) {
    Value right = eval(*expr.args[i + 1], scope);
    line_ = expr.line;
    if (!compare_values(expr.ops[i], left, right)) return false;
    left = std::move(right);
  }
  return true;
}

Value Interpreter::eval(const Expr& expr, const std::shared_ptr<Scope>& scope) {
  line_ = expr.line;
  switch (expr.kind) {
    case ExprKind::constant: return expr.value;
    case ExprKind::name: return lookup(expr.name, *scope);
    case ExprKind::list:
    case ExprKind::tuple: {
      std::vector<Value> items;
      items.reserve(expr.args.size());
      for (const auto& arg : expr.args) items.push_back(eval(*arg, scope));
      return Value::list(std::move(items), expr.kind == ExprKind::tuple ? ListKind::tuple : ListKind::list);
    }
    case ExprKind::dict: {
      Dict dict;
      for (size_t i = 0; i + 1 < expr.args.size(); i += 2) {
        Value key = eval(*expr.args[i], scope);
        if (!key.is_string()) render_fail("unsupported: dict keys other than strings (got " + type_name(key) + ")");
        dict.set(key.as_string(), eval(*expr.args[i + 1], scope));
      }
      return Value::dict(std::move(dict));
    }
    case ExprKind::getattr: {
      const Value object = eval(*expr.target, scope);
      line_ = expr.line;
      return get_attribute(object, expr.name);
    }
    case ExprKind::getitem: return eval_subscript(expr, scope);
    case ExprKind::slice: render_fail("a slice is only valid inside []");
    case ExprKind::call: return eval_call(expr, scope);
    case ExprKind::filter: return eval_filter(expr, eval(*expr.target, scope), scope);
    case ExprKind::test: {
      const Value input = eval(*expr.target, scope);
      CallArgs args = eval_args(expr, scope);
      line_ = expr.line;
      return apply_test(expr.name, input, args);
    }
    case ExprKind::logical_not: return !truthy(eval(*expr.args[0], scope));
    case ExprKind::negate: return unary_minus(eval(*expr.args[0], scope));
    case ExprKind::positive: return unary_plus(eval(*expr.args[0], scope));
    case ExprKind::binary: {
      const Value left = eval(*expr.args[0], scope);
      const Value right = eval(*expr.args[1], scope);
      line_ = expr.line;
      return binary_operation(expr.name, left, right);
    }
    case ExprKind::compare: return eval_compare(expr, scope);
    case ExprKind::logical_and: {
      Value left = eval(*expr.args[0], scope);
      return truthy(left) ? eval(*expr.args[1], scope) : left;
    }
    case ExprKind::logical_or: {
      Value left = eval(*expr.args[0], scope);
      return truthy(left) ? left : eval(*expr.args[1], scope);
    }
    case ExprKind::concat: {
      std::string out;
      for (const auto& arg : expr.args) out += to_str(eval(*arg, scope));
      return out;
    }
    case ExprKind::conditional: {
      if (truthy(eval(*expr.args[1], scope))) return eval(*expr.args[0], scope);
      if (expr.args[2]) return eval(*expr.args[2], scope);
      return Value::undefined("the inline if-expression on line " + std::to_string(expr.line) +
                              " evaluated to false and no else section was defined.");
    }
  }
  return Value();
}

}  // namespace qkd::chat
