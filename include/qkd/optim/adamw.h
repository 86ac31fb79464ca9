#pragma once
// AdamW over named parameters (decoupled weight decay, PyTorch's update rule). Kept in-house rather
// than torch::optim::AdamW because the trainer needs per-name state it can drop when a projection is
// frozen, and a state that serializes to safetensors for exact resume.
//
// Master weights: a bf16 (or fp16) parameter cannot hold an update much smaller than its own rounding
// step (at lr 1e-5 most bf16 weights of a small model never change, and weight decay does nothing).
// How the optimizer keeps what the parameter cannot hold is options.master_weights:
//   fp32 (default): an fp32 master copy that the optimizer owns (4 bytes per element); the update,
//     decay included, is computed on the master from the gradient cast to fp32, and the parameter (the
//     compute copy the model runs with) is then set to the master rounded to nearest.
//   bf16_compensated: a bf16 compensation buffer (2 bytes per element; bf16 parameters only): the
//     update runs on parameter + compensation in fp32, the parameter takes that sum rounded to nearest
//     and the compensation what the rounding dropped, rounded to bf16 (Kahan summation: the pair holds
//     about 16 significant bits, so updates far below the weight's rounding step still accumulate).
//   none: the update runs in fp32 on the parameter's own value and is rounded straight back (what a
//     pure-bf16 optimizer does): no extra memory, and an update below half the rounding step is lost.
// fp32 parameters are updated in place in every mode, with no extra copy.
//
// Contract for code that writes into a parameter with a master or compensation (a rollback copying
// old weights in, weights loaded from a file): the next step() overwrites the parameter from the
// master (or adds the stale compensation), so the write is lost unless it is followed by
// sync_master_from_parameter(name), or by remove_parameter(name) (the state is freed with the slot,
// and add_parameter builds a fresh one from the parameter's value at that time). Parameters must have
// their final dtype and device when they are added.
#include <torch/torch.h>

#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "qkd/io/safetensors.h"
#include "qkd/optim/moment_buffer.h"

namespace qkd::optim {

// Tensors above this many elements are updated in pieces of this size (a multiple of the int8 block):
// the update's temporaries (the gradient, moments and denominator widened to fp32, parameter +
// compensation, the int8 codes' indices; about 32 bytes per element) then take at most 512 MB instead of
// 4 GB for LLaMA-2-7B's 131M-element embedding. Elementwise, so the result is that of one piece.
constexpr int64_t kUpdatePiece = int64_t{1} << 24;

// optim.master_weights (see above).
enum class MasterWeights { fp32, bf16_compensated, none };

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  // Storage of the moment estimates: float32, bfloat16 to halve their memory, or int8 (torch::kChar)
  // for block-wise 8-bit codes (blockwise_int8.h; tensors under kMinInt8Elements stay fp32). They are
  // widened to fp32 for each update and rounded back, so the estimates lose precision, not the update
  // rule.
  torch::Dtype moment_dtype = torch::kFloat32;
  MasterWeights master_weights = MasterWeights::fp32;
};

// One parameter's optimizer state as named parts ("exp_avg", "exp_avg_sq", "exp_avg.absmax", "master",
// "compensation", "step", "warmup"): the checkpoint holds them as "<name>.<part>".
using ParameterState = std::vector<std::pair<std::string, torch::Tensor>>;

