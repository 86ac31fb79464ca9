#include "qkd/chat/value.h"

#include "qkd/chat/python_text.h"

namespace qkd::chat {

const Value* Dict::find(std::string_view key) const {
  for (const auto& [k, v] : entries)
    if (k == key) return &v;
  return nullptr;
}

void Dict::set(std::string key, Value value) {
  for (auto& [k, v] : entries) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  entries.emplace_back(std::move(key), std::move(value));
}

Value Value::undefined(std::string message) {
  Value v;
  v.data_ = std::make_shared<const Missing>(Missing{std::move(message)});
  return v;
}

Value Value::markup(std::string text) {
  Value v(std::move(text));
  v.markup_ = true;
  return v;
}

std::string markup_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

Value Value::list(std::vector<Value> items, ListKind kind) {
  Value v;
  v.data_ = std::make_shared<List>(List{kind, std::move(items), false});
  return v;
}

Value Value::dict(Dict dict) {
  Value v;
  v.data_ = std::make_shared<Dict>(std::move(dict));
  return v;
}

Value Value::namespace_object(Dict attributes) {
  Value v;
  v.data_ = std::make_shared<Namespace>(Namespace{std::move(attributes)});
  return v;
}

Value Value::function(std::string name, std::function<Value(CallArgs&)> call) {
  Value v;
  v.data_ = std::make_shared<const Function>(Function{std::move(name), std::move(call)});
  return v;
}

Value Value::from_json(const nlohmann::ordered_json& json) {
  switch (json.type()) {
    case nlohmann::ordered_json::value_t::null: return nullptr;
    case nlohmann::ordered_json::value_t::boolean: return json.get<bool>();
    case nlohmann::ordered_json::value_t::number_integer: return json.get<int64_t>();
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const auto u = json.get<uint64_t>();
      return u <= static_cast<uint64_t>(INT64_MAX) ? Value(static_cast<int64_t>(u)) : Value(static_cast<double>(u));
    }
    case nlohmann::ordered_json::value_t::number_float: return json.get<double>();
    case nlohmann::ordered_json::value_t::string: return json.get<std::string>();
    case nlohmann::ordered_json::value_t::array: {
      std::vector<Value> items;
      items.reserve(json.size());
      for (const auto& item : json) items.push_back(from_json(item));
      return list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      Dict d;
      d.entries.reserve(json.size());
      for (const auto& [key, item] : json.items()) d.entries.emplace_back(key, from_json(item));
      return dict(std::move(d));
    }
    default: return Value();  // binary or discarded: nothing a chat record holds
  }
}

std::string Value::missing_message() const {
  const auto& missing = std::get<std::shared_ptr<const Missing>>(data_);
  return missing ? missing->message : "";
}

const void* Value::identity() const {
  switch (kind()) {
    case Kind::list: return std::get<std::shared_ptr<List>>(data_).get();
    case Kind::dict: return std::get<std::shared_ptr<Dict>>(data_).get();
    case Kind::namespace_object: return std::get<std::shared_ptr<Namespace>>(data_).get();
    case Kind::function: return std::get<std::shared_ptr<const Function>>(data_).get();
    default: return nullptr;
  }
}

bool truthy(const Value& value) {
  switch (value.kind()) {
    case Kind::undefined:
    case Kind::none: return false;
    case Kind::boolean: return value.as_bool();
    case Kind::integer: return value.as_int() != 0;
    case Kind::floating: return value.as_float() != 0.0;
    case Kind::string: return !value.as_string().empty();
    case Kind::list: {
      const auto& list = value.as_list();
      if (list.kind == ListKind::generator || list.kind == ListKind::iterator) return true;
      return !list.items.empty();
    }
    case Kind::dict: return !value.as_dict().entries.empty();
    default: return true;
  }
}

namespace {

double numeric(const Value& v) {
  if (v.kind() == Kind::boolean) return v.as_bool() ? 1.0 : 0.0;
  if (v.kind() == Kind::integer) return static_cast<double>(v.as_int());
  return v.as_float();
}

bool is_sequence_kind(ListKind kind) { return kind == ListKind::list || kind == ListKind::tuple; }

}  // namespace

bool equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind() != Kind::floating && b.kind() != Kind::floating) {
      const int64_t x = a.kind() == Kind::boolean ? a.as_bool() : a.as_int();
      const int64_t y = b.kind() == Kind::boolean ? b.as_bool() : b.as_int();
      return x == y;
    }
    return numeric(a) == numeric(b);
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Kind::undefined:
    case Kind::none: return true;
    case Kind::string: return a.as_string() == b.as_string();
    case Kind::list: {
      const auto& x = a.as_list();
      const auto& y = b.as_list();
      if (x.kind != y.kind || !is_sequence_kind(x.kind)) return a.identity() == b.identity();
      if (x.items.size() != y.items.size()) return false;
      for (size_t i = 0; i < x.items.size(); ++i)
        if (!equal(x.items[i], y.items[i])) return false;
      return true;
    }
    case Kind::dict: {
      const auto& x = a.as_dict().entries;
      const auto& y = b.as_dict();
      if (x.size() != y.entries.size()) return false;
      for (const auto& [key, item] : x) {
        const Value* other = y.find(key);
        if (!other || !equal(item, *other)) return false;
      }
      return true;
    }
    default: return a.identity() == b.identity();
  }
}

