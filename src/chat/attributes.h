#pragma once
// `obj.name`, `obj[key]` and `obj[a:b:c]` as jinja2's sandbox resolves them: attribute access tries
// the Python attribute (a str/dict/list method) before the dict key, item access tries the key before
// the method, and anything missing becomes an undefined value that remembers why (jinja2's Undefined),
// failing only when it is used. Access on an undefined value fails at once, as in jinja2.
#include <optional>
#include <string>

#include "qkd/chat/value.h"

namespace qkd::chat {

Value get_attribute(const Value& object, const std::string& name);
Value get_item(const Value& object, const Value& key);
// Python slicing of a str, list or tuple; absent bounds are none.
Value get_slice(const Value& object, const Value& start, const Value& stop, const Value& step);

// methods.cpp: `object.name` as a callable when `object` is a str/dict/list with that method.
std::optional<Value> bound_method(const Value& object, const std::string& name);
// Python dict attributes this engine does not implement (they still hide a key of the same name).
bool is_other_dict_attribute(const std::string& name);

}  // namespace qkd::chat
