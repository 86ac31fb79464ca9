#include "word_cache.h"

#include "token_index.h"

namespace qkd::tokenizer {

WordCache::WordCache(size_t max_entries) : max_entries_(max_entries) {
  size_t capacity = 16;
  while (capacity < max_entries * 2) capacity <<= 1;
  slots_.resize(capacity);
}

bool WordCache::find(std::string_view word, std::vector<int32_t>& ids) const {
  const uint64_t h = hash_bytes(word);
  const size_t mask = slots_.size() - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    const Slot& slot = slots_[i];
    if (!slot.used) return false;
    if (slot.hash == h && slot.key_length == word.size() &&
        std::string_view(keys_.data() + slot.key_offset, slot.key_length) == word) {
      ids.insert(ids.end(), ids_.begin() + slot.ids_offset, ids_.begin() + slot.ids_offset + slot.ids_length);
      return true;
    }
  }
}

void WordCache::insert(std::string_view word, const int32_t* ids, size_t count) {
  if (word.size() >= kMaxWordBytes) return;
  if (entries_ >= max_entries_) clear();
  const uint64_t h = hash_bytes(word);
  const size_t mask = slots_.size() - 1;
  size_t i = h & mask;
  for (; slots_[i].used; i = (i + 1) & mask) {
    const Slot& slot = slots_[i];
    if (slot.hash == h && std::string_view(keys_.data() + slot.key_offset, slot.key_length) == word) return;
  }
  Slot& slot = slots_[i];
  slot = {h,
          static_cast<uint32_t>(keys_.size()),
          static_cast<uint32_t>(word.size()),
          static_cast<uint32_t>(ids_.size()),
          static_cast<uint32_t>(count),
          true};
  keys_.append(word);
  ids_.insert(ids_.end(), ids, ids + count);
  ++entries_;
}

void WordCache::clear() {
  for (auto& slot : slots_) slot.used = false;
  keys_.clear();
  ids_.clear();
  entries_ = 0;
}

}  // namespace qkd::tokenizer
