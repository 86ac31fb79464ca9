#include "qkd/model/llama.h"

#include "qkd/common/torch_compat.h"
#include "qkd/kernels/causal_attention.h"
#include "qkd/model/activation_checkpoint.h"

namespace qkd::model {

namespace {

torch::Tensor rotate_half(const torch::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return torch::cat({-x.slice(-1, half), x.slice(-1, 0, half)}, -1);
}

// x [B, H, T, D]; cos/sin [T, D] or [B, 1, T, D].
torch::Tensor apply_rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  return x * cos + rotate_half(x) * sin;
}

}  // namespace

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}));
}

// Normalization in fp32, scale applied in the input dtype (transformers' LlamaRMSNorm).
torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  const auto x32 = x.to(torch::kFloat32);
  const auto normed = x32 * torch::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps_);
  return weight * normed.to(x.scalar_type());
}

AttentionImpl::AttentionImpl(const LlamaConfig& c)
    : num_heads_(c.num_attention_heads), num_kv_heads_(c.num_key_value_heads), head_dim_(c.head_dim) {
  const bool qkv_bias = c.attention_bias || c.qkv_bias;
  q_proj = register_module("q_proj", Linear(c.hidden_size, num_heads_ * head_dim_, qkv_bias));
  k_proj = register_module("k_proj", Linear(c.hidden_size, num_kv_heads_ * head_dim_, qkv_bias));
  v_proj = register_module("v_proj", Linear(c.hidden_size, num_kv_heads_ * head_dim_, qkv_bias));
  o_proj = register_module("o_proj", Linear(num_heads_ * head_dim_, c.hidden_size, c.attention_bias));
  if (c.qk_norm) {
    q_norm = register_module("q_norm", RMSNorm(head_dim_, c.rms_norm_eps));
    k_norm = register_module("k_norm", RMSNorm(head_dim_, c.rms_norm_eps));
  }
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const AttentionInputs& inputs) {
  const int64_t b = x.size(0), t = x.size(1);
  auto q = q_proj(x).view({b, t, num_heads_, head_dim_});
  auto k = k_proj(x).view({b, t, num_kv_heads_, head_dim_});
  if (q_norm) {
    q = q_norm(q);
    k = k_norm(k);
  }
  q = q.transpose(1, 2);
  k = k.transpose(1, 2);
  auto v = v_proj(x).view({b, t, num_kv_heads_, head_dim_}).transpose(1, 2);
  q = apply_rotary(q, inputs.cos, inputs.sin);
  k = apply_rotary(k, inputs.cos, inputs.sin);
  const auto attended = kernels::has_fast_path(q)      ? kernels::causal_attention(q, k, v, inputs.blocked)
                        : inputs.blocked.defined() ? kernels::masked_attention(q, k, v, inputs.blocked)
                                                   : compat::causal_attention(q, k, v);
  return o_proj(attended.transpose(1, 2).reshape({b, t, num_heads_ * head_dim_}));
}

MLPImpl::MLPImpl(const LlamaConfig& c) {
  gate_proj = register_module("gate_proj", Linear(c.hidden_size, c.intermediate_size, c.mlp_bias));
  up_proj = register_module("up_proj", Linear(c.hidden_size, c.intermediate_size, c.mlp_bias));
  down_proj = register_module("down_proj", Linear(c.intermediate_size, c.hidden_size, c.mlp_bias));
}

torch::Tensor MLPImpl::forward(const torch::Tensor& x) { return down_proj(torch::silu(gate_proj(x)) * up_proj(x)); }

DecoderLayerImpl::DecoderLayerImpl(const LlamaConfig& c, int64_t index) : index_(index) {
  self_attn = register_module("self_attn", Attention(c));
  mlp = register_module("mlp", MLP(c));
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x, const AttentionInputs& inputs,
                                        ActivationObserver* observer) {
  const auto attn_out = self_attn(input_layernorm(x), inputs);
  if (observer) observer->observe(index_, "attn_out", attn_out);
  const auto h = x + attn_out;
  const auto mlp_out = mlp(post_attention_layernorm(h));
  if (observer) observer->observe(index_, "mlp_out", mlp_out);
  return h + mlp_out;
}

