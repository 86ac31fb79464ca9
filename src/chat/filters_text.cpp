// Filters on single values: text (trim, case, replace, indent), conversions (string, int, float,
// tojson), numbers (abs, round), default and length.
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "filters.h"
#include "json_dumps.h"
#include "operators.h"
#include "qkd/chat/python_text.h"
#include "template_error.h"

namespace qkd::chat {

namespace {

std::string text_of(const Value& v) { return to_str(v); }  // jinja2's soft_str

// Filters that work on soft_str(value) return a Markup when given one (its str methods do).
Value like_input(const Value& input, std::string text) {
  return input.is_markup() ? Value::markup(std::move(text)) : Value(std::move(text));
}

Value trim(Interpreter&, const Value& input, CallArgs& args) {
  BoundArgs a(args, "trim", {"chars"});
  std::optional<std::string> chars;
  if (a.has(0) && !a.get(0).is_none()) chars = text_of(a.get(0));
  return like_input(input, python_strip(text_of(input), chars, true, true));
}

Value lower(Interpreter&, const Value& input, CallArgs& args) {
  expect_no_arguments(args, "lower");
  return like_input(input, python_lower(text_of(input)));
}

Value upper(Interpreter&, const Value& input, CallArgs& args) {
  expect_no_arguments(args, "upper");
  return like_input(input, python_upper(text_of(input)));
}

Value capitalize(Interpreter&, const Value& input, CallArgs& args) {
  expect_no_arguments(args, "capitalize");
  return like_input(input, python_capitalize(text_of(input)));
}

// jinja2's title: words start after '-', whitespace or an opening bracket; each run gets its first
// character upper-cased and the rest lower-cased (unlike str.title, "it's" stays "It's").
Value title(Interpreter&, const Value& input, CallArgs& args) {
  expect_no_arguments(args, "title");
  const std::string text = text_of(input);
  const auto is_boundary = [](char32_t c) {
    return c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || is_python_space(c);
  };
  std::string out;
  size_t pos = 0;
  bool run_start = true;
  bool previous_boundary = false;
  while (pos < text.size()) {
    const size_t start = pos;
    const char32_t c = decode_utf8(text, pos);
    const bool boundary = is_boundary(c);
    if (start > 0 && boundary != previous_boundary) run_start = true;
    const std::string one = text.substr(start, pos - start);
    out += run_start ? python_upper(one) : python_lower(one);
    run_start = false;
    previous_boundary = boundary;
  }
  return out;
}

Value replace(Interpreter&, const Value& input, CallArgs& args) {
  BoundArgs a(args, "replace", {"old", "new", "count"});
  int64_t count = -1;
  if (a.has(2) && !a.get(2).is_none()) {
    if (a.get(2).kind() != Kind::integer)
      render_fail("'" + type_name(a.get(2)) + "' object cannot be interpreted as an integer");
    count = a.get(2).as_int();
  }
  return python_replace(text_of(input), text_of(a.get(0)), text_of(a.get(1)), count);
}

Value string(Interpreter&, const Value& input, CallArgs& args) {
  expect_no_arguments(args, "string");
  return like_input(input, text_of(input));
}

Value safe(Interpreter&, const Value& input, CallArgs& args) {
  expect_no_arguments(args, "safe");
  return Value::markup(text_of(input));
}

Value indent(Interpreter&, const Value& input, CallArgs& args) {
  BoundArgs a(args, "indent", {"width", "first", "blank"});
  const Value width = a.value_or(0, Value(int64_t{4}));
  std::string unit;
  if (width.is_string()) {
    unit = width.as_string();
  } else if (width.kind() == Kind::integer) {
    unit = std::string(static_cast<size_t>(std::max<int64_t>(0, width.as_int())), ' ');
  } else {
    render_fail("indent width must be an int or a str");
  }
  const std::string text = text_of(input) + "\n";  // jinja2 appends a newline before splitting
  const auto lines = python_splitlines(text, false);
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i) out += "\n";
    const bool indented = i > 0 && (truthy(a.get(2)) || !lines[i].empty());
    out += (indented ? unit : "") + lines[i];
  }
  return like_input(input, truthy(a.get(1)) ? unit + out : out);
}

std::optional<std::string> string_or_none(const Value& v, const char* what) {
  if (v.is_undefined() || v.is_none()) return std::nullopt;
  if (!v.is_string()) render_fail(std::string(what) + " must be a string");
  return v.as_string();
}

