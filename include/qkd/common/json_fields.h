#pragma once
// Reading one JSON object of a config with errors that name the JSON path
// ("optim.lr: expected a positive number, got \"fast\""). Every key read is remembered so that
// finish() can reject the keys nobody asked for (typos must not pass silently).
#include <nlohmann/json.hpp>

#include <set>
#include <string>
#include <vector>

namespace qkd {

class FieldReader {
 public:
  // How a key whose value is null reads: as if it were absent (files written by other programs, such as
  // tokenizer.json's "dropout": null), or as an error (a run config: `"steps": null` must not quietly
  // mean the default).
  enum class Null { absent, refused };
  // `object` must be a JSON object (or null: then every field takes its default).
  FieldReader(const nlohmann::json& object, std::string path, Null null = Null::absent);

  std::string path_of(const std::string& key) const;
  bool has(const std::string& key) const;
  const nlohmann::json* raw(const std::string& key);  // nullptr when absent; marks the key as known

  std::string string(const std::string& key, const std::string& fallback);
  std::string one_of(const std::string& key, const std::string& fallback, const std::vector<std::string>& allowed);
  bool boolean(const std::string& key, bool fallback);
  int64_t integer(const std::string& key, int64_t fallback, int64_t min, int64_t max);
  double number(const std::string& key, double fallback, double min, double max);
  double positive(const std::string& key, double fallback);
  std::vector<std::string> strings(const std::string& key, const std::vector<std::string>& fallback);
  std::string required_string(const std::string& key);

  // Errors on the first key of the object that was never read.
  void finish() const;

 private:
  const nlohmann::json& object_;
  std::string path_;
  std::set<std::string> known_;
  Null null_;
};

}  // namespace qkd
