#include "qkd/tokenizer/tokenizer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>

#include "qkd/common/error.h"
#include "qkd/common/input_file.h"
#include "qkd/common/json_io.h"
#include "qkd/tokenizer/sentencepiece_vocab.h"

namespace qkd::tokenizer {

namespace {

// The sentencepiece shim's C functions, resolved once. The shim is loaded with RTLD_DEEPBIND so that
// sentencepiece's embedded protobuf never meets LibTorch's (see src/tokenizer/shim/).
struct SentencepieceShim {
  void* (*load)(const char*, char*, size_t);
  void (*free_handle)(void*);
  int (*encode)(void*, const char*, size_t, int**, size_t*, char*, size_t);
  int (*decode)(void*, const int*, size_t, char**, size_t*, char*, size_t);
  void (*release)(void*);
  int (*piece_size)(void*);
  int (*bos_id)(void*);
  int (*eos_id)(void*);
  int (*pad_id)(void*);
};

std::vector<std::string> shim_candidates() {
  std::vector<std::string> out;
  if (const char* env = std::getenv("QKD_SPM_SHIM")) out.emplace_back(env);
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) out.push_back((exe.parent_path() / "libqkd_spm_shim.so").string());
  out.emplace_back(QKD_SPM_SHIM_PATH);
  return out;
}

template <typename F>
void resolve(void* library, const char* name, F& target) {
  target = reinterpret_cast<F>(dlsym(library, name));
  if (!target) fail("libqkd_spm_shim.so", std::string("missing symbol ") + name);
}

const SentencepieceShim& shim() {
  static SentencepieceShim functions{};
  static std::once_flag once;
  std::call_once(once, [] {
    void* library = nullptr;
    std::string tried;
    for (const auto& path : shim_candidates()) {
      library = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (library) break;
      tried += (tried.empty() ? "" : ", ") + path;
    }
    if (!library) fail("libqkd_spm_shim.so", "sentencepiece shim not found (tried " + tried + ")");
    resolve(library, "qkd_spm_load", functions.load);
    resolve(library, "qkd_spm_free", functions.free_handle);
    resolve(library, "qkd_spm_encode", functions.encode);
    resolve(library, "qkd_spm_decode", functions.decode);
    resolve(library, "qkd_spm_release", functions.release);
    resolve(library, "qkd_spm_piece_size", functions.piece_size);
    resolve(library, "qkd_spm_bos_id", functions.bos_id);
    resolve(library, "qkd_spm_eos_id", functions.eos_id);
    resolve(library, "qkd_spm_pad_id", functions.pad_id);
  });
  return functions;
}

}  // namespace

Tokenizer::Tokenizer(const std::string& model_path) : path_(model_path) {
  if (!std::filesystem::exists(model_path)) fail(model_path, "tokenizer model not found");
  // sentencepiece reads the path itself: a FIFO or /dev/zero must not reach it.
  require_regular_file(model_path);
  if (std::filesystem::file_size(model_path) > (uint64_t{1} << 30))
    fail(model_path, "larger than 1 GiB: not a sentencepiece model");
  const auto& api = shim();
  char error[512] = {0};
  void* handle = api.load(model_path.c_str(), error, sizeof(error));
  if (!handle) fail(model_path, std::string("cannot load sentencepiece model: ") + error);
  handle_ = std::shared_ptr<void>(handle, api.free_handle);
  special_.bos = api.bos_id(handle);
  special_.eos = api.eos_id(handle);
  special_.pad = api.pad_id(handle);
}

Tokenizer::Tokenizer(HfTokenizer hf) : hf_(std::make_shared<const HfTokenizer>(std::move(hf))) {
  path_ = hf_->path();
  special_.bos = hf_->bos_id();
  special_.eos = hf_->eos_id();
  special_.pad = hf_->pad_id();
}

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

std::vector<int64_t> Tokenizer::encode(const std::string& text) const {
  if (hf_) return hf_->encode(text, /*add_special_tokens=*/false);
  const auto& api = shim();
  int* ids = nullptr;
  size_t count = 0;
  char error[512] = {0};
  if (api.encode(handle_.get(), text.data(), text.size(), &ids, &count, error, sizeof(error)) != 0)
    fail(path_, std::string("encode failed: ") + error);
  std::vector<int64_t> out(ids, ids + count);
  api.release(ids);
  return out;
}

std::vector<int64_t> Tokenizer::encode(const std::string& text, bool add_bos, bool add_eos) const {
  if (hf_) {
    auto out = hf_->encode(text, /*add_special_tokens=*/false);
    if (add_bos && special_.bos >= 0) out.insert(out.begin(), special_.bos);
    if (add_eos && special_.eos >= 0) out.push_back(special_.eos);
    return out;
  }
  std::vector<int64_t> out;
  if (add_bos) out.push_back(special_.bos);
  const auto body = encode(text);
  out.insert(out.end(), body.begin(), body.end());
  if (add_eos) out.push_back(special_.eos);
  return out;
}

