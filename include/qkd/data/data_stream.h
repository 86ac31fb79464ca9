#pragma once
// The training data stream: mixes the configured sources into [B, seq_len] int64 batches of packed
// token windows, in constant memory, reproducibly from a seed, resumable from a JSON cursor.
//
//   DataStream stream(config, &tokenizer);
//   auto batch = stream.next_batch(8);           // [8, seq_len] int64 input_ids (CE shifts them)
//   checkpoint["data_cursor"] = stream.cursor();
//   ...
//   DataStream resumed(config, &tokenizer);
//   resumed.restore(checkpoint["data_cursor"]);  // continues with exactly the next unseen batch
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "qkd/data/data_config.h"
#include "qkd/data/window_source.h"
#include "qkd/tokenizer/tokenizer.h"

namespace qkd::data {

struct DataStats {
  int64_t windows = 0;  // windows handed out since the start of the run (kept across restore)
  std::vector<SourceStats> sources;
};

class DataStream {
 public:
  // Opens and checks every source (missing, empty, too short for one window: qkd::Error naming the
  // file) before any compute. `tokenizer` may be null when all sources are token files; it must
  // outlive the stream.
  DataStream(const DataConfig& config, const qkd::tokenizer::Tokenizer* tokenizer);
  ~DataStream();
  DataStream(DataStream&&) noexcept;
  DataStream& operator=(DataStream&&) noexcept;

  // Each row is one window from a source chosen by the seeded RNG in proportion to its weight.
  torch::Tensor next_batch(int64_t batch_size);
  // The same windows with their TokenMark bits (document starts, prompt tokens).
  TokenBatch next_marked_batch(int64_t batch_size);
  // Writes one window (seq_len ids) to ids and its marks to marks.
  void next_window(int64_t* ids, uint8_t* marks);

  // Everything needed to continue exactly where this stream is: RNG state and per-source positions.
  nlohmann::json cursor() const;
  // Throws qkd::Error ("data cursor: ...") when the cursor was written for another data config
  // (seq_len, seed, shuffle, shuffle_buffer, source paths/formats); weights may change on resume.
  void restore(const nlohmann::json& cursor);

  DataStats stats() const;
  int64_t seq_len() const { return config_.seq_len; }
  const DataConfig& config() const { return config_; }

 private:
  size_t choose_source();

  DataConfig config_;
  std::vector<SourceFormat> formats_;
  std::vector<std::unique_ptr<WindowSource>> sources_;
  std::vector<double> cumulative_weights_;
  uint64_t rng_state_ = 0;
  int64_t windows_ = 0;
};

}  // namespace qkd::data
