#pragma once
// The `data` section of a run config: which corpora to stream, how to mix, pack and shuffle them.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "qkd/common/enum_table.h"

namespace qkd::data {

// auto: by extension (.u16/.u32/.txt) or, for .jsonl/.json/.ndjson, by the keys of the first record
// (conversations -> sharegpt, messages -> chat, instruction+output -> alpaca, else text_jsonl).
// chat: {"messages": [{"role", "content"}, ...]} rendered with the model's chat template
// (tokenizer_config.json), as transformers' apply_chat_template; sharegpt records map onto it.
// txt: one document per paragraph (paragraphs are separated by blank lines; a paragraph over 1 MiB
// is cut at a line boundary). A whole-file stream is not offered: it could not be resumed from a
// byte offset without re-tokenizing from the start.
enum class SourceFormat { automatic, text_jsonl, alpaca, sharegpt, chat, txt, u16, u32 };
const EnumTable<SourceFormat>& source_formats();  // "auto" | "text_jsonl" | "alpaca" | ... as data.sources[].format takes them

struct SourceConfig {
  std::string path;
  SourceFormat format = SourceFormat::automatic;
  double weight = 1.0;              // relative share of windows drawn from this source
  std::string text_field = "text";  // text_jsonl only
};

struct DataConfig {
  std::vector<SourceConfig> sources;
  int64_t seq_len = 2048;  // tokens per window (one row of a batch)
  uint64_t seed = 0;
  bool shuffle = true;
  int64_t shuffle_buffer = 512;  // packed windows shuffled together per text source (memory: x seq_len x 8 B)
  bool strict = false;           // malformed records are fatal instead of skipped
  bool add_bos = true;           // around each text/alpaca/txt document (sharegpt brings its own)
  bool add_eos = true;
  // Attention stays inside each document of a packed window and positions restart at each document
  // (teacher and student alike). Text sources know where their documents begin; token files begin
  // one at each BOS token they store.
  bool document_mask = false;
  // Not a key of the `data` section: kd.ce_on responses sets it. Chat records must then say where each
  // assistant response lies in their rendering, and one whose template cannot say is malformed.
  bool need_response_spans = false;
};

bool is_token_file_format(SourceFormat format);
// Bytes per token of a token-file format (u16: 2, u32: 4), whatever the file's name says.
int token_file_width(SourceFormat format);

// Validates and converts; errors name the JSON path ("data.sources[1].weight: expected a positive
// number, got -1"). Unknown keys are rejected. Relative source paths are kept as written.
DataConfig data_config_from_json(const nlohmann::json& json, const std::string& path_prefix = "data");
nlohmann::json data_config_to_json(const DataConfig& config);

// Resolves SourceFormat::automatic by looking at the file; throws qkd::Error naming the file when it is
// missing or the format cannot be told.
SourceFormat resolve_source_format(const SourceConfig& source);

}  // namespace qkd::data