torch::Tensor DecoderLayerImpl::checkpointed_forward(const torch::Tensor& x, const AttentionInputs& inputs,
                                                     ActivationObserver* observer) {
  if (!is_training() || !torch::GradMode::is_enabled()) return forward(x, inputs, observer);
  // The closure lives in the autograd graph until backward: it holds the layer itself, not `this`.
  auto self = std::static_pointer_cast<DecoderLayerImpl>(shared_from_this());
  return checkpoint(
      [self, inputs, observer](const torch::Tensor& input, bool recomputing) {
        return self->forward(input, inputs, recomputing ? nullptr : observer);
      },
      x, parameters());
}

LlamaBackboneImpl::LlamaBackboneImpl(const LlamaConfig& c) : rotary_(c) {
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(c.vocab_size, c.hidden_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    layer_list.push_back(DecoderLayer(c, i));
    layers->push_back(layer_list.back());
  }
  norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

AttentionInputs LlamaBackboneImpl::attention_inputs(int64_t seq, torch::Dtype dtype, torch::Device device,
                                                   const DocumentLayout* documents) const {
  auto [cos, sin] = rotary_.tables(seq, dtype, device);
  if (!documents) return {cos, sin, torch::Tensor()};
  // Each token takes the table row of its position inside its document.
  const auto positions = documents->positions.to(device);
  const int64_t batch = positions.size(0);
  const auto rows = [&](const torch::Tensor& table) {
    return table.index_select(0, positions.reshape(-1)).view({batch, 1, seq, table.size(1)});
  };
  return {rows(cos), rows(sin), blocked_keys(*documents).to(device)};
}

torch::Tensor LlamaBackboneImpl::forward(const torch::Tensor& input_ids, std::vector<torch::Tensor>* hidden_states,
                                         ActivationObserver* observer, const DocumentLayout* documents) {
  auto h = embed_tokens(input_ids);
  const auto inputs = attention_inputs(input_ids.size(1), h.scalar_type(), h.device(), documents);
  if (hidden_states) hidden_states->push_back(h);
  for (auto& layer : layer_list) {
    h = activation_checkpointing_ ? layer->checkpointed_forward(h, inputs, observer) : layer(h, inputs, observer);
    if (hidden_states) hidden_states->push_back(h);
  }
  h = norm(h);
  if (hidden_states) hidden_states->back() = h;
  return h;
}

LlamaForCausalLMImpl::LlamaForCausalLMImpl(const LlamaConfig& c) : config_(c) {
  model = register_module("model", LlamaBackbone(c));
  if (!c.tie_word_embeddings) lm_head = register_module("lm_head", Linear(c.hidden_size, c.vocab_size, false));
}

torch::Tensor LlamaForCausalLMImpl::lm_head_weight() {
  return lm_head ? lm_head->effective_weight() : model->embed_tokens->weight;
}

torch::Tensor LlamaForCausalLMImpl::forward(const torch::Tensor& input_ids, std::vector<torch::Tensor>* hidden_states,
                                            const DocumentLayout* documents) {
  const auto h = model(input_ids, hidden_states, observer_, documents);
  return lm_head ? lm_head(h) : torch::nn::functional::linear(h, model->embed_tokens->weight);
}

std::vector<std::pair<std::string, Linear>> LlamaForCausalLMImpl::named_linears() {
  std::vector<std::pair<std::string, Linear>> out;
  for (size_t i = 0; i < model->layer_list.size(); ++i) {
    const auto prefix = "model.layers." + std::to_string(i) + ".";
    auto& layer = model->layer_list[i];
    out.emplace_back(prefix + "self_attn.q_proj", layer->self_attn->q_proj);
    out.emplace_back(prefix + "self_attn.k_proj", layer->self_attn->k_proj);
    out.emplace_back(prefix + "self_attn.v_proj", layer->self_attn->v_proj);
    out.emplace_back(prefix + "self_attn.o_proj", layer->self_attn->o_proj);
    out.emplace_back(prefix + "mlp.gate_proj", layer->mlp->gate_proj);
    out.emplace_back(prefix + "mlp.up_proj", layer->mlp->up_proj);
    out.emplace_back(prefix + "mlp.down_proj", layer->mlp->down_proj);
  }
  if (lm_head) out.emplace_back("lm_head", lm_head);
  return out;
}

}  // namespace qkd::model
