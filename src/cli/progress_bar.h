#pragma once
// A one-line progress bar on stderr when it is a terminal; silent otherwise.
#include <cstdint>
#include <string>

namespace qkd::cli {

void show_progress(const std::string& label, int64_t done, int64_t total);

}  // namespace qkd::cli
