#pragma once
// tokenizer.json's "model" of type BPE, as Hugging Face tokenizers' models/bpe runs it: each
// character of a pre-tokenized word becomes a vocabulary symbol (with byte fallback to <0xNN> tokens
// or the unknown token), then the lowest-ranked adjacent pair merges until no pair of the merge list
// is left (ties go to the leftmost pair).
#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "json_place.h"
#include "token_index.h"
#include "word_cache.h"

namespace qkd::tokenizer {

// Per-call working memory of the merge loop, reused from word to word.
struct BpeScratch {
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    uint32_t bytes;  // 0 once merged into its left neighbour
  };
  struct Candidate {
    uint32_t rank;
    uint32_t position;
    int32_t merged_id;
  };
  std::vector<Symbol> symbols;
  std::vector<Candidate> queue;
  std::string text;
  std::vector<int32_t> ids;
};

class BpeModel {
 public:
  static std::unique_ptr<BpeModel> from_json(const nlohmann::json& model, const JsonPlace& place);

  // Appends the ids of one pre-tokenized word. `cache` may be null (another thread holds it).
  void tokenize(std::string_view word, std::vector<int32_t>& ids, BpeScratch& scratch, WordCache* cache) const;

  // Token texts by id ("" where the vocabulary has no such id).
  const std::vector<std::string>& vocab() const { return vocab_; }
  int32_t token_id(std::string_view text) const { return index_.find(text); }
  // The merges in rank order, as pairs of token ids.
  const std::vector<std::pair<int32_t, int32_t>>& merges() const { return merges_; }

  int32_t unk_id() const { return unk_id_; }
  bool byte_fallback() const { return byte_fallback_; }
  bool ignore_merges() const { return ignore_merges_; }

 private:
  struct MergeSlot {
    uint64_t pair = 0;
    uint32_t rank = 0;
    int32_t merged_id = -1;
  };

  void build_merge_table(const std::vector<int32_t>& merged_ids);
  const MergeSlot* find_merge(int32_t left, int32_t right) const;
  // What one character of a word is looked up as: itself, or with the continuing-subword prefix (not
  // first) and the end-of-word suffix (last) around it, built in `buffer`.
  std::string_view symbol_text(std::string_view character, bool first, bool last, std::string& buffer) const;
  int32_t symbol_id(std::string_view text) const;
  void split_into_symbols(std::string_view word, BpeScratch& scratch) const;
  void merge_symbols(BpeScratch& scratch) const;

  std::vector<std::string> vocab_;
  TokenIndex index_;
  std::vector<std::pair<int32_t, int32_t>> merges_;
  std::vector<MergeSlot> merge_table_;
  size_t merge_mask_ = 0;
  std::vector<int32_t> small_character_ids_;  // code points below 0x800 -> id (-1: not a token)
  int32_t byte_token_ids_[256];               // <0xNN> -> id (-1: not a token)

  int32_t unk_id_ = -1;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
};

}  // namespace qkd::tokenizer
