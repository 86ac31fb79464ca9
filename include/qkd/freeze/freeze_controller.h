#pragma once
// The one owner of freezing during a run: the policy's rules, the set of frozen projections, the
// rollback weights of `auto` and its release schedule. Every freeze and release (at the start, on an
// instability, when the learning rate has decayed, and when a checkpoint is resumed) goes through one
// path that turns the module's gradients off (requires_grad) and drops or re-creates its optimizer
// state, and the controller saves all of it as one checkpoint state.
#include <nlohmann/json.hpp>

#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "qkd/common/enum_table.h"
#include "qkd/freeze/freeze_policy.h"
#include "qkd/freeze/release_schedule.h"
#include "qkd/freeze/signal_analysis.h"
#include "qkd/freeze/stable_weights.h"
#include "qkd/io/safetensors.h"
#include "qkd/model/llama.h"
#include "qkd/monitor/instability_detector.h"
#include "qkd/optim/adamw.h"

namespace qkd::freeze {

enum class ChangeKind { freeze, release };
const EnumTable<ChangeKind>& change_kinds();  // "freeze" | "release"

// One freeze or release as applied, for the run's events log.
struct FreezeChange {
  ChangeKind kind = ChangeKind::freeze;
  std::vector<std::string> modules;
  std::string reason;
  int64_t step = 0;
  int64_t trainable_before = 0, trainable_after = 0;  // trainable parameters of the student
  nlohmann::json to_json() const;
};

// What an auto freeze did to the step whose gradients triggered it.
struct Reaction {
  std::optional<FreezeChange> change;
  // Rollback: the frozen projections went back to their last calm weights, and this step's update is
  // skipped because its gradients were computed at the destabilized point.
  bool skip_update = false;
  std::vector<std::string> rolled_back;
};

// What auto's analysis before the first update found, and the freeze it started with.
struct AnalysisOutcome {
  SignalAnalysis analysis;
  std::optional<FreezeChange> change;
};

class FreezeController {
 public:
  // `quantized_modules`: what the policy may freeze. `decays(parameter)`: whether a released
  // parameter gets weight decay again.
  FreezeController(FreezeConfig config, std::vector<std::string> quantized_modules, model::LlamaForCausalLM student,
                   optim::AdamW& optimizer, std::function<bool(const std::string&)> decays);

  const FreezePolicy& policy() const { return policy_; }
  const std::set<std::string>& frozen() const { return frozen_; }

  // Fresh runs, before step 1: what ov and modules freeze from the start.
  std::optional<FreezeChange> freeze_at_start();
  // auto, fresh runs before step 1: the signal-propagation analysis of `samples` (one per analysis
  // micro-batch, signal_analysis.h). Its outliers start frozen, noted at `lr` for their release, and
  // their types are watched from then on.
  AnalysisOutcome start_from_analysis(const std::vector<monitor::ProbeSample>& samples, double lr);
  // Projection types whose gradients the monitor must judge every step: auto_watch and the types the
  // analysis froze (auto); nothing otherwise.
  std::vector<std::string> watched_every_step() const;
  // Start of `step`: auto-frozen projections whose learning rate has decayed enough, after enough
  // calm steps, train again.
  std::optional<FreezeChange> release_due(int64_t step, double lr);
  // After `step`'s gradients were judged, before its update: auto freezes what destabilized. Every
  // call counts towards (or, with an instability event, restarts) the calm steps a release waits for.
  Reaction react(const std::vector<monitor::InstabilityEvent>& events, int64_t step, double lr);
  // A judged step that froze nothing: its weights are what a later spike rolls back to.
  void keep_calm_weights();

  // Checkpoint state: {"frozen": [...], "release_lr": {module: lr}, "calm_steps": n, "analysed_types":
  // [...]} plus the rollback weights.
  nlohmann::json state() const;
  io::NamedTensors rollback_weights() const { return stable_.state(); }
  // Applies a saved state (before the optimizer's state is loaded, so the optimizer expects exactly
  // the parameters still training). `source` names the checkpoint in errors.
  void restore(const nlohmann::json& state, const io::NamedTensors& rollback_weights, const std::string& source);

 private:
  FreezeChange apply(ChangeKind kind, const std::vector<std::string>& modules, std::string reason, int64_t step);
  void stop_training(const std::string& module);
  void start_training(const std::string& module);

  FreezePolicy policy_;
  model::LlamaForCausalLM student_;
  optim::AdamW& optimizer_;
  std::function<bool(const std::string&)> decays_;
  std::set<std::string> frozen_;
  StableWeights stable_;
  ReleaseSchedule releases_;
  int64_t calm_steps_ = 0;                   // judged steps in a row without an instability event
  std::vector<std::string> analysed_types_;  // projection types the analysis froze: watched too
};

// Sets requires_grad of every parameter below `module_name` (weight, bias, quantizer parameters) and
// drops any gradient already held: a frozen module gets no weight-gradient computation at all.
// Returns the parameter names.
std::vector<std::string> set_module_trainable(model::LlamaForCausalLMImpl& model, const std::string& module_name,
                                              bool trainable);
int64_t trainable_parameter_count(model::LlamaForCausalLMImpl& model);

}  // namespace qkd::freeze
