#include "bpe_model.h"

#include <algorithm>
#include <cstdio>

#include "unicode_text.h"

namespace qkd::tokenizer {

namespace {

// Largest token id accepted: ids index dense tables, and no real vocabulary comes near this.
constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;

std::string optional_string(const nlohmann::json& model, const char* key, const JsonPlace& place) {
  const auto it = model.find(key);
  if (it == model.end() || it->is_null()) return "";
  if (!it->is_string()) place.field(key).fail_here("expected a string or null, got " + json_excerpt(*it));
  return it->get<std::string>();
}

std::vector<std::string> read_vocab(const nlohmann::json& vocab, const JsonPlace& place) {
  if (!vocab.is_object()) place.fail_here("expected an object of token -> id, got " + json_excerpt(vocab));
  int64_t max_id = -1;
  for (const auto& item : vocab.items()) {
    if (!item.value().is_number_integer() || item.value().get<int64_t>() < 0 ||
        item.value().get<int64_t>() > kMaxTokenId)
      place.fail_here("token " + json_excerpt(item.key()) + " has id " + json_excerpt(item.value()) +
                      ", expected an integer in [0, " + std::to_string(kMaxTokenId) + "]");
    max_id = std::max(max_id, item.value().get<int64_t>());
  }
  std::vector<std::string> texts(static_cast<size_t>(max_id + 1));
  for (const auto& item : vocab.items()) {
    auto& slot = texts[item.value().get<size_t>()];
    if (!slot.empty())
      place.fail_here("id " + std::to_string(item.value().get<int64_t>()) + " is given to both " + json_excerpt(slot) +
                      " and " + json_excerpt(item.key()));
    if (item.key().empty()) place.fail_here("empty token text (id " + item.value().dump() + ")");
    slot = item.key();
  }
  return texts;
}

// Merges as "a b" strings (tokenizers < 0.20, where a line must hold exactly one space) or as
// ["a", "b"] pairs.
std::vector<std::pair<std::string, std::string>> read_merge_texts(const nlohmann::json& merges,
                                                                  const JsonPlace& place) {
  if (!merges.is_array()) place.fail_here("expected an array, got " + json_excerpt(merges));
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const auto& merge = merges[i];
    if (merge.is_string()) {
      const auto& line = merge.get_ref<const std::string&>();
      if (line.rfind("#version", 0) == 0) continue;
      const auto space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
        place.element(i).fail_here("expected \"<left> <right>\" with exactly one space, got " + json_excerpt(merge));
      out.emplace_back(line.substr(0, space), line.substr(space + 1));
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
      out.emplace_back(merge[0].get<std::string>(), merge[1].get<std::string>());
    } else {
      place.element(i).fail_here("expected \"<left> <right>\" or [\"<left>\", \"<right>\"], got " +
                                 json_excerpt(merge));
    }
  }
  return out;
}

std::string byte_token(int byte) {
  char text[8];
  std::snprintf(text, sizeof text, "<0x%02X>", byte);
  return text;
}

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

uint64_t mix(uint64_t key) {
  key ^= key >> 33;
  key *= 0xff51afd7ed558ccdull;
  key ^= key >> 33;
  return key;
}

// Max-heap order of the merge queue: the lowest rank first, then the leftmost position.
bool lower_priority(const BpeScratch::Candidate& a, const BpeScratch::Candidate& b) {
  return a.rank != b.rank ? a.rank > b.rank : a.position > b.position;
}

}  // namespace

