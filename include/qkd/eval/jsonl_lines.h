#pragma once
// Line-by-line JSONL reading shared by the evaluation readers, so every one reports errors the same
// way: "<file>:<line>: <what>".
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>

namespace qkd::eval {

// Calls `visit(record, where, line)` for each non-blank line, where = "<path>:<line>", line 1-based. Throws qkd::Error
// when the file cannot be opened, a line is not valid JSON, or a record is not a JSON object.
void for_each_jsonl_record(
    const std::string& path,
    const std::function<void(const nlohmann::json& record, const std::string& where, int64_t line)>& visit);

// record[key] as a string; throws "<where>: missing field "key"" / "field "key" is not a string".
const std::string& require_string(const nlohmann::json& record, const char* key, const std::string& where);

}  // namespace qkd::eval
