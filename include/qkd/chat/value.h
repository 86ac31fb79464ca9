#pragma once
// The values a chat template computes with, modelled on the Python objects jinja2 hands a template:
// str, int, float, bool, None, jinja2's Undefined, list/tuple (and the one-shot generators some
// filters return), dict with insertion order, namespace() objects and callables. Lists and dicts are
// shared and never changed after construction (the sandbox transformers uses forbids mutating them);
// a namespace is the one mutable object, as in jinja2.
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace qkd::chat {

class Value;
struct CallArgs;

// The order of the alternatives in Value's variant.
enum class Kind { undefined, none, boolean, integer, floating, string, list, dict, namespace_object, function };

// What Python object a list stands for. It decides truthiness (a generator is always true), printing,
// len() and whether it can be iterated more than once.
enum class ListKind { list, tuple, generator, iterator, dict_items, dict_keys, dict_values, range };

struct List {
  ListKind kind = ListKind::list;
  std::vector<Value> items;
  bool consumed = false;  // a generator or iterator that was iterated once is empty afterwards
};

// A dict with string keys, in insertion order (Python dicts keep it, and tojson/items() show it).
struct Dict {
  std::vector<std::pair<std::string, Value>> entries;
  const Value* find(std::string_view key) const;
  // Replaces the value of an existing key in place (keeping its position) or appends.
  void set(std::string key, Value value);
};

// jinja2's namespace(): the only object a template may change (`{% set ns.attr = ... %}`).
struct Namespace {
  Dict attributes;
};

struct Function {
  std::string name;
  std::function<Value(CallArgs&)> call;
};

// Why a value is undefined: jinja2 builds the UndefinedError message from this when the value is used.
struct Missing {
  std::string message;  // e.g. "'x' is undefined", "'dict object' has no attribute 'tool_calls'"
};

class Value {
 public:
  Value() : data_(std::shared_ptr<const Missing>()) {}
  Value(std::nullptr_t) : data_(nullptr) {}
  Value(bool b) : data_(b) {}
  Value(int64_t i) : data_(i) {}
  Value(int i) : data_(static_cast<int64_t>(i)) {}
  Value(double d) : data_(d) {}
  Value(std::string s) : data_(std::move(s)) {}
  Value(const char* s) : data_(std::string(s)) {}

  static Value undefined(std::string message);
  // markupsafe's Markup, what jinja2's `safe` filter returns: a str that HTML-escapes the plain str
  // it is concatenated with (templates that write `"..."|safe + text` rely on that).
  static Value markup(std::string text);
  static Value list(std::vector<Value> items, ListKind kind = ListKind::list);
  static Value dict(Dict dict);
  static Value namespace_object(Dict attributes);
  static Value function(std::string name, std::function<Value(CallArgs&)> call);
  // JSON as Python's json.loads would give it (objects keep their key order).
  static Value from_json(const nlohmann::ordered_json& json);

  Kind kind() const { return static_cast<Kind>(data_.index()); }
  bool is_undefined() const { return kind() == Kind::undefined; }
  bool is_none() const { return kind() == Kind::none; }
  bool is_string() const { return kind() == Kind::string; }
  bool is_markup() const { return markup_; }
  bool is_list() const { return kind() == Kind::list; }
  bool is_dict() const { return kind() == Kind::dict; }
  // int, float or bool (Python's bool is an int).
  bool is_number() const { return kind() == Kind::boolean || kind() == Kind::integer || kind() == Kind::floating; }

  bool as_bool() const { return std::get<bool>(data_); }
  int64_t as_int() const { return std::get<int64_t>(data_); }
  double as_float() const { return std::get<double>(data_); }
  const std::string& as_string() const { return std::get<std::string>(data_); }
  const List& as_list() const { return *std::get<std::shared_ptr<List>>(data_); }
  List& list_state() const { return *std::get<std::shared_ptr<List>>(data_); }
  const Dict& as_dict() const { return *std::get<std::shared_ptr<Dict>>(data_); }
  Namespace& as_namespace() const { return *std::get<std::shared_ptr<Namespace>>(data_); }
  const Function& as_function() const { return *std::get<std::shared_ptr<const Function>>(data_); }
  // Why it is undefined ("" for a plain undefined value).
  std::string missing_message() const;
  // Identity of shared objects (Python's `is`), for namespaces and `sameas`.
  const void* identity() const;

 private:
  std::variant<std::shared_ptr<const Missing>, std::nullptr_t, bool, int64_t, double, std::string,
               std::shared_ptr<List>, std::shared_ptr<Dict>, std::shared_ptr<Namespace>,
               std::shared_ptr<const Function>>
      data_;
  bool markup_ = false;
};

// Python's truth value (jinja2's Undefined is false, a generator is always true).
bool truthy(const Value& value);
// Python's `==` (1 == 1.0 == True; a list never equals a tuple; undefined equals only undefined).
bool equal(const Value& a, const Value& b);
// Python's str(): None -> "None", True -> "True", 1.0 -> "1.0", undefined -> "".
std::string to_str(const Value& value);
// Python's repr(): strings quoted the way Python quotes them, containers with repr'd items.
std::string to_repr(const Value& value);
// The Python type name: "str", "int", "dict", "NoneType", "Undefined", "generator", ...
std::string type_name(const Value& value);
// How jinja2 names an object in "has no attribute" messages: "dict object", "None", ...
std::string object_description(const Value& value);
// markupsafe.escape: & < > " ' as HTML entities.
std::string markup_escape(std::string_view text);
// Python's len(), or -1 for objects without one.
int64_t python_len(const Value& value);

}  // namespace qkd::chat
