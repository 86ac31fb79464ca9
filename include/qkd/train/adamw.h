#pragma once
// AdamW over named parameters (decoupled weight decay, PyTorch's update rule). Kept in-house rather
// than torch::optim::AdamW because the trainer needs per-name state it can drop when a projection is
// frozen, and a state that serializes to safetensors for exact resume.
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "qkd/io/safetensors.h"

namespace qkd::train {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

class AdamW {
 public:
  explicit AdamW(AdamWOptions options) : options_(options) {}

  // `decay` false for parameters exempt from weight decay (norms and biases by default).
  // `warmup_steps` > 0 ramps this parameter's learning rate linearly over its first updates (a
  // projection released after a freeze must not take a full-size first Adam step: that step,
  // sign(g) x lr on every element, is what destabilized it).
  void add_parameter(const std::string& name, torch::Tensor param, bool decay, int64_t warmup_steps = 0);
  // Stops updating `name` and frees its moment estimates (used by the freeze policies).
  void remove_parameter(const std::string& name);
  bool has_parameter(const std::string& name) const { return params_.count(name) > 0; }

  // One update with learning rate `lr` over every parameter that has a gradient.
  void step(double lr);
  void zero_grad();

  int64_t step_count() const { return step_count_; }
  std::vector<std::string> parameter_names() const;
  int64_t numel() const;

  // Moments as "<name>.exp_avg"/"<name>.exp_avg_sq", each parameter's update count as "<name>.step"
  // and warm-up length as "<name>.warmup", plus the optimizer's "__step__".
  io::NamedTensors state() const;
  void load_state(const io::NamedTensors& state, const std::string& source);

 private:
  // Each parameter counts its own updates for the bias correction, as torch.optim does: one released
  // after a freeze starts again from step 1 instead of inheriting a correction meant for old moments.
  struct Slot {
    torch::Tensor param, exp_avg, exp_avg_sq;
    bool decay = true;
    int64_t steps = 0;
    int64_t warmup = 0;
  };
  AdamWOptions options_;
  std::map<std::string, Slot> params_;
  int64_t step_count_ = 0;
};

}  // namespace qkd::train
