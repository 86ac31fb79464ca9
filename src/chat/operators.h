#pragma once
// Python's operators on template values (jinja2 compiles a template's `+`, `<`, `in` to Python's), and
// Python's errors for the combinations Python rejects. Using an undefined value in arithmetic or an
// ordering comparison fails with jinja2's UndefinedError message.
#include <string>
#include <vector>

#include "qkd/chat/value.h"

namespace qkd::chat {

// Throws RenderError with the undefined value's message (jinja2's UndefinedError).
[[noreturn]] void fail_undefined(const Value& value);

// + - * / // % ** on numbers, str/list concatenation and repetition.
Value binary_operation(const std::string& op, const Value& a, const Value& b);
Value unary_minus(const Value& value);
Value unary_plus(const Value& value);
// == != < <= > >= in, "not in".
bool compare_values(const std::string& op, const Value& a, const Value& b);
// Python's `item in container`.
bool contains(const Value& container, const Value& item);
// Python's ordering (`<`) for sort/min/max; fails for types Python cannot order.
bool less_than(const Value& a, const Value& b);

// The items Python's iter() yields: list items, dict keys, str characters, nothing for undefined.
// Iterating a generator consumes it, as in Python.
std::vector<Value> iterate(const Value& value);

}  // namespace qkd::chat
