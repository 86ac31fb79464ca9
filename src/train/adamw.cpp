#include "qkd/train/adamw.h"

#include <algorithm>
#include <cmath>

#include "qkd/common/error.h"

namespace qkd::train {

void AdamW::add_parameter(const std::string& name, torch::Tensor param, bool decay, int64_t warmup_steps) {
  params_[name] = Slot{param,
                       torch::zeros_like(param, torch::MemoryFormat::Preserve),
                       torch::zeros_like(param, torch::MemoryFormat::Preserve),
                       decay,
                       0,
                       warmup_steps};
}

void AdamW::remove_parameter(const std::string& name) { params_.erase(name); }

void AdamW::zero_grad() {
  for (auto& [_, slot] : params_) slot.param.mutable_grad() = torch::Tensor();
}

// Same operations as torch.optim.AdamW (foreach=False): decay, lerp of m, v, bias-corrected step.
void AdamW::step(double lr) {
  ++step_count_;
  torch::NoGradGuard no_grad;
  for (auto& [_, slot] : params_) {
    const auto& grad = slot.param.grad();
    if (!grad.defined()) continue;
    ++slot.steps;
    const double slot_lr =
        slot.warmup > 0 ? lr * std::min(1.0, static_cast<double>(slot.steps) / static_cast<double>(slot.warmup)) : lr;
    const double bc1 = 1.0 - std::pow(options_.beta1, static_cast<double>(slot.steps));
    const double bc2_sqrt = std::sqrt(1.0 - std::pow(options_.beta2, static_cast<double>(slot.steps)));
    const double step_size = slot_lr / bc1;
    if (slot.decay && options_.weight_decay != 0.0) slot.param.mul_(1.0 - slot_lr * options_.weight_decay);
    slot.exp_avg.lerp_(grad, 1.0 - options_.beta1);
    slot.exp_avg_sq.mul_(options_.beta2).addcmul_(grad, grad, 1.0 - options_.beta2);
    const auto denom = (slot.exp_avg_sq.sqrt() / bc2_sqrt).add_(options_.eps);
    slot.param.addcdiv_(slot.exp_avg, denom, -step_size);
  }
}

std::vector<std::string> AdamW::parameter_names() const {
  std::vector<std::string> names;
  for (const auto& [name, _] : params_) names.push_back(name);
  return names;
}

int64_t AdamW::numel() const {
  int64_t n = 0;
  for (const auto& [_, slot] : params_) n += slot.param.numel();
  return n;
}

io::NamedTensors AdamW::state() const {
  io::NamedTensors out;
  out.emplace_back("__step__", torch::tensor({step_count_}, torch::kInt64));
  for (const auto& [name, slot] : params_) {
    out.emplace_back(name + ".exp_avg", slot.exp_avg.detach().cpu());
    out.emplace_back(name + ".exp_avg_sq", slot.exp_avg_sq.detach().cpu());
    out.emplace_back(name + ".step", torch::tensor({slot.steps}, torch::kInt64));
    out.emplace_back(name + ".warmup", torch::tensor({slot.warmup}, torch::kInt64));
  }
  return out;
}

void AdamW::load_state(const io::NamedTensors& state, const std::string& source) {
  std::map<std::string, torch::Tensor> by_name(state.begin(), state.end());
  const auto step = by_name.find("__step__");
  if (step == by_name.end()) fail(source, "tensor '__step__' missing from optimizer state");
  step_count_ = step->second.item<int64_t>();
  torch::NoGradGuard no_grad;
  for (auto& [name, slot] : params_) {
    for (auto* part : {"exp_avg", "exp_avg_sq"}) {
      const auto it = by_name.find(name + "." + part);
      if (it == by_name.end()) fail(source, "tensor '" + name + "." + part + "' missing from optimizer state");
      auto& target = std::string(part) == "exp_avg" ? slot.exp_avg : slot.exp_avg_sq;
      if (it->second.sizes() != target.sizes())
        fail(source, "tensor '" + it->first + "': shape differs from the model");
      target.copy_(it->second);
    }
    for (auto* counter : {"step", "warmup"}) {
      const auto it = by_name.find(name + "." + counter);
      if (it == by_name.end()) fail(source, "tensor '" + name + "." + counter + "' missing from optimizer state");
      (std::string(counter) == "step" ? slot.steps : slot.warmup) = it->second.item<int64_t>();
    }
  }
}

}  // namespace qkd::train