class AdamW {
 public:
  // Throws qkd::Error for a moment_dtype other than float32, bfloat16 or int8 (fp16 would flush the
  // squared gradients of small weights to zero).
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
  // A bf16/fp16 `param` gets its fp32 master (or its zero compensation) from its current value.
  // bf16_compensated refuses an fp16 `param` (optim.master_weights, naming it).
  void add_parameter(const std::string& name, torch::Tensor param, bool decay, int64_t warmup_steps = 0);
  // Stops updating `name` and frees its moment estimates and master (used by the freeze policies).
  void remove_parameter(const std::string& name);
  bool has_parameter(const std::string& name) const { return params_.count(name) > 0; }
  // The model's tensor registered as `name` (a handle: its .grad is the parameter's).
  torch::Tensor parameter(const std::string& name) const;
  // Takes the parameter's current value as its master, or zeroes its compensation (see the contract
  // above). Nothing to do, and nothing done, for a name without either: an fp32 parameter, master
  // weights none, or one not (or no longer) trained.
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
  // Bytes the optimizer holds beyond the model: moment estimates, fp32 masters, compensations.
  int64_t state_bytes() const;

  // One parameter's state as named parts: moments (int8 ones with their block maxima), the fp32 master
  // or bf16 compensation when it has one, and its update count and warm-up length as int64 [1]. For a
  // parameter of another shard: zero tensors of the same names, shapes and dtypes, to receive its
  // owner's values into (the layout depends only on the parameter and the options).
  ParameterState parameter_state(const std::string& name) const;
  // state() of every parameter, from parameter_state() parts (the owners', gathered): how a sharded
  // run writes one rank-independent checkpoint.
  io::NamedTensors state_from(const std::map<std::string, ParameterState>& parameter_states) const;

  // Moments as "<name>.exp_avg"/"<name>.exp_avg_sq" (in their storage; int8 codes with
  // "<name>.exp_avg.absmax"/"<name>.exp_avg_sq.absmax"), the fp32 master of a bf16/fp16 parameter as
  // "<name>.master" or its bf16 compensation as "<name>.compensation", each parameter's update count as
  // "<name>.step" and warm-up length as "<name>.warmup", plus the optimizer's "__step__".
  io::NamedTensors state() const;
  // Moments are converted to their storage (a run may resume with another moment_dtype). A parameter
  // with a master needs its "<name>.master" (fp32, its shape) and is then set from it: the master, not
  // the rounded weights saved with the model, is what makes a resumed run continue bit for bit. One
  // with a compensation needs "<name>.compensation" (the parameter itself comes from the model file,
  // which holds its bf16 bits exactly). Either is converted from the other when a run resumes with
  // another master_weights mode; none takes the parameter from a saved master.
  void load_state(const io::NamedTensors& state, const std::string& source);

 private:
  // Each parameter counts its own updates for the bias correction, as torch.optim does: one released
  // after a freeze starts again from step 1 instead of inheriting a correction meant for old moments.
  struct Slot {
    torch::Tensor param;         // the model's tensor
    torch::Tensor master;        // fp32 copy of a bf16/fp16 param (master_weights fp32); undefined otherwise
    torch::Tensor compensation;  // bf16: what param lacks of the exact value (bf16_compensated); or undefined
    MomentBuffer exp_avg, exp_avg_sq;
    bool decay = true;
    int64_t steps = 0;
    int64_t warmup = 0;
    bool owned = true;  // false: another rank's shard (no state here)
  };
  // One update's scalars for a slot: its learning rate (warm-up applied), the bias correction of the
  // second moment and the step size.
  struct StepScalars {
    double lr = 0.0, bc2_sqrt = 1.0, step_size = 0.0;
  };
  // Flat elements [first, second) of a slot's tensors; second < 0: the whole tensors as they are.
  using Piece = std::pair<int64_t, int64_t>;
  void update(Slot& slot, const torch::Tensor& param_grad, const Piece& piece, const StepScalars& k);
  bool has_master(const torch::Tensor& param) const;
  bool has_compensation(const torch::Tensor& param) const;
  void load_master(Slot& slot, const std::string& name, const std::map<std::string, torch::Tensor>& by_name,
                   const std::string& source);
  AdamWOptions options_;
  std::map<std::string, Slot> params_;
  int64_t step_count_ = 0;
  std::function<bool(const std::string&)> owns_;  // null: every parameter
};

}  // namespace qkd::optim
