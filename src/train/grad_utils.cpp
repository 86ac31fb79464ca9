#include "qkd/train/grad_utils.h"

#include <cmath>

namespace qkd::train {

std::vector<torch::Tensor> trainable_parameters(torch::nn::Module& model) {
  std::vector<torch::Tensor> trainable;
  for (const auto& p : model.parameters())
    if (p.requires_grad()) trainable.push_back(p);
  return trainable;
}

double global_grad_norm(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  double sum = 0.0;
  for (const auto& p : model.parameters()) {
    const auto& g = p.grad();
    if (g.defined()) sum += g.to(torch::kFloat64).pow(2).sum().item<double>();
  }
  return std::sqrt(sum);
}

void clip_gradients(torch::nn::Module& model, double norm, double max_norm) {
  const double factor = max_norm / (norm + 1e-6);
  if (factor >= 1.0) return;
  torch::NoGradGuard no_grad;
  for (auto& p : model.parameters())
    if (p.grad().defined()) p.mutable_grad().mul_(factor);
}

void unscale_gradients(torch::nn::Module& model, double scale) {
  torch::NoGradGuard no_grad;
  for (auto& p : model.parameters())
    if (p.grad().defined()) p.mutable_grad().div_(scale);
}

}  // namespace qkd::train
