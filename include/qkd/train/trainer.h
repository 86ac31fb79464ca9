#pragma once
// The KD-QAT training recipe: `run_training(config)` is what `qkd-train --config FILE` does.
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "qkd/monitor/signal_monitor.h"
#include "qkd/train/run_config.h"

namespace qkd::train {

// Optional calls into the loop, for tests: they inject synthetic monitor signals at an exact step
// without the library reading anything test-specific.
struct TrainHooks {
  // At the start of every step (1-based).
  std::function<void(int64_t step, monitor::SignalMonitor& monitor)> before_step;
};

// How much the run did and at what rate.
struct RunTotals {
  int64_t steps_completed = 0;
  int64_t skipped_steps = 0;
  double wall_seconds = 0.0;
  double tokens_per_second = 0.0;
  double peak_rss_mb = 0.0;
};

// What the run left for its user.
struct RunOutputs {
  nlohmann::json final_eval;  // results_to_json of the last evaluation (null when none configured)
  std::string last_checkpoint;
  std::vector<std::string> exported;  // <run_dir>/export/<format> paths, in export.formats order
  nlohmann::json baselines;  // {"teacher": {file: ppl}, "student": {file: ppl}} at step 0; null when not measured
};

// The ranks the run had, as the process that returns the summary saw them.
struct RankReport {
  int rank = 0;
  int world_size = 1;
  std::vector<uint64_t> replica_fingerprints;  // several ranks: each rank's weight fingerprint, in rank order
};

struct TrainSummary {
  bool interrupted = false;  // stopped by SIGINT/SIGTERM (a checkpoint was written unless it stopped before step 1)
  RunTotals totals;
  RunOutputs outputs;
  RankReport ranks;
  nlohmann::json to_json() const;  // summary.json: the fields above, flat
};

// "00ab..." (16 hex digits), as summaries and messages show a replica fingerprint.
std::string fingerprint_hex(uint64_t fingerprint);

TrainSummary run_training(const RunConfig& config, const TrainHooks& hooks = {});

}  // namespace qkd::train