std::unique_ptr<BpeModel> BpeModel::from_json(const nlohmann::json& model, const JsonPlace& place) {
  auto out = std::make_unique<BpeModel>();
  const auto dropout = model.find("dropout");
  if (dropout != model.end() && !dropout->is_null() && !(dropout->is_number() && dropout->get<double>() == 0.0))
    place.field("dropout").fail_here("BPE dropout is not supported (encoding must be deterministic), got " +
                                     json_excerpt(*dropout));
  auto fields = place.reader(model);
  out->fuse_unk_ = fields.boolean("fuse_unk", false);
  out->byte_fallback_ = fields.boolean("byte_fallback", false);
  out->ignore_merges_ = fields.boolean("ignore_merges", false);
  out->continuing_subword_prefix_ = optional_string(model, "continuing_subword_prefix", place);
  out->end_of_word_suffix_ = optional_string(model, "end_of_word_suffix", place);
  const auto unk_token = optional_string(model, "unk_token", place);

  const auto vocab = model.find("vocab");
  if (vocab == model.end()) place.field("vocab").fail_here("missing (required)");
  out->vocab_ = read_vocab(*vocab, place.field("vocab"));
  out->index_.build(&out->vocab_);
  if (!unk_token.empty()) {
    out->unk_id_ = out->index_.find(unk_token);
    if (out->unk_id_ < 0) place.field("unk_token").fail_here(json_excerpt(unk_token) + " is not in model.vocab");
  }

  const auto merges = model.find("merges");
  if (merges == model.end()) place.field("merges").fail_here("missing (required)");
  const auto texts = read_merge_texts(*merges, place.field("merges"));
  const size_t prefix_length = out->continuing_subword_prefix_.size();
  out->merges_.reserve(texts.size());
  std::vector<int32_t> merged_ids;
  merged_ids.reserve(texts.size());
  std::string merged;
  for (size_t rank = 0; rank < texts.size(); ++rank) {
    const auto& [left, right] = texts[rank];
    // The right part loses its continuing-subword prefix in the merged token.
    merged.assign(left);
    if (right.size() > prefix_length) merged.append(right, prefix_length, std::string::npos);
    const int32_t left_id = out->index_.find(left), right_id = out->index_.find(right);
    const int32_t merged_id = out->index_.find(merged);
    auto require = [&](const std::string& text, int32_t id) {
      if (id < 0)
        place.field("merges").element(rank).fail_here("(" + json_excerpt(left) + ", " + json_excerpt(right) +
                                                      "): " + json_excerpt(text) + " is not in model.vocab");
    };
    require(left, left_id);
    require(right, right_id);
    require(merged, merged_id);
    out->merges_.emplace_back(left_id, right_id);
    merged_ids.push_back(merged_id);
  }
  out->build_merge_table(merged_ids);

  out->small_character_ids_.assign(0x800, -1);
  for (char32_t c = 0; c < 0x800; ++c) {
    std::string text;
    unicode::append_utf8(text, c);
    out->small_character_ids_[c] = out->index_.find(text);
  }
  for (int b = 0; b < 256; ++b) out->byte_token_ids_[b] = out->index_.find(byte_token(b));
  return out;
}

void BpeModel::build_merge_table(const std::vector<int32_t>& merged_ids) {
  size_t capacity = 16;
  while (capacity < merges_.size() * 2) capacity <<= 1;
  merge_table_.assign(capacity, MergeSlot{});
  merge_mask_ = capacity - 1;
  for (size_t rank = 0; rank < merges_.size(); ++rank) {
    const uint64_t key = pair_key(merges_[rank].first, merges_[rank].second);
    size_t i = mix(key) & merge_mask_;
    while (merge_table_[i].merged_id >= 0 && merge_table_[i].pair != key) i = (i + 1) & merge_mask_;
    // A pair listed twice keeps its last rank, as a map built from the list in order would.
    merge_table_[i] = {key, static_cast<uint32_t>(rank), merged_ids[rank]};
  }
}

const BpeModel::MergeSlot* BpeModel::find_merge(int32_t left, int32_t right) const {
  const uint64_t key = pair_key(left, right);
  for (size_t i = mix(key) & merge_mask_;; i = (i + 1) & merge_mask_) {
    const MergeSlot& slot = merge_table_[i];
    if (slot.merged_id < 0) return nullptr;
    if (slot.pair == key) return &slot;
  }
}

std::string_view BpeModel::symbol_text(std::string_view character, bool first, bool last, std::string& buffer) const {
  const bool prefixed = !first && !continuing_subword_prefix_.empty();
  const bool suffixed = last && !end_of_word_suffix_.empty();
  if (!prefixed && !suffixed) return character;
  buffer.clear();
  if (prefixed) buffer += continuing_subword_prefix_;
  buffer.append(character);
  if (suffixed) buffer += end_of_word_suffix_;
  return buffer;
}

int32_t BpeModel::symbol_id(std::string_view text) const {
  // One character below U+0800 (every byte-level character): a table instead of a hash lookup.
  if (text.size() <= 2 && unicode::sequence_length(static_cast<unsigned char>(text[0])) == text.size()) {
    size_t pos = 0;
    return small_character_ids_[unicode::next_code_point(text, pos)];
  }
  return index_.find(text);
}

