#pragma once
// Process-level facts the logs report.
#include <cstdint>
#include <string>

namespace qkd {

double peak_rss_mb();                         // peak resident set size of this process
bool stderr_is_terminal();                    // progress bars only on a terminal; plain lines otherwise
// 0: all hardware threads. More than 4 per core only oversubscribes the machine (100,000 made it
// unusable): fails naming `setting`.
void set_cpu_threads(int64_t threads, const std::string& setting = "threads");
std::string format_duration(double seconds);  // "1h02m", "3m05s", "42s"

// glibc hands every allocation above its mmap threshold (128 KiB at first, rising with use to at most
// 32 MiB) straight back to the kernel when freed, and trims the heap's free top beyond twice that:
// each training step's multi-megabyte activations then cost fresh page faults and zeroed pages
// (13.6% of a CPU step in the kernel, measured with perf; docs/PERFORMANCE.md). Raising both
// thresholds once at start-up keeps freed memory in the heap for the next step's tensors.
void keep_freed_memory_for_reuse();

}  // namespace qkd
