#pragma once
// The names an enum has in config files, logs and checkpoints, listed once per enum:
//
//   const EnumTable<Precision>& precisions() {
//     static const EnumTable<Precision> table{{Precision::fp32, "fp32"}, {Precision::bf16, "bf16"}};
//     return table;
//   }
//
// name() and parse() both read that one list, so the two directions cannot drift apart, and every
// parse error has the same shape: `<where>: expected one of fp32, bf16, got "x"`. Aliases are extra
// spellings parse() accepts (arc_easy for arc, say) that name() never writes.
#include <initializer_list>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "qkd/common/error.h"

namespace qkd {

template <class Enum>
class EnumTable {
 public:
  using Entry = std::pair<Enum, const char*>;

  EnumTable(std::initializer_list<Entry> entries, std::initializer_list<Entry> aliases = {})
      : entries_(entries), aliases_(aliases) {}

  // The name of `value`; "?" for a value the table does not list (a programming error, not input).
  std::string name(Enum value) const {
    for (const auto& [v, n] : entries_)
      if (v == value) return n;
    return "?";
  }

  std::optional<Enum> find(const std::string& text) const {
    for (const auto* list : {&entries_, &aliases_})
      for (const auto& [v, n] : *list)
        if (text == n) return v;
    return std::nullopt;
  }

  // Fails naming `where` and every accepted name when `text` is none of them.
  Enum parse(const std::string& text, const std::string& where) const {
    if (const auto value = find(text)) return *value;
    fail(where, "expected one of " + joined_names() + ", got \"" + text + "\"");
  }

  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& entry : entries_) out.emplace_back(entry.second);
    return out;
  }
  std::vector<Enum> values() const {
    std::vector<Enum> out;
    for (const auto& entry : entries_) out.push_back(entry.first);
    return out;
  }
  // "a, b, c": the names as error messages list them.
  std::string joined_names() const {
    std::string out;
    for (const auto& entry : entries_) out += (out.empty() ? "" : ", ") + std::string(entry.second);
    return out;
  }

 private:
  std::vector<Entry> entries_;
  std::vector<Entry> aliases_;
};

}  // namespace qkd
