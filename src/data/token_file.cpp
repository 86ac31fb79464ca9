#include "qkd/data/token_file.h"

#include <filesystem>

#include "qkd/common/error.h"
#include "qkd/common/mapped_file.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "token files are little-endian; reading them on a big-endian host needs byte swapping"
#endif

namespace qkd::data {

// The mapped file; shared by every copy of the TokenFile.
struct TokenFile::Mapping {
  std::shared_ptr<MappedFile> file;
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
  if (width_bytes != 2 && width_bytes != 4)
    fail(path, "token width must be 2 or 4 bytes, got " + std::to_string(width_bytes));
  return width_bytes;
}

// Checks that the mapped file holds whole tokens.
void check_byte_count(const MappedFile& file, int width) {
  if (file.size() == 0) fail(file.path(), "empty token file");
  if (file.size() % static_cast<size_t>(width) != 0)
    fail(file.path(), "odd byte count " + std::to_string(file.size()) + " (not a multiple of the " +
                          std::to_string(width) + "-byte token width)");
}

}  // namespace

TokenFile TokenFile::open(const std::string& path, int width_bytes) {
  const int width = resolve_width(path, width_bytes);
  TokenFile file;
  file.mapping_ = std::make_shared<Mapping>();
  file.mapping_->file = MappedFile::open(path);
  check_byte_count(*file.mapping_->file, width);
  file.path_ = path;
  file.width_ = width;
  file.count_ = static_cast<int64_t>(file.mapping_->file->size() / static_cast<size_t>(width));
  return file;
}

void TokenFile::check_vocabulary(int64_t vocab_size) const {
  for (int64_t i = 0; i < count_; ++i) {
    const int64_t token = width_ == 2 ? reinterpret_cast<const uint16_t*>(mapping_->file->data())[i]
                                      : reinterpret_cast<const uint32_t*>(mapping_->file->data())[i];
    if (token >= vocab_size)
      fail(path_, "token " + std::to_string(token) + " at position " + std::to_string(i) +
                      " is outside the vocabulary of " + std::to_string(vocab_size));
  }
}

int64_t TokenFile::at(int64_t i) const {
  if (i < 0 || i >= count_) {
    fail(path_, "token index " + std::to_string(i) + " out of range [0, " + std::to_string(count_) + ")");
  }
  // The mapping is page-aligned and the width divides the page size, so these reads are aligned.
  if (width_ == 2) return reinterpret_cast<const uint16_t*>(mapping_->file->data())[i];
  return reinterpret_cast<const uint32_t*>(mapping_->file->data())[i];
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
    const uint16_t* src = reinterpret_cast<const uint16_t*>(mapping_->file->data()) + begin;
    for (int64_t i = 0; i < length; ++i) dst[i] = src[i];
  } else {
    const uint32_t* src = reinterpret_cast<const uint32_t*>(mapping_->file->data()) + begin;
    for (int64_t i = 0; i < length; ++i) dst[i] = src[i];
  }
  return out;
}

}  // namespace qkd::data
