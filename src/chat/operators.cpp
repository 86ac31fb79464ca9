#include "operators.h"

#include <cmath>

#include "qkd/chat/python_text.h"
#include "template_error.h"

namespace qkd::chat {

void fail_undefined(const Value& value) {
  const std::string message = value.missing_message();
  render_fail(message.empty() ? "undefined value" : message);
}

namespace {

bool is_int_like(const Value& v) { return v.kind() == Kind::integer || v.kind() == Kind::boolean; }
int64_t int_of(const Value& v) { return v.kind() == Kind::boolean ? int64_t{v.as_bool()} : v.as_int(); }
double float_of(const Value& v) { return v.kind() == Kind::floating ? v.as_float() : static_cast<double>(int_of(v)); }

std::string quoted_type(const Value& v) { return "'" + type_name(v) + "'"; }

[[noreturn]] void unsupported_operands(const std::string& op, const Value& a, const Value& b) {
  render_fail("unsupported operand type(s) for " + op + ": " + quoted_type(a) + " and " + quoted_type(b));
}

void check_overflow(bool overflow) {
  if (overflow) render_fail("integer overflow (Python's integers are unbounded; this renderer's are 64-bit)");
}

// Python's floor division and modulo: the remainder takes the divisor's sign.
int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

Value int_power(int64_t base, int64_t exponent) {
  if (exponent < 0) {
    if (base == 0) render_fail("0.0 cannot be raised to a negative power");
    return std::pow(static_cast<double>(base), static_cast<double>(exponent));
  }
  int64_t result = 1;
  for (int64_t i = 0; i < exponent; ++i) check_overflow(__builtin_mul_overflow(result, base, &result));
  return result;
}

Value arithmetic(const std::string& op, const Value& a, const Value& b) {
  if (is_int_like(a) && is_int_like(b)) {
    const int64_t x = int_of(a), y = int_of(b);
    int64_t r = 0;
    if (op == "+" || op == "-" || op == "*") {
      check_overflow(op == "+" ? __builtin_add_overflow(x, y, &r)
                               : (op == "-" ? __builtin_sub_overflow(x, y, &r) : __builtin_mul_overflow(x, y, &r)));
      return r;
    }
    if (op == "**") return int_power(x, y);
    if (y == 0) render_fail(op == "/" ? "division by zero" : "integer division or modulo by zero");
    if (op == "/") return static_cast<double>(x) / static_cast<double>(y);
    if (op == "//") return floor_div(x, y);
    return x - floor_div(x, y) * y;  // %
  }
  const double x = float_of(a), y = float_of(b);
  if (op == "+") return x + y;
  if (op == "-") return x - y;
  if (op == "*") return x * y;
  if (op == "**") return std::pow(x, y);
  if (y == 0.0) render_fail(op == "/" ? "float division by zero" : "float modulo");
  if (op == "/") return x / y;
  // CPython's float_divmod, so that signs and rounding match exactly.
  double mod = std::fmod(x, y);
  double div = (x - mod) / y;
  if (mod != 0.0) {
    if ((y < 0) != (mod < 0)) {
      mod += y;
      div -= 1.0;
    }
  } else {
    mod = std::copysign(0.0, y);
  }
  if (op == "%") return mod;
  if (div == 0.0) return std::copysign(0.0, x / y);
  double floor_div = std::floor(div);
  if (div - floor_div > 0.5) floor_div += 1.0;
  return floor_div;
}

Value repeat(const Value& sequence, int64_t times) {
  const size_t length = sequence.is_string() ? sequence.as_string().size() : sequence.as_list().items.size();
  if (times > 0 && length > 0 && static_cast<uint64_t>(times) > kMaxRenderBytes / length)
    render_fail("repeating a sequence of " + std::to_string(length) + " " + (sequence.is_string() ? "bytes" : "items") +
                " " + std::to_string(times) + " times would pass " + std::to_string(kMaxRenderBytes >> 20) + " MiB");
  if (sequence.is_string()) {
    std::string out;
    for (int64_t i = 0; i < times; ++i) out += sequence.as_string();
    return sequence.is_markup() ? Value::markup(std::move(out)) : Value(std::move(out));
  }
  std::vector<Value> items;
  for (int64_t i = 0; i < times; ++i)
    items.insert(items.end(), sequence.as_list().items.begin(), sequence.as_list().items.end());
  return Value::list(std::move(items), sequence.as_list().kind);
}

bool is_plain_sequence(const Value& v) {
  return v.is_list() && (v.as_list().kind == ListKind::list || v.as_list().kind == ListKind::tuple);
}

}  // namespace

Value binary_operation(const std::string& op, const Value& a, const Value& b) {
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  if (a.is_number() && b.is_number()) return arithmetic(op, a, b);
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      if (!a.is_markup() && !b.is_markup()) return a.as_string() + b.as_string();
      // Markup + str escapes the str (and str + Markup too), as markupsafe does.
      const std::string left = a.is_markup() ? a.as_string() : markup_escape(a.as_string());
      const std::string right = b.is_markup() ? b.as_string() : markup_escape(b.as_string());
      return Value::markup(left + right);
    }
    if (is_plain_sequence(a) && is_plain_sequence(b) && a.as_list().kind == b.as_list().kind) {
      std::vector<Value> items = a.as_list().items;
      items.insert(items.end(), b.as_list().items.begin(), b.as_list().items.end());
      return Value::list(std::move(items), a.as_list().kind);
    }
    if (a.is_string() || is_plain_sequence(a))
      render_fail("can only concatenate " + type_name(a) + " (not \"" + type_name(b) + "\") to " + type_name(a));
  }
  if (op == "*") {
    if ((a.is_string() || is_plain_sequence(a)) && is_int_like(b)) return repeat(a, int_of(b));
    if (is_int_like(a) && (b.is_string() || is_plain_sequence(b))) return repeat(b, int_of(a));
    if (a.is_string() || is_plain_sequence(a) || b.is_string() || is_plain_sequence(b))
      render_fail("can't multiply sequence by non-int of type " + quoted_type(a.is_string() ? b : a));
  }
  if (op == "%" && a.is_string()) render_fail("unsupported: printf-style string formatting with '%'");
  unsupported_operands(op, a, b);
}

