#include "qkd/model/linear.h"

#include <c10/core/InferenceMode.h>

#include <mutex>
#include <vector>

namespace qkd::model {
namespace {

// Identifies the contents of a tensor without holding its memory. Every write through a tensor that
// autograd sees (the copy_ of a rollback or of a checkpoint load, fill_, an optimizer step) bumps the
// version counter that the tensor shares with its views; set_data() (Module::to, a static quantizer's
// initialize()) moves it to another storage. The storage is referenced weakly: its memory is freed
// as early as without the stamp, but its StorageImpl, hence its address, cannot be taken by another
// storage while the stamp exists, so equal addresses mean the same storage. Not seen: writes through
// Tensor::data() (which has a version counter of its own) or through raw pointers.
struct TensorStamp {
  c10::weak_intrusive_ptr<c10::StorageImpl> storage;
  int64_t offset;
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;
  torch::ScalarType dtype;
  int64_t version;

  // Inference tensors have no version counter.
  static bool possible(const torch::Tensor& t) { return t.defined() && t.has_storage() && !t.is_inference(); }

  explicit TensorStamp(const torch::Tensor& t)
      : storage(t.storage().getWeakStorageImpl()),
        offset(t.storage_offset()),
        sizes(t.sizes().vec()),
        strides(t.strides().vec()),
        dtype(t.scalar_type()),
        version(t._version()) {}

  bool matches(const torch::Tensor& t) const {
    return possible(t) && storage._unsafe_get_target() == t.storage().unsafeGetStorageImpl() &&
           offset == t.storage_offset() && dtype == t.scalar_type() && version == t._version() &&
           t.sizes().equals(sizes) && t.strides().equals(strides);
  }
};

}  // namespace

// The quantized weight of a frozen module, computed once. It costs one weight-sized tensor per frozen
// module for as long as it stays frozen: the tensor every forward pass would otherwise allocate (and,
// when the input takes a gradient, keep until the backward pass).
struct LinearImpl::FrozenWeightCache {
  std::mutex mutex;
  torch::Tensor value;
  // Of the weight, the quantizer's parameters and buffers, then `value` itself, which detects a write
  // into the tensor effective_weight() handed out.
  std::vector<TensorStamp> key;

  void clear() {
    std::lock_guard<std::mutex> lock(mutex);
    value = torch::Tensor();
    key.clear();
  }
};

torch::Tensor TensorQuantizer::linear(const torch::Tensor& input, const torch::Tensor& weight,
                                      const torch::Tensor& bias) {
  return torch::nn::functional::linear(input, fake_quantize(weight), bias);
}

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool with_bias)
    : in_features_(in_features), out_features_(out_features), frozen_cache_(std::make_shared<FrozenWeightCache>()) {
  weight = register_parameter("weight", torch::empty({out_features, in_features}));
  if (with_bias) bias = register_parameter("bias", torch::zeros({out_features}));
}

bool LinearImpl::quantization_frozen() const {
  if (weight.requires_grad()) return false;
  for (const auto& p : weight_quantizer_->parameters()) {
    if (p.requires_grad()) return false;
  }
  return true;
}

torch::Tensor LinearImpl::frozen_quantized_weight() {
  std::vector<torch::Tensor> inputs{weight};
  for (const auto& p : weight_quantizer_->parameters()) inputs.push_back(p);
  for (const auto& b : weight_quantizer_->buffers()) inputs.push_back(b);
  auto compute = [&] {
    // Under inference mode the result would be an inference tensor, which a later training forward
    // could not save for backward. Nothing requires grad, so no graph would be recorded anyway.
    c10::InferenceMode normal_tensors(false);
    torch::NoGradGuard no_grad;
    return weight_quantizer_->fake_quantize(weight);
  };
  for (const auto& t : inputs) {
    if (!TensorStamp::possible(t)) return compute();
  }
  auto& cache = *frozen_cache_;
  std::lock_guard<std::mutex> lock(cache.mutex);
  bool hit = cache.value.defined() && cache.key.size() == inputs.size() + 1 && cache.key.back().matches(cache.value);
  for (size_t i = 0; hit && i < inputs.size(); ++i) hit = cache.key[i].matches(inputs[i]);
  if (hit) return cache.value;
  cache.value = torch::Tensor();  // not alive next to its replacement
  cache.key.clear();
  cache.value = compute();
  inputs.push_back(cache.value);
  for (const auto& t : inputs) cache.key.emplace_back(t);
  return cache.value;
}

torch::Tensor LinearImpl::effective_weight() {
  if (!weight_quantizer_) return weight;
  if (quantization_frozen()) return frozen_quantized_weight();
  frozen_cache_->clear();  // released: the copy would only hold memory
  return weight_quantizer_->fake_quantize(weight);
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  const auto input = input_quantizer_ ? input_quantizer_->fake_quantize(x) : x;
  if (!weight_quantizer_) return torch::nn::functional::linear(input, weight, bias);
  if (quantization_frozen()) return torch::nn::functional::linear(input, frozen_quantized_weight(), bias);
  frozen_cache_->clear();
  return weight_quantizer_->linear(input, weight, bias);
}

void LinearImpl::set_weight_quantizer(std::shared_ptr<TensorQuantizer> quantizer) {
  frozen_cache_->clear();
  weight_quantizer_ = quantizer ? register_module("weight_quantizer", quantizer) : nullptr;
}

void LinearImpl::set_input_quantizer(std::shared_ptr<TensorQuantizer> quantizer) {
  input_quantizer_ = quantizer ? register_module("input_quantizer", quantizer) : nullptr;
}

}  // namespace qkd::model
