#include "qkd/tokenizer/hf_tokenizer.h"

#include <cctype>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "added_tokens.h"
#include "bpe_model.h"
#include "decoder.h"
#include "json_place.h"
#include "llama_cpp_pre_tokenizer.h"
#include "normalizer.h"
#include "post_processor.h"
#include "pre_tokenizer.h"
#include "qkd/common/error.h"
#include "qkd/common/json_io.h"
#include "unicode_text.h"

namespace qkd::tokenizer {

namespace {

// Working memory of one encode call, kept per thread so that encoding allocates only when a text is
// larger than any before it.
struct EncodeScratch {
  std::vector<Segment> segments;
  std::vector<Segment> normalized_segments;
  std::string normalized;
  std::string normalize_scratch;
  PieceList pieces;
  PreTokenizeScratch pre;
  BpeScratch bpe;
  std::vector<int32_t> ids;
};

bool optional_flag(const nlohmann::json& object, const char* key, bool fallback, const JsonPlace& place) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) place.field(key).fail_here("expected true or false, got " + json_excerpt(*it));
  return it->get<bool>();
}

std::vector<AddedToken> read_added_tokens(const nlohmann::json& root, const std::string& file) {
  const JsonPlace place{file, "added_tokens"};
  const auto list = root.find("added_tokens");
  if (list == root.end() || list->is_null()) return {};
  if (!list->is_array()) place.fail_here("expected an array, got " + json_excerpt(*list));
  std::vector<AddedToken> out;
  for (size_t i = 0; i < list->size(); ++i) {
    const auto& entry = (*list)[i];
    const auto here = place.element(i);
    auto fields = here.reader(entry);
    AddedToken token;
    token.id = static_cast<int32_t>(fields.integer("id", -1, 0, (int64_t{1} << 24) - 1));
    if (token.id < 0) here.field("id").fail_here("missing (required)");
    token.content = fields.required_string("content");
    if (token.content.empty()) here.field("content").fail_here("empty");
    token.special = optional_flag(entry, "special", false, here);
    token.single_word = optional_flag(entry, "single_word", false, here);
    token.lstrip = optional_flag(entry, "lstrip", false, here);
    token.rstrip = optional_flag(entry, "rstrip", false, here);
    token.normalized = optional_flag(entry, "normalized", !token.special, here);
    out.push_back(std::move(token));
  }
  return out;
}

// bos_token and friends in tokenizer_config.json: a string, {"content": ...} (AddedToken form), or null.
std::optional<std::string> config_token(const nlohmann::json& config, const char* key, const std::string& file) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    const auto content = it->find("content");
    if (content != it->end() && content->is_string()) return content->get<std::string>();
  }
  fail(file, std::string(key) + ": expected a string, {\"content\": ...} or null, got " + json_excerpt(*it));
}

std::optional<bool> config_flag(const nlohmann::json& config, const char* key, const std::string& file) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) fail(file, std::string(key) + ": expected true or false, got " + json_excerpt(*it));
  return it->get<bool>();
}

const nlohmann::json& member_or_null(const nlohmann::json& root, const char* key) {
  static const nlohmann::json null_value;
  const auto it = root.find(key);
  return it == root.end() ? null_value : *it;
}

}  // namespace

struct HfTokenizer::Impl {
  std::string path;
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  PreTokenizerShape pre_tokenizer_shape;
  std::unique_ptr<BpeModel> model;
  std::unique_ptr<Decoder> decoder;
  std::vector<int64_t> prefix, suffix;

  std::vector<AddedToken> added;
  std::unordered_map<std::string, int32_t> added_ids;     // content -> id
  std::unordered_map<int32_t, std::string> decode_texts;  // added tokens decoded as their normalized form
  AddedTokenMatcher raw_matcher;                          // normalized=false tokens, found in the raw text
  AddedTokenMatcher normalized_matcher;                   // normalized=true tokens, found in normalized stretches

  std::vector<std::string> tokens;
  std::vector<TokenType> types;
  std::vector<bool> special;

  int64_t bos = -1, eos = -1, pad = -1;
  std::string bos_text, eos_text, pad_text;
  std::optional<bool> add_bos, add_eos;

  mutable WordCache cache;

