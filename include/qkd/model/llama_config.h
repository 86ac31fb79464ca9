#pragma once
// Architecture hyper-parameters of a LLaMA-family model (the subset of Hugging Face's config.json
// that changes the computation).
#include <cstdint>
#include <string>

#include "qkd/common/enum_table.h"

namespace qkd::model {

// The Hugging Face model_type of the LLaMA-family architectures this program computes: mistral is
// llama with a sliding-window attention (run only where the window covers the sequence); qwen2 adds
// biases to q/k/v; qwen3 normalizes q and k per head before the rotary embedding.
enum class ModelType { llama, mistral, qwen2, qwen3 };
const EnumTable<ModelType>& model_types();  // "llama" | "mistral" | "qwen2" | "qwen3"

struct RopeConfig {
  std::string type = "default";  // "default" or "llama3"
  double theta = 10000.0;
  // llama3 scaling
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct LlamaConfig {
  ModelType model_type = ModelType::llama;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q, k, v and o projections with biases
  bool qkv_bias = false;        // q, k and v only (qwen2)
  bool qk_norm = false;         // RMSNorm of each head of q and k (qwen3)
  int64_t sliding_window = 0;   // keys a query may see at most (mistral, qwen2 with use_sliding_window); 0: all
  bool mlp_bias = false;
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;
  int64_t pad_token_id = -1;
  std::string torch_dtype = "float32";  // dtype the weights were saved in
  RopeConfig rope;
};

// This program computes full causal attention: a model whose sliding window is shorter than the
// sequences it will see (`seq_len`, named by `setting`) is refused, naming `source`'s sliding_window.
void check_sliding_window(const LlamaConfig& config, int64_t seq_len, const std::string& setting,
                          const std::string& source);

}  // namespace qkd::model
