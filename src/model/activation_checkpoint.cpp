#include "qkd/model/activation_checkpoint.h"

#include <algorithm>
#include <iterator>
#include <utility>

#include "qkd/common/torch_compat.h"

namespace qkd::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What backward needs besides the saved input. An autograd context keeps only tensors and IValues, so
// the closure travels as an IValue capsule.
struct Recompute : torch::CustomClassHolder {
  Recompute(CheckpointedFunction function, compat::AutocastState autocast)
      : function(std::move(function)), autocast(autocast) {}
  CheckpointedFunction function;
  compat::AutocastState autocast;
};

class CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
 public:
  // `parameters` are inputs only so that the result requires grad when they do; their gradients reach
  // them through the nested backward, not through this node.
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& input, at::TensorList parameters,
                               const c10::intrusive_ptr<Recompute>& recompute) {
    ctx->save_for_backward({input});
    ctx->saved_data["inputs"] = static_cast<int64_t>(parameters.size() + 2);
    ctx->saved_data["recompute"] = c10::IValue::make_capsule(recompute);
    // Function::apply already disables grad; said again because keeping no activations is the point.
    torch::NoGradGuard no_grad;
    return recompute->function(input, /*recomputing=*/false);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto capsule = ctx->saved_data.at("recompute").toCapsule();
    const auto& recompute = static_cast<const Recompute&>(*capsule);
    const bool input_needs_grad = ctx->needs_input_grad(0);
    const auto input = saved[0].detach().requires_grad_(input_needs_grad);
    torch::Tensor output;
    {
      torch::AutoGradMode enable_grad(true);
      compat::AutocastStateScope autocast(recompute.autocast);
      output = recompute.function(input, /*recomputing=*/true);
    }
    // Parameters frozen since the forward leave nothing to backpropagate.
    if (output.requires_grad()) torch::autograd::backward({output}, {grad_outputs[0]});
    // One gradient per forward input: the input, each parameter (already accumulated), the closure.
    variable_list grads(ctx->saved_data.at("inputs").toInt());
    if (input_needs_grad) grads[0] = input.grad();
    return grads;
  }
};

}  // namespace

torch::Tensor checkpoint(const CheckpointedFunction& function, const torch::Tensor& input,
                         const std::vector<torch::Tensor>& parameters) {
  std::vector<torch::Tensor> trainable;
  std::copy_if(parameters.begin(), parameters.end(), std::back_inserter(trainable),
               [](const torch::Tensor& p) { return p.requires_grad(); });
  if (!torch::GradMode::is_enabled() || (!input.requires_grad() && trainable.empty())) {
    return function(input, /*recomputing=*/false);
  }
  auto recompute = c10::make_intrusive<Recompute>(function, compat::current_autocast_state());
  return CheckpointFunction::apply(input, at::TensorList(trainable), recompute);
}

}  // namespace qkd::model
