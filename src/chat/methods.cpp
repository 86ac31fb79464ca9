// Python methods of str, dict and list that templates call (`content.strip()`, `message.get('x')`,
// `tool.items()`), with Python's argument rules and results. Methods that would mutate a list or dict
// are absent: transformers' ImmutableSandboxedEnvironment refuses them too.
#include <algorithm>
#include <set>

#include "attributes.h"
#include "builtins.h"
#include "operators.h"
#include "qkd/chat/python_text.h"
#include "runtime.h"
#include "template_error.h"

namespace qkd::chat {

namespace {

std::optional<std::string> optional_string(const Value& v, const char* method) {
  if (v.is_none() || v.is_undefined()) return std::nullopt;
  if (!v.is_string()) render_fail(std::string(method) + " arg must be None or str");
  return v.as_string();
}

int64_t int_argument(const Value& v, int64_t fallback) {
  if (v.is_undefined()) return fallback;
  if (v.kind() == Kind::integer) return v.as_int();
  if (v.kind() == Kind::boolean) return v.as_bool();
  render_fail("'" + type_name(v) + "' object cannot be interpreted as an integer");
}

const std::string& string_argument(const Value& v, const std::string& method) {
  if (!v.is_string()) render_fail(method + "() argument must be str, not " + type_name(v));
  return v.as_string();
}

Value string_list(const std::vector<std::string>& parts) {
  std::vector<Value> items(parts.begin(), parts.end());
  return Value::list(std::move(items));
}

// startswith/endswith take a str or a tuple of str.
bool affix_matches(const std::string& text, const Value& affix, bool at_end, const std::string& method) {
  const auto one = [&](const std::string& a) {
    if (a.size() > text.size()) return false;
    return at_end ? text.compare(text.size() - a.size(), a.size(), a) == 0 : text.compare(0, a.size(), a) == 0;
  };
  if (affix.is_string()) return one(affix.as_string());
  if (affix.is_list() && affix.as_list().kind == ListKind::tuple) {
    for (const auto& item : affix.as_list().items) {
      if (!item.is_string()) render_fail("tuple for " + method + " must only contain str, not " + type_name(item));
      if (one(item.as_string())) return true;
    }
    return false;
  }
  render_fail(method + " first arg must be str or a tuple of str, not " + type_name(affix));
}

template <typename Predicate>
bool all_code_points(const std::string& text, Predicate predicate) {
  if (text.empty()) return false;
  for (size_t pos = 0; pos < text.size();)
    if (!predicate(decode_utf8(text, pos))) return false;
  return true;
}

// str.format with positional ("{}", "{0}") and keyword ("{name}") fields; format specs and
// conversions are not implemented.
std::string python_format(const std::string& pattern, const CallArgs& args) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if ((c == '{' || c == '}') && i + 1 < pattern.size() && pattern[i + 1] == c) {
      out += c;
      ++i;
      continue;
    }
    if (c == '}') render_fail("Single '}' encountered in format string");
    if (c != '{') {
      out += c;
      continue;
    }
    const size_t close = pattern.find('}', i);
    if (close == std::string::npos) render_fail("Single '{' encountered in format string");
    const std::string field = pattern.substr(i + 1, close - i - 1);
    if (field.find_first_of(":!.[") != std::string::npos)
      render_fail("unsupported: format specs and conversions in str.format");
    const Value* value = nullptr;
    if (field.empty() || std::all_of(field.begin(), field.end(), [](char d) { return d >= '0' && d <= '9'; })) {
      const size_t index = field.empty() ? auto_index++ : std::stoul(field);
      if (index >= args.positional.size()) render_fail("Replacement index " + std::to_string(index) + " out of range");
      value = &args.positional[index];
    } else {
      for (const auto& [key, v] : args.keywords)
        if (key == field) value = &v;
      if (!value) render_fail(python_string_repr(field));
    }
    out += to_str(*value);
    i = close;
  }
  return out;
}

