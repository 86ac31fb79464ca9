#pragma once
// Signal-propagation monitor: every `interval` steps it records, per layer and projection type, the
// squared Frobenius norm of the weight gradient, the weight norm, the update-to-weight ratio and the
// relative quantization error, plus per-layer RMS of the attention and MLP outputs. Records go to
// signal.jsonl; the instability detector turns them into events. Steps between measurements cost
// nothing (no observer is attached, no tensor touched) unless `auto` freeze has series watched every
// step, which costs one reduction per watched weight.
#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "qkd/model/llama.h"
#include "qkd/monitor/instability_detector.h"
#include "qkd/monitor/monitor_config.h"
#include "qkd/monitor/probe_sample.h"

namespace qkd::monitor {

class SignalMonitor {
 public:
  SignalMonitor(MonitorConfig config, model::LlamaForCausalLM student);
  ~SignalMonitor();

  bool measures(int64_t step) const;
  // Projection types ("o_proj", "v_proj") whose gradient series are judged on every step, not only on
  // measured ones: what `auto` freeze watches, so it reacts at the next step whatever the interval.
  // Costs one reduction per watched weight on the other steps.
  void watch_every_step(const std::vector<std::string>& types) { watched_ = {types.begin(), types.end()}; }
  // Whether judge_gradients looks at any gradient at `step` (measured, or watched series exist).
  bool judges(int64_t step) const;
  // Measured steps only: attach the activation observer before the forward passes of `step`.
  void begin_step(int64_t step);
  // After backward, before clipping and the optimizer step. Every step: judges the KD loss and the
  // watched series. Measured steps: reads gradient and weight norms, keeps the weights for the update
  // ratio and judges every gradient series, so a freeze policy can act before this step's update.
  std::vector<InstabilityEvent> judge_gradients(int64_t step, double kd_loss);
  // Measured steps: the weights whose update norm the optimizer should report for the update ratio
  // (parameter names such as "model.layers.3.self_attn.v_proj.weight"); empty on other steps.
  // The optimizer measures each while it updates it, so no copy of all weights is ever held.
  std::vector<std::string> updates_wanted() const;
  // After the optimizer step: on measured steps the finished record for signal.jsonl (update ratio
  // from `update_norms`, ||W_after - W_before|| by parameter name; quantization error added); null on
  // other steps.
  nlohmann::json end_step(int64_t step, const std::map<std::string, double>& update_norms = {});
  // A step whose gradients are thrown away unjudged (an fp16 overflow): no record, observer detached.
  void abandon_step();
  // Before the first update (auto's freeze analysis): runs `pass` (forward and backward of one
  // micro-batch) with the activation observer attached, and returns the gradient and weight norms of
  // every projection and the block output RMS, averaged over the ranks. Judges nothing and keeps no
  // history: the detector's baselines start with step 1, as without the analysis.
  ProbeSample probe(const std::function<void()>& pass);
  // Released modules ("model.layers.3.self_attn.v_proj") start a new baseline in the detector.
  void forget(const std::vector<std::string>& modules);

  // With several ranks: averages a vector of this rank's statistics with the other ranks' in place
  // (every rank passes the same length). The monitor hands it its gradient and activation statistics
  // before judging or logging them, so that every rank sees the same values and takes the same freeze
  // decision at the same step.
  using StatisticsReducer = std::function<void(std::vector<double>&)>;
  void set_statistics_reducer(StatisticsReducer reduce) { reduce_ = std::move(reduce); }

  // Detector history, for checkpoints.
  nlohmann::json state() const { return detector_.state(); }
  void load_state(const nlohmann::json& state) { detector_.load_state(state); }
  // Multiplies the next judged gradient of one series by `factor`: how tests (through TrainHooks) and
  // fault drills stage a spike at an exact step.
  void scale_next_gradient(const SeriesKey& series, double factor) { injected_[series] = factor; }

 private:
  struct Observer;
  double gradient_sq(model::LinearImpl& linear, const SeriesKey& series);  // with scale_next_gradient applied
  MonitorConfig config_;
  std::set<std::string> watched_;
  model::LlamaForCausalLM student_;
  InstabilityDetector detector_;
  std::unique_ptr<Observer> observer_;
  bool measuring_ = false;
  nlohmann::json pending_;                     // layers being filled for this step
  std::map<std::string, double> norm_before_;  // trainable weights' norms before the optimizer step
  std::map<SeriesKey, double> injected_;
  StatisticsReducer reduce_;
};

}  // namespace qkd::monitor
