#include "cli/progress_bar.h"

#include <cstdio>

#include "qkd/common/system.h"

namespace qkd::cli {

void show_progress(const std::string& label, int64_t done, int64_t total) {
  if (!stderr_is_terminal() || total <= 0) return;
  const int width = 30;
  const int filled = static_cast<int>(width * done / total);
  std::fprintf(stderr, "\r\033[K%s [%.*s%*s] %lld/%lld", label.c_str(), filled,
               "==============================", width - filled, "", static_cast<long long>(done),
               static_cast<long long>(total));
  if (done >= total) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

}  // namespace qkd::cli
