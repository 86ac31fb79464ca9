#pragma once
// A Hugging Face tokenizer.json (Llama-3.x, Qwen2.5, Qwen3, Mistral-Nemo, LLaMA-2's BPE export) run the
// way the tokenizers library and transformers' fast tokenizers run it: added tokens found in the raw
// text, normalizer, pre-tokenizer, BPE with a word cache, the post-processor's special tokens on
// request, and the decoder chain. tokenizer_config.json beside it, when present, names the bos, eos
// and pad tokens. Components it does not implement fail at load, naming the type and the file.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace qkd::tokenizer {

// What a token is, numbered as GGUF's tokenizer.ggml.token_type (llama.cpp's llama_token_type).
enum class TokenType : int32_t {
  normal = 1,
  unknown = 2,       // the model's unk_token
  control = 3,       // an added token marked special
  user_defined = 4,  // an added token not marked special
  unused = 5,        // an id below vocab_size() that no token has
  byte = 6,          // <0xNN> of a byte-fallback model
};

class HfTokenizer {
 public:
  // Reads `tokenizer_json`, and `tokenizer_config` unless empty. Fails (qkd::Error) naming the file
  // and the field for a malformed file or a component type that is not supported.
  explicit HfTokenizer(const std::string& tokenizer_json, const std::string& tokenizer_config = "");
  // <dir>/tokenizer.json with <dir>/tokenizer_config.json when that file exists.
  static HfTokenizer from_directory(const std::string& dir);
  ~HfTokenizer();
  HfTokenizer(HfTokenizer&&) noexcept;
  HfTokenizer& operator=(HfTokenizer&&) noexcept;

  // Token ids of `text`. With add_special_tokens the post-processor's template is applied, as
  // transformers' tokenizer(text)["input_ids"] does; added tokens in the text (<|im_start|>, <s>...)
  // become their ids either way. Invalid UTF-8 is read with U+FFFD for each ill-formed sequence.
  // Safe to call from several threads.
  std::vector<int64_t> encode(std::string_view text, bool add_special_tokens) const;
  // The text of `ids` through the decoder chain (transformers' decode without
  // clean_up_tokenization_spaces). Ids that name no token are skipped, as tokenizers does.
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const;

  // Highest id of the vocabulary and the added tokens, plus one.
  int64_t vocab_size() const;
  // Special ids from tokenizer_config.json (unk: the model's unk_token); -1 when there is none.
  int64_t bos_id() const;
  int64_t eos_id() const;
  int64_t pad_id() const;
  int64_t unk_id() const;
  // Their texts ("" when there is none).
  const std::string& bos_token() const;
  const std::string& eos_token() const;
  const std::string& pad_token() const;
  // tokenizer_config.json's add_bos_token / add_eos_token, when it says.
  std::optional<bool> add_bos_token() const;
  std::optional<bool> add_eos_token() const;
  // The ids encode(text, true) puts before and after the text's own.
  const std::vector<int64_t>& special_prefix() const;
  const std::vector<int64_t>& special_suffix() const;

  // Token texts in id order (vocab_size() of them; "" for unused ids), as the file spells them: for a
  // byte-level model in GPT-2's byte alphabet ("Ġthe").
  const std::vector<std::string>& tokens() const;
  const std::vector<TokenType>& token_types() const;
  // The id of a token text (added tokens first, then the vocabulary), or -1.
  int64_t token_id(std::string_view text) const;
  // The BPE merges in rank order, as (left, right) token texts.
  std::vector<std::pair<std::string, std::string>> merges() const;
  bool byte_fallback() const;

  // The Split regexes of the pre-tokenizer, in order (what identifies it to llama.cpp).
  const std::vector<std::string>& pre_tokenizer_regexes() const;
  // llama.cpp's name for this pre-tokenizer (GGUF tokenizer.ggml.pre): "llama-bpe" (Llama-3),
  // "qwen2" (Qwen2, Qwen2.5, Qwen3) or "tekken" (Mistral-Nemo), from the Split regex that
  // llama.cpp's src/llama-vocab.cpp implements under that name. Fails naming the file otherwise.
  std::string llama_cpp_pre_tokenizer_name() const;

  const std::string& path() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace qkd::tokenizer
