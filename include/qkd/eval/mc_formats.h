#pragma once
// Multiple-choice datasets as JSONL. Every format is reduced to items whose choices are
// (context, continuation) pairs, the shape lm-evaluation-harness scores: usually the context is shared
// and the continuations differ; winogrande is the other way round.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "qkd/common/enum_table.h"

namespace qkd::eval {

enum class McFormat { automatic, generic, hellaswag, piqa, arc, winogrande, boolq, openbookqa };

// "auto", "generic" (alias "mc"), "hellaswag", "piqa", "arc", "winogrande", "boolq", "openbookqa".
McFormat parse_mc_format(const std::string& name);
const EnumTable<McFormat>& mc_formats();  // "auto" | "generic" | ... as --mc-format takes them

struct McChoice {
  std::string context;
  std::string continuation;
  // acc_norm divisor: UTF-8 byte length of the choice as lm-eval's doc_to_choice gives it (without
  // the " " target delimiter; for the generic format the choice string exactly as written).
  int64_t norm_bytes = 1;
};

struct McItem {
  std::vector<McChoice> choices;
  int64_t label = 0;
  int64_t line = 0;  // 1-based line in the source file, for messages
};

struct McDataset {
  std::string path;
  McFormat format = McFormat::automatic;
  std::vector<McItem> items;
};

// Which format a record's fields belong to; Auto when none matches.
McFormat detect_mc_format(const nlohmann::json& record);

// One record -> item. `where` ("file:line") prefixes every error.
McItem mc_item_from_record(const nlohmann::json& record, McFormat format, const std::string& where);

// Reads a JSONL file (blank lines skipped). Auto detects the format from the first record.
// Throws qkd::Error "<file>:<line>: ..." on bad JSON, missing fields, or labels out of range.
McDataset load_mc_file(const std::string& path, McFormat format = McFormat::automatic);

// lm-eval's hellaswag text cleanup: strip, " [title]" -> ". ", drop "[...]", "  " -> " ".
std::string hellaswag_preprocess(const std::string& text);

}  // namespace qkd::eval
