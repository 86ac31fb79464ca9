#include "qkd/checkpoint/hf_config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "qkd/common/error.h"
#include "qkd/common/json_io.h"

namespace qkd::checkpoint {

namespace {

using nlohmann::json;

class ConfigReader {
 public:
  ConfigReader(const json& j, std::string source) : j_(j), source_(std::move(source)) {}

  int64_t required_int(const char* key) const {
    const auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) fail(source_, std::string("missing field '") + key + "'");
    if (!it->is_number_integer() || it->get<int64_t>() <= 0)
      fail(source_, std::string("field '") + key + "': expected a positive integer, got " + json_excerpt(*it));
    return it->get<int64_t>();
  }
  int64_t optional_int(const char* key, int64_t fallback) const {
    const auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return fallback;
    if (it->is_array() && !it->empty() && it->front().is_number_integer()) return it->front().get<int64_t>();
    if (!it->is_number_integer())
      fail(source_, std::string("field '") + key + "': expected an integer, got " + json_excerpt(*it));
    return it->get<int64_t>();
  }
  int64_t optional_positive_int(const char* key, int64_t fallback) const {
    const auto value = optional_int(key, fallback);
    if (value <= 0)
      fail(source_, std::string("field '") + key + "': expected a positive integer, got " + std::to_string(value));
    return value;
  }
  // Finite and > 0: epsilons, rope bases and factors (0 or negative values give NaN logits).
  double optional_positive_number(const json& obj, const char* key, double fallback) const {
    const double value = optional_number(obj, key, fallback);
    if (!(value > 0.0) || !std::isfinite(value))
      fail(source_, std::string("field '") + key + "': expected a positive number, got " + json_excerpt(obj.at(key)));
    return value;
  }
  // A token id inside the vocabulary; `lowest` -1 allows "none".
  void check_token_id(const char* key, int64_t id, int64_t vocab, int64_t lowest) const {
    if (id < lowest || id >= vocab)
      fail(source_, std::string("field '") + key + "': " + std::to_string(id) + " is outside the vocabulary [0, " +
                        std::to_string(vocab) + ")");
  }
  double optional_number(const json& obj, const char* key, double fallback) const {
    const auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return fallback;
    if (!it->is_number())
      fail(source_, std::string("field '") + key + "': expected a number, got " + json_excerpt(*it));
    return it->get<double>();
  }
  bool optional_bool(const char* key, bool fallback) const {
    const auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return fallback;
    if (!it->is_boolean())
      fail(source_, std::string("field '") + key + "': expected true or false, got " + json_excerpt(*it));
    return it->get<bool>();
  }
  const json& raw() const { return j_; }
  const std::string& source() const { return source_; }

 private:
  const json& j_;
  std::string source_;
};

// The rotary frequencies are theta^(-2i/d): a base of 1 or less makes them grow instead of fall, and a
// tiny one (1e-300) overflows them to Inf, so that every logit is NaN.
void check_rope_theta(const ConfigReader& r, double theta) {
  if (!(theta > 1.0))
    fail(r.source(), "field 'rope_theta': " + json_excerpt(theta) + " is not a rotary base (expected more than 1)");
}

// Older checkpoints: rope_theta at top level plus optional rope_scaling; newer: rope_parameters.
model::RopeConfig parse_rope(const ConfigReader& r) {
  model::RopeConfig rope;
  const json& j = r.raw();
  rope.theta = r.optional_positive_number(j, "rope_theta", 10000.0);
  check_rope_theta(r, rope.theta);
  const json* params = nullptr;
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object())
    params = &j["rope_parameters"];
  else if (j.contains("rope_scaling") && j["rope_scaling"].is_object())
    params = &j["rope_scaling"];
  if (!params) return rope;
  rope.theta = r.optional_positive_number(*params, "rope_theta", rope.theta);
  check_rope_theta(r, rope.theta);
  const auto type_field = params->contains("rope_type") ? params->at("rope_type")
                          : params->contains("type")    ? params->at("type")
                                                        : json("default");
  if (!type_field.is_string())
    fail(r.source(), "field 'rope_type': expected a string, got " + json_excerpt(type_field));
  const std::string type = type_field.get<std::string>();
  if (type != "default" && type != "llama3")
    fail(r.source(), "rope type '" + printable(type) + "' is not supported (expected default or llama3)");
  rope.type = type;
  if (type == "llama3") {
    rope.factor = r.optional_positive_number(*params, "factor", 8.0);
    rope.low_freq_factor = r.optional_positive_number(*params, "low_freq_factor", 1.0);
    rope.high_freq_factor = r.optional_positive_number(*params, "high_freq_factor", 4.0);
    if (rope.high_freq_factor <= rope.low_freq_factor)
      fail(r.source(),
           "field 'high_freq_factor': must be greater than low_freq_factor (the llama3 ramp divides by their "
           "difference)");
    const double original = r.optional_positive_number(*params, "original_max_position_embeddings", 8192);
    if (original > 1e9) fail(r.source(), "field 'original_max_position_embeddings': implausibly large");
    rope.original_max_position_embeddings = static_cast<int64_t>(original);
  }
  return rope;
}

