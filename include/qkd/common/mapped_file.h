#pragma once
// A whole file, memory-mapped private: copy-on-write, so in-place writes to its pages stay in this
// process and the file itself is never modified. Shared by its readers (safetensors, token files)
// and unmapped once, when the last owner lets go.
#include <cstddef>
#include <memory>
#include <string>

namespace qkd {

class MappedFile {
 public:
  // Throws qkd::Error("<path>: ...") when the file cannot be opened, is not a regular file or cannot
  // be mapped. An empty file maps to data() == nullptr, size() == 0: callers judge sizes themselves.
  static std::shared_ptr<MappedFile> open(const std::string& path);

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  unsigned char* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  unsigned char* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace qkd
