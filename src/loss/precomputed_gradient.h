#pragma once
// The losses here compute their value and their gradient w.r.t. the logits together in forward();
// this autograd function hands that fp32 gradient to backward.
#include <torch/torch.h>

namespace qkd::loss {

class PrecomputedGradient : public torch::autograd::Function<PrecomputedGradient> {
 public:
  // Returns `loss_value`, whose gradient w.r.t. `logits` is `grad` (fp32, shaped like the logits).
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor logits, torch::Tensor loss_value,
                               torch::Tensor grad) {
    ctx->save_for_backward({grad});
    ctx->saved_data["dtype"] = logits.scalar_type();
    return loss_value;
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grad_outputs) {
    const auto grad = ctx->get_saved_variables()[0];
    // The incoming scale (fp16 loss scale, accumulation share) multiplies the fp32 gradient before it
    // is cast to the logits' dtype: in fp16 most unscaled entries of a large-vocabulary softmax underflow.
    return {(grad * grad_outputs[0].to(torch::kFloat32)).to(ctx->saved_data["dtype"].toScalarType()), torch::Tensor(),
            torch::Tensor()};
  }
};

}  // namespace qkd::loss
