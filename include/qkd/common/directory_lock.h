#pragma once
// One writer per directory: an exclusive flock on "<dir>/.qkd-train.lock", held for the life of the
// object and released by the kernel however the process ends (a crash included), so a stale lock
// never blocks the next run. A second process fails at once, naming the first one's pid.
#include <string>

namespace qkd {

class DirectoryLock {
 public:
  // Fails naming `dir` when another process holds it; `what` says what the directory is ("run directory").
  DirectoryLock(const std::string& dir, const std::string& what);
  ~DirectoryLock();
  DirectoryLock(DirectoryLock&& other) noexcept;
  DirectoryLock& operator=(DirectoryLock&&) = delete;
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace qkd
