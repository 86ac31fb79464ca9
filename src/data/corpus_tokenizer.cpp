#include "qkd/data/corpus_tokenizer.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include "qkd/common/atomic_file.h"
#include "qkd/common/output_directory.h"
#include "qkd/common/error.h"
#include "qkd/common/json_io.h"
#include "qkd/data/document_source.h"
#include "qkd/data/record_render.h"

namespace qkd::data {

namespace fs = std::filesystem;

namespace {

constexpr size_t kBatchRecords = 2048;             // records read before they are tokenized together
constexpr size_t kBatchBytes = size_t{16} << 20;  // or this many bytes, whichever comes first

enum class OutputKind { u16, u32, jsonl };

OutputKind output_kind(const std::string& out, int64_t vocab_size) {
  const auto ext = fs::path(out).extension().string();
  if (ext == ".jsonl") return OutputKind::jsonl;
  if (ext == ".u32") return OutputKind::u32;
  if (ext != ".u16") fail("--out", "expected a .u16, .u32 or .jsonl file, got \"" + out + "\"");
  if (vocab_size > 65536)
    fail("--out", "the vocabulary has " + std::to_string(vocab_size) + " ids, more than a .u16 file holds: write " +
                      fs::path(out).replace_extension(".u32").string());
  return OutputKind::u16;
}

int64_t thread_count(int64_t requested) {
  const int64_t cores = std::max<int64_t>(1, std::thread::hardware_concurrency());
  if (requested == 0) return cores;
  if (requested < 0 || requested > 4 * cores)
    fail("--threads", "expected 0 (every core) or 1.." + std::to_string(4 * cores) + " (this machine has " +
                          std::to_string(cores) + " cores), got " + std::to_string(requested));
  return requested;
}

template <class Json>
Json parse_record(const std::string& line) {
  Json record;
  if constexpr (std::is_same_v<Json, nlohmann::json>)
    record = parse_json_or_discarded(line);
  else
    record = parse_ordered_json_or_discarded(line);
  if (record.is_discarded()) throw Error("invalid JSON");
  if (!record.is_object()) throw Error("not a JSON object");
  return record;
}

std::vector<int64_t> rendered_ids(const RenderedRecord& rendered, const tokenizer::Tokenizer& tokenizer) {
  if (!rendered.error.empty()) throw Error(rendered.error);
  return tokenize_segments(rendered.segments, tokenizer);
}

// A chat as apply_chat_template(messages, tokenize=True): the rendering tokenized without added
// special tokens (the template writes them as text). Without a template, the LLaMA-2 form.
std::vector<int64_t> chat_ids(const nlohmann::ordered_json& record, const tokenizer::Tokenizer& tokenizer) {
  return rendered_ids(render_chat_record(record, tokenizer.chat_template(), /*need_spans=*/false), tokenizer);
}

}  // namespace

std::vector<int64_t> tokenize_corpus_record(const std::string& line, SourceFormat format, const std::string& text_field,
                                            const tokenizer::Tokenizer& tokenizer) {
  switch (format) {
    case SourceFormat::txt: return tokenizer.encode_with_special_tokens(line);
    case SourceFormat::text_jsonl: {
      const auto rendered = render_text_record(parse_record<nlohmann::json>(line), text_field, false, false);
      if (!rendered.error.empty()) throw Error(rendered.error);
      return rendered.empty() ? std::vector<int64_t>{} : tokenizer.encode_with_special_tokens(rendered.segments[0].text);
    }
    case SourceFormat::alpaca: {
      const auto rendered = render_alpaca_record(parse_record<nlohmann::json>(line), false, false);
      if (!rendered.error.empty()) throw Error(rendered.error);
      return tokenizer.encode_with_special_tokens(rendered.segments[0].text);
    }
    case SourceFormat::chat: return chat_ids(parse_record<nlohmann::ordered_json>(line), tokenizer);
    case SourceFormat::sharegpt: {
      if (!tokenizer.chat_template())
        return rendered_ids(render_sharegpt_record(parse_record<nlohmann::json>(line)), tokenizer);
      std::string error;
      const auto messages = sharegpt_messages(parse_record<nlohmann::ordered_json>(line), error);
      if (!error.empty()) throw Error(error);
      return chat_ids(messages, tokenizer);
    }
    default: fail(source_formats().name(format), "is not a text format to tokenize");
  }
}

namespace {

struct Record {
  int64_t line = 0;   // where it starts, for messages
  std::string text;   // a JSONL line, or a txt paragraph
  std::string error;  // set when it could not even be read whole
};

// One input's records in order, in batches of at most kBatchRecords / kBatchBytes.
class RecordReader {
 public:
  RecordReader(const std::string& path, SourceFormat format) : format_(format), reader_(path) {}