// transformers' tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False).
Value tojson(Interpreter&, const Value& input, CallArgs& args) {
  BoundArgs a(args, "tojson", {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonDumpOptions options;
  options.ensure_ascii = truthy(a.get(0));
  options.sort_keys = truthy(a.get(3));
  const Value& indent_value = a.get(1);
  if (indent_value.kind() == Kind::integer) {
    options.indent = std::string(static_cast<size_t>(std::max<int64_t>(0, indent_value.as_int())), ' ');
  } else if (indent_value.is_string()) {
    options.indent = indent_value.as_string();
  } else if (!indent_value.is_none() && !indent_value.is_undefined()) {
    render_fail("tojson indent must be an int or a str");
  }
  const Value& separators = a.get(2);
  if (separators.is_list() && separators.as_list().items.size() == 2) {
    options.item_separator = string_or_none(separators.as_list().items[0], "tojson separators");
    options.key_separator = string_or_none(separators.as_list().items[1], "tojson separators");
  } else if (!separators.is_none() && !separators.is_undefined()) {
    render_fail("tojson separators must be a pair of strings");
  }
  return json_dumps(input, options);
}

// Python's float(str): optional whitespace and sign, digits with '_' between them, a fraction, an
// exponent, or inf/infinity/nan in any case.
std::optional<double> parse_python_float(const std::string& raw) {
  const std::string text = python_strip(raw, std::nullopt, true, true);
  std::string clean;
  size_t i = 0;
  if (i < text.size() && (text[i] == '+' || text[i] == '-')) clean += text[i++];
  const std::string rest = python_lower(text.substr(i));
  if (rest == "inf" || rest == "infinity" || rest == "nan") return std::strtod((clean + rest).c_str(), nullptr);
  bool digits = false, previous_digit = false;
  for (; i < text.size(); ++i) {
    const char c = text[i];
    if (c >= '0' && c <= '9') {
      clean += c, digits = true, previous_digit = true;
      continue;
    }
    if (c == '_' && previous_digit && i + 1 < text.size() && text[i + 1] >= '0' && text[i + 1] <= '9') continue;
    if (c == '.' || c == 'e' || c == 'E' ||
        ((c == '+' || c == '-') && !clean.empty() && (clean.back() | 0x20) == 'e')) {
      clean += c, previous_digit = false;
      continue;
    }
    return std::nullopt;
  }
  if (!digits) return std::nullopt;
  char* end = nullptr;
  const double value = std::strtod(clean.c_str(), &end);
  if (*end != '\0') return std::nullopt;
  return value;
}

// Python's int(str, base) for the bases templates use; nullopt when Python would raise ValueError.
std::optional<int64_t> parse_python_int(const std::string& raw, int base) {
  const std::string text = python_strip(raw, std::nullopt, true, true);
  std::string clean;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '_' && i > 0 && i + 1 < text.size() && text[i - 1] != '_' && text[i - 1] != '-' && text[i - 1] != '+')
      continue;
    clean += c;
  }
  if (clean.empty() || clean == "+" || clean == "-") return std::nullopt;
  errno = 0;
  char* end = nullptr;
  const long long value = std::strtoll(clean.c_str(), &end, base);
  if (*end != '\0' || errno == ERANGE || clean.find_first_of(" \t") != std::string::npos) return std::nullopt;
  return value;
}

std::optional<double> float_of(const Value& v) {
  if (v.kind() == Kind::floating) return v.as_float();
  if (v.kind() == Kind::integer) return static_cast<double>(v.as_int());
  if (v.kind() == Kind::boolean) return v.as_bool() ? 1.0 : 0.0;
  if (v.is_string()) return parse_python_float(v.as_string());
  return std::nullopt;
}

Value to_int(Interpreter&, const Value& input, CallArgs& args) {
  BoundArgs a(args, "int", {"default", "base"});
  const Value fallback = a.value_or(0, Value(int64_t{0}));
  if (input.is_undefined()) fail_undefined(input);  // jinja2's Undefined refuses int()
  if (input.kind() == Kind::integer) return input;
  if (input.kind() == Kind::boolean) return int64_t{input.as_bool()};
  if (input.is_string()) {
    const int base = a.has(1) && a.get(1).kind() == Kind::integer ? static_cast<int>(a.get(1).as_int()) : 10;
    if (auto parsed = parse_python_int(input.as_string(), base)) return *parsed;
  }
  const auto f = float_of(input);
  if (!f || std::isnan(*f) || std::isinf(*f)) return fallback;
  if (std::fabs(*f) >= 9.2e18) render_fail("integer overflow (this renderer's integers are 64-bit)");
  return static_cast<int64_t>(*f);
}

