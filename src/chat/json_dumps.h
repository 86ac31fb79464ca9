#pragma once
// Python's json.dumps, which transformers installs as the `tojson` filter (instead of jinja2's
// HTML-escaping one): ", " and ": " separators without indent, "," with indent, non-ASCII kept as is
// by default (ensure_ascii=False), floats as Python's repr, NaN/Infinity allowed.
#include <optional>
#include <string>

#include "qkd/chat/value.h"

namespace qkd::chat {

struct JsonDumpOptions {
  bool ensure_ascii = false;
  std::optional<std::string> indent;  // the indentation unit; absent: everything on one line
  std::optional<std::string> item_separator;
  std::optional<std::string> key_separator;
  bool sort_keys = false;
};

// Fails (RenderError) like Python for what JSON cannot hold: "Object of type Undefined is not JSON
// serializable".
std::string json_dumps(const Value& value, const JsonDumpOptions& options);

}  // namespace qkd::chat
