#include "qkd/data/data_config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "qkd/common/error.h"
#include "qkd/common/input_file.h"
#include "qkd/common/json_io.h"

namespace qkd::data {

namespace {

void reject_unknown_keys(const nlohmann::json& object, const std::string& where, const std::set<std::string>& allowed) {
  for (auto it = object.begin(); it != object.end(); ++it) {
    if (allowed.count(it.key())) continue;
    std::string list;
    for (const auto& key : allowed) list += (list.empty() ? "" : ", ") + key;
    fail(where + "." + printable(it.key(), 60), "unknown key (expected one of: " + list + ")");
  }
}

[[noreturn]] void expected(const std::string& where, const std::string& what, const nlohmann::json& got) {
  fail(where, "expected " + what + ", got " + json_excerpt(got));
}

int64_t positive_int(const nlohmann::json& value, const std::string& where) {
  if (!value.is_number_integer() || value.get<int64_t>() <= 0) expected(where, "a positive integer", value);
  return value.get<int64_t>();
}

bool boolean(const nlohmann::json& value, const std::string& where) {
  if (!value.is_boolean()) expected(where, "true or false", value);
  return value.get<bool>();
}

std::string non_empty_string(const nlohmann::json& value, const std::string& where) {
  if (!value.is_string() || value.get<std::string>().empty()) expected(where, "a non-empty string", value);
  return value.get<std::string>();
}

SourceFormat format_from_json(const nlohmann::json& value, const std::string& where) {
  if (value.is_string())
    if (const auto format = source_formats().find(value.get<std::string>())) return *format;
  std::string list;
  for (const auto& name : source_formats().names()) list += (list.empty() ? "" : "|") + name;
  expected(where, "one of " + list, value);
}

SourceConfig source_from_json(const nlohmann::json& json, const std::string& where) {
  if (!json.is_object()) expected(where, "an object", json);
  reject_unknown_keys(json, where, {"path", "format", "weight", "text_field"});
  SourceConfig source;
  if (!json.contains("path")) fail(where + ".path", "missing (the file to read)");
  source.path = non_empty_string(json["path"], where + ".path");
  if (json.contains("format")) source.format = format_from_json(json["format"], where + ".format");
  if (json.contains("weight")) {
    const auto& weight = json["weight"];
    if (!weight.is_number() || !(weight.get<double>() > 0) || !std::isfinite(weight.get<double>())) {
      expected(where + ".weight", "a positive number", weight);
    }
    source.weight = weight.get<double>();
  }
  if (json.contains("text_field")) source.text_field = non_empty_string(json["text_field"], where + ".text_field");
  return source;
}

// First non-blank line of a JSON-lines file, parsed; discarded value when it is not JSON.
nlohmann::json first_record(const std::string& path) {
  require_regular_file(path);
  std::ifstream in(path, std::ios::binary);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    return parse_json_or_discarded(line);
  }
  fail(path, "empty data source (no records)");
}

}  // namespace

const EnumTable<SourceFormat>& source_formats() {
  static const EnumTable<SourceFormat> table{
      {SourceFormat::automatic, "auto"}, {SourceFormat::text_jsonl, "text_jsonl"}, {SourceFormat::alpaca, "alpaca"},
      {SourceFormat::sharegpt, "sharegpt"}, {SourceFormat::chat, "chat"},         {SourceFormat::txt, "txt"},
      {SourceFormat::u16, "u16"},           {SourceFormat::u32, "u32"}};
  return table;
}

bool is_token_file_format(SourceFormat format) { return format == SourceFormat::u16 || format == SourceFormat::u32; }

int token_file_width(SourceFormat format) { return format == SourceFormat::u32 ? 4 : 2; }

