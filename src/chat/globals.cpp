// Functions a template can call by name: jinja2's range/dict/namespace, and the two transformers adds,
// raise_exception (fails rendering with the template's message) and strftime_now (the date, through
// an injectable clock so that tests can fix it).
#include <ctime>
#include <set>
#include <vector>

#include "builtins.h"
#include "qkd/chat/python_text.h"
#include "runtime.h"
#include "template_error.h"

namespace qkd::chat {

namespace {

constexpr int64_t kMaxRange = 100000;  // jinja2's sandbox limit (MAX_RANGE)

int64_t integer_argument(const Value& v) {
  if (v.kind() == Kind::integer) return v.as_int();
  if (v.kind() == Kind::boolean) return v.as_bool();
  render_fail("'" + type_name(v) + "' object cannot be interpreted as an integer");
}

Value make_range(CallArgs& args) {
  if (!args.keywords.empty()) render_fail("range() takes no keyword arguments");
  const auto& p = args.positional;
  if (p.empty() || p.size() > 3) render_fail("range expected at most 3 arguments, got " + std::to_string(p.size()));
  const int64_t start = p.size() == 1 ? 0 : integer_argument(p[0]);
  const int64_t stop = integer_argument(p.size() == 1 ? p[0] : p[1]);
  const int64_t step = p.size() == 3 ? integer_argument(p[2]) : 1;
  if (step == 0) render_fail("range() arg 3 must not be zero");
  const int64_t count = step > 0 ? (stop > start ? (stop - start + step - 1) / step : 0)
                                 : (start > stop ? (start - stop - step - 1) / -step : 0);
  if (count > kMaxRange)
    render_fail("Range too big. The sandbox blocks ranges larger than MAX_RANGE (" + std::to_string(kMaxRange) + ").");
  std::vector<Value> items;
  items.reserve(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) items.emplace_back(start + i * step);
  return Value::list(std::move(items), ListKind::range);
}

// dict(mapping, **kwargs), as namespace() also takes it.
Dict make_dict(CallArgs& args, const char* function) {
  if (args.positional.size() > 1)
    render_fail(std::string(function) + " expected at most 1 argument, got " + std::to_string(args.positional.size()));
  Dict dict;
  if (!args.positional.empty()) {
    const Value& source = args.positional[0];
    if (!source.is_dict())
      render_fail(std::string(function) + "() argument must be a mapping here, not " + type_name(source));
    dict = source.as_dict();
  }
  for (auto& [key, value] : args.keywords) dict.set(key, value);
  return dict;
}

std::string format_time(const std::string& format, const std::tm& time) {
  if (format.empty()) return "";
  std::vector<char> buffer(256);
  while (true) {
    const size_t n = std::strftime(buffer.data(), buffer.size(), format.c_str(), &time);
    if (n > 0 || buffer.size() > 65536) return std::string(buffer.data(), n);
    buffer.resize(buffer.size() * 4);
  }
}

}  // namespace

bool is_global_function(const std::string& name) {
  static const std::set<std::string> names = {"range", "dict", "namespace", "raise_exception", "strftime_now"};
  return names.count(name) > 0;
}

Value Interpreter::global_function(const std::string& name) const {
  if (name == "range") return Value::function(name, make_range);
  if (name == "dict") return Value::function(name, [](CallArgs& args) { return Value::dict(make_dict(args, "dict")); });
  if (name == "namespace") {
    return Value::function(name, [](CallArgs& args) { return Value::namespace_object(make_dict(args, "namespace")); });
  }
  if (name == "raise_exception") {
    return Value::function(name, [](CallArgs& args) -> Value {
      BoundArgs a(args, "raise_exception", {"message"});
      render_fail(to_str(a.get(0)));
    });
  }
  if (name == "strftime_now") {
    return Value::function(name, [this](CallArgs& args) {
      BoundArgs a(args, "strftime_now", {"format"});
      if (!a.get(0).is_string()) render_fail("strftime() argument 1 must be str, not " + type_name(a.get(0)));
      return Value(format_time(a.get(0).as_string(), now()));
    });
  }
  return Value::undefined(python_string_repr(name) + " is undefined");
}

}  // namespace qkd::chat