namespace {

std::string join_repr(const std::vector<Value>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += ", ";
    out += to_repr(items[i]);
  }
  return out;
}

std::string dict_repr(const Dict& dict) {
  std::string out = "{";
  for (size_t i = 0; i < dict.entries.size(); ++i) {
    if (i) out += ", ";
    out += python_string_repr(dict.entries[i].first) + ": " + to_repr(dict.entries[i].second);
  }
  return out + "}";
}

std::string list_repr(const List& list) {
  switch (list.kind) {
    case ListKind::tuple: return "(" + join_repr(list.items) + (list.items.size() == 1 ? ",)" : ")");
    case ListKind::generator: return "<generator object>";
    case ListKind::iterator: return "<list_reverseiterator object>";
    case ListKind::dict_items: return "dict_items([" + join_repr(list.items) + "])";
    case ListKind::dict_keys: return "dict_keys([" + join_repr(list.items) + "])";
    case ListKind::dict_values: return "dict_values([" + join_repr(list.items) + "])";
    case ListKind::range: {
      // Only a range's bounds are printed; a range of n items from `start` with step 1 is the common case.
      if (list.items.empty()) return "range(0, 0)";
      const int64_t start = list.items.front().as_int();
      const int64_t step = list.items.size() > 1 ? list.items[1].as_int() - start : 1;
      const int64_t stop = list.items.back().as_int() + step;
      return "range(" + std::to_string(start) + ", " + std::to_string(stop) +
             (step != 1 ? ", " + std::to_string(step) : "") + ")";
    }
    default: return "[" + join_repr(list.items) + "]";
  }
}

}  // namespace

std::string to_str(const Value& value) {
  switch (value.kind()) {
    case Kind::undefined: return "";
    case Kind::string: return value.as_string();
    default: return to_repr(value);
  }
}

std::string to_repr(const Value& value) {
  switch (value.kind()) {
    case Kind::undefined: return "Undefined";
    case Kind::none: return "None";
    case Kind::boolean: return value.as_bool() ? "True" : "False";
    case Kind::integer: return std::to_string(value.as_int());
    case Kind::floating: return python_float_repr(value.as_float());
    case Kind::string:
      return value.is_markup() ? "Markup(" + python_string_repr(value.as_string()) + ")"
                               : python_string_repr(value.as_string());
    case Kind::list: return list_repr(value.as_list());
    case Kind::dict: return dict_repr(value.as_dict());
    case Kind::namespace_object: return "<Namespace " + dict_repr(value.as_namespace().attributes) + ">";
    case Kind::function: return "<function " + value.as_function().name + ">";
  }
  return "";
}

std::string type_name(const Value& value) {
  switch (value.kind()) {
    case Kind::undefined: return "Undefined";
    case Kind::none: return "NoneType";
    case Kind::boolean: return "bool";
    case Kind::integer: return "int";
    case Kind::floating: return "float";
    case Kind::string: return value.is_markup() ? "Markup" : "str";
    case Kind::dict: return "dict";
    case Kind::namespace_object: return "Namespace";
    case Kind::function: return "function";
    case Kind::list: break;
  }
  switch (value.as_list().kind) {
    case ListKind::tuple: return "tuple";
    case ListKind::generator: return "generator";
    case ListKind::iterator: return "list_reverseiterator";
    case ListKind::dict_items: return "dict_items";
    case ListKind::dict_keys: return "dict_keys";
    case ListKind::dict_values: return "dict_values";
    case ListKind::range: return "range";
    default: return "list";
  }
}

std::string object_description(const Value& value) {
  if (value.is_none()) return "None";
  if (value.kind() == Kind::namespace_object) return "jinja2.utils.Namespace object";
  if (value.is_undefined()) return "jinja2.runtime.Undefined object";
  return type_name(value) + " object";
}

int64_t python_len(const Value& value) {
  switch (value.kind()) {
    case Kind::undefined: return 0;
    case Kind::string: return static_cast<int64_t>(utf8_length(value.as_string()));
    case Kind::dict: return static_cast<int64_t>(value.as_dict().entries.size());
    case Kind::list: {
      const auto& list = value.as_list();
      if (list.kind == ListKind::generator || list.kind == ListKind::iterator) return -1;
      return static_cast<int64_t>(list.items.size());
    }
    default: return -1;
  }
}

}  // namespace qkd::chat