// The families this program computes (model::ModelType); anything else, MoE included, is refused.
model::ModelType parse_model_type(const json& j, const std::string& source) {
  const auto model_type = j.contains("model_type") && j.at("model_type").is_string()
                              ? j.at("model_type").get<std::string>()
                              : std::string();
  if (const auto type = model::model_types().find(model_type)) return *type;
  fail(source, "model_type: \"" + printable(model_type) + "\" is not supported (expected one of " +
                   model::model_types().joined_names() + ")");
}

// What each family adds to LLaMA's keys (transformers' MistralConfig, Qwen2Config, Qwen3Config).
void read_family_fields(const ConfigReader& r, model::LlamaConfig& c) {
  using model::ModelType;
  const auto window = [&] {  // null: no window
    const auto keys = r.optional_int("sliding_window", 0);
    if (keys < 0) fail(r.source(), "field 'sliding_window': expected a positive integer or null, got " + std::to_string(keys));
    return keys;
  };
  switch (c.model_type) {
    case ModelType::llama: break;
    case ModelType::mistral: c.sliding_window = window(); break;
    case ModelType::qwen2:
    case ModelType::qwen3:
      c.qkv_bias = c.model_type == ModelType::qwen2;  // Qwen2Attention: q/k/v with bias, o without
      c.qk_norm = c.model_type == ModelType::qwen3;
      if (r.optional_bool("use_sliding_window", false)) c.sliding_window = window();
      break;
  }
}

}  // namespace

model::LlamaConfig parse_llama_config(const json& j, const std::string& source) {
  if (!j.is_object()) fail(source, "expected a JSON object");
  ConfigReader r(j, source);
  model::LlamaConfig c;
  c.model_type = parse_model_type(j, source);
  c.hidden_size = r.required_int("hidden_size");
  c.intermediate_size = r.required_int("intermediate_size");
  c.num_hidden_layers = r.required_int("num_hidden_layers");
  c.num_attention_heads = r.required_int("num_attention_heads");
  c.vocab_size = r.required_int("vocab_size");
  c.num_key_value_heads = r.optional_positive_int("num_key_value_heads", c.num_attention_heads);
  c.head_dim = r.optional_positive_int("head_dim", std::max<int64_t>(1, c.hidden_size / c.num_attention_heads));
  c.max_position_embeddings = r.optional_positive_int("max_position_embeddings", 2048);
  c.rms_norm_eps = r.optional_positive_number(j, "rms_norm_eps", 1e-6);
  c.tie_word_embeddings = r.optional_bool("tie_word_embeddings", false);
  c.attention_bias = r.optional_bool("attention_bias", false);
  c.mlp_bias = r.optional_bool("mlp_bias", false);
  read_family_fields(r, c);
  c.bos_token_id = r.optional_int("bos_token_id", 1);
  c.eos_token_id = r.optional_int("eos_token_id", 2);
  c.pad_token_id = r.optional_int("pad_token_id", -1);
  const auto dtype_field = j.contains("dtype")         ? j.at("dtype")
                           : j.contains("torch_dtype") ? j.at("torch_dtype")
                                                       : json("float32");
  if (!dtype_field.is_string()) fail(source, "field 'dtype': expected a string, got " + json_excerpt(dtype_field));
  c.torch_dtype = dtype_field.get<std::string>();
  r.check_token_id("bos_token_id", c.bos_token_id, c.vocab_size, 0);
  r.check_token_id("eos_token_id", c.eos_token_id, c.vocab_size, 0);
  r.check_token_id("pad_token_id", c.pad_token_id, c.vocab_size, -1);
  // Bounds that keep sizes (and their products below) far from int64 overflow.
  for (const auto& [key, value] : {std::pair<const char*, int64_t>{"hidden_size", c.hidden_size},
                                   {"intermediate_size", c.intermediate_size},
                                   {"num_hidden_layers", c.num_hidden_layers},
                                   {"num_attention_heads", c.num_attention_heads},
                                   {"vocab_size", c.vocab_size},
                                   {"head_dim", c.head_dim}})
    if (value > (int64_t{1} << 24))
      fail(source, std::string("field '") + key + "': " + std::to_string(value) + " is implausibly large");
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    fail(source, "num_key_value_heads: " + std::to_string(c.num_key_value_heads) +
                     " does not divide num_attention_heads " + std::to_string(c.num_attention_heads));
  if (c.head_dim % 2 != 0) fail(source, "head_dim: must be even for rotary embeddings");
  if (c.num_key_value_heads > c.num_attention_heads)
    fail(source, "num_key_value_heads: " + std::to_string(c.num_key_value_heads) +
                     " is more than num_attention_heads " + std::to_string(c.num_attention_heads));
  if (j.contains("hidden_act") && j["hidden_act"] != "silu")
    fail(source, "hidden_act: only \"silu\" is supported, got " + json_excerpt(j["hidden_act"]));
  c.rope = parse_rope(r);
  return c;
}

