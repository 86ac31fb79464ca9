#include "qkd/train/metrics_log.h"

#include <spdlog/spdlog.h>

#include <cstdio>
#include <filesystem>
#include <sstream>
#include <vector>

#include "qkd/common/atomic_file.h"
#include "qkd/common/error.h"
#include "qkd/common/json_io.h"
#include "qkd/common/system.h"

namespace qkd::train {

namespace {
// Keeps complete lines with step <= keep_up_to_step (a torn last line is dropped too).
void truncate_after_step(const std::string& path, int64_t keep_up_to_step) {
  if (!std::filesystem::is_regular_file(path)) return;
  std::ifstream in(path);
  std::ostringstream kept;
  std::string line;
  while (std::getline(in, line)) {
    const auto j = parse_json_or_discarded(line);
    if (j.is_discarded() || !j.is_object()) continue;
    if (j.value("step", int64_t{0}) <= keep_up_to_step) kept << line << "\n";
  }
  write_text_atomically(path, kept.str());
}
}  // namespace

JsonlWriter::JsonlWriter(const std::string& path, int64_t keep_up_to_step) : path_(path) {
  truncate_after_step(path, keep_up_to_step);
  out_.open(path, std::ios::app);
  if (!out_) fail(path, "cannot open for writing");
}

void JsonlWriter::write(const nlohmann::json& line) {
  if (path_.empty()) return;
  out_ << line.dump() << "\n";
  out_.flush();
  // A lost record must not pass silently (a full disk, say): the run stops here, and resuming from its
  // last checkpoint rewrites the records after it.
  if (!out_) fail(path_, "cannot write a record (disk full or I/O error); resume from the last checkpoint");
}

TrainingProgress::TrainingProgress(int64_t total_steps, int64_t first_step)
    : total_(total_steps), first_(first_step), start_(std::chrono::steady_clock::now()) {}

void TrainingProgress::update(int64_t step, double loss, double tokens_per_s) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double per_step = elapsed / static_cast<double>(std::max<int64_t>(1, step - first_));
  const double eta = per_step * static_cast<double>(total_ - step);
  char text[160];
  std::snprintf(text, sizeof(text), "step %lld/%lld | loss %.5f | %.0f tok/s | ETA %s", static_cast<long long>(step),
                static_cast<long long>(total_), loss, tokens_per_s, format_duration(eta).c_str());
  line_.show(text, step == total_);
}

}  // namespace qkd::train
