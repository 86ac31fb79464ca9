#pragma once
// Token text -> id for vocabularies of a few hundred thousand entries, looked up by string_view
// without building a std::string (the BPE loop asks for every character and every candidate word).
// Open addressing over the ids; the texts live in the owner's id-ordered table.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace qkd::tokenizer {

class TokenIndex {
 public:
  // `texts[id]` is the text of token id; ids whose text is empty are left out.
  void build(const std::vector<std::string>* texts);
  // The id of `text`, or -1.
  int32_t find(std::string_view text) const;

 private:
  struct Slot {
    uint32_t hash = 0;
    int32_t id = -1;
  };
  const std::vector<std::string>* texts_ = nullptr;
  std::vector<Slot> slots_;
  size_t mask_ = 0;
};

// 64-bit FNV-1a: short keys (most tokens are 1-8 bytes), good enough spread for linear probing.
inline uint64_t hash_bytes(std::string_view bytes) {
  uint64_t h = 1469598103934665603ull;
  for (const char c : bytes) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h ^ (h >> 29);
}

}  // namespace qkd::tokenizer
