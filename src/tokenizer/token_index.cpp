#include "token_index.h"

namespace qkd::tokenizer {

void TokenIndex::build(const std::vector<std::string>* texts) {
  texts_ = texts;
  size_t capacity = 16;
  while (capacity < texts->size() * 2) capacity <<= 1;
  slots_.assign(capacity, Slot{});
  mask_ = capacity - 1;
  for (size_t id = 0; id < texts->size(); ++id) {
    const auto& text = (*texts)[id];
    if (text.empty() || find(text) >= 0) continue;  // a duplicate text keeps its first id
    const uint64_t h = hash_bytes(text);
    size_t i = h & mask_;
    while (slots_[i].id >= 0) i = (i + 1) & mask_;
    slots_[i] = {static_cast<uint32_t>(h >> 32), static_cast<int32_t>(id)};
  }
}

int32_t TokenIndex::find(std::string_view text) const {
  if (slots_.empty()) return -1;
  const uint64_t h = hash_bytes(text);
  const auto tag = static_cast<uint32_t>(h >> 32);
  for (size_t i = h & mask_;; i = (i + 1) & mask_) {
    const Slot& slot = slots_[i];
    if (slot.id < 0) return -1;
    if (slot.hash == tag && (*texts_)[slot.id] == text) return slot.id;
  }
}

}  // namespace qkd::tokenizer
