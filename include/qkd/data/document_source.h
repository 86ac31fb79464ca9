#pragma once
// Text corpora read line by line in constant memory: one document at a time, with a seekable
// position (byte offset + line number) that a cursor can store.
#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "qkd/data/data_config.h"
#include "qkd/tokenizer/tokenizer.h"

namespace qkd::data {

struct SourcePosition {
  int64_t offset = 0;  // byte offset of the next unread line
  int64_t line = 1;    // its 1-based line number (for file:line messages)
};

struct DocumentCounters {
  int64_t documents = 0;
  int64_t malformed = 0;
  int64_t peak_line_bytes = 0;  // longest line held at once (bounded by kMaxLineBytes)
};

// Lines are read through a bounded buffer: a longer line is skipped as malformed rather than held.
inline constexpr int64_t kMaxLineBytes = int64_t{64} << 20;
// txt paragraphs longer than this are cut at a line boundary into several documents.
inline constexpr int64_t kMaxTxtDocumentBytes = int64_t{1} << 20;

class LineReader {
 public:
  explicit LineReader(const std::string& path);
  // Next line without its "\n" / "\r\n"; false at end of file. `too_long`: truncated at kMaxLineBytes.
  bool read_line(std::string& line, bool& too_long);
  SourcePosition position() const { return position_; }
  void seek(const SourcePosition& position);

 private:
  std::string path_;
  std::filebuf file_;
  SourcePosition position_;
};

// The next txt document from `reader`: a paragraph (lines up to a blank line, joined by "\n"), cut at a
// line boundary past kMaxTxtDocumentBytes. False at end of file. `peak_line_bytes` takes the longest
// line seen.
bool read_paragraph(LineReader& reader, std::string& paragraph, int64_t& peak_line_bytes);

class DocumentSource {
 public:
  virtual ~DocumentSource() = default;
  // Token ids of the next document (non-empty), and per id 1 where it is prompt rather than response
  // (instruction and user turns of alpaca and sharegpt records, and BOS); false at end of file.
  virtual bool next_document(std::vector<int64_t>& tokens, std::vector<uint8_t>& prompt) = 0;
  virtual SourcePosition position() const = 0;
  virtual void seek(const SourcePosition& position) = 0;
  virtual const DocumentCounters& counters() const = 0;
};

// Opens a text source of a resolved format (text_jsonl, alpaca, sharegpt, txt).
std::unique_ptr<DocumentSource> open_document_source(const SourceConfig& source, SourceFormat format,
                                                     const DataConfig& config,
                                                     const qkd::tokenizer::Tokenizer& tokenizer);

}  // namespace qkd::data