model::LlamaConfig read_llama_config(const std::string& path) {
  if (!std::filesystem::exists(path)) fail(path, "config.json not found");
  return parse_llama_config(read_json_file(path), path);
}

namespace {
const char* architecture_name(model::ModelType type) {
  switch (type) {
    case model::ModelType::llama: return "LlamaForCausalLM";
    case model::ModelType::mistral: return "MistralForCausalLM";
    case model::ModelType::qwen2: return "Qwen2ForCausalLM";
    case model::ModelType::qwen3: return "Qwen3ForCausalLM";
  }
  return "LlamaForCausalLM";
}

// The inverse of read_family_fields.
void write_family_fields(const model::LlamaConfig& c, json& out) {
  const json window = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
  if (c.model_type == model::ModelType::mistral) out["sliding_window"] = window;
  if (c.model_type == model::ModelType::qwen2 || c.model_type == model::ModelType::qwen3) {
    out["use_sliding_window"] = c.sliding_window > 0;
    out["sliding_window"] = window;
  }
}
}  // namespace

json llama_config_to_json(const model::LlamaConfig& c) {
  json rope = {{"rope_theta", c.rope.theta}, {"rope_type", c.rope.type}};
  if (c.rope.type == "llama3") {
    rope["factor"] = c.rope.factor;
    rope["low_freq_factor"] = c.rope.low_freq_factor;
    rope["high_freq_factor"] = c.rope.high_freq_factor;
    rope["original_max_position_embeddings"] = c.rope.original_max_position_embeddings;
  }
  json out = {{"architectures", {architecture_name(c.model_type)}},
          {"model_type", model::model_types().name(c.model_type)},
          {"hidden_size", c.hidden_size},
          {"intermediate_size", c.intermediate_size},
          {"num_hidden_layers", c.num_hidden_layers},
          {"num_attention_heads", c.num_attention_heads},
          {"num_key_value_heads", c.num_key_value_heads},
          {"head_dim", c.head_dim},
          {"max_position_embeddings", c.max_position_embeddings},
          {"rms_norm_eps", c.rms_norm_eps},
          {"vocab_size", c.vocab_size},
          {"tie_word_embeddings", c.tie_word_embeddings},
          {"attention_bias", c.attention_bias},
          {"mlp_bias", c.mlp_bias},
          {"hidden_act", "silu"},
          {"bos_token_id", c.bos_token_id},
          {"eos_token_id", c.eos_token_id},
          {"pad_token_id", c.pad_token_id >= 0 ? json(c.pad_token_id) : json(nullptr)},
          {"rope_parameters", rope},
          {"rope_theta", c.rope.theta},
          {"dtype", c.torch_dtype}};
  write_family_fields(c, out);
  return out;
}

}  // namespace qkd::checkpoint
