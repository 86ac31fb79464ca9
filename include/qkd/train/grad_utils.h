#pragma once
// Gradient bookkeeping between backward and the optimizer step.
#include <torch/torch.h>

#include <vector>

namespace qkd::train {

// The parameters that take gradients now (frozen projections left out), in model order.
std::vector<torch::Tensor> trainable_parameters(torch::nn::Module& model);

// sqrt of the sum of squared gradients of every parameter that has one (fp64 accumulation);
// NaN/Inf when any gradient is non-finite.
double global_grad_norm(torch::nn::Module& model);
// Scales gradients so that their global norm is at most max_norm (torch.nn.utils.clip_grad_norm_).
void clip_gradients(torch::nn::Module& model, double norm, double max_norm);
// fp16 loss scaling: divide the gradients by the scale used for backward (see LossScaler).
void unscale_gradients(torch::nn::Module& model, double scale);

}  // namespace qkd::train