  void load_tokenizer_json(const std::string& file);
  void load_added_tokens(const nlohmann::json& root);
  void build_token_table();
  void load_tokenizer_config(const std::string& file);
  int64_t id_of(const std::string& text) const;

  void encode_stretch(std::string_view stretch, bool at_text_start, EncodeScratch& s, WordCache* word_cache) const;
  void encode_normalized(std::string_view normalized, bool at_text_start, EncodeScratch& s,
                         WordCache* word_cache) const;
  void encode_text(std::string_view text, EncodeScratch& s, WordCache* word_cache) const;
};

void HfTokenizer::Impl::load_tokenizer_json(const std::string& file) {
  const auto root = read_json_file(file);
  if (!root.is_object()) fail(file, "expected a JSON object (a Hugging Face tokenizer.json)");
  const JsonPlace model_place{file, "model"};
  const auto& model_json = member_or_null(root, "model");
  if (model_json.is_null()) model_place.fail_here("missing (required)");
  const auto model_type = component_type(model_json, model_place);
  if (model_type != "BPE") unsupported_type(model_place, model_type);
  model = BpeModel::from_json(model_json, model_place);

  normalizer = make_normalizer(member_or_null(root, "normalizer"), {file, "normalizer"});
  pre_tokenizer =
      make_pre_tokenizer(member_or_null(root, "pre_tokenizer"), {file, "pre_tokenizer"}, pre_tokenizer_shape);
  const auto special_template = make_post_processor(member_or_null(root, "post_processor"), {file, "post_processor"});
  prefix.assign(special_template.before.begin(), special_template.before.end());
  suffix.assign(special_template.after.begin(), special_template.after.end());
  decoder = make_decoder(member_or_null(root, "decoder"), {file, "decoder"});
  load_added_tokens(root);
  build_token_table();
  for (const auto id : prefix)
    if (id >= static_cast<int64_t>(tokens.size()) || tokens[id].empty())
      fail(file, "post_processor: special token id " + std::to_string(id) + " is not a token");
  for (const auto id : suffix)
    if (id >= static_cast<int64_t>(tokens.size()) || tokens[id].empty())
      fail(file, "post_processor: special token id " + std::to_string(id) + " is not a token");
}

void HfTokenizer::Impl::load_added_tokens(const nlohmann::json& root) {
  added = read_added_tokens(root, path);
  std::vector<std::pair<std::string, size_t>> raw_patterns, normalized_patterns;
  std::string normalized, scratch;
  for (size_t i = 0; i < added.size(); ++i) {
    const auto& token = added[i];
    added_ids[token.content] = token.id;
    if (!token.normalized) {
      raw_patterns.emplace_back(token.content, i);
      continue;
    }
    // A normalized token is looked for in its normalized form, and decodes to it.
    normalized = token.content;
    if (normalizer) normalizer->normalize(normalized, scratch);
    if (normalized != token.content) decode_texts[token.id] = normalized;
    normalized_patterns.emplace_back(normalized, i);
  }
  raw_matcher.build(&added, raw_patterns);
  normalized_matcher.build(&added, normalized_patterns);
}

void HfTokenizer::Impl::build_token_table() {
  tokens = model->vocab();
  for (const auto& token : added)
    if (static_cast<size_t>(token.id) >= tokens.size()) tokens.resize(token.id + 1);
  special.assign(tokens.size(), false);
  std::vector<int> added_kind(tokens.size(), 0);  // 0: none, 1: added, 2: added special
  for (const auto& token : added) {
    tokens[token.id] = token.content;
    special[token.id] = token.special;
    added_kind[token.id] = token.special ? 2 : 1;
  }
  types.assign(tokens.size(), TokenType::normal);
  for (size_t id = 0; id < tokens.size(); ++id) {
    const auto& text = tokens[id];
    if (text.empty())
      types[id] = TokenType::unused;
    else if (static_cast<int32_t>(id) == model->unk_id())
      types[id] = TokenType::unknown;
    else if (added_kind[id] != 0)
      types[id] = added_kind[id] == 2 ? TokenType::control : TokenType::user_defined;
    else if (model->byte_fallback() && text.size() == 6 && text.compare(0, 3, "<0x") == 0 && text[5] == '>' &&
             std::isxdigit(static_cast<unsigned char>(text[3])) && std::isxdigit(static_cast<unsigned char>(text[4])))
      types[id] = TokenType::byte;
  }
}

