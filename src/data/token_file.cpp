#include "qkd/data/token_file.h"

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qkd/common/error.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "token files are little-endian; reading them on a big-endian host needs byte swapping"
#endif

namespace qkd::data {

// Read-only mapping of the whole file; unmapped when the last TokenFile copy goes away.
struct TokenFile::Mapping {
  const unsigned char* data = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (data != nullptr) ::munmap(const_cast<unsigned char*>(data), size);
  }
};

namespace {

int width_from_extension(const std::string& path) {
  const std::string ext = std::filesystem::path(path).extension().string();
  if (ext == ".u16") return 2;
  if (ext == ".u32") return 4;
  fail(path, "cannot tell the token width from extension '" + ext + "' (expected .u16 or .u32)");
}

int resolve_width(const std::string& path, int width_bytes) {
  if (width_bytes == 0) return width_from_extension(path);
  if (width_bytes != 2 && width_bytes != 4) fail(path, "token width must be 2 or 4 bytes, got " + std::to_string(width_bytes));
  return width_bytes;
}

// Size of the file behind `fd`, checked to hold whole tokens; closes `fd` before throwing.
size_t checked_byte_count(int fd, const std::string& path, int width) {
  struct stat st {};
  std::string problem;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    problem = "not a regular file";
  } else if (st.st_size == 0) {
    problem = "empty token file";
  } else if (static_cast<size_t>(st.st_size) % static_cast<size_t>(width) != 0) {
    problem = "odd byte count " + std::to_string(st.st_size) + " (not a multiple of the " + std::to_string(width) +
              "-byte token width)";
  }
  if (!problem.empty()) {
    ::close(fd);
    fail(path, problem);
  }
  return static_cast<size_t>(st.st_size);
}

}  // namespace

TokenFile TokenFile::open(const std::string& path, int width_bytes) {
  const int width = resolve_width(path, width_bytes);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, std::string("cannot open token file: ") + std::strerror(errno));
  const size_t bytes = checked_byte_count(fd, path, width);
  void* addr = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);  // the mapping keeps the file referenced
  if (addr == MAP_FAILED) fail(path, std::string("cannot memory-map token file: ") + std::strerror(map_errno));

  TokenFile file;
  file.mapping_ = std::make_shared<Mapping>();
  file.mapping_->data = static_cast<const unsigned char*>(addr);
  file.mapping_->size = bytes;
  file.path_ = path;
  file.width_ = width;
  file.count_ = static_cast<int64_t>(bytes / static_cast<size_t>(width));
  return file;
}

int64_t TokenFile::at(int64_t i) const {
  if (i < 0 || i >= count_) {
    fail(path_, "token index " + std::to_string(i) + " out of range [0, " + std::to_string(count_) + ")");
  }
  // The mapping is page-aligned and the width divides the page size, so these reads are aligned.
  if (width_ == 2) return reinterpret_cast<const uint16_t*>(mapping_->data)[i];
  return reinterpret_cast<const uint32_t*>(mapping_->data)[i];
}

torch::Tensor TokenFile::slice(int64_t begin, int64_t length) const {
  // Written as `length > count_ - begin` so that huge values cannot overflow.
  if (begin < 0 || length < 0 || begin > count_ || length > count_ - begin) {
    fail(path_, "token slice [" + std::to_string(begin) + ", " + std::to_string(begin) + "+" + std::to_string(length) +
                    ") out of range [0, " + std::to_string(count_) + ")");
  }
  auto out = torch::empty({length}, torch::kInt64);
  int64_t* dst = out.data_ptr<int64_t>();
  if (width_ == 2) {
    const uint16_t* src = reinterpret_cast<const uint16_t*>(mapping_->data) + begin;
    for (int64_t i = 0; i < length; ++i) dst[i] = src[i];
  } else {
    const uint32_t* src = reinterpret_cast<const uint32_t*>(mapping_->data) + begin;
    for (int64_t i = 0; i < length; ++i) dst[i] = src[i];
  }
  return out;
}

}  // namespace qkd::data
