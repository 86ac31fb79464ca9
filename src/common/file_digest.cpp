#include "qkd/common/file_digest.h"

#define XXH_INLINE_ALL
#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "qkd/common/error.h"
#include "qkd/common/input_file.h"

namespace qkd {

namespace {

struct StateDeleter {
  void operator()(XXH3_state_t* state) const { XXH3_freeState(state); }
};

// Feeds the file's bytes (and, before them, its size) into `state`.
void hash_file(XXH3_state_t* state, const std::string& path) {
  const int fd = open_regular_file(path);
  std::unique_ptr<char[]> buffer(new char[1 << 20]);
  uint64_t size = 0;
  for (;;) {
    const ssize_t n = ::read(fd, buffer.get(), 1 << 20);
    if (n < 0) {
      if (errno == EINTR) continue;
      const std::string why = std::strerror(errno);
      ::close(fd);
      fail(path, "cannot read: " + why);
    }
    if (n == 0) break;
    XXH3_64bits_update(state, buffer.get(), static_cast<size_t>(n));
    size += static_cast<uint64_t>(n);
  }
  ::close(fd);
  XXH3_64bits_update(state, &size, sizeof size);
}

std::string hex(uint64_t value) {
  char text[24];
  std::snprintf(text, sizeof text, "xxh3:%016llx", static_cast<unsigned long long>(value));
  return text;
}

}  // namespace

std::string file_digest(const std::string& path) { return files_digest({path}); }

std::string files_digest(const std::vector<std::string>& paths) {
  std::unique_ptr<XXH3_state_t, StateDeleter> state(XXH3_createState());
  XXH3_64bits_reset(state.get());
  for (const auto& path : paths) hash_file(state.get(), path);
  return hex(XXH3_64bits_digest(state.get()));
}

}  // namespace qkd