Value unary_minus(const Value& value) {
  if (value.is_undefined()) fail_undefined(value);
  if (is_int_like(value)) {
    check_overflow(int_of(value) == INT64_MIN);
    return -int_of(value);
  }
  if (value.kind() == Kind::floating) return -value.as_float();
  render_fail("bad operand type for unary -: " + quoted_type(value));
}

Value unary_plus(const Value& value) {
  if (value.is_undefined()) fail_undefined(value);
  if (is_int_like(value)) return int_of(value);
  if (value.kind() == Kind::floating) return value.as_float();
  render_fail("bad operand type for unary +: " + quoted_type(value));
}

bool less_than(const Value& a, const Value& b) {
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  if (a.is_number() && b.is_number()) {
    if (is_int_like(a) && is_int_like(b)) return int_of(a) < int_of(b);
    return float_of(a) < float_of(b);
  }
  if (a.is_string() && b.is_string()) return a.as_string() < b.as_string();  // UTF-8 order is code point order
  if (is_plain_sequence(a) && is_plain_sequence(b) && a.as_list().kind == b.as_list().kind) {
    const auto& x = a.as_list().items;
    const auto& y = b.as_list().items;
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (equal(x[i], y[i])) continue;
      return less_than(x[i], y[i]);
    }
    return x.size() < y.size();
  }
  render_fail("'<' not supported between instances of " + quoted_type(a) + " and " + quoted_type(b));
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Kind::undefined: return false;
    case Kind::string:
      if (!item.is_string()) render_fail("'in <string>' requires string as left operand, not " + type_name(item));
      return container.as_string().find(item.as_string()) != std::string::npos;
    case Kind::dict:
      if (item.is_list() || item.is_dict()) render_fail("unhashable type: " + quoted_type(item));
      return item.is_string() && container.as_dict().find(item.as_string()) != nullptr;
    case Kind::list:
      for (const auto& element : iterate(container))
        if (equal(element, item)) return true;
      return false;
    default: render_fail("argument of type " + quoted_type(container) + " is not iterable");
  }
}

bool compare_values(const std::string& op, const Value& a, const Value& b) {
  if (op == "==") return equal(a, b);
  if (op == "!=") return !equal(a, b);
  if (op == "<") return less_than(a, b);
  if (op == ">") return less_than(b, a);
  if (op == "<=") return less_than(a, b) || equal(a, b);
  if (op == ">=") return less_than(b, a) || equal(a, b);
  if (op == "in") return contains(b, a);
  return !contains(b, a);  // not in
}

std::vector<Value> iterate(const Value& value) {
  switch (value.kind()) {
    case Kind::undefined: return {};
    case Kind::list: {
      List& list = value.list_state();
      if (list.kind == ListKind::generator || list.kind == ListKind::iterator) {
        if (list.consumed) return {};
        list.consumed = true;
      }
      return list.items;
    }
    case Kind::dict: {
      std::vector<Value> keys;
      for (const auto& entry : value.as_dict().entries) keys.emplace_back(entry.first);
      return keys;
    }
    case Kind::string: {
      std::vector<Value> chars;
      const std::string& s = value.as_string();
      for (size_t pos = 0; pos < s.size();) {
        const size_t start = pos;
        decode_utf8(s, pos);
        chars.emplace_back(s.substr(start, pos - start));
      }
      return chars;
    }
    default: render_fail(quoted_type(value) + " object is not iterable");
  }
}

}  // namespace qkd::chat
