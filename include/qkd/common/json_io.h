#pragma once
// Bounded JSON for every file and line the program reads: nesting deeper than kMaxJsonDepth is
// refused before parsing (deep values crash recursive serializers), and values quoted in error
// messages are cut to a short excerpt so that an error stays one readable line.
#include <nlohmann/json.hpp>
#include <string>

namespace qkd {

constexpr int kMaxJsonDepth = 64;

// Parses `text`; on bad JSON, too deep nesting or a key that appears twice in one object fails with
// "<where>: ..." (one line).
nlohmann::json parse_json(const std::string& text, const std::string& where);

// Like parse_json but returns a discarded value instead of failing (for JSONL readers that skip or
// report bad lines themselves).
nlohmann::json parse_json_or_discarded(const std::string& text);
// The same keeping each object's keys in file order (chat messages: templates show them in that order).
nlohmann::ordered_json parse_ordered_json_or_discarded(const std::string& text);

// A regular file of at most 64 MiB, parsed with parse_json; errors name the file.
nlohmann::json read_json_file(const std::string& path);

// nlohmann's exception text without its "[json.exception.type_error.302] " prefix.
std::string json_error_text(const nlohmann::json::exception& e);

// `value` as compact JSON, at most max_chars characters ("..." marks a cut), control characters escaped.
std::string json_excerpt(const nlohmann::json& value, size_t max_chars = 80);

// `text` with control and non-ASCII bytes escaped and cut to max_chars: for names read from files.
std::string printable(const std::string& text, size_t max_chars = 120);

}  // namespace qkd
