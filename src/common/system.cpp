#include "qkd/common/system.h"

#include <malloc.h>
#include <sys/resource.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdio>
#include <thread>

#include "qkd/common/error.h"

namespace qkd {

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // Linux reports KiB
}

void keep_freed_memory_for_reuse() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest allowed value
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

bool stderr_is_terminal() { return ::isatty(STDERR_FILENO) == 1; }

void set_cpu_threads(int64_t threads, const std::string& setting) {
  const int64_t cores = std::max(1u, std::thread::hardware_concurrency());
  if (threads < 0 || threads > 4 * cores)
    fail(setting, "expected 0 (every core) or 1.." + std::to_string(4 * cores) + " threads (this machine has " +
                      std::to_string(cores) + " cores), got " + std::to_string(threads));
  const int64_t n = threads > 0 ? threads : cores;
  torch::set_num_threads(static_cast<int>(n));
}

std::string format_duration(double seconds) {
  const auto s = static_cast<long long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm", s / 3600, (s / 60) % 60);
  else if (s >= 60)
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", s / 60, s % 60);
  else
    std::snprintf(buf, sizeof(buf), "%llds", s);
  return buf;
}

}  // namespace qkd
