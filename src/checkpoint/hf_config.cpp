#include "qkd/checkpoint/hf_config.h"

#include <filesystem>
#include <fstream>

#include "qkd/common/error.h"

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
      fail(source_, std::string("field '") + key + "': expected a positive integer, got " + it->dump());
    return it->get<int64_t>();
  }
  int64_t optional_int(const char* key, int64_t fallback) const {
    const auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return fallback;
    if (it->is_array() && !it->empty() && it->front().is_number_integer()) return it->front().get<int64_t>();
    if (!it->is_number_integer()) fail(source_, std::string("field '") + key + "': expected an integer, got " + it->dump());
    return it->get<int64_t>();
  }
  double optional_number(const json& obj, const char* key, double fallback) const {
    const auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return fallback;
    if (!it->is_number()) fail(source_, std::string("field '") + key + "': expected a number, got " + it->dump());
    return it->get<double>();
  }
  bool optional_bool(const char* key, bool fallback) const {
    const auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) fail(source_, std::string("field '") + key + "': expected true or false, got " + it->dump());
    return it->get<bool>();
  }
  const json& raw() const { return j_; }
  const std::string& source() const { return source_; }

 private:
  const json& j_;
  std::string source_;
};

// Older checkpoints: rope_theta at top level plus optional rope_scaling; newer: rope_parameters.
model::RopeConfig parse_rope(const ConfigReader& r) {
  model::RopeConfig rope;
  const json& j = r.raw();
  rope.theta = r.optional_number(j, "rope_theta", 10000.0);
  const json* params = nullptr;
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) params = &j["rope_parameters"];
  else if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) params = &j["rope_scaling"];
  if (!params) return rope;
  rope.theta = r.optional_number(*params, "rope_theta", rope.theta);
  std::string type = params->value("rope_type", params->value("type", std::string("default")));
  if (type != "default" && type != "llama3")
    fail(r.source(), "rope type '" + type + "' is not supported (expected default or llama3)");
  rope.type = type;
  if (type == "llama3") {
    rope.factor = r.optional_number(*params, "factor", 8.0);
    rope.low_freq_factor = r.optional_number(*params, "low_freq_factor", 1.0);
    rope.high_freq_factor = r.optional_number(*params, "high_freq_factor", 4.0);
    rope.original_max_position_embeddings =
        static_cast<int64_t>(r.optional_number(*params, "original_max_position_embeddings", 8192));
  }
  return rope;
}

}  // namespace

model::LlamaConfig parse_llama_config(const json& j, const std::string& source) {
  if (!j.is_object()) fail(source, "expected a JSON object");
  const auto model_type = j.value("model_type", std::string());
  if (model_type != "llama") fail(source, "model_type: expected \"llama\", got \"" + model_type + "\"");
  ConfigReader r(j, source);
  model::LlamaConfig c;
  c.hidden_size = r.required_int("hidden_size");
  c.intermediate_size = r.required_int("intermediate_size");
  c.num_hidden_layers = r.required_int("num_hidden_layers");
  c.num_attention_heads = r.required_int("num_attention_heads");
  c.vocab_size = r.required_int("vocab_size");
  c.num_key_value_heads = r.optional_int("num_key_value_heads", c.num_attention_heads);
  c.head_dim = r.optional_int("head_dim", c.hidden_size / c.num_attention_heads);
  c.max_position_embeddings = r.optional_int("max_position_embeddings", 2048);
  c.rms_norm_eps = r.optional_number(j, "rms_norm_eps", 1e-6);
  c.tie_word_embeddings = r.optional_bool("tie_word_embeddings", false);
  c.attention_bias = r.optional_bool("attention_bias", false);
  c.mlp_bias = r.optional_bool("mlp_bias", false);
  c.bos_token_id = r.optional_int("bos_token_id", 1);
  c.eos_token_id = r.optional_int("eos_token_id", 2);
  c.pad_token_id = r.optional_int("pad_token_id", -1);
  c.torch_dtype = j.value("dtype", j.value("torch_dtype", std::string("float32")));
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    fail(source, "num_key_value_heads: " + std::to_string(c.num_key_value_heads) +
                     " does not divide num_attention_heads " + std::to_string(c.num_attention_heads));
  if (c.head_dim % 2 != 0) fail(source, "head_dim: must be even for rotary embeddings");
  if (j.contains("hidden_act") && j["hidden_act"] != "silu")
    fail(source, "hidden_act: only \"silu\" is supported, got " + j["hidden_act"].dump());
  c.rope = parse_rope(r);
  return c;
}

model::LlamaConfig read_llama_config(const std::string& path) {
  if (!std::filesystem::exists(path)) fail(path, "config.json not found");
  std::ifstream in(path);
  json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail(path, "not valid JSON");
  return parse_llama_config(j, path);
}

json llama_config_to_json(const model::LlamaConfig& c) {
  json rope = {{"rope_theta", c.rope.theta}, {"rope_type", c.rope.type}};
  if (c.rope.type == "llama3") {
    rope["factor"] = c.rope.factor;
    rope["low_freq_factor"] = c.rope.low_freq_factor;
    rope["high_freq_factor"] = c.rope.high_freq_factor;
    rope["original_max_position_embeddings"] = c.rope.original_max_position_embeddings;
  }
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
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
}

}  // namespace qkd::checkpoint
