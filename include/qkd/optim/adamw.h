#pragma once
// AdamW over named parameters (decoupled weight decay, PyTorch's update rule). Kept in-house rather
// than torch::optim::AdamW because the trainer needs per-name state it can drop when a projection is
// frozen, and a state that serializes to safetensors for exact resume.
//
// Master weights: a bf16 (or fp16) parameter cannot hold an update much smaller than its own rounding
// step (at lr 1e-5 most bf16 weights of a small model never change, and weight decay does nothing).
// Each such parameter therefore gets an fp32 master copy that the optimizer owns: the update, decay
// included, is computed on the master from the gradient cast to fp32, and the parameter (the compute
// copy the model runs with) is then set to the master rounded to nearest. fp32 parameters are updated
// in place as before, with no extra copy.
//
// Contract for code that writes into a parameter with a master (a rollback copying old weights in,
// weights loaded from a file): the next step() overwrites the parameter from the master, so the write
// is lost unless it is followed by sync_master_from_parameter(name), or by remove_parameter(name) (the
// master is freed with the slot, and add_parameter builds a fresh one from the parameter's value at
// that time). Parameters must have their final dtype and device when they are added.
#include <torch/torch.h>

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "qkd/io/safetensors.h"

namespace qkd::optim {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  // Storage of the moment estimates: float32, or bfloat16 to halve their memory (they are widened to
  // fp32 for each update and rounded back, so the estimates lose precision, not the update rule).
  torch::Dtype moment_dtype = torch::kFloat32;
};

class AdamW {
 public:
  // Throws qkd::Error for a moment_dtype other than float32 or bfloat16 (fp16 would flush the squared
  // gradients of small weights to zero).
  explicit AdamW(AdamWOptions options);

  // Optimizer-state sharding (ZeRO stage 1; distributed/sharded_optimizer.h decides the shares): this
  // optimizer keeps state for, and updates, only the parameters `owns` accepts. The others are still
  // registered (every rank knows every name, so that freezes, releases and checkpoints agree) but hold
  // no moments and no master, and step() leaves them alone: their owner updates them and the sharded
  // optimizer copies the result over. Set before add_parameter.
  void shard(std::function<bool(const std::string&)> owns) { owns_ = std::move(owns); }
  bool owns(const std::string& name) const { return !owns_ || owns_(name); }

  // `decay` false for parameters exempt from weight decay (norms and biases by default).
  // `warmup_steps` > 0 ramps this parameter's learning rate linearly over its first updates (a
  // projection released after a freeze must not take a full-size first Adam step: that step,
  // sign(g) x lr on every element, is what destabilized it).
  // A bf16/fp16 `param` gets its fp32 master from its current value.
  void add_parameter(const std::string& name, torch::Tensor param, bool decay, int64_t warmup_steps = 0);
  // Stops updating `name` and frees its moment estimates and master (used by the freeze policies).
  void remove_parameter(const std::string& name);
  bool has_parameter(const std::string& name) const { return params_.count(name) > 0; }
  // The model's tensor registered as `name` (a handle: its .grad is the parameter's).
  torch::Tensor parameter(const std::string& name) const;
  // Takes the parameter's current value as its master (see the contract above). Nothing to do, and
  // nothing done, for a name without a master: an fp32 parameter, or one not (or no longer) trained.
  void sync_master_from_parameter(const std::string& name);

  // One update with learning rate `lr` over every parameter that has a gradient. Returns
  // ||param_after - param_before|| (fp32 norm of the compute copy's change) for each parameter named in
  // `measure_updates` that was updated: the monitor's update ratio, measured one parameter at a time so
  // that no copy of all weights is held.
  std::map<std::string, double> step(double lr, const std::vector<std::string>& measure_updates = {});
  void zero_grad();

  int64_t step_count() const { return step_count_; }
  std::vector<std::string> parameter_names() const;
  // Elements of the trained parameters (not of the optimizer's state; see state_bytes).
  int64_t numel() const;
  // Bytes the optimizer holds beyond the model: moment estimates and fp32 masters.
  int64_t state_bytes() const;

  // One parameter's state as tensors: moments, the fp32 master when it has one, and its update count and
  // warm-up length as int64 [1]. For a parameter of another shard: zero tensors of the same shapes and
  // dtypes, to receive its owner's values into.
  std::vector<torch::Tensor> parameter_state(const std::string& name) const;
  // state() of every parameter, from parameter_state() tensors (the owners', gathered): how a sharded
  // run writes one rank-independent checkpoint.
  io::NamedTensors state_from(const std::map<std::string, std::vector<torch::Tensor>>& parameter_states) const;

  // Moments as "<name>.exp_avg"/"<name>.exp_avg_sq" (in moment_dtype), the fp32 master of a bf16/fp16
  // parameter as "<name>.master", each parameter's update count as "<name>.step" and warm-up length as
  // "<name>.warmup", plus the optimizer's "__step__".
  io::NamedTensors state() const;
  // Moments are converted to moment_dtype (a run may resume with the other one). A parameter with a
  // master needs its "<name>.master" (fp32, its shape) and is then set from it: the master, not the
  // rounded weights saved with the model, is what makes a resumed run continue bit for bit.
  void load_state(const io::NamedTensors& state, const std::string& source);

 private:
  // Each parameter counts its own updates for the bias correction, as torch.optim does: one released
  // after a freeze starts again from step 1 instead of inheriting a correction meant for old moments.
  struct Slot {
    torch::Tensor param;   // the model's tensor
    torch::Tensor master;  // fp32 copy of a bf16/fp16 param; undefined otherwise
    torch::Tensor exp_avg, exp_avg_sq;
    bool decay = true;
    int64_t steps = 0;
    int64_t warmup = 0;
    bool owned = true;  // false: another rank's shard (no state here)
  };
  AdamWOptions options_;
  std::map<std::string, Slot> params_;
  int64_t step_count_ = 0;
  std::function<bool(const std::string&)> owns_;  // null: every parameter
};

}  // namespace qkd::optim
