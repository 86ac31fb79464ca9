#pragma once
// Where a tokenizer.json component sits, for one-line errors that name the file and the field
// ("<dir>/tokenizer.json: pre_tokenizer.pretokenizers[1] type 'Punctuation' is not supported").
#include <nlohmann/json.hpp>

#include <string>

#include "qkd/common/error.h"
#include "qkd/common/json_fields.h"
#include "qkd/common/json_io.h"

namespace qkd::tokenizer {

struct JsonPlace {
  std::string file;
  std::string path;  // "pre_tokenizer.pretokenizers[1]"

  JsonPlace field(const std::string& key) const { return {file, path + "." + key}; }
  JsonPlace element(size_t index) const { return {file, path + "[" + std::to_string(index) + "]"}; }
  // "<file>: <path>", the prefix of every message about this component.
  std::string where() const { return file + ": " + path; }
  [[noreturn]] void fail_here(const std::string& what) const { qkd::fail(file, path + ": " + what); }
  // A reader of this component's fields: errors read "<file>: <path>.<key>: ...".
  FieldReader reader(const nlohmann::json& object) const {
    if (!object.is_object()) fail_here("expected an object, got " + json_excerpt(object));
    return FieldReader(object, where());
  }
};

// The "type" of a component object; fails naming the place when it is missing or not a string.
inline std::string component_type(const nlohmann::json& object, const JsonPlace& place) {
  if (!object.is_object()) place.fail_here("expected an object, got " + json_excerpt(object));
  const auto it = object.find("type");
  if (it == object.end() || !it->is_string()) place.fail_here("missing \"type\"");
  return it->get<std::string>();
}

[[noreturn]] inline void unsupported_type(const JsonPlace& place, const std::string& type) {
  qkd::fail(place.file, place.path + " type '" + printable(type, 60) + "' is not supported");
}

// The array at `key` of a component (e.g. a Sequence's "pretokenizers").
inline const nlohmann::json& required_array(const nlohmann::json& object, const std::string& key,
                                            const JsonPlace& place) {
  const auto it = object.find(key);
  if (it == object.end() || !it->is_array()) place.field(key).fail_here("expected an array");
  return *it;
}

}  // namespace qkd::tokenizer
