#pragma once
// sentencepiece tokenizer with the special-token ids of the checkpoint it belongs to.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace qkd::tokenizer {

struct SpecialTokens {
  int64_t bos = 1;
  int64_t eos = 2;
  int64_t pad = -1;  // -1: none; batching code then pads with eos
};

class Tokenizer {
 public:
  // Loads a sentencepiece model file. Special ids default to the model's own and may be overridden
  // by the checkpoint's config (see load_tokenizer_for_checkpoint).
  explicit Tokenizer(const std::string& model_path);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // Plain encoding, no BOS/EOS (lm-evaluation-harness style callers add them themselves).
  std::vector<int64_t> encode(const std::string& text) const;
  std::vector<int64_t> encode(const std::string& text, bool add_bos, bool add_eos) const;
  std::string decode(const std::vector<int64_t>& ids) const;

  int64_t vocab_size() const;
  const SpecialTokens& special() const { return special_; }
  void set_special(const SpecialTokens& special) { special_ = special; }
  int64_t pad_id() const { return special_.pad >= 0 ? special_.pad : special_.eos; }
  const std::string& path() const { return path_; }

 private:
  std::shared_ptr<void> handle_;  // sentencepiece processor inside the shim (see tokenizer.cpp)
  SpecialTokens special_;
  std::string path_;
};

// Opens <dir>/tokenizer.model with bos/eos/pad ids from <dir>/config.json when present.
Tokenizer load_tokenizer_for_checkpoint(const std::string& dir);

}  // namespace qkd::tokenizer
