// Statement execution: output, for/if/set, macros and call blocks, break/continue.
#include "operators.h"
#include "runtime.h"
#include "template_error.h"

namespace qkd::chat {

namespace {

constexpr int kMaxMacroDepth = 100;

// Remembers the arguments of the previous loop.changed() call across iterations.
struct ChangedState {
  bool called = false;
  std::vector<Value> last;
};

Value make_loop_object(size_t index, const std::vector<Value>& items, const std::shared_ptr<ChangedState>& changed) {
  const auto n = static_cast<int64_t>(items.size());
  const auto i = static_cast<int64_t>(index);
  Dict loop;
  loop.entries.reserve(13);
  loop.entries.emplace_back("index", i + 1);
  loop.entries.emplace_back("index0", i);
  loop.entries.emplace_back("revindex", n - i);
  loop.entries.emplace_back("revindex0", n - i - 1);
  loop.entries.emplace_back("first", i == 0);
  loop.entries.emplace_back("last", i == n - 1);
  loop.entries.emplace_back("length", n);
  loop.entries.emplace_back("depth", int64_t{1});
  loop.entries.emplace_back("depth0", int64_t{0});
  loop.entries.emplace_back("previtem", i > 0 ? items[index - 1] : Value::undefined("there is no previous item"));
  loop.entries.emplace_back("nextitem", i + 1 < n ? items[index + 1] : Value::undefined("there is no next item"));
  loop.entries.emplace_back("cycle", Value::function("cycle", [i](CallArgs& args) {
                              if (args.positional.empty()) render_fail("no items for cycling given");
                              return args.positional[static_cast<size_t>(i) % args.positional.size()];
                            }));
  loop.entries.emplace_back("changed", Value::function("changed", [changed](CallArgs& args) {
                              bool differs = !changed->called || changed->last.size() != args.positional.size();
                              for (size_t k = 0; !differs && k < args.positional.size(); ++k)
                                differs = !equal(changed->last[k], args.positional[k]);
                              changed->called = true;
                              changed->last = args.positional;
                              return Value(differs);
                            }));
  return Value::dict(std::move(loop));
}

}  // namespace

void Interpreter::assign(const AssignTarget& target, Value value, Scope& scope) {
  switch (target.kind) {
    case AssignTarget::Kind::name: scope.set(target.names[0], std::move(value)); return;
    case AssignTarget::Kind::tuple: {
      const std::vector<Value> items = iterate(value);
      const size_t expected = target.names.size();
      if (items.size() > expected) render_fail("too many values to unpack (expected " + std::to_string(expected) + ")");
      if (items.size() < expected) {
        render_fail("not enough values to unpack (expected " + std::to_string(expected) + ", got " +
                    std::to_string(items.size()) + ")");
      }
      for (size_t i = 0; i < expected; ++i) scope.set(target.names[i], items[i]);
      return;
    }
    case AssignTarget::Kind::namespace_attribute: {
      const Value ns = lookup(target.names[0], scope);
      if (ns.kind() != Kind::namespace_object) render_fail("cannot assign attribute on non-namespace object");
      ns.as_namespace().attributes.set(target.attribute, std::move(value));
      return;
    }
  }
}

std::string Interpreter::render_block(const Body& body, const std::shared_ptr<Scope>& scope) {
  std::string out;
  exec(body, scope, out);
  return out;
}

Value Interpreter::make_macro(const Stmt& stmt, const std::shared_ptr<Scope>& scope, const Body* caller_body) {
  const Body& body = caller_body ? *caller_body : stmt.body;
  const std::string name = caller_body ? "caller" : stmt.text;
  // A macro is stored in the scope it closes over: holding that scope strongly would be a reference
  // cycle. The interpreter keeps it alive instead, until the render ends.
  closed_scopes_.push_back(scope);
  const std::weak_ptr<Scope> closure = scope;
  return Value::function(name, [this, &stmt, &body, name, closure](CallArgs& args) {
    if (++depth_ > kMaxMacroDepth) render_fail("macro '" + name + "' calls itself too deeply");
    auto local = std::make_shared<Scope>(closure.lock());
    if (args.positional.size() > stmt.params.size()) {
      render_fail("macro '" + name + "' takes not more than " + std::to_string(stmt.params.size()) + " argument(s)");
    }
    std::vector<const Value*> given(stmt.params.size(), nullptr);
    for (size_t i = 0; i < args.positional.size(); ++i) given[i] = &args.positional[i];
    for (const auto& [key, value] : args.keywords) {
      size_t i = 0;
      while (i < stmt.params.size() && stmt.params[i].name != key) ++i;
      if (i < stmt.params.size()) {
        given[i] = &value;
      } else if (key == "caller") {
        local->set("caller", value);
      } else {
        render_fail("macro '" + name + "' takes no keyword argument '" + key + "'");
      }
    }
    for (size_t i = 0; i < stmt.params.size(); ++i) {
      const MacroParam& param = stmt.params[i];
      if (given[i]) {
        local->set(param.name, *given[i]);
      } else if (param.default_value) {
        local->set(param.name, eval(*param.default_value, local));
      } else {
        local->set(param.name, Value::undefined("parameter '" + param.name + "' was not provided"));
      }
    }
    const int saved_line = line_;
    std::string out;
    exec(body, local, out);
    line_ = saved_line;
    --depth_;
    return Value(std::move(out));
  });
}

Flow Interpreter::exec_for(const Stmt& stmt, const std::shared_ptr<Scope>& scope, std::string& out) {
  std::vector<Value> items = iterate(eval(*stmt.expr, scope));
  auto inner = std::make_shared<Scope>(scope);
  if (stmt.condition) {
    std::vector<Value> kept;
    for (auto& item : items) {
      inner->clear();
      assign(stmt.target, item, *inner);
      if (truthy(eval(*stmt.condition, inner))) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  if (items.empty()) return exec(stmt.else_body, scope, out);
  auto changed = std::make_shared<ChangedState>();
  for (size_t i = 0; i < items.size(); ++i) {
    inner->clear();  // each iteration starts fresh: a `set` in the body does not survive it (jinja2)
    assign(stmt.target, items[i], *inner);
    inner->set("loop", make_loop_object(i, items, changed));
    if (exec(stmt.body, inner, out) == Flow::break_loop) break;
  }
  return Flow::normal;
}

void Interpreter::exec_if(const Stmt& stmt, const std::shared_ptr<Scope>& scope, std::string& out, Flow& flow) {
  for (const auto& [condition, body] : stmt.branches) {
    line_ = condition->line;
    if (truthy(eval(*condition, scope))) {
      flow = exec(body, scope, out);
      return;
    }
  }
  flow = exec(stmt.else_body, scope, out);
}

// A chat template renders one conversation: the real ones execute a few dozen statements per message
// and write a few bytes per token. Beyond these, a template is looping without bound (nested
// range(99999) loops), and is stopped naming its line instead of running for hours or filling memory.
constexpr int64_t kMaxStatements = 2'000'000;

Flow Interpreter::exec(const Body& body, const std::shared_ptr<Scope>& scope, std::string& out) {
  for (const auto& stmt : body) {
    line_ = stmt->line;
    if (++statements_ > kMaxStatements)
      render_fail("the template executed more than " + std::to_string(kMaxStatements) +
                  " statements: an unbounded loop?");
    if (out.size() > kMaxRenderBytes)
      render_fail("the rendering grew past " + std::to_string(kMaxRenderBytes >> 20) + " MiB");
    Flow flow = Flow::normal;
    switch (stmt->kind) {
      case StmtKind::text: out += stmt->text; break;
      case StmtKind::output: out += to_str(eval(*stmt->expr, scope)); break;
      case StmtKind::for_loop: flow = exec_for(*stmt, scope, out); break;
      case StmtKind::if_chain: exec_if(*stmt, scope, out, flow); break;
      case StmtKind::assign: assign(stmt->target, eval(*stmt->expr, scope), *scope); break;
      case StmtKind::assign_block: {
        Value value = render_block(stmt->body, scope);
        if (stmt->expr) value = apply_filter_chain(*stmt->expr, value, scope);
        assign(stmt->target, std::move(value), *scope);
        break;
      }
      case StmtKind::macro: scope->set(stmt->text, make_macro(*stmt, scope, nullptr)); break;
      case StmtKind::call_block: {
        const Expr& call_expr = *stmt->expr;
        const Value callee = eval(*call_expr.target, scope);
        CallArgs args = eval_args(call_expr, scope);
        args.keywords.emplace_back("caller", make_macro(*stmt, scope, &stmt->body));
        line_ = call_expr.line;
        out += to_str(call(callee, args));
        break;
      }
      case StmtKind::filter_block:
        out += to_str(apply_filter_chain(*stmt->expr, Value(render_block(stmt->body, scope)), scope));
        break;
      case StmtKind::with_block: {
        auto inner = std::make_shared<Scope>(scope);
        for (const auto& [target, value] : stmt->assignments) assign(target, eval(*value, scope), *inner);
        flow = exec(stmt->body, inner, out);
        break;
      }
      case StmtKind::loop_break: return Flow::break_loop;
      case StmtKind::loop_continue: return Flow::continue_loop;
      case StmtKind::generation: flow = exec(stmt->body, scope, out); break;
    }
    if (flow != Flow::normal) return flow;
  }
  return Flow::normal;
}

Value Interpreter::apply_filter_chain(const Expr& chain, const Value& input, const std::shared_ptr<Scope>& scope) {
  const Value inner = chain.target ? apply_filter_chain(*chain.target, input, scope) : input;
  return eval_filter(chain, inner, scope);
}

}  // namespace qkd::chat
