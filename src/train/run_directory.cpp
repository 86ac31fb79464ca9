#include "qkd/train/run_directory.h"

#include <spdlog/spdlog.h>

#include <filesystem>

#include "qkd/common/atomic_file.h"
#include "qkd/common/input_file.h"
#include "qkd/common/json_io.h"

namespace qkd::train {

namespace fs = std::filesystem;

std::string baselines_path(const std::string& run_dir) { return (fs::path(run_dir) / "baselines.json").string(); }

RunDirectory::RunDirectory(std::string path, bool writes)
    : path_(std::move(path)), writes_(writes), checkpoints_(path_) {
  if (!writes_ || !fs::is_directory(path_)) return;
  lock_.emplace(path_, "run directory");
  checkpoints_.remove_leftovers();
}

void RunDirectory::create(const nlohmann::json& resolved_config) {
  if (!writes_) return;
  created_ = !fs::exists(path_);
  fs::create_directories(path_);
  if (!lock_) lock_.emplace(path_, "run directory");
  write_text_atomically((fs::path(path_) / "config.json").string(), resolved_config.dump(2) + "\n");
}

void RunDirectory::open_logs(int64_t keep_records_up_to) {
  const auto open = [&](const char* name) {
    if (!writes_) return std::make_unique<JsonlWriter>();
    return std::make_unique<JsonlWriter>((fs::path(path_) / name).string(), keep_records_up_to);
  };
  metrics_ = open("metrics.jsonl");
  signal_ = open("signal.jsonl");
  events_ = open("events.jsonl");
}

void RunDirectory::write_baselines(const nlohmann::json& baselines) const {
  if (writes_) write_text_atomically(baselines_path(path_), baselines.dump(2) + "\n");
}

nlohmann::json RunDirectory::read_baselines() const {
  const auto path = baselines_path(path_);
  if (!fs::is_regular_file(path)) return nullptr;
  const auto baselines = parse_json_or_discarded(read_text_file(path));
  if (baselines.is_object() && baselines.contains("teacher") && baselines.contains("student")) return baselines;
  spdlog::warn("{}: not a baselines record; the summary shows no baselines", path);
  return nullptr;
}

void RunDirectory::write_summary(const nlohmann::json& summary) const {
  if (writes_) write_text_atomically((fs::path(path_) / "summary.json").string(), summary.dump(2) + "\n");
}

void RunDirectory::remove_if_unfinished_fresh_start() const {
  if (created_ && checkpoints_.list().empty()) fs::remove_all(path_);
}

}  // namespace qkd::train