int64_t HfTokenizer::Impl::id_of(const std::string& text) const {
  if (const auto it = added_ids.find(text); it != added_ids.end()) return it->second;
  return model->token_id(text);
}

void HfTokenizer::Impl::load_tokenizer_config(const std::string& file) {
  const auto config = read_json_file(file);
  if (!config.is_object()) fail(file, "expected a JSON object (a tokenizer_config.json)");
  auto resolve = [&](const char* key, int64_t& id, std::string& text) {
    const auto token = config_token(config, key, file);
    if (!token) return;
    id = id_of(*token);
    if (id < 0) fail(file, std::string(key) + ": " + json_excerpt(*token) + " is not a token of " + path);
    text = *token;
  };
  resolve("bos_token", bos, bos_text);
  resolve("eos_token", eos, eos_text);
  resolve("pad_token", pad, pad_text);
  add_bos = config_flag(config, "add_bos_token", file);
  add_eos = config_flag(config, "add_eos_token", file);
}

void HfTokenizer::Impl::encode_stretch(std::string_view stretch, bool at_text_start, EncodeScratch& s,
                                       WordCache* word_cache) const {
  s.pieces.clear();
  s.pieces.add(stretch, at_text_start);
  if (pre_tokenizer) pre_tokenizer->pre_tokenize(s.pieces, s.pre);
  for (const auto& piece : s.pieces.pieces) model->tokenize(s.pieces.view(piece), s.ids, s.bpe, word_cache);
}

void HfTokenizer::Impl::encode_normalized(std::string_view normalized, bool at_text_start, EncodeScratch& s,
                                          WordCache* word_cache) const {
  if (normalized_matcher.empty()) {
    encode_stretch(normalized, at_text_start, s, word_cache);
    return;
  }
  s.normalized_segments.clear();
  normalized_matcher.split(normalized, s.normalized_segments);
  for (const auto& segment : s.normalized_segments) {
    if (segment.token >= 0)
      s.ids.push_back(added[segment.token].id);
    else
      encode_stretch(normalized.substr(segment.begin, segment.end - segment.begin), at_text_start && segment.begin == 0,
                     s, word_cache);
  }
}

// Added tokens found in the raw text become their ids; each stretch between them is normalized,
// searched for normalized added tokens, pre-tokenized and merged.
void HfTokenizer::Impl::encode_text(std::string_view text, EncodeScratch& s, WordCache* word_cache) const {
  s.segments.clear();
  if (raw_matcher.empty())
    s.segments.push_back({0, text.size(), -1});
  else
    raw_matcher.split(text, s.segments);
  for (const auto& segment : s.segments) {
    if (segment.token >= 0) {
      s.ids.push_back(added[segment.token].id);
      continue;
    }
    const auto stretch = text.substr(segment.begin, segment.end - segment.begin);
    if (!normalizer) {
      encode_normalized(stretch, segment.begin == 0, s, word_cache);
      continue;
    }
    s.normalized.assign(stretch);
    normalizer->normalize(s.normalized, s.normalize_scratch);
    encode_normalized(s.normalized, segment.begin == 0, s, word_cache);
  }
}

HfTokenizer::HfTokenizer(const std::string& tokenizer_json, const std::string& tokenizer_config)
    : impl_(std::make_unique<Impl>()) {
  impl_->path = tokenizer_json;
  impl_->load_tokenizer_json(tokenizer_json);
  if (!tokenizer_config.empty()) impl_->load_tokenizer_config(tokenizer_config);
}

HfTokenizer HfTokenizer::from_directory(const std::string& dir) {
  const auto json = std::filesystem::path(dir) / "tokenizer.json";
  const auto config = std::filesystem::path(dir) / "tokenizer_config.json";
  if (!std::filesystem::exists(json)) fail(json.string(), "tokenizer.json not found");
  return HfTokenizer(json.string(), std::filesystem::exists(config) ? config.string() : "");
}

HfTokenizer::~HfTokenizer() = default;
HfTokenizer::HfTokenizer(HfTokenizer&&) noexcept = default;
HfTokenizer& HfTokenizer::operator=(HfTokenizer&&) noexcept = default;

