#include "runtime.h"

#include "qkd/chat/python_text.h"
#include "template_error.h"

namespace qkd::chat {

const Value BoundArgs::missing_;

BoundArgs::BoundArgs(const CallArgs& args, const std::string& function, std::initializer_list<const char*> params)
    : bound_(params.size(), nullptr) {
  if (args.positional.size() > params.size()) {
    render_fail(function + "() takes at most " + std::to_string(params.size()) + " argument" +
                (params.size() == 1 ? "" : "s") + " (" + std::to_string(args.positional.size()) + " given)");
  }
  for (size_t i = 0; i < args.positional.size(); ++i) bound_[i] = &args.positional[i];
  for (const auto& [key, value] : args.keywords) {
    size_t i = 0;
    for (const char* param : params) {
      if (key == param) break;
      ++i;
    }
    if (i == params.size()) render_fail(function + "() got an unexpected keyword argument " + python_string_repr(key));
    if (bound_[i]) render_fail(function + "() got multiple values for argument " + python_string_repr(key));
    bound_[i] = &value;
  }
}

void expect_no_arguments(const CallArgs& args, const std::string& function) {
  if (!args.positional.empty() || !args.keywords.empty()) render_fail(function + "() takes no arguments");
}

const Value& BoundArgs::get(size_t i) const { return bound_[i] ? *bound_[i] : missing_; }

const Value* Scope::find(const std::string& name) const {
  for (const Scope* scope = this; scope; scope = scope->parent_.get()) {
    for (const auto& [key, value] : scope->vars_)
      if (key == name) return &value;
  }
  return nullptr;
}

void Scope::set(const std::string& name, Value value) {
  for (auto& [key, existing] : vars_) {
    if (key == name) {
      existing = std::move(value);
      return;
    }
  }
  vars_.emplace_back(name, std::move(value));
}

Value Interpreter::lookup(const std::string& name, const Scope& scope) const {
  if (const Value* v = scope.find(name)) return *v;
  if (const Value* v = variables_.find(name)) return *v;
  return global_function(name);
}

std::tm Interpreter::now() const {
  if (now_) return now_();
  const std::time_t t = std::time(nullptr);
  std::tm local{};
  localtime_r(&t, &local);
  return local;
}

std::string Interpreter::run(const Body& body) {
  std::string out;
  try {
    exec(body, std::make_shared<Scope>(), out);
  } catch (const RenderError& e) {
    fail_at_line(where_, line_, e.what());
  }
  return out;
}

}  // namespace qkd::chat