Value call_string_method(const std::string& text, const std::string& name, CallArgs& args) {
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    BoundArgs a(args, name, {"chars"});
    return python_strip(text, optional_string(a.get(0), name.c_str()), name != "rstrip", name != "lstrip");
  }
  if (name == "split" || name == "rsplit") {
    BoundArgs a(args, name, {"sep", "maxsplit"});
    const auto separator = optional_string(a.get(0), name.c_str());
    if (separator && separator->empty()) render_fail("empty separator");
    return string_list(python_split(text, separator, int_argument(a.get(1), -1), name == "rsplit"));
  }
  if (name == "splitlines") {
    BoundArgs a(args, name, {"keepends"});
    return string_list(python_splitlines(text, truthy(a.get(0))));
  }
  if (name == "startswith" || name == "endswith") {
    BoundArgs a(args, name, {"prefix"});
    return affix_matches(text, a.get(0), name == "endswith", name);
  }
  const bool no_arguments = args.positional.empty() && args.keywords.empty();
  if (!no_arguments &&
      (name == "upper" || name == "lower" || name == "title" || name == "capitalize" || name.compare(0, 2, "is") == 0))
    render_fail(name + "() takes no arguments");
  if (name == "upper") return python_upper(text);
  if (name == "lower") return python_lower(text);
  if (name == "title") return python_title(text);
  if (name == "capitalize") return python_capitalize(text);
  if (name == "replace") {
    BoundArgs a(args, name, {"old", "new", "count"});
    return python_replace(text, string_argument(a.get(0), name), string_argument(a.get(1), name),
                          int_argument(a.get(2), -1));
  }
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex") {
    BoundArgs a(args, name, {"sub"});
    const int64_t at = python_find(text, string_argument(a.get(0), name), name[0] == 'r');
    if (at < 0 && (name == "index" || name == "rindex")) render_fail("substring not found");
    return at;
  }
  if (name == "count") {
    BoundArgs a(args, name, {"sub"});
    return python_count(text, string_argument(a.get(0), name));
  }
  if (name == "join") {
    BoundArgs a(args, name, {"iterable"});
    std::string out;
    size_t i = 0;
    for (const auto& item : iterate(a.get(0))) {
      if (!item.is_string())
        render_fail("sequence item " + std::to_string(i) + ": expected str instance, " + type_name(item) + " found");
      if (i++) out += text;
      out += item.as_string();
    }
    return out;
  }
  if (name == "isdigit") return all_code_points(text, is_digit);
  if (name == "isalpha") return all_code_points(text, is_alpha);
  if (name == "isalnum") return all_code_points(text, [](char32_t c) { return is_alpha(c) || is_digit(c); });
  if (name == "isspace") return all_code_points(text, is_python_space);
  if (name == "isupper" || name == "islower") {
    bool cased = false;
    for (size_t pos = 0; pos < text.size();) {
      const char32_t c = decode_utf8(text, pos);
      if (name == "isupper" ? is_cased_lower(c) : is_cased_upper(c)) return false;
      cased = cased || is_cased_lower(c) || is_cased_upper(c);
    }
    return cased;
  }
  return python_format(text, args);  // format
}

Value call_dict_method(const Value& dict, const std::string& name, CallArgs& args) {
  if (name == "get") {
    BoundArgs a(args, name, {"key", "default"});
    const Value& key = a.get(0);
    const Value* v = key.is_string() ? dict.as_dict().find(key.as_string()) : nullptr;
    return v ? *v : a.value_or(1, Value(nullptr));
  }
  if (!args.positional.empty() || !args.keywords.empty()) render_fail(name + "() takes no arguments");
  std::vector<Value> items;
  for (const auto& [key, value] : dict.as_dict().entries) {
    if (name == "items") {
      items.push_back(Value::list({Value(key), value}, ListKind::tuple));
    } else {
      items.push_back(name == "keys" ? Value(key) : value);
    }
  }
  const ListKind kind =
      name == "items" ? ListKind::dict_items : (name == "keys" ? ListKind::dict_keys : ListKind::dict_values);
  return Value::list(std::move(items), kind);
}

Value call_list_method(const Value& list, const std::string& name, CallArgs& args) {
  BoundArgs a(args, name, {"value"});
  const auto& items = list.as_list().items;
  int64_t count = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    if (!equal(items[i], a.get(0))) continue;
    if (name == "index") return static_cast<int64_t>(i);
    ++count;
  }
  if (name == "index") render_fail(to_repr(a.get(0)) + " is not in list");
  return count;
}

// Markup's own versions of these str methods return Markup (or lists of it).
Value markup_result(const std::string& name, Value result) {
  static const std::set<std::string> keeping = {"strip", "lstrip", "rstrip",     "upper",
                                                "lower", "title",  "capitalize", "replace"};
  if (keeping.count(name)) return Value::markup(result.as_string());
  if (name == "split" || name == "rsplit" || name == "splitlines") {
    std::vector<Value> items;
    for (const auto& item : result.as_list().items) items.push_back(Value::markup(item.as_string()));
    return Value::list(std::move(items));
  }
  return result;
}

const std::set<std::string>& string_methods() {
  static const std::set<std::string> names = {
      "strip", "lstrip",  "rstrip",     "split",   "rsplit",  "splitlines", "startswith", "endswith", "upper",
      "lower", "title",   "capitalize", "replace", "find",    "rfind",      "index",      "rindex",   "count",
      "join",  "isdigit", "isalpha",    "isalnum", "isspace", "isupper",    "islower",    "format"};
  return names;
}

const std::set<std::string>& dict_methods() {
  static const std::set<std::string> names = {"get", "items", "keys", "values"};
  return names;
}

}  // namespace

bool is_other_dict_attribute(const std::string& name) {
  static const std::set<std::string> names = {"copy", "pop", "popitem", "clear", "update", "setdefault", "fromkeys"};
  return names.count(name) > 0;
}

bool is_supported_method(const std::string& name) {
  return string_methods().count(name) || dict_methods().count(name) || name == "index" || name == "count" ||
         name == "cycle" || name == "changed";
}

std::optional<Value> bound_method(const Value& object, const std::string& name) {
  if (object.is_string() && string_methods().count(name)) {
    return Value::function(name, [object, name](CallArgs& args) {
      Value result = call_string_method(object.as_string(), name, args);
      return object.is_markup() ? markup_result(name, std::move(result)) : result;
    });
  }
  if (object.is_dict() && dict_methods().count(name)) {
    return Value::function(name, [object, name](CallArgs& args) { return call_dict_method(object, name, args); });
  }
  if (object.is_list() && (object.as_list().kind == ListKind::list || object.as_list().kind == ListKind::tuple) &&
      (name == "index" || name == "count")) {
    return Value::function(name, [object, name](CallArgs& args) { return call_list_method(object, name, args); });
  }
  return std::nullopt;
}

}  // namespace qkd::chat