std::vector<int64_t> HfTokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const Impl& m = *impl_;
  // Word offsets are 32-bit (PieceList); no real text comes near this.
  if (text.size() >= (size_t{1} << 32)) fail(m.path, "cannot encode a text of 4 GiB or more");
  std::string repaired;
  if (!unicode::is_valid_utf8(text)) {
    repaired = unicode::repair_utf8(text);
    text = repaired;
  }
  thread_local EncodeScratch s;
  s.ids.clear();
  // The word cache serves one call at a time; a call that finds it busy merges without it (same ids).
  std::unique_lock<std::mutex> lock(m.cache.mutex(), std::try_to_lock);
  WordCache* word_cache = lock.owns_lock() ? &m.cache : nullptr;

  m.encode_text(text, s, word_cache);

  std::vector<int64_t> out;
  out.reserve(s.ids.size() + (add_special_tokens ? m.prefix.size() + m.suffix.size() : 0));
  if (add_special_tokens) out.insert(out.end(), m.prefix.begin(), m.prefix.end());
  out.insert(out.end(), s.ids.begin(), s.ids.end());
  if (add_special_tokens) out.insert(out.end(), m.suffix.begin(), m.suffix.end());
  // A huge text leaves huge buffers behind; the thread should not keep them.
  if (s.pieces.text.capacity() > (size_t{64} << 20) || s.pre.spare.text.capacity() > (size_t{64} << 20))
    s = EncodeScratch{};
  return out;
}

std::string HfTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  const Impl& m = *impl_;
  std::vector<std::string> texts;
  texts.reserve(ids.size());
  for (const auto id : ids) {
    if (id < 0 || id >= static_cast<int64_t>(m.tokens.size()) || m.tokens[id].empty()) continue;
    if (skip_special_tokens && m.special[id]) continue;
    const auto override_text = m.decode_texts.find(static_cast<int32_t>(id));
    texts.push_back(override_text != m.decode_texts.end() ? override_text->second : m.tokens[id]);
  }
  std::string out;
  if (!m.decoder) {
    for (size_t i = 0; i < texts.size(); ++i) out += (i ? " " : "") + texts[i];
    return out;
  }
  m.decoder->decode_chain(texts);
  for (const auto& text : texts) out += text;
  return out;
}

int64_t HfTokenizer::vocab_size() const { return static_cast<int64_t>(impl_->tokens.size()); }
int64_t HfTokenizer::bos_id() const { return impl_->bos; }
int64_t HfTokenizer::eos_id() const { return impl_->eos; }
int64_t HfTokenizer::pad_id() const { return impl_->pad; }
int64_t HfTokenizer::unk_id() const { return impl_->model->unk_id(); }
const std::string& HfTokenizer::bos_token() const { return impl_->bos_text; }
const std::string& HfTokenizer::eos_token() const { return impl_->eos_text; }
const std::string& HfTokenizer::pad_token() const { return impl_->pad_text; }
std::optional<bool> HfTokenizer::add_bos_token() const { return impl_->add_bos; }
std::optional<bool> HfTokenizer::add_eos_token() const { return impl_->add_eos; }
const std::vector<int64_t>& HfTokenizer::special_prefix() const { return impl_->prefix; }
const std::vector<int64_t>& HfTokenizer::special_suffix() const { return impl_->suffix; }
const std::vector<std::string>& HfTokenizer::tokens() const { return impl_->tokens; }
const std::vector<TokenType>& HfTokenizer::token_types() const { return impl_->types; }
int64_t HfTokenizer::token_id(std::string_view text) const { return impl_->id_of(std::string(text)); }
bool HfTokenizer::byte_fallback() const { return impl_->model->byte_fallback(); }
const std::string& HfTokenizer::path() const { return impl_->path; }

std::vector<std::pair<std::string, std::string>> HfTokenizer::merges() const {
  const auto& vocab = impl_->model->vocab();
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(impl_->model->merges().size());
  for (const auto& [left, right] : impl_->model->merges()) out.emplace_back(vocab[left], vocab[right]);
  return out;
}

const std::vector<std::string>& HfTokenizer::pre_tokenizer_regexes() const {
  return impl_->pre_tokenizer_shape.split_regexes;
}

std::string HfTokenizer::llama_cpp_pre_tokenizer_name() const {
  return tokenizer::llama_cpp_pre_tokenizer_name(impl_->pre_tokenizer_shape, impl_->path);
}

}  // namespace qkd::tokenizer
