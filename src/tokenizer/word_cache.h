#pragma once
// The BPE result of recently seen words (text -> ids), so that a word costs one hash lookup after its
// first merge. Bounded: when full it starts over. Not thread-safe by itself; the tokenizer lends it to
// one encode call at a time (mutex()).
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace qkd::tokenizer {

class WordCache {
 public:
  // Words of this many bytes or more are not kept (as in Hugging Face tokenizers).
  static constexpr size_t kMaxWordBytes = 256;

  explicit WordCache(size_t max_entries = size_t{1} << 16);

  // Appends the cached ids of `word` to `ids`; false when the word is not cached.
  bool find(std::string_view word, std::vector<int32_t>& ids) const;
  void insert(std::string_view word, const int32_t* ids, size_t count);
  void clear();

  std::mutex& mutex() { return mutex_; }

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t key_offset = 0, key_length = 0;
    uint32_t ids_offset = 0, ids_length = 0;
    bool used = false;
  };
  size_t max_entries_;
  size_t entries_ = 0;
  std::vector<Slot> slots_;
  std::string keys_;
  std::vector<int32_t> ids_;
  std::mutex mutex_;
};

}  // namespace qkd::tokenizer
