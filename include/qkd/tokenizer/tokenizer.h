#pragma once
// The checkpoint's tokenizer with its special-token ids: a Hugging Face tokenizer.json (HfTokenizer) or
// a sentencepiece tokenizer.model.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "qkd/chat/chat_template.h"
#include "qkd/tokenizer/hf_tokenizer.h"

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
  // A tokenizer.json tokenizer; special ids from its tokenizer_config.json (-1 where it names none).
  explicit Tokenizer(HfTokenizer hf);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // Plain encoding, no BOS/EOS (lm-evaluation-harness style callers add them themselves).
  std::vector<int64_t> encode(const std::string& text) const;
  // With tokenizer.json a BOS or EOS the tokenizer lacks (id -1, e.g. Qwen's BOS) is left out.
  std::vector<int64_t> encode(const std::string& text, bool add_bos, bool add_eos) const;
  // Ids with the model's own special tokens, as transformers' tokenizer(text)["input_ids"]: the
  // tokenizer.json post-processor's template; for sentencepiece, BOS + text (LLaMA-2's add_bos_token).
  std::vector<int64_t> encode_with_special_tokens(const std::string& text) const;
  // For tokenizer.json, special tokens are decoded as text unless skipped (transformers' default);
  // sentencepiece always leaves control tokens out.
  std::string decode(const std::vector<int64_t>& ids) const;
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const;

  int64_t vocab_size() const;
  const SpecialTokens& special() const { return special_; }
  void set_special(const SpecialTokens& special) { special_ = special; }
  int64_t pad_id() const { return special_.pad >= 0 ? special_.pad : special_.eos; }
  const std::string& path() const { return path_; }

  // The tokenizer.json backend, or null for a sentencepiece model (GGUF export, chat templates).
  const HfTokenizer* hf() const { return hf_.get(); }
  // The text of a token id; "" when there is none. bos/eos: the texts of special().bos / .eos.
  std::string token_text(int64_t id) const;
  std::string bos_token() const { return token_text(special_.bos); }
  std::string eos_token() const { return token_text(special_.eos); }

  // The model's chat template (the chat_template of tokenizer_config.json beside a tokenizer.json);
  // null when there is none, or for a sentencepiece tokenizer, which cannot find the special tokens a
  // rendered template holds (those models keep the LLaMA-2 [INST] format, data/record_render.h). A
  // template that could not be read fails here, naming its line: what renders chats asks at start.
  const chat::ChatTemplate* chat_template() const;
  void set_chat_template(std::shared_ptr<const chat::ChatTemplate> chat, std::string load_error);

 private:
  std::shared_ptr<void> handle_;  // sentencepiece processor inside the shim (see tokenizer.cpp)
  std::shared_ptr<const HfTokenizer> hf_;
  std::shared_ptr<const chat::ChatTemplate> chat_;
  std::string chat_error_;  // why the chat template could not be read ("" when it could, or there is none)
  SpecialTokens special_;
  std::string path_;
};

// Opens <dir>/tokenizer.json when the directory holds one (special ids from tokenizer_config.json, or
// from config.json when there is no tokenizer_config.json), else <dir>/tokenizer.model with bos/eos/pad
// ids from <dir>/config.json when present.
Tokenizer load_tokenizer_for_checkpoint(const std::string& dir);

}  // namespace qkd::tokenizer