DataConfig data_config_from_json(const nlohmann::json& json, const std::string& prefix) {
  if (!json.is_object()) expected(prefix, "an object", json);
  reject_unknown_keys(json, prefix,
                      {"sources", "seq_len", "seed", "shuffle", "shuffle_buffer", "strict", "add_bos", "add_eos",
                       "document_mask"});
  DataConfig config;
  const auto sources_path = prefix + ".sources";
  if (!json.contains("sources")) fail(sources_path, "missing (a list of {path, format, weight})");
  const auto& sources = json["sources"];
  if (!sources.is_array() || sources.empty()) expected(sources_path, "a non-empty array", sources);
  for (size_t i = 0; i < sources.size(); ++i) {
    config.sources.push_back(source_from_json(sources[i], sources_path + "[" + std::to_string(i) + "]"));
  }
  if (json.contains("seq_len")) config.seq_len = positive_int(json["seq_len"], prefix + ".seq_len");
  if (json.contains("seed")) {
    const auto& seed = json["seed"];
    if (!seed.is_number_integer() || (!seed.is_number_unsigned() && seed.get<int64_t>() < 0)) {
      expected(prefix + ".seed", "a non-negative integer", seed);
    }
    config.seed = seed.get<uint64_t>();
  }
  if (json.contains("shuffle")) config.shuffle = boolean(json["shuffle"], prefix + ".shuffle");
  if (json.contains("shuffle_buffer")) {
    config.shuffle_buffer = positive_int(json["shuffle_buffer"], prefix + ".shuffle_buffer");
  }
  if (json.contains("strict")) config.strict = boolean(json["strict"], prefix + ".strict");
  if (json.contains("add_bos")) config.add_bos = boolean(json["add_bos"], prefix + ".add_bos");
  if (json.contains("add_eos")) config.add_eos = boolean(json["add_eos"], prefix + ".add_eos");
  if (json.contains("document_mask")) config.document_mask = boolean(json["document_mask"], prefix + ".document_mask");
  return config;
}

nlohmann::json data_config_to_json(const DataConfig& config) {
  nlohmann::json sources = nlohmann::json::array();
  for (const auto& s : config.sources) {
    sources.push_back(
        {{"path", s.path}, {"format", source_formats().name(s.format)}, {"weight", s.weight}, {"text_field", s.text_field}});
  }
  nlohmann::json json = {{"sources", sources},
                         {"seq_len", config.seq_len},
                         {"seed", config.seed},
                         {"shuffle", config.shuffle},
                         {"shuffle_buffer", config.shuffle_buffer},
                         {"strict", config.strict},
                         {"add_bos", config.add_bos},
                         {"add_eos", config.add_eos}};
  // Written only when on, so that the configs and teacher-cache identities of earlier runs still match.
  if (config.document_mask) json["document_mask"] = true;
  return json;
}

SourceFormat resolve_source_format(const SourceConfig& source) {
  namespace fs = std::filesystem;
  if (!fs::exists(source.path)) fail(source.path, "data source not found");
  if (fs::is_directory(source.path)) fail(source.path, "data source is a directory, expected a file");
  if (source.format != SourceFormat::automatic) return source.format;
  const auto ext = fs::path(source.path).extension().string();
  if (ext == ".u16") return SourceFormat::u16;
  if (ext == ".u32") return SourceFormat::u32;
  if (ext == ".txt") return SourceFormat::txt;
  if (ext != ".jsonl" && ext != ".json" && ext != ".ndjson") {
    fail(source.path, "cannot tell the data format from extension '" + ext +
                          "'; set format (text_jsonl|alpaca|sharegpt|chat|txt|u16|u32)");
  }
  const auto record = first_record(source.path);
  if (!record.is_object()) {
    fail(source.path, "cannot detect the format: first record is not a JSON object; set format explicitly");
  }
  if (record.contains("conversations")) return SourceFormat::sharegpt;
  if (record.contains("messages")) return SourceFormat::chat;
  if (record.contains("instruction") && record.contains("output")) return SourceFormat::alpaca;
  return SourceFormat::text_jsonl;
}

}  // namespace qkd::data
