#pragma once
// What the machine can give: a configuration whose tensors could not fit is refused, naming the
// setting, before anything is allocated (a micro-batch of 100,000 was OOM-killed instead).
#include <cstdint>
#include <string>

namespace qkd {

// Bytes this process can still allocate: MemAvailable, lowered to the cgroup's limit when one is set.
int64_t available_memory_bytes();

// Fails naming `setting` when `bytes` (what `what` would take) exceed available_memory_bytes().
void require_memory(int64_t bytes, const std::string& setting, const std::string& what);

}  // namespace qkd
