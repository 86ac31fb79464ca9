#pragma once
// One configured source as an endless stream of seq_len-token windows (it wraps into a new epoch at
// its end), with a JSON cursor from which an identical continuation can be rebuilt.
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "qkd/data/data_config.h"
#include "qkd/data/token_batch.h"
#include "qkd/tokenizer/tokenizer.h"

namespace qkd::data {

struct SourceStats {
  std::string path;
  SourceFormat format = SourceFormat::automatic;
  int64_t windows = 0;               // windows handed out
  int64_t epoch = 0;                 // completed passes over the file
  int64_t documents = 0;             // documents read (text sources; re-reads after restore included)
  int64_t malformed = 0;             // malformed records skipped (text sources)
  int64_t buffered_tokens = 0;       // tokens held now (shuffle buffer + current document)
  int64_t peak_buffered_tokens = 0;  // most ever held: stays bounded however large the file
  int64_t peak_line_bytes = 0;
};

class WindowSource {
 public:
  virtual ~WindowSource() = default;
  // Writes the next seq_len token ids to ids[0..seq_len) and their TokenMark bits to marks[0..seq_len).
  virtual void next_window(int64_t* ids, uint8_t* marks) = 0;
  virtual nlohmann::json cursor() const = 0;
  // Throws qkd::Error ("data cursor: ...") when the cursor does not fit this source.
  virtual void restore(const nlohmann::json& cursor) = 0;
  virtual SourceStats stats() const = 0;
};

// Packs documents of a text source (text_jsonl, alpaca, sharegpt, txt) back to back into windows, a
// document running on into the next window where it does not fit (no token is dropped). A document's
// first token is marked kDocumentStart (a continued document's first token in the next window is not). With
// shuffle on, `shuffle_buffer` consecutive windows are generated, permuted with a seed derived from
// (seed, source index, block number) and handed out; a cursor is then the source position where
// the block started plus how many of its windows were used, so restore re-reads at most one block.
// Throws qkd::Error at construction when the source yields no document at all.
std::unique_ptr<WindowSource> make_text_window_source(const SourceConfig& source, SourceFormat format,
                                                      const DataConfig& config, size_t source_index,
                                                      const qkd::tokenizer::Tokenizer& tokenizer);

// Non-overlapping windows of a memory-mapped .u16/.u32 file (its own BOS/EOS are kept as stored).
// With shuffle on, each epoch starts at a seeded offset in [0, seq_len) and visits the windows in a
// seeded random order (a new seed per epoch); without, windows run in file order from offset 0. The
// tail shorter than a window is skipped. Throws when the file holds fewer than seq_len tokens.
// Documents begin at each `bos_id` token (none when negative); a token file marks no prompt but BOS.
std::unique_ptr<WindowSource> make_token_file_window_source(const SourceConfig& source, SourceFormat format,
                                                            const DataConfig& config, size_t source_index,
                                                            int64_t bos_id);

// Reads a non-negative integer field of a cursor object, or throws "data cursor: ..." naming it.
int64_t cursor_integer(const nlohmann::json& cursor, const char* key);

}  // namespace qkd::data
