#include "qkd/data/document_source.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <type_traits>

#include "qkd/common/error.h"
#include "qkd/common/input_file.h"
#include "qkd/common/json_io.h"
#include "qkd/data/record_render.h"

namespace qkd::data {

LineReader::LineReader(const std::string& path) : path_(path) {
  require_regular_file(path);
  if (!file_.open(path, std::ios::in | std::ios::binary)) fail(path, "cannot open data source");
}

bool LineReader::read_line(std::string& line, bool& too_long) {
  line.clear();
  too_long = false;
  int64_t consumed = 0;
  for (;;) {
    const int c = file_.sbumpc();
    if (c == std::char_traits<char>::eof()) {
      if (consumed == 0) return false;
      break;
    }
    ++consumed;
    if (c == '\n') break;
    if (static_cast<int64_t>(line.size()) < kMaxLineBytes) {
      line.push_back(static_cast<char>(c));
    } else {
      too_long = true;
    }
  }
  if (!line.empty() && line.back() == '\r') line.pop_back();
  position_.offset += consumed;
  position_.line += 1;
  return true;
}

void LineReader::seek(const SourcePosition& position) {
  if (file_.pubseekpos(position.offset, std::ios::in) == std::streampos(std::streamoff(-1))) {
    fail(path_, "cannot seek to byte " + std::to_string(position.offset));
  }
  position_ = position;
}

namespace {

bool is_blank(const std::string& line) { return line.find_first_not_of(" \t\r") == std::string::npos; }

// Counts a malformed record and warns about it (first 10, then every 1000th, so a broken 10 GB file
// does not flood the log); fatal in strict mode.
void report_malformed(const std::string& path, int64_t line, const std::string& what, bool strict,
                      DocumentCounters& counters) {
  const auto where = path + ":" + std::to_string(line);
  if (strict) fail(where, what);
  ++counters.malformed;
  if (counters.malformed <= 10 || counters.malformed % 1000 == 0) {
    spdlog::warn("{}: {} (skipped; {} malformed records in this source so far)", where, what, counters.malformed);
  }
}

class JsonlDocumentSource : public DocumentSource {
 public:
  JsonlDocumentSource(const SourceConfig& source, SourceFormat format, const DataConfig& config,
                      const qkd::tokenizer::Tokenizer& tokenizer)
      : source_(source), format_(format), config_(config), tokenizer_(tokenizer), reader_(source.path) {
    // Asked now, so that a template the renderer cannot read fails at start, naming its line.
    if (format == SourceFormat::chat || format == SourceFormat::sharegpt) chat_ = tokenizer.chat_template();
  }

  bool next_document(std::vector<int64_t>& tokens, std::vector<uint8_t>& prompt) override {
    std::string line;
    bool too_long = false;
    while (reader_.read_line(line, too_long)) {
      const int64_t line_number = reader_.position().line - 1;
      counters_.peak_line_bytes = std::max<int64_t>(counters_.peak_line_bytes, line.size());
      if (too_long) {
        report_malformed(source_.path, line_number, "line longer than 64 MiB", config_.strict, counters_);
        continue;
      }
      if (is_blank(line)) continue;
      const auto rendered = render(line);
      if (!rendered.error.empty()) {
        report_malformed(source_.path, line_number, rendered.error, config_.strict, counters_);
        continue;
      }
      if (rendered.empty()) continue;  // e.g. an empty text: nothing to train on, not an error
      auto tokenized = tokenize_record(rendered.segments, tokenizer_);
      if (tokenized.ids.empty()) continue;
      tokens = std::move(tokenized.ids);
      prompt = std::move(tokenized.prompt);
      ++counters_.documents;
      return true;
    }
    return false;
  }

  SourcePosition position() const override { return reader_.position(); }
  void seek(const SourcePosition& position) override { reader_.seek(position); }
  const DocumentCounters& counters() const override { return counters_; }

 private:
  template <class Json>
  static bool parse_object(const std::string& line, Json& record, std::string& error) {
    if constexpr (std::is_same_v<Json, nlohmann::json>)
      record = parse_json_or_discarded(line);
    else
      record = parse_ordered_json_or_discarded(line);
    if (record.is_discarded())
      error = "invalid JSON";
    else if (!record.is_object())
      error = "not a JSON object";
    return error.empty();
  }

