#include "qkd/model/linear.h"

namespace qkd::model {

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool with_bias)
    : in_features_(in_features), out_features_(out_features) {
  weight = register_parameter("weight", torch::empty({out_features, in_features}));
  if (with_bias) bias = register_parameter("bias", torch::zeros({out_features}));
}

torch::Tensor LinearImpl::effective_weight() {
  return weight_quantizer_ ? weight_quantizer_->fake_quantize(weight) : weight;
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  const auto input = input_quantizer_ ? input_quantizer_->fake_quantize(x) : x;
  return torch::nn::functional::linear(input, effective_weight(), bias);
}

void LinearImpl::set_weight_quantizer(std::shared_ptr<TensorQuantizer> quantizer) {
  weight_quantizer_ = quantizer ? register_module("weight_quantizer", quantizer) : nullptr;
}

void LinearImpl::set_input_quantizer(std::shared_ptr<TensorQuantizer> quantizer) {
  input_quantizer_ = quantizer ? register_module("input_quantizer", quantizer) : nullptr;
}

}  // namespace qkd::model
