#pragma once
// Every input the program reads is a regular file. A FIFO, device, socket or directory named as an
// input (or a symlink to one, such as /dev/zero) fails here with its path, instead of blocking in
// open() or streaming forever.
#include <cstddef>
#include <string>

namespace qkd {

// Opens `path` read-only without blocking, checks that it is a regular file, and returns a descriptor
// in blocking mode (the caller closes it). fail(path, ...) otherwise.
int open_regular_file(const std::string& path);

// The same check without keeping the file open, for libraries that open the path themselves.
void require_regular_file(const std::string& path);

// The whole file as text; fails (naming the file and the limit) when it is larger than max_bytes.
std::string read_text_file(const std::string& path, size_t max_bytes = size_t{64} << 20);

}  // namespace qkd
