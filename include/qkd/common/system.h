#pragma once
// Process-level facts the logs report.
#include <string>

namespace qkd {

double peak_rss_mb();                         // peak resident set size of this process
bool stderr_is_terminal();                    // progress bars only on a terminal; plain lines otherwise
void set_cpu_threads(int64_t threads);        // 0: all hardware threads
std::string format_duration(double seconds);  // "1h02m", "3m05s", "42s"

}  // namespace qkd