  // Chats keep their keys in file order (a template may show them); the other records need no order.
  RenderedRecord render(const std::string& line) const {
    std::string error;
    if (format_ == SourceFormat::chat || (format_ == SourceFormat::sharegpt && chat_)) {
      nlohmann::ordered_json record;
      if (!parse_object(line, record, error)) return malformed_record(error);
      if (format_ == SourceFormat::chat) return render_chat_record(record, chat_, config_.need_response_spans);
      const auto messages = sharegpt_messages(record, error);
      if (!error.empty()) return malformed_record(error);
      return render_chat_record(messages, chat_, config_.need_response_spans);
    }
    nlohmann::json record;
    if (!parse_object(line, record, error)) return malformed_record(error);
    switch (format_) {
      case SourceFormat::alpaca: return render_alpaca_record(record, config_.add_bos, config_.add_eos);
      case SourceFormat::sharegpt: return render_sharegpt_record(record);
      default: return render_text_record(record, source_.text_field, config_.add_bos, config_.add_eos);
    }
  }

  static RenderedRecord malformed_record(const std::string& why) {
    RenderedRecord out;
    out.error = why;
    return out;
  }

  SourceConfig source_;
  SourceFormat format_;
  DataConfig config_;  // a copy: sources must not depend on the caller keeping it alive
  const qkd::tokenizer::Tokenizer& tokenizer_;
  const chat::ChatTemplate* chat_ = nullptr;  // chat and sharegpt sources: the model's template, if it has one
  LineReader reader_;
  DocumentCounters counters_;
};

// Plain text: documents are paragraphs separated by blank lines (lines inside a paragraph keep
// their "\n"). Whole-file streams are not offered: they cannot be re-tokenized from a seek offset.
class TxtDocumentSource : public DocumentSource {
 public:
  TxtDocumentSource(const SourceConfig& source, const DataConfig& config, const qkd::tokenizer::Tokenizer& tokenizer)
      : config_(config), tokenizer_(tokenizer), reader_(source.path) {}

  bool next_document(std::vector<int64_t>& tokens, std::vector<uint8_t>& prompt) override {
    std::string paragraph;
    if (!read_paragraph(reader_, paragraph, counters_.peak_line_bytes)) return false;
    auto tokenized = tokenize_record({{paragraph, config_.add_bos, config_.add_eos}}, tokenizer_);
    tokens = std::move(tokenized.ids);
    prompt = std::move(tokenized.prompt);
    ++counters_.documents;
    return true;
  }

  SourcePosition position() const override { return reader_.position(); }
  void seek(const SourcePosition& position) override { reader_.seek(position); }
  const DocumentCounters& counters() const override { return counters_; }

 private:
  DataConfig config_;  // a copy: sources must not depend on the caller keeping it alive
  const qkd::tokenizer::Tokenizer& tokenizer_;
  LineReader reader_;
  DocumentCounters counters_;
};

}  // namespace

bool read_paragraph(LineReader& reader, std::string& paragraph, int64_t& peak_line_bytes) {
  paragraph.clear();
  std::string line;
  bool too_long = false;
  for (;;) {
    const SourcePosition before = reader.position();
    if (!reader.read_line(line, too_long)) break;
    peak_line_bytes = std::max<int64_t>(peak_line_bytes, line.size());
    if (is_blank(line)) {
      if (paragraph.empty()) continue;
      break;
    }
    if (!paragraph.empty() && static_cast<int64_t>(paragraph.size() + line.size()) > kMaxTxtDocumentBytes) {
      reader.seek(before);  // this line starts the next document
      break;
    }
    if (!paragraph.empty()) paragraph += '\n';
    paragraph += line;
  }
  return !paragraph.empty();
}

std::unique_ptr<DocumentSource> open_document_source(const SourceConfig& source, SourceFormat format,
                                                     const DataConfig& config,
                                                     const qkd::tokenizer::Tokenizer& tokenizer) {
  if (format == SourceFormat::txt) return std::make_unique<TxtDocumentSource>(source, config, tokenizer);
  return std::make_unique<JsonlDocumentSource>(source, format, config, tokenizer);
}

}  // namespace qkd::data
