#include "qkd/common/progress_line.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>

#include "qkd/common/system.h"

namespace qkd {

ProgressLine::ProgressLine(double plain_interval_s)
    : plain_interval_s_(plain_interval_s), tty_(stderr_is_terminal()), last_plain_(std::chrono::steady_clock::now()) {}

void ProgressLine::show(const std::string& text, bool last) {
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s", text.c_str());
    std::fflush(stderr);
    open_ = true;
    if (last) finish();
    return;
  }
  if (plain_interval_s_ < 0) return;
  const auto now = std::chrono::steady_clock::now();
  if (last || std::chrono::duration<double>(now - last_plain_).count() >= plain_interval_s_) {
    spdlog::info("{}", text);
    last_plain_ = now;
  }
}

void ProgressLine::finish() {
  if (!open_) return;
  std::fprintf(stderr, "\n");
  open_ = false;
}

std::string progress_bar(int64_t done, int64_t total, int width) {
  const int64_t clamped = std::clamp<int64_t>(done, 0, std::max<int64_t>(total, 1));
  const int filled = total > 0 ? static_cast<int>(width * clamped / total) : 0;
  return "[" + std::string(filled, '=') + std::string(width - filled, ' ') + "] " + std::to_string(done) + "/" +
         std::to_string(total);
}

}  // namespace qkd
