#pragma once
// The run directory and everything written into it: config.json (the resolved config), the logs
// (metrics.jsonl, signal.jsonl, events.jsonl), checkpoints/, baselines.json and summary.json. Rank 0
// writes; every other rank holds a RunDirectory whose logs go nowhere, so their records never repeat
// rank 0's.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "qkd/common/directory_lock.h"
#include "qkd/train/checkpoint_store.h"
#include "qkd/train/metrics_log.h"

namespace qkd::train {

class RunDirectory {
 public:
  // Nothing is created yet: a run creates its directory only once everything is validated. An existing
  // directory is locked for this writer at once (a second run on it fails naming the first), and what a
  // killed run left half-written (temporary files, checkpoint directories) is removed.
  RunDirectory(std::string path, bool writes);

  const std::string& path() const { return path_; }
  bool writes() const { return writes_; }
  CheckpointStore& checkpoints() { return checkpoints_; }
  const CheckpointStore& checkpoints() const { return checkpoints_; }

  // Creates the directory (rank 0), noting whether this invocation made it, locks it, and writes
  // config.json.
  void create(const nlohmann::json& resolved_config);
  // Opens the three logs. Records after step `keep_records_up_to` are dropped first (-1: all of them: a
  // fresh start redoes everything), so a resumed run's logs equal an uninterrupted run's.
  void open_logs(int64_t keep_records_up_to);
  JsonlWriter& metrics() { return *metrics_; }
  JsonlWriter& signal() { return *signal_; }
  JsonlWriter& events() { return *events_; }
  bool logs_open() const { return events_ != nullptr; }

  // The teacher and round-to-nearest perplexities measured at the start of a fresh run, kept so that a
  // resumed run's summary still has them; null when none were measured or the file is not a record.
  void write_baselines(const nlohmann::json& baselines) const;
  nlohmann::json read_baselines() const;
  void write_summary(const nlohmann::json& summary) const;

  // A fresh run that fails before its first checkpoint leaves nothing behind: a directory this
  // invocation created and that holds no checkpoint is removed.
  void remove_if_unfinished_fresh_start() const;

 private:
  std::string path_;
  bool writes_;
  bool created_ = false;
  std::optional<DirectoryLock> lock_;  // the writer's, for the life of the run
  CheckpointStore checkpoints_;
  std::unique_ptr<JsonlWriter> metrics_, signal_, events_;
};

// <run_dir>/baselines.json.
std::string baselines_path(const std::string& run_dir);

}  // namespace qkd::train
