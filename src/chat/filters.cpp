#include "filters.h"

#include "attributes.h"
#include "builtins.h"
#include "qkd/chat/python_text.h"
#include "template_error.h"

namespace qkd::chat {

namespace {

const FilterTable& filter_table() {
  static const FilterTable table = [] {
    FilterTable t;
    add_text_filters(t);
    add_sequence_filters(t);
    return t;
  }();
  return table;
}

}  // namespace

bool is_supported_filter(const std::string& name) { return filter_table().count(name) > 0; }

Value Interpreter::apply_filter(const std::string& name, const Value& input, CallArgs& args) {
  const auto it = filter_table().find(name);
  if (it == filter_table().end()) render_fail("no filter named " + python_string_repr(name));
  return it->second(*this, input, args);
}

Value lookup_attribute_path(const Value& item, const Value& path) {
  if (!path.is_string()) return get_item(item, path);
  Value current = item;
  const std::string& text = path.as_string();
  size_t start = 0;
  while (true) {
    const size_t dot = text.find('.', start);
    const std::string part = text.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const bool digits = !part.empty() && part.find_first_not_of("0123456789") == std::string::npos;
    current =
        digits ? get_item(current, Value(static_cast<int64_t>(std::stoll(part)))) : get_item(current, Value(part));
    if (dot == std::string::npos) return current;
    start = dot + 1;
  }
}

}  // namespace qkd::chat
