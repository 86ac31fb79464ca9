#include "qkd/common/mapped_file.h"
#include "qkd/common/input_file.h"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qkd/common/error.h"

namespace qkd {

namespace {
// Closes the descriptor on every path out of open().
struct Descriptor {
  int fd;
  ~Descriptor() {
    if (fd >= 0) ::close(fd);
  }
};
}  // namespace

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
  const Descriptor file{open_regular_file(path)};
  struct stat st {};
  if (::fstat(file.fd, &st) != 0) fail(path, std::string("cannot stat file: ") + std::strerror(errno));
  std::shared_ptr<MappedFile> mapped(new MappedFile());
  mapped->path_ = path;
  mapped->size_ = static_cast<size_t>(st.st_size);
  if (mapped->size_ == 0) return mapped;  // mmap refuses length 0
  void* addr = ::mmap(nullptr, mapped->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, file.fd, 0);
  if (addr == MAP_FAILED) fail(path, std::string("cannot memory-map: ") + std::strerror(errno));
  mapped->data_ = static_cast<unsigned char*>(addr);
  return mapped;  // the mapping keeps the file referenced after the descriptor closes
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(data_, size_);
}

}  // namespace qkd
