#pragma once
// A config section names each of its fields once. The section is a struct whose members carry the
// defaults and whose `fields` template lists the keys with their limits:
//
//   struct OptimSection {
//     double lr = 1e-4;
//     template <class Fields> void fields(Fields& f) { f.positive("lr", lr); }
//   };
//
// read_section<OptimSection>(json, "optim") runs it with a reader (values validated, errors naming
// the JSON path, unknown keys rejected) and write_section(section) with a writer (the resolved config
// with every default filled in), so reader and writer cannot drift apart. A section that needs checks
// across fields defines `void check(const std::string& path) const`, which read_section calls.
#include <nlohmann/json.hpp>

#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "qkd/common/enum_table.h"
#include "qkd/common/error.h"
#include "qkd/common/json_fields.h"

namespace qkd {

class SectionReader {
 public:
  static constexpr bool reading = true;
  SectionReader(const nlohmann::json& object, std::string path) : r_(object, std::move(path), FieldReader::Null::refused) {}

  void flag(const char* key, bool& v) { v = r_.boolean(key, v); }
  void text(const char* key, std::string& v) { v = r_.string(key, v); }
  void required_text(const char* key, std::string& v) { v = r_.required_string(key); }
  void texts(const char* key, std::vector<std::string>& v) { v = r_.strings(key, v); }
  void integer(const char* key, int64_t& v, int64_t min, int64_t max) { v = r_.integer(key, v, min, max); }
  void number(const char* key, double& v, double min, double max) { v = r_.number(key, v, min, max); }
  void positive(const char* key, double& v) { v = r_.positive(key, v); }
  // An enum stored by name: what the file may hold is the table's names.
  template <class Enum>
  void choice(const char* key, Enum& v, const EnumTable<Enum>& table) {
    v = *table.find(r_.one_of(key, table.name(v), table.names()));
  }
  // A list of names read as typed values: from(names, path) converts (and validates), to(values) names.
  template <class T, class ToNames, class FromNames>
  void list(const char* key, std::vector<T>& v, ToNames to, FromNames from) {
    v = from(r_.strings(key, to(v)), r_.path_of(key));
  }
  // A field with its own JSON form: parse(json, path) reads it, write(value) writes it.
  template <class T, class Parse, class Write>
  void custom(const char* key, T& v, Parse parse, Write) {
    if (const auto* j = r_.raw(key)) v = parse(*j, r_.path_of(key));
  }
  // A key that is no longer read: refused with what replaced it.
  void retired(const char* key, const std::string& replacement) {
    if (r_.has(key)) fail(r_.path_of(key), replacement);
  }
  void finish() const { r_.finish(); }

 private:
  FieldReader r_;
};

class SectionWriter {
 public:
  static constexpr bool reading = false;
  void flag(const char* key, bool v) { out_[key] = v; }
  void text(const char* key, const std::string& v) { out_[key] = v; }
  void required_text(const char* key, const std::string& v) { out_[key] = v; }
  void texts(const char* key, const std::vector<std::string>& v) { out_[key] = v; }
  void integer(const char* key, int64_t v, int64_t, int64_t) { out_[key] = v; }
  void number(const char* key, double v, double, double) { out_[key] = v; }
  void positive(const char* key, double v) { out_[key] = v; }
  template <class Enum>
  void choice(const char* key, Enum v, const EnumTable<Enum>& table) {
    out_[key] = table.name(v);
  }
  template <class T, class ToNames, class FromNames>
  void list(const char* key, const std::vector<T>& v, ToNames to, FromNames) {
    out_[key] = to(v);
  }
  template <class T, class Parse, class Write>
  void custom(const char* key, const T& v, Parse, Write write) {
    out_[key] = write(v);
  }
  void retired(const char*, const std::string&) {}
  nlohmann::json take() { return std::move(out_); }

 private:
  nlohmann::json out_ = nlohmann::json::object();
};

namespace detail {
template <class T, class = void>
struct has_check : std::false_type {};
template <class T>
struct has_check<T, std::void_t<decltype(std::declval<const T&>().check(std::string()))>> : std::true_type {};
}  // namespace detail

// `object` may be null (the section is absent): every field keeps its default.
template <class Section>
Section read_section(const nlohmann::json& object, const std::string& path) {
  Section section;
  SectionReader reader(object, path);
  section.fields(reader);
  reader.finish();
  if constexpr (detail::has_check<Section>::value) section.check(path);
  return section;
}

template <class Section>
nlohmann::json write_section(const Section& section) {
  Section copy = section;  // fields() is one template for both directions, so it takes a mutable section
  SectionWriter writer;
  copy.fields(writer);
  return writer.take();
}

}  // namespace qkd
