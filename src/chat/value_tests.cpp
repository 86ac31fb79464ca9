// jinja2's tests (`x is defined`, `x is string`, `x is equalto y`, ...), with Python's type rules:
// a bool is a number, undefined is iterable and a sequence, a dict is a sequence and a mapping.
#include <functional>
#include <map>

#include "builtins.h"
#include "operators.h"
#include "qkd/chat/python_text.h"
#include "runtime.h"
#include "template_error.h"

namespace qkd::chat {

namespace {

using TestFunction = std::function<bool(const Value&, const CallArgs&)>;

const Value& argument(const CallArgs& args, const std::string& test) {
  if (args.positional.empty() && args.keywords.empty()) render_fail(test + "() missing 1 required positional argument");
  return args.positional.empty() ? args.keywords.front().second : args.positional.front();
}

int64_t integer_of(const Value& v, const std::string& test) {
  if (v.is_undefined()) fail_undefined(v);
  if (v.kind() == Kind::integer) return v.as_int();
  if (v.kind() == Kind::boolean) return v.as_bool();
  render_fail("the '" + test + "' test needs an integer, got " + type_name(v));
}

bool is_iterable(const Value& v) { return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict(); }

bool is_sequence(const Value& v) {
  if (v.is_undefined() || v.is_string() || v.is_dict()) return true;
  if (!v.is_list()) return false;
  const ListKind kind = v.as_list().kind;
  return kind == ListKind::list || kind == ListKind::tuple || kind == ListKind::range;
}

bool same_object(const Value& a, const Value& b) {
  if (a.kind() != b.kind()) return false;
  if (a.identity() || b.identity()) return a.identity() == b.identity();
  return equal(a, b);
}

bool cased_all(const Value& v, bool upper) {
  const std::string text = to_str(v);
  bool cased = false;
  for (size_t pos = 0; pos < text.size();) {
    const char32_t c = decode_utf8(text, pos);
    if (upper ? is_cased_lower(c) : is_cased_upper(c)) return false;
    cased = cased || is_cased_lower(c) || is_cased_upper(c);
  }
  return cased;
}

const std::map<std::string, TestFunction>& tests() {
  static const std::map<std::string, TestFunction> table = [] {
    std::map<std::string, TestFunction> t;
    t["defined"] = [](const Value& v, const CallArgs&) { return !v.is_undefined(); };
    t["undefined"] = [](const Value& v, const CallArgs&) { return v.is_undefined(); };
    t["none"] = [](const Value& v, const CallArgs&) { return v.is_none(); };
    t["boolean"] = [](const Value& v, const CallArgs&) { return v.kind() == Kind::boolean; };
    t["true"] = [](const Value& v, const CallArgs&) { return v.kind() == Kind::boolean && v.as_bool(); };
    t["false"] = [](const Value& v, const CallArgs&) { return v.kind() == Kind::boolean && !v.as_bool(); };
    t["integer"] = [](const Value& v, const CallArgs&) { return v.kind() == Kind::integer; };
    t["float"] = [](const Value& v, const CallArgs&) { return v.kind() == Kind::floating; };
    t["number"] = [](const Value& v, const CallArgs&) { return v.is_number(); };
    t["string"] = [](const Value& v, const CallArgs&) { return v.is_string(); };
    t["mapping"] = [](const Value& v, const CallArgs&) { return v.is_dict(); };
    t["iterable"] = [](const Value& v, const CallArgs&) { return is_iterable(v); };
    t["sequence"] = [](const Value& v, const CallArgs&) { return is_sequence(v); };
    t["callable"] = [](const Value& v, const CallArgs&) { return v.kind() == Kind::function; };
    t["escaped"] = [](const Value& v, const CallArgs&) { return v.is_markup(); };
    t["sameas"] = [](const Value& v, const CallArgs& a) { return same_object(v, argument(a, "sameas")); };
    const TestFunction eq = [](const Value& v, const CallArgs& a) { return equal(v, argument(a, "eq")); };
    const TestFunction ne = [](const Value& v, const CallArgs& a) { return !equal(v, argument(a, "ne")); };
    const TestFunction lt = [](const Value& v, const CallArgs& a) { return less_than(v, argument(a, "lt")); };
    const TestFunction gt = [](const Value& v, const CallArgs& a) { return less_than(argument(a, "gt"), v); };
    const TestFunction le = [](const Value& v, const CallArgs& a) {
      return compare_values("<=", v, argument(a, "le"));
    };
    const TestFunction ge = [](const Value& v, const CallArgs& a) {
      return compare_values(">=", v, argument(a, "ge"));
    };
    for (const char* name : {"eq", "equalto", "=="}) t[name] = eq;
    t["ne"] = t["!="] = ne;
    for (const char* name : {"lt", "lessthan", "<"}) t[name] = lt;
    for (const char* name : {"gt", "greaterthan", ">"}) t[name] = gt;
    t["le"] = t["<="] = le;
    t["ge"] = t[">="] = ge;
    t["in"] = [](const Value& v, const CallArgs& a) { return contains(argument(a, "in"), v); };
    t["odd"] = [](const Value& v, const CallArgs&) { return integer_of(v, "odd") % 2 != 0; };
    t["even"] = [](const Value& v, const CallArgs&) { return integer_of(v, "even") % 2 == 0; };
    t["divisibleby"] = [](const Value& v, const CallArgs& a) {
      const int64_t divisor = integer_of(argument(a, "divisibleby"), "divisibleby");
      if (divisor == 0) render_fail("integer division or modulo by zero");
      return integer_of(v, "divisibleby") % divisor == 0;
    };
    t["lower"] = [](const Value& v, const CallArgs&) { return cased_all(v, false); };
    t["upper"] = [](const Value& v, const CallArgs&) { return cased_all(v, true); };
    t["filter"] = [](const Value& v, const CallArgs&) { return v.is_string() && is_supported_filter(v.as_string()); };
    t["test"] = [](const Value& v, const CallArgs&) { return v.is_string() && is_supported_test(v.as_string()); };
    return t;
  }();
  return table;
}

}  // namespace

bool is_supported_test(const std::string& name) { return tests().count(name) > 0; }

bool Interpreter::apply_test(const std::string& name, const Value& input, CallArgs& args) {
  const auto it = tests().find(name);
  if (it == tests().end()) render_fail("no test named " + python_string_repr(name));
  return it->second(input, args);
}

}  // namespace qkd::chat
