#pragma once
// LLaMA decoder as LibTorch modules. Module and parameter names equal the Hugging Face ones
// ("model.embed_tokens.weight", "model.layers.3.self_attn.v_proj.weight", "lm_head.weight"), so a
// checkpoint maps one to one and later stages select layers by name.
#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "qkd/model/document_layout.h"
#include "qkd/model/linear.h"
#include "qkd/model/llama_config.h"

namespace qkd::model {

// Called (when set) with the outputs of each block's attention and MLP, before the residual add.
// The signal-propagation monitor uses it; nothing is computed when it is not set.
struct ActivationObserver {
  virtual ~ActivationObserver() = default;
  virtual void observe(int64_t layer, const char* site, const torch::Tensor& output) = 0;
};

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

// cos/sin tables for rotary embeddings, computed in fp32 (default or llama3 frequency scaling).
class RotaryEmbedding {
 public:
  RotaryEmbedding(const LlamaConfig& config);
  // cos, sin of shape [seq, head_dim] for positions 0..seq-1 in `dtype` on `device`, from a cache of
  // the most recently used (seq, dtype, device) tables; callers must not modify them in place. Copies
  // of this object share the cache.
  std::pair<torch::Tensor, torch::Tensor> tables(int64_t seq, torch::Dtype dtype, torch::Device device) const;
  // The same tables computed afresh (what the cache holds).
  std::pair<torch::Tensor, torch::Tensor> compute_tables(int64_t seq, torch::Dtype dtype, torch::Device device) const;
  const torch::Tensor& inv_freq() const { return inv_freq_; }

 private:
  struct TableCache;
  torch::Tensor inv_freq_;  // [head_dim/2], fp32, CPU
  std::shared_ptr<TableCache> cache_;
};

torch::Tensor llama3_scaled_inv_freq(const torch::Tensor& inv_freq, const RopeConfig& rope);

// What every layer's attention needs besides its input: the rotary tables and, with document masking,
// the keys each query may not see.
struct AttentionInputs {
  torch::Tensor cos, sin;  // [T, D] for positions 0..T-1, or [B, 1, T, D] for positions inside documents
  torch::Tensor blocked;   // undefined: causal over the whole window; else [B, T, T] (blocked_keys)
};

class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const LlamaConfig& config);
  torch::Tensor forward(const torch::Tensor& x, const AttentionInputs& inputs);
  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  RMSNorm q_norm{nullptr}, k_norm{nullptr};  // qwen3 only: over head_dim, before the rotary embedding

 private:
  int64_t num_heads_, num_kv_heads_, head_dim_;
};
TORCH_MODULE(Attention);

class MLPImpl : public torch::nn::Module {
 public:
  explicit MLPImpl(const LlamaConfig& config);
  torch::Tensor forward(const torch::Tensor& x);
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(MLP);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const LlamaConfig& config, int64_t index);
  torch::Tensor forward(const torch::Tensor& x, const AttentionInputs& inputs, ActivationObserver* observer);
  // forward() through an activation checkpoint (qkd/model/activation_checkpoint.h) when grad mode is
  // on and the layer is in training mode; plain forward() otherwise. The observer sees each forward once.
  torch::Tensor checkpointed_forward(const torch::Tensor& x, const AttentionInputs& inputs,
                                     ActivationObserver* observer);
  Attention self_attn{nullptr};
  MLP mlp{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};

 private:
  int64_t index_;
};
TORCH_MODULE(DecoderLayer);

// "model": embeddings, decoder layers, final norm.
class LlamaBackboneImpl : public torch::nn::Module {
 public:
  explicit LlamaBackboneImpl(const LlamaConfig& config);
  // Final-normed hidden states [batch, seq, hidden]. When `hidden_states` is given it receives the
  // embedding output, each layer's output, and (replacing the last one) the final-normed output,
  // matching transformers' output_hidden_states. `documents` (null: one causal stream per window)
  // masks attention to each token's own document and restarts positions there.
  torch::Tensor forward(const torch::Tensor& input_ids, std::vector<torch::Tensor>* hidden_states,
                        ActivationObserver* observer, const DocumentLayout* documents = nullptr);
  // Rotary tables and attention mask for windows of `seq` tokens (laid out as `documents` when given).
  AttentionInputs attention_inputs(int64_t seq, torch::Dtype dtype, torch::Device device,
                                   const DocumentLayout* documents = nullptr) const;
  // Decoder layers run through DecoderLayerImpl::checkpointed_forward when on.
  void set_activation_checkpointing(bool on) { activation_checkpointing_ = on; }
  bool activation_checkpointing() const { return activation_checkpointing_; }
  const RotaryEmbedding& rotary() const { return rotary_; }
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
  std::vector<DecoderLayer> layer_list;

 private:
  RotaryEmbedding rotary_;
  bool activation_checkpointing_ = false;
};
TORCH_MODULE(LlamaBackbone);

class LlamaForCausalLMImpl : public torch::nn::Module {
 public:
  explicit LlamaForCausalLMImpl(const LlamaConfig& config);

  // Logits [batch, seq, vocab] in the module's dtype. `documents`: see LlamaBackboneImpl::forward.
  torch::Tensor forward(const torch::Tensor& input_ids, std::vector<torch::Tensor>* hidden_states = nullptr,
                        const DocumentLayout* documents = nullptr);
  torch::Tensor lm_head_weight();  // embed_tokens.weight when tied, lm_head's effective weight otherwise
  // The final normed hidden states [batch, seq, hidden]: forward() without the output head, for
  // losses that apply the head themselves (loss::kd_loss_from_hidden).
  torch::Tensor final_hidden_states(const torch::Tensor& input_ids, const DocumentLayout* documents = nullptr) {
    return model(input_ids, nullptr, observer_, documents);
  }

  // Every projection by its Hugging Face module name ("model.layers.0.self_attn.q_proj", ...),
  // plus "lm_head" when untied.
  std::vector<std::pair<std::string, Linear>> named_linears();

  void set_activation_observer(ActivationObserver* observer) { observer_ = observer; }
  // Activation checkpointing per decoder layer: in training mode with grad enabled, each layer keeps
  // only its input and recomputes its activations during backward (less memory, about one more
  // forward of compute). Gradients are the same as without it, but they reach the layers' parameters
  // through a nested backward: use backward(), not torch::autograd::grad(). Off by default.
  void set_activation_checkpointing(bool on) { model->set_activation_checkpointing(on); }
  bool activation_checkpointing() const { return model->activation_checkpointing(); }
  const LlamaConfig& config() const { return config_; }

  LlamaBackbone model{nullptr};
  Linear lm_head{nullptr};  // null when embeddings are tied

 private:
  LlamaConfig config_;
  ActivationObserver* observer_ = nullptr;
};
TORCH_MODULE(LlamaForCausalLM);

}  // namespace qkd::model
