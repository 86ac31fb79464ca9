#include "qkd/common/memory.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <limits>
#include <sstream>

#include "qkd/common/error.h"

namespace qkd {

namespace {
int64_t meminfo_available() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  int64_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return std::numeric_limits<int64_t>::max();
}

// cgroup v2: memory.max ("max" or bytes) less memory.current.
int64_t cgroup_available() {
  std::ifstream max_in("/sys/fs/cgroup/memory.max"), current_in("/sys/fs/cgroup/memory.current");
  std::string max_text;
  int64_t current = 0;
  if (!(max_in >> max_text) || max_text == "max" || !(current_in >> current))
    return std::numeric_limits<int64_t>::max();
  try {
    return std::max<int64_t>(0, std::stoll(max_text) - current);
  } catch (const std::exception&) {
    return std::numeric_limits<int64_t>::max();
  }
}

std::string gigabytes(int64_t bytes) { return fmt::format("{:.1f} GB", static_cast<double>(bytes) / 1e9); }
}  // namespace

int64_t available_memory_bytes() { return std::min(meminfo_available(), cgroup_available()); }

void require_memory(int64_t bytes, const std::string& setting, const std::string& what) {
  const auto available = available_memory_bytes();
  if (bytes <= available) return;
  fail(setting, what + " need about " + gigabytes(bytes) + ", more than the " + gigabytes(available) +
                    " this machine has available: lower it");
}

}  // namespace qkd
