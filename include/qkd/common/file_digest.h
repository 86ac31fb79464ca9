#pragma once
// Content digests of files (XXH3-64, ~10 GB/s): what a checkpoint records of each of its files and of
// the teacher it was trained from, so that a flipped byte or a teacher swapped under the same path is
// found when the run resumes, not after it has trained on.
#include <cstdint>
#include <string>
#include <vector>

namespace qkd {

// "xxh3:<16 hex digits>" of the file's bytes. Fails naming the file when it cannot be read.
std::string file_digest(const std::string& path);
// One digest of several files' contents, in the order given (each file's size is hashed in too).
std::string files_digest(const std::vector<std::string>& paths);

}  // namespace qkd
