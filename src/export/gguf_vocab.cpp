#include "gguf_vocab.h"

#include <filesystem>

#include "qkd/common/error.h"
#include "qkd/common/input_file.h"
#include "qkd/common/json_io.h"
#include "qkd/tokenizer/hf_tokenizer.h"
#include "qkd/tokenizer/sentencepiece_vocab.h"

namespace qkd::exporting::gguf {

namespace fs = std::filesystem;

namespace {

// Which file speaks for the tokenizer: tokenizer.json when it is byte-level BPE (Llama-3, Qwen,
// Mistral-Nemo); otherwise tokenizer.model (LLaMA-2's sentencepiece, which llama.cpp reads with scores).
bool byte_level_bpe(const std::string& dir) {
  if (!fs::is_regular_file(fs::path(dir) / "tokenizer.json")) return false;
  if (fs::is_regular_file(fs::path(dir) / "tokenizer.model")) return false;
  return true;
}

void check_special_ids(const model::LlamaConfig& config) {
  const std::vector<std::pair<const char*, int64_t>> ids = {{"bos_token_id", config.bos_token_id},
                                                            {"eos_token_id", config.eos_token_id},
                                                            {"pad_token_id", config.pad_token_id}};
  for (const auto& [field, id] : ids)
    if (id >= config.vocab_size)
      fail(std::string("config.") + field,
           std::to_string(id) + " is not below vocab_size " + std::to_string(config.vocab_size));
}

// The vocabulary GGUF stores: the model's pieces, padded to vocab_size like the converter does.
tokenizer::SentencepieceVocab sentencepiece_vocab(const ExportSource& source) {
  const auto path = (fs::path(source.tokenizer_dir) / "tokenizer.model").string();
  auto vocab = tokenizer::read_sentencepiece_vocab(path);
  const auto vocab_size = source.student.config().vocab_size;
  if (static_cast<int64_t>(vocab.pieces.size()) > vocab_size)
    fail(path, std::to_string(vocab.pieces.size()) + " pieces, more than the model's vocab_size " +
                   std::to_string(vocab_size));
  for (auto id = static_cast<int64_t>(vocab.pieces.size()); id < vocab_size; ++id)
    vocab.pieces.push_back({"[PAD" + std::to_string(id) + "]", -1000.0f, tokenizer::PieceType::unused});
  return vocab;
}

tokenizer::HfTokenizer bpe_tokenizer(const ExportSource& source) {
  auto tok = tokenizer::HfTokenizer::from_directory(source.tokenizer_dir);
  if (tok.byte_fallback())
    fail(tok.path(), "a sentencepiece-style tokenizer.json (byte fallback) goes into GGUF from its tokenizer.model, "
                     "which this directory lacks");
  const auto vocab_size = source.student.config().vocab_size;
  if (tok.vocab_size() > vocab_size)
    fail(tok.path(), std::to_string(tok.vocab_size()) + " tokens, more than the model's vocab_size " +
                         std::to_string(vocab_size));
  tok.llama_cpp_pre_tokenizer_name();  // fails naming the file for a pre-tokenizer llama.cpp lacks
  return tok;
}

void add_sentencepiece(Metadata& m, const ExportSource& source) {
  const auto vocab = sentencepiece_vocab(source);
  m.string("tokenizer.ggml.model", "llama");
  m.array("tokenizer.ggml.tokens", kString, vocab.pieces, [&](const tokenizer::VocabPiece& p) { m.str(p.piece); });
  m.array("tokenizer.ggml.scores", kFloat32, vocab.pieces,
          [&](const tokenizer::VocabPiece& p) { m.raw<float>(p.score); });
  m.array("tokenizer.ggml.token_type", kInt32, vocab.pieces,
          [&](const tokenizer::VocabPiece& p) { m.raw<int32_t>(static_cast<int32_t>(p.type)); });
  const auto& c = source.student.config();
  m.u32("tokenizer.ggml.bos_token_id", c.bos_token_id);
  m.u32("tokenizer.ggml.eos_token_id", c.eos_token_id);
  for (size_t id = 0; id < vocab.pieces.size(); ++id) {
    if (vocab.pieces[id].type == tokenizer::PieceType::unknown) {
      m.u32("tokenizer.ggml.unknown_token_id", id);
      break;
    }
  }
  if (c.pad_token_id >= 0) m.u32("tokenizer.ggml.padding_token_id", c.pad_token_id);
  m.boolean("tokenizer.ggml.add_bos_token", true);
  m.boolean("tokenizer.ggml.add_eos_token", false);
  m.boolean("tokenizer.ggml.add_space_prefix", vocab.add_dummy_prefix);
}

// As convert_hf_to_gguf.py's _set_vocab_gpt2 writes it: every id below vocab_size named ("[PAD<id>]",
// unused, where the tokenizer has none), the merges as "left right", and the special ids of
// tokenizer_config.json; BOS is added where the tokenizer's template adds it.
void add_byte_level_bpe(Metadata& m, const ExportSource& source) {
  const auto tok = bpe_tokenizer(source);
  const auto vocab_size = static_cast<size_t>(source.student.config().vocab_size);
  std::vector<std::string> tokens = tok.tokens();
  std::vector<int32_t> types;
  for (const auto t : tok.token_types()) types.push_back(static_cast<int32_t>(t));
  for (size_t id = 0; id < vocab_size; ++id) {
    if (id >= tokens.size()) {
      tokens.push_back("");
      types.push_back(static_cast<int32_t>(tokenizer::TokenType::unused));
    }
    if (tokens[id].empty()) {
      tokens[id] = "[PAD" + std::to_string(id) + "]";
      types[id] = static_cast<int32_t>(tokenizer::TokenType::unused);
    }
  }
  std::vector<std::string> merges;
  for (const auto& [left, right] : tok.merges()) merges.push_back(left + " " + right);
  m.string("tokenizer.ggml.model", "gpt2");
  m.string("tokenizer.ggml.pre", tok.llama_cpp_pre_tokenizer_name());
  m.array("tokenizer.ggml.tokens", kString, tokens, [&](const std::string& t) { m.str(t); });
  m.array("tokenizer.ggml.token_type", kInt32, types, [&](int32_t t) { m.raw<int32_t>(t); });
  m.array("tokenizer.ggml.merges", kString, merges, [&](const std::string& t) { m.str(t); });
  if (tok.bos_id() >= 0) m.u32("tokenizer.ggml.bos_token_id", tok.bos_id());
  if (tok.eos_id() >= 0) m.u32("tokenizer.ggml.eos_token_id", tok.eos_id());
  if (tok.pad_id() >= 0) m.u32("tokenizer.ggml.padding_token_id", tok.pad_id());
  const bool adds_bos = tok.add_bos_token().value_or(!tok.special_prefix().empty());
  m.boolean("tokenizer.ggml.add_bos_token", adds_bos && tok.bos_id() >= 0);
  m.boolean("tokenizer.ggml.add_eos_token", tok.add_eos_token().value_or(!tok.special_suffix().empty()));
}

// tokenizer_config.json's chat_template (a string, or the "default" of a list), for llama.cpp's chat.
std::string chat_template_text(const std::string& dir) {
  const auto path = fs::path(dir) / "tokenizer_config.json";
  if (!fs::is_regular_file(path)) return "";
  const auto config = parse_json_or_discarded(read_text_file(path.string()));
  if (!config.is_object() || !config.contains("chat_template")) return "";
  const auto& t = config.at("chat_template");
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array())
    for (const auto& entry : t)
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry.at("template").is_string())
        return entry.at("template").get<std::string>();
  return "";
}

}  // namespace

void check_tokenizer(const ExportSource& source) {
  check_special_ids(source.student.config());
  if (byte_level_bpe(source.tokenizer_dir))
    bpe_tokenizer(source);
  else
    sentencepiece_vocab(source);
}

void add_tokenizer_metadata(Metadata& m, const ExportSource& source) {
  if (byte_level_bpe(source.tokenizer_dir))
    add_byte_level_bpe(m, source);
  else
    add_sentencepiece(m, source);
  const auto chat = chat_template_text(source.tokenizer_dir);
  if (!chat.empty()) m.string("tokenizer.chat_template", chat);
}

}  // namespace qkd::exporting::gguf