  // The next batch; empty at end of file.
  std::vector<Record> next_batch() {
    std::vector<Record> batch;
    size_t bytes = 0;
    while (batch.size() < kBatchRecords && bytes < kBatchBytes) {
      Record record{reader_.position().line, {}, {}};
      if (format_ == SourceFormat::txt) {
        int64_t peak = 0;
        if (!read_paragraph(reader_, record.text, peak)) break;
      } else {
        bool too_long = false;
        if (!reader_.read_line(record.text, too_long)) break;
        if (record.text.find_first_not_of(" \t\r") == std::string::npos) continue;
        if (too_long) {
          record.text.clear();
          record.error = "line longer than 64 MiB";
        }
      }
      bytes += record.text.size();
      batch.push_back(std::move(record));
    }
    return batch;
  }
  int64_t offset() const { return reader_.position().offset; }

 private:
  SourceFormat format_;
  LineReader reader_;
};

struct RecordIds {
  std::vector<int64_t> ids;
  std::string error;  // non-empty: malformed
};

// Tokenizes a batch on `threads` threads, each a contiguous share of the records.
std::vector<RecordIds> tokenize_batch(const std::vector<Record>& batch, SourceFormat format,
                                      const TokenizeOptions& options, const tokenizer::Tokenizer& tokenizer,
                                      int64_t threads) {
  std::vector<RecordIds> out(batch.size());
  const auto work = [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      out[i].error = batch[i].error;
      if (!out[i].error.empty()) continue;
      try {
        out[i].ids = tokenize_corpus_record(batch[i].text, format, options.text_field, tokenizer);
      } catch (const Error& e) {
        out[i].error = e.what();
      }
    }
  };
  const size_t n = std::min<size_t>(static_cast<size_t>(threads), std::max<size_t>(1, batch.size()));
  std::vector<std::thread> pool;
  for (size_t t = 1; t < n; ++t) pool.emplace_back(work, batch.size() * t / n, batch.size() * (t + 1) / n);
  work(0, batch.size() / n);
  for (auto& thread : pool) thread.join();
  return out;
}

void write_ids(std::ostream& os, OutputKind kind, const std::vector<int64_t>& ids) {
  if (kind == OutputKind::jsonl) {
    os << nlohmann::json{{"ids", ids}}.dump() << '\n';
    return;
  }
  for (const auto id : ids) {
    if (kind == OutputKind::u16) {
      const auto v = static_cast<uint16_t>(id);
      os.write(reinterpret_cast<const char*>(&v), 2);
    } else {
      const auto v = static_cast<uint32_t>(id);
      os.write(reinterpret_cast<const char*>(&v), 4);
    }
  }
}

struct Input {
  std::string path;
  SourceFormat format;
  int64_t bytes;
};

std::vector<Input> resolve_inputs(const TokenizeOptions& options) {
  if (options.inputs.empty()) fail("--input", "no input file given");
  std::vector<Input> inputs;
  for (const auto& path : options.inputs) {
    const auto format = resolve_source_format({path, options.format});
    if (is_token_file_format(format)) fail(path, "is already a token file (" + source_formats().name(format) + ")");
    inputs.push_back({path, format, static_cast<int64_t>(fs::file_size(path))});
  }
  return inputs;
}

}  // namespace

TokenizeSummary tokenize_corpus(const tokenizer::Tokenizer& tokenizer, const TokenizeOptions& options,
                                const TokenizeProgress& progress) {
  const auto start = std::chrono::steady_clock::now();
  const auto kind = output_kind(options.out, tokenizer.vocab_size());
  const auto threads = thread_count(options.threads);
  const auto inputs = resolve_inputs(options);
  require_replaceable_output(options.out);  // before minutes of tokenizing
  for (const auto& input : inputs) require_apart(options.out, "--out", input.path, "--input");
  for (const auto& input : inputs)
    if (input.format == SourceFormat::chat || input.format == SourceFormat::sharegpt) tokenizer.chat_template();
  if (options.append_eos && tokenizer.special().eos < 0) fail("--eos", "the tokenizer has no EOS token");
  int64_t total_bytes = 0;
  for (const auto& input : inputs) total_bytes += input.bytes;
  TokenizeSummary summary;
  summary.width_bytes = kind == OutputKind::u16 ? 2 : kind == OutputKind::u32 ? 4 : 0;
  write_file_atomically(options.out, [&](std::ostream& os) {
    int64_t bytes_before = 0;
    for (const auto& input : inputs) {
      RecordReader reader(input.path, input.format);
      for (auto batch = reader.next_batch(); !batch.empty(); batch = reader.next_batch()) {
        auto results = tokenize_batch(batch, input.format, options, tokenizer, threads);
        for (size_t i = 0; i < results.size(); ++i) {
          auto& r = results[i];
          if (!r.error.empty()) {
            const auto where = input.path + ":" + std::to_string(batch[i].line);
            if (options.strict) fail(where, r.error);
            if (++summary.malformed <= 10) spdlog::warn("{}: {} (skipped)", where, r.error);
            continue;
          }
          if (options.append_eos) r.ids.push_back(tokenizer.special().eos);
          write_ids(os, kind, r.ids);
          ++summary.records;
          summary.tokens += static_cast<int64_t>(r.ids.size());
        }
        if (progress) progress(bytes_before + reader.offset(), total_bytes, summary);
      }
      bytes_before += input.bytes;
    }
  });
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

}  // namespace qkd::data