std::vector<int64_t> Tokenizer::encode_with_special_tokens(const std::string& text) const {
  if (hf_) return hf_->encode(text, /*add_special_tokens=*/true);
  return encode(text, /*add_bos=*/true, /*add_eos=*/false);
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  if (hf_) return hf_->decode(ids, skip_special_tokens);
  return decode(ids);
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  if (hf_) return hf_->decode(ids, /*skip_special_tokens=*/false);
  const auto& api = shim();
  const std::vector<int> narrow(ids.begin(), ids.end());
  char* text = nullptr;
  size_t length = 0;
  char error[512] = {0};
  if (api.decode(handle_.get(), narrow.data(), narrow.size(), &text, &length, error, sizeof(error)) != 0)
    fail(path_, std::string("decode failed: ") + error);
  std::string out(text, length);
  api.release(text);
  return out;
}

int64_t Tokenizer::vocab_size() const {
  if (hf_) return hf_->vocab_size();
  return shim().piece_size(handle_.get());
}

std::string Tokenizer::token_text(int64_t id) const {
  if (id < 0 || id >= vocab_size()) return "";
  if (hf_) return hf_->tokens()[id];
  const auto vocab = read_sentencepiece_vocab(path_);
  return id < static_cast<int64_t>(vocab.pieces.size()) ? vocab.pieces[id].piece : "";
}

namespace {
void read_id(const nlohmann::json& config, const char* key, int64_t& out) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return;
  if (it->is_array() && !it->empty()) it = it->begin();  // eos_token_id may be a list
  if (it->is_number_integer()) out = it->get<int64_t>();
}
}  // namespace

const chat::ChatTemplate* Tokenizer::chat_template() const {
  if (!chat_error_.empty()) throw Error(chat_error_);
  return chat_.get();
}

void Tokenizer::set_chat_template(std::shared_ptr<const chat::ChatTemplate> chat, std::string load_error) {
  chat_ = std::move(chat);
  chat_error_ = std::move(load_error);
}

namespace {
bool has_chat_template(const std::filesystem::path& dir) {
  const auto config_path = dir / "tokenizer_config.json";
  if (std::filesystem::exists(dir / "chat_template.jinja")) return true;
  if (!std::filesystem::exists(config_path)) return false;
  const auto config = read_json_file(config_path.string());
  return config.is_object() && config.contains("chat_template") && !config.at("chat_template").is_null();
}

// Read now, reported when a chat is rendered: a template with a construct the renderer lacks must
// not stop the commands that never render one (eval of token files, export).
void attach_chat_template(Tokenizer& tok, const std::filesystem::path& dir) {
  if (!has_chat_template(dir)) return;
  try {
    tok.set_chat_template(std::make_shared<const chat::ChatTemplate>(
                              chat::ChatTemplate::load_from_tokenizer_config((dir / "tokenizer_config.json").string())),
                          "");
  } catch (const Error& e) {
    tok.set_chat_template(nullptr, e.what());
  }
}

// transformers takes a tokenizer.json's special tokens from tokenizer_config.json; a directory without
// one falls back on the model's config.json (which otherwise only sets generation defaults).
// The checkpoint's config.json, where it has one, says which ids are BOS, EOS and padding.
void apply_config_ids(Tokenizer& tok, const std::string& dir) {
  const auto config_path = std::filesystem::path(dir) / "config.json";
  if (!std::filesystem::exists(config_path)) return;
  const auto config = read_json_file(config_path.string());
  if (!config.is_object()) return;
  SpecialTokens special = tok.special();
  read_id(config, "bos_token_id", special.bos);
  read_id(config, "eos_token_id", special.eos);
  read_id(config, "pad_token_id", special.pad);
  tok.set_special(special);
}

Tokenizer load_hf_tokenizer(const std::string& dir) {
  Tokenizer tok(HfTokenizer::from_directory(dir));
  attach_chat_template(tok, dir);
  if (!std::filesystem::exists(std::filesystem::path(dir) / "tokenizer_config.json")) apply_config_ids(tok, dir);
  return tok;
}
}  // namespace

Tokenizer load_tokenizer_for_checkpoint(const std::string& dir) {
  if (std::filesystem::exists(std::filesystem::path(dir) / "tokenizer.json")) return load_hf_tokenizer(dir);
  Tokenizer tok((std::filesystem::path(dir) / "tokenizer.model").string());
  apply_config_ids(tok, dir);
  return tok;
}

}  // namespace qkd::tokenizer
