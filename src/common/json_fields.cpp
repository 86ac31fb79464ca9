#include "qkd/common/json_fields.h"

#include <limits>

#include "qkd/common/error.h"
#include "qkd/common/json_io.h"

namespace qkd {

namespace {
const nlohmann::json& empty_object() {
  static const nlohmann::json empty = nlohmann::json::object();
  return empty;
}

std::string number_text(double v) {
  std::ostringstream out;
  out << v;
  return out.str();
}
}  // namespace

FieldReader::FieldReader(const nlohmann::json& object, std::string path, Null null)
    : object_(object.is_null() ? empty_object() : object), path_(std::move(path)), null_(null) {
  if (!object_.is_object()) fail(path_, "expected an object, got " + json_excerpt(object_));
}

std::string FieldReader::path_of(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

bool FieldReader::has(const std::string& key) const {
  return object_.contains(key) && (null_ == Null::refused || !object_.at(key).is_null());
}

const nlohmann::json* FieldReader::raw(const std::string& key) {
  known_.insert(key);
  if (!has(key)) return nullptr;
  const auto& value = object_.at(key);
  if (value.is_null()) fail(path_of(key), "null: give a value, or leave the key out for its default");
  return &value;
}

std::string FieldReader::string(const std::string& key, const std::string& fallback) {
  const auto* v = raw(key);
  if (!v) return fallback;
  if (!v->is_string()) fail(path_of(key), "expected a string, got " + json_excerpt(*v));
  return v->get<std::string>();
}

std::string FieldReader::required_string(const std::string& key) {
  if (!has(key)) fail(path_of(key), "missing (required)");
  return string(key, "");
}

std::string FieldReader::one_of(const std::string& key, const std::string& fallback,
                                const std::vector<std::string>& allowed) {
  const auto value = string(key, fallback);
  for (const auto& a : allowed)
    if (a == value) return value;
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
  fail(path_of(key), "expected one of " + list + ", got \"" + value + "\"");
}

bool FieldReader::boolean(const std::string& key, bool fallback) {
  const auto* v = raw(key);
  if (!v) return fallback;
  if (!v->is_boolean()) fail(path_of(key), "expected true or false, got " + json_excerpt(*v));
  return v->get<bool>();
}

int64_t FieldReader::integer(const std::string& key, int64_t fallback, int64_t min, int64_t max) {
  const auto* v = raw(key);
  if (!v) return fallback;
  if (!v->is_number_integer()) fail(path_of(key), "expected an integer, got " + json_excerpt(*v));
  const auto value = v->get<int64_t>();
  if (value < min || value > max)
    fail(path_of(key), "expected an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "], got " +
                           std::to_string(value));
  return value;
}

double FieldReader::number(const std::string& key, double fallback, double min, double max) {
  const auto* v = raw(key);
  if (!v) return fallback;
  if (!v->is_number()) fail(path_of(key), "expected a number, got " + json_excerpt(*v));
  const auto value = v->get<double>();
  if (!(value >= min && value <= max))
    fail(path_of(key),
         "expected a number in [" + number_text(min) + ", " + number_text(max) + "], got " + json_excerpt(*v));
  return value;
}

double FieldReader::positive(const std::string& key, double fallback) {
  const auto* v = raw(key);
  if (!v) return fallback;
  if (!v->is_number() || !(v->get<double>() > 0))
    fail(path_of(key), "expected a positive number, got " + json_excerpt(*v));
  return v->get<double>();
}

std::vector<std::string> FieldReader::strings(const std::string& key, const std::vector<std::string>& fallback) {
  const auto* v = raw(key);
  if (!v) return fallback;
  if (!v->is_array()) fail(path_of(key), "expected an array of strings, got " + json_excerpt(*v));
  std::vector<std::string> out;
  for (size_t i = 0; i < v->size(); ++i) {
    if (!(*v)[i].is_string())
      fail(path_of(key) + "[" + std::to_string(i) + "]", "expected a string, got " + json_excerpt((*v)[i]));
    out.push_back((*v)[i].get<std::string>());
  }
  return out;
}

void FieldReader::finish() const {
  for (const auto& item : object_.items())
    if (!known_.count(item.key())) fail(path_of(printable(item.key(), 60)), "unknown key");
}

}  // namespace qkd
