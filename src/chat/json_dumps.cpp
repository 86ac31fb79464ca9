#include "json_dumps.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "qkd/chat/python_text.h"
#include "template_error.h"

namespace qkd::chat {

namespace {

void append_unicode_escape(std::string& out, unsigned code) {
  char escape[8];
  std::snprintf(escape, sizeof(escape), "\\u%04x", code);
  out += escape;
}

void append_json_string(std::string& out, const std::string& text, bool ensure_ascii) {
  out += '"';
  for (size_t pos = 0; pos < text.size();) {
    const size_t start = pos;
    const char32_t c = decode_utf8(text, pos);
    switch (c) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      default: break;
    }
    if (c < 0x20) {
      append_unicode_escape(out, c);
    } else if (c >= 0x80 && ensure_ascii) {
      if (c >= 0x10000) {  // a surrogate pair, as Python writes it
        const char32_t v = c - 0x10000;
        append_unicode_escape(out, 0xd800 | (v >> 10));
        append_unicode_escape(out, 0xdc00 | (v & 0x3ff));
      } else {
        append_unicode_escape(out, c);
      }
    } else {
      out.append(text, start, pos - start);
    }
  }
  out += '"';
}

std::string float_json(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  return python_float_repr(value);
}

class Dumper {
 public:
  explicit Dumper(const JsonDumpOptions& options)
      : options_(options),
        item_separator_(options.item_separator.value_or(options.indent ? "," : ", ")),
        key_separator_(options.key_separator.value_or(": ")) {}

  void dump(const Value& value, int depth, std::string& out) {
    switch (value.kind()) {
      case Kind::none: out += "null"; return;
      case Kind::boolean: out += value.as_bool() ? "true" : "false"; return;
      case Kind::integer: out += std::to_string(value.as_int()); return;
      case Kind::floating: out += float_json(value.as_float()); return;
      case Kind::string: append_json_string(out, value.as_string(), options_.ensure_ascii); return;
      case Kind::dict: dump_dict(value.as_dict(), depth, out); return;
      case Kind::list:
        if (value.as_list().kind == ListKind::list || value.as_list().kind == ListKind::tuple) {
          dump_list(value.as_list().items, depth, out);
          return;
        }
        break;
      default: break;
    }
    render_fail("Object of type " + type_name(value) + " is not JSON serializable");
  }

 private:
  void newline(int depth, std::string& out) const {
    if (!options_.indent) return;
    out += '\n';
    for (int i = 0; i < depth; ++i) out += *options_.indent;
  }

  void dump_list(const std::vector<Value>& items, int depth, std::string& out) {
    if (items.empty()) {
      out += "[]";
      return;
    }
    out += '[';
    for (size_t i = 0; i < items.size(); ++i) {
      if (i) out += item_separator_;
      newline(depth + 1, out);
      dump(items[i], depth + 1, out);
    }
    newline(depth, out);
    out += ']';
  }

  void dump_dict(const Dict& dict, int depth, std::string& out) {
    if (dict.entries.empty()) {
      out += "{}";
      return;
    }
    std::vector<const std::pair<std::string, Value>*> entries;
    for (const auto& entry : dict.entries) entries.push_back(&entry);
    if (options_.sort_keys) {
      std::stable_sort(entries.begin(), entries.end(),
                       [](const auto* a, const auto* b) { return a->first < b->first; });
    }
    out += '{';
    for (size_t i = 0; i < entries.size(); ++i) {
      if (i) out += item_separator_;
      newline(depth + 1, out);
      append_json_string(out, entries[i]->first, options_.ensure_ascii);
      out += key_separator_;
      dump(entries[i]->second, depth + 1, out);
    }
    newline(depth, out);
    out += '}';
  }

  const JsonDumpOptions& options_;
  std::string item_separator_;
  std::string key_separator_;
};

}  // namespace

std::string json_dumps(const Value& value, const JsonDumpOptions& options) {
  std::string out;
  Dumper(options).dump(value, 0, out);
  return out;
}

}  // namespace qkd::chat
