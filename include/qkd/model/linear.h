#pragma once
// The linear layer every projection of the model uses. It carries optional fake-quantizers for its
// weight and its input, so that a student is the same module tree as its teacher with quantizers
// attached (parameter names stay the Hugging Face ones; quantizer state appears below them, e.g.
// "model.layers.0.self_attn.v_proj.weight_quantizer.scale").
#include <torch/torch.h>

#include <memory>

namespace qkd::model {

// What a fake-quantizer has to offer the layer. Implementations live in qkd/quant.
class TensorQuantizer : public torch::nn::Module {
 public:
  // Fake-quantized view of `x` (same shape and dtype), differentiable with a straight-through
  // estimator for x and, when learnable, the quantizer's own parameters.
  virtual torch::Tensor fake_quantize(const torch::Tensor& x) = 0;

  // input @ fake_quantize(weight)^T + bias (bias may be undefined), for the Linear whose weight this
  // quantizes. Values and gradients are those of that composition, which the default computes; a
  // weight quantizer may compute them keeping less for the backward pass.
  virtual torch::Tensor linear(const torch::Tensor& input, const torch::Tensor& weight, const torch::Tensor& bias);
};

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias);

  torch::Tensor forward(const torch::Tensor& x);

  // The weight as the forward pass sees it (quantized for a student). For a frozen module (see below)
  // this is a cached tensor shared with the forward pass: read it, do not write to it (a write is
  // detected and costs a recomputation, but the caller's tensor is the cache).
  torch::Tensor effective_weight();

  void set_weight_quantizer(std::shared_ptr<TensorQuantizer> quantizer);
  void set_input_quantizer(std::shared_ptr<TensorQuantizer> quantizer);
  std::shared_ptr<TensorQuantizer> weight_quantizer() const { return weight_quantizer_; }
  std::shared_ptr<TensorQuantizer> input_quantizer() const { return input_quantizer_; }

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }

  torch::Tensor weight;
  torch::Tensor bias;  // undefined when the layer has none

 private:
  struct FrozenWeightCache;
  // Frozen: neither the weight nor any parameter of the weight quantizer requires grad (what the
  // freeze policy sets), so the quantized weight is a function of tensors that autograd does not
  // change and is computed once, then reused until one of them is written to.
  bool quantization_frozen() const;
  torch::Tensor frozen_quantized_weight();

  int64_t in_features_;
  int64_t out_features_;
  std::shared_ptr<TensorQuantizer> weight_quantizer_;
  std::shared_ptr<TensorQuantizer> input_quantizer_;
  std::shared_ptr<FrozenWeightCache> frozen_cache_;
};
TORCH_MODULE(Linear);

}  // namespace qkd::model
