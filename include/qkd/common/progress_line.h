#pragma once
// The one console progress line of every command: redrawn in place on stderr when it is a terminal;
// otherwise a plain log line at most every `plain_interval_s` seconds (and for the last update), or
// nothing when the interval is negative.
#include <chrono>
#include <cstdint>
#include <string>

namespace qkd {

class ProgressLine {
 public:
  explicit ProgressLine(double plain_interval_s = 10.0);
  ~ProgressLine() { finish(); }
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  void show(const std::string& text, bool last = false);
  // Ends a redrawn line with a newline (once); later output starts on a fresh line.
  void finish();

 private:
  double plain_interval_s_;
  bool tty_;
  bool open_ = false;
  std::chrono::steady_clock::time_point last_plain_;
};

// "[=========                     ] 3/10"
std::string progress_bar(int64_t done, int64_t total, int width = 30);

}  // namespace qkd