Value to_float(Interpreter&, const Value& input, CallArgs& args) {
  BoundArgs a(args, "float", {"default"});
  if (input.is_undefined()) fail_undefined(input);  // and float()
  const auto f = float_of(input);
  return f ? Value(*f) : a.value_or(0, Value(0.0));
}

Value absolute(Interpreter&, const Value& input, CallArgs& args) {
  expect_no_arguments(args, "abs");
  if (input.is_undefined()) fail_undefined(input);
  if (input.kind() == Kind::floating) return std::fabs(input.as_float());
  if (input.kind() == Kind::integer || input.kind() == Kind::boolean) {
    const int64_t i = input.kind() == Kind::boolean ? input.as_bool() : input.as_int();
    return i < 0 ? -i : i;
  }
  render_fail("bad operand type for abs(): '" + type_name(input) + "'");
}

// Python's round(x, n): correctly rounded, ties to even on the exact binary value -- what printf's
// "%.*f" computes.
double python_round(double x, int64_t digits) {
  if (std::isnan(x) || std::isinf(x)) return x;
  if (digits < 0) {
    const double scale = std::pow(10.0, static_cast<double>(-digits));
    return std::nearbyint(x / scale) * scale;
  }
  char buffer[512];
  std::snprintf(buffer, sizeof(buffer), "%.*f", static_cast<int>(std::min<int64_t>(digits, 300)), x);
  return std::strtod(buffer, nullptr);
}

Value round(Interpreter&, const Value& input, CallArgs& args) {
  BoundArgs a(args, "round", {"precision", "method"});
  if (a.has(0) && a.get(0).kind() != Kind::integer) render_fail("round() precision must be an integer");
  const int64_t precision = a.has(0) ? a.get(0).as_int() : 0;
  const std::string method = a.has(1) ? text_of(a.get(1)) : "common";
  if (method != "common" && method != "ceil" && method != "floor") render_fail("method must be common, ceil or floor");
  if (input.is_undefined()) fail_undefined(input);
  if (!input.is_number()) render_fail("type " + type_name(input) + " doesn't define __round__ method");
  const bool is_int = input.kind() != Kind::floating;
  const double x =
      is_int ? static_cast<double>(input.kind() == Kind::boolean ? input.as_bool() : input.as_int()) : input.as_float();
  if (method == "common") {
    if (is_int && precision >= 0) return input.kind() == Kind::boolean ? Value(int64_t{input.as_bool()}) : input;
    const double r = python_round(x, precision);
    return is_int ? Value(static_cast<int64_t>(r)) : Value(r);
  }
  const double scale = std::pow(10.0, static_cast<double>(precision));
  return (method == "ceil" ? std::ceil(x * scale) : std::floor(x * scale)) / scale;
}

Value default_value(Interpreter&, const Value& input, CallArgs& args) {
  BoundArgs a(args, "default", {"default_value", "boolean"});
  if (input.is_undefined() || (truthy(a.get(1)) && !truthy(input))) return a.value_or(0, Value(""));
  return input;
}

Value length(Interpreter&, const Value& input, CallArgs& args) {
  expect_no_arguments(args, "length");
  const int64_t n = python_len(input);
  if (n < 0) render_fail("object of type '" + type_name(input) + "' has no len()");
  return n;
}

}  // namespace

void add_text_filters(FilterTable& t) {
  t["trim"] = trim;
  t["lower"] = lower;
  t["upper"] = upper;
  t["title"] = title;
  t["capitalize"] = capitalize;
  t["replace"] = replace;
  t["string"] = string;
  t["safe"] = safe;
  t["indent"] = indent;
  t["tojson"] = tojson;
  t["int"] = to_int;
  t["float"] = to_float;
  t["abs"] = absolute;
  t["round"] = round;
  t["default"] = t["d"] = default_value;
  t["length"] = t["count"] = length;
}

}  // namespace qkd::chat
