#pragma once
// The renderer's moving parts: call arguments, variable scopes and the interpreter that walks the
// parsed template. Scoping follows jinja2: `if` shares its scope, each for-loop iteration starts a
// fresh scope over the enclosing one (so a `set` inside a loop is gone in the next iteration and after
// the loop), macros see the scope they were defined in, and only namespace() attributes carry changes
// out of a loop.
#include <cstdint>
#include <ctime>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ast.h"
#include "qkd/chat/value.h"

namespace qkd::chat {

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keywords;
};

// A built-in's arguments bound to its parameter names as Python binds them; fails like Python for an
// extra positional argument, an unknown keyword or a parameter given twice.
class BoundArgs {
 public:
  BoundArgs(const CallArgs& args, const std::string& function, std::initializer_list<const char*> params);
  bool has(size_t i) const { return bound_[i] != nullptr; }
  const Value& get(size_t i) const;  // undefined when not given
  Value value_or(size_t i, Value fallback) const { return has(i) ? *bound_[i] : std::move(fallback); }

 private:
  std::vector<const Value*> bound_;
  static const Value missing_;
};

// Fails like Python when a built-in that takes no arguments is given some.
void expect_no_arguments(const CallArgs& args, const std::string& function);

class Scope {
 public:
  explicit Scope(std::shared_ptr<const Scope> parent = nullptr) : parent_(std::move(parent)) {}
  const Value* find(const std::string& name) const;
  void set(const std::string& name, Value value);
  void clear() { vars_.clear(); }

 private:
  std::vector<std::pair<std::string, Value>> vars_;  // few names per scope: a flat list is fastest
  std::shared_ptr<const Scope> parent_;
};

enum class Flow { normal, break_loop, continue_loop };

class Interpreter {
 public:
  Interpreter(const std::string& where, const Dict& variables, std::function<std::tm()> now)
      : where_(where), variables_(variables), now_(std::move(now)) {}

  // Renders the template; a failure becomes qkd::Error "<where> line N: <message>".
  std::string run(const Body& body);

  // evaluate.cpp
  Value eval(const Expr& expr, const std::shared_ptr<Scope>& scope);
  Value call(const Value& callee, CallArgs& args);
  // execute.cpp
  Flow exec(const Body& body, const std::shared_ptr<Scope>& scope, std::string& out);
  // filters.cpp / value_tests.cpp
  Value apply_filter(const std::string& name, const Value& input, CallArgs& args);
  bool apply_test(const std::string& name, const Value& input, CallArgs& args);
  // globals.cpp: range, dict, namespace, raise_exception, strftime_now (undefined for other names).
  Value global_function(const std::string& name) const;
  std::tm now() const;

 private:
  Value lookup(const std::string& name, const Scope& scope) const;
  CallArgs eval_args(const Expr& call, const std::shared_ptr<Scope>& scope);
  Value eval_compare(const Expr& expr, const std::shared_ptr<Scope>& scope);
  Value eval_call(const Expr& expr, const std::shared_ptr<Scope>& scope);
  Value eval_subscript(const Expr& expr, const std::shared_ptr<Scope>& scope);
  Value eval_filter(const Expr& expr, const Value& input, const std::shared_ptr<Scope>& scope);

  Flow exec_for(const Stmt& stmt, const std::shared_ptr<Scope>& scope, std::string& out);
  void exec_if(const Stmt& stmt, const std::shared_ptr<Scope>& scope, std::string& out, Flow& flow);
  void assign(const AssignTarget& target, Value value, Scope& scope);
  // A macro (or, with caller_body, a call block's `caller`) as a callable closing over `scope`.
  Value make_macro(const Stmt& stmt, const std::shared_ptr<Scope>& scope, const Body* caller_body);
  // `{% set x | f | g %}...` and `{% filter f | g %}...`: the chain applied to the rendered body.
  Value apply_filter_chain(const Expr& chain, const Value& input, const std::shared_ptr<Scope>& scope);
  std::string render_block(const Body& body, const std::shared_ptr<Scope>& scope);

  const std::string& where_;
  const Dict& variables_;
  std::function<std::tm()> now_;
  std::vector<std::shared_ptr<Scope>> closed_scopes_;  // scopes macros close over (see make_macro)
  int line_ = 1;                                       // line of the node being evaluated, for error messages
  int depth_ = 0;                                      // macro call depth (recursion guard)
  int64_t statements_ = 0;                             // executed so far (work guard, see exec)
};

}  // namespace qkd::chat