void BpeModel::split_into_symbols(std::string_view word, BpeScratch& scratch) const {
  auto& symbols = scratch.symbols;
  symbols.clear();
  auto add = [&](int32_t id, uint32_t bytes) { symbols.push_back({id, -1, -1, bytes}); };
  bool unk_pending = false;
  uint32_t unk_bytes = 0;
  size_t pos = 0;
  while (pos < word.size()) {
    const size_t start = pos;
    pos += unicode::sequence_length(static_cast<unsigned char>(word[pos]));
    const auto character = word.substr(start, pos - start);
    const bool first = start == 0, last = pos >= word.size();
    const auto text = symbol_text(character, first, last, scratch.text);
    const int32_t id = symbol_id(text);
    if (id >= 0) {
      if (unk_pending) add(unk_id_, unk_bytes);
      unk_pending = false;
      add(id, static_cast<uint32_t>(character.size()));
      continue;
    }
    if (byte_fallback_) {
      // The bytes of what was looked up, decorations included; all of them must be tokens.
      bool all_bytes = true;
      for (const char b : text) all_bytes = all_bytes && byte_token_ids_[static_cast<unsigned char>(b)] >= 0;
      if (all_bytes) {
        // A pending unknown token stays pending across byte tokens, as in tokenizers' merge_word.
        for (const char b : text) add(byte_token_ids_[static_cast<unsigned char>(b)], 1);
        continue;
      }
    }
    if (unk_id_ < 0) continue;  // no unknown token: the character is dropped
    const auto bytes = static_cast<uint32_t>(character.size());
    if (unk_pending && fuse_unk_) {
      unk_bytes += bytes;
    } else {
      if (unk_pending) add(unk_id_, unk_bytes);
      unk_pending = true;
      unk_bytes = bytes;
    }
  }
  if (unk_pending) add(unk_id_, unk_bytes);
  for (size_t i = 0; i < symbols.size(); ++i) {
    symbols[i].prev = static_cast<int32_t>(i) - 1;
    symbols[i].next = i + 1 < symbols.size() ? static_cast<int32_t>(i + 1) : -1;
  }
}

void BpeModel::merge_symbols(BpeScratch& scratch) const {
  auto& symbols = scratch.symbols;
  auto& queue = scratch.queue;
  queue.clear();
  auto push = [&](int32_t position) {
    const auto& left = symbols[position];
    if (const auto* merge = find_merge(left.id, symbols[left.next].id)) {
      queue.push_back({merge->rank, static_cast<uint32_t>(position), merge->merged_id});
      std::push_heap(queue.begin(), queue.end(), lower_priority);
    }
  };
  for (size_t i = 0; i + 1 < symbols.size(); ++i) push(static_cast<int32_t>(i));
  while (!queue.empty()) {
    std::pop_heap(queue.begin(), queue.end(), lower_priority);
    const auto top = queue.back();
    queue.pop_back();
    auto& left = symbols[top.position];
    if (left.bytes == 0 || left.next < 0) continue;
    const int32_t right_position = left.next;
    const auto right = symbols[right_position];
    // An entry queued before one of its two symbols changed is stale.
    const auto* merge = find_merge(left.id, right.id);
    if (!merge || merge->merged_id != top.merged_id) continue;
    left.id = top.merged_id;
    left.bytes += right.bytes;
    left.next = right.next;
    symbols[right_position].bytes = 0;
    if (right.next >= 0) symbols[right.next].prev = static_cast<int32_t>(top.position);
    if (left.prev >= 0) push(left.prev);
    if (left.next >= 0) push(static_cast<int32_t>(top.position));
  }
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& ids, BpeScratch& scratch, WordCache* cache) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (const int32_t id = index_.find(word); id >= 0) {
      ids.push_back(id);
      return;
    }
  }
  if (cache && cache->find(word, ids)) return;
  split_into_symbols(word, scratch);
  merge_symbols(scratch);
  const size_t first = ids.size();
  for (int32_t i = scratch.symbols.empty() ? -1 : 0; i >= 0; i = scratch.symbols[i].next)
    ids.push_back(scratch.symbols[i].id);
  if (cache) cache->insert(word, ids.data() + first, ids.size() - first);
}

}  // namespace qkd::tokenizer
