#pragma once
// Pre-tokenized corpora: a flat little-endian array of uint16 (.u16) or uint32 (.u32) token ids,
// memory-mapped read-only (like assets/data/kjv/*.u16).
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>

namespace qkd::data {

class TokenFile {
 public:
  // Width from the extension (.u16 / .u32) unless given (2 or 4). Throws qkd::Error naming the file
  // when it is missing, empty, or its byte count is not a multiple of the width.
  static TokenFile open(const std::string& path, int width_bytes = 0);

  int64_t size() const { return count_; }  // number of tokens
  int64_t at(int64_t i) const;             // token i
  // Tokens [begin, begin+length) as int64 tensor (a copy; the mapping stays private).
  torch::Tensor slice(int64_t begin, int64_t length) const;
  const std::string& path() const { return path_; }
  // Fails, naming the file and the first offending position, when a token is >= vocab_size.
  void check_vocabulary(int64_t vocab_size) const;
  int width() const { return width_; }

 private:
  struct Mapping;
  std::shared_ptr<Mapping> mapping_;
  std::string path_;
  int width_ = 2;
  int64_t count_ = 0;
};

}  // namespace qkd::data
