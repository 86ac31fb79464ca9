#pragma once
// `qkd-train tokenize`: a corpus tokenized once, ahead of training, into a token file (.u16 / .u32, what
// data sources stream) or one {"ids": [...]} line per record (.jsonl). Records are read as the data
// sources read them (txt paragraphs, text JSONL, alpaca, sharegpt, chat messages) and get the ids
// transformers gives: tokenizer(text)["input_ids"] for a text record (the special tokens the
// post-processor adds), apply_chat_template(messages, tokenize=True) for a chat or sharegpt record (the
// model's template; without one the LLaMA-2 [INST] form with real BOS/EOS ids). Inputs are streamed
// in bounded batches and tokenized on every core; the output appears only when complete.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "qkd/data/data_config.h"
#include "qkd/tokenizer/tokenizer.h"

namespace qkd::data {

struct TokenizeOptions {
  std::vector<std::string> inputs;
  std::string out;                                  // <name>.u16, <name>.u32 or <name>.jsonl
  SourceFormat format = SourceFormat::automatic;    // of every input; automatic: each input's own
  std::string text_field = "text";                  // text JSONL
  int64_t threads = 0;                              // 0: every core
  bool append_eos = false;                          // the EOS id after each record (a document boundary
                                                    // for tokenizers whose template adds none, e.g. Qwen)
  bool strict = false;                              // a malformed record fails instead of being skipped
};

struct TokenizeSummary {
  int64_t records = 0;    // tokenized
  int64_t malformed = 0;  // skipped
  int64_t tokens = 0;
  int width_bytes = 0;    // 2 or 4 for a token file, 0 for JSONL
  double seconds = 0.0;
};

// Called with the input bytes read so far and the total, and the records and tokens done.
using TokenizeProgress = std::function<void(int64_t bytes_done, int64_t bytes_total, const TokenizeSummary& so_far)>;

// Fails before reading anything when an input is missing or of a format it cannot tokenize (token
// files), or when `out` names a token file too narrow for the vocabulary (.u16 for more than 65,536
// ids) or an unknown extension.
TokenizeSummary tokenize_corpus(const tokenizer::Tokenizer& tokenizer, const TokenizeOptions& options,
                                const TokenizeProgress& progress = {});

// The ids of one record of `format` (a parsed JSONL line, or {"text": paragraph} for txt), as
// tokenize_corpus writes them. Throws qkd::Error (the record's problem) for a malformed record.
std::vector<int64_t> tokenize_corpus_record(const std::string& line, SourceFormat format, const std::string& text_field,
                                            const tokenizer::Tokenizer& tokenizer);

}  // namespace qkd::data
