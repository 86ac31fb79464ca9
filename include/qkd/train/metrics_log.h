#pragma once
// metrics.jsonl (one JSON object per logged step or evaluation) and the training progress line.
#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <string>

#include "qkd/common/progress_line.h"

namespace qkd::train {

// Appends JSON lines, flushed after each so a crash loses at most the line being written.
class JsonlWriter {
 public:
  // On resume, lines whose "step" is greater than `keep_up_to_step` are dropped first, so a resumed
  // run's file equals an uninterrupted run's.
  JsonlWriter(const std::string& path, int64_t keep_up_to_step);
  JsonlWriter() = default;  // writes nowhere (the logs of ranks other than 0)
  void write(const nlohmann::json& line);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

// "step 120/300 | loss 0.0213 | 2150 tok/s | ETA 1m24s" on the console progress line.
class TrainingProgress {
 public:
  TrainingProgress(int64_t total_steps, int64_t first_step);
  void update(int64_t step, double loss, double tokens_per_s);
  void finish() { line_.finish(); }

 private:
  int64_t total_, first_;
  std::chrono::steady_clock::time_point start_;
  ProgressLine line_;
};

}  // namespace qkd::train
