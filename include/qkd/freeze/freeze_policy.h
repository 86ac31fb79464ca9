#pragma once
// The rules of each freeze policy, without state: which quantized projections freeze from the start
// (ov, modules), which an instability event freezes (auto, in the spiking layer or in all layers),
// and which auto watches. The FreezeController applies what these rules decide.
#include <set>
#include <string>
#include <vector>

#include "qkd/freeze/freeze_config.h"
#include "qkd/monitor/instability_detector.h"

namespace qkd::freeze {

class FreezePolicy {
 public:
  // `modules`: the quantized projection names the policy may freeze ("model.layers.0.self_attn.v_proj").
  FreezePolicy(FreezeConfig config, std::vector<std::string> modules);

  const FreezeConfig& config() const { return config_; }
  // Modules frozen from the first step (ov, modules); empty for none/auto.
  std::vector<std::string> initial() const;
  // auto: modules to freeze now because of `events` on the projection types `watch` (auto_watch when
  // not given; those already frozen are left out).
  std::vector<std::string> react(const std::vector<monitor::InstabilityEvent>& events,
                                 const std::set<std::string>& frozen) const {
    return react(events, frozen, config_.auto_watch);
  }
  std::vector<std::string> react(const std::vector<monitor::InstabilityEvent>& events,
                                 const std::set<std::string>& frozen, const std::vector<std::string>& watch) const;
  // auto: micro-batches the signal-propagation analysis measures before the first update; 0 otherwise.
  int64_t analysis_batches() const { return config_.policy == FreezeMode::automatic ? config_.analysis_batches : 0; }
  // Fails, naming the setting, when the policy could never freeze anything: ov or auto over
  // projections none of which is quantized would train as if it were "none", without a word.
  void check_reaches_modules() const;
  // Projection types the monitor must judge at every step: auto's watch list; nothing otherwise.
  std::vector<std::string> watched_every_step() const;
  // auto: every module of auto_watch among the policy's modules, frozen or not.
  std::vector<std::string> watched_modules() const { return matching(config_.auto_watch, -1); }
  // auto with rollback: the modules of the watched types (auto_watch when not given) still training,
  // whose calm weights are worth keeping.
  std::vector<std::string> rollback_candidates(const std::set<std::string>& frozen) const {
    return rollback_candidates(frozen, config_.auto_watch);
  }
  std::vector<std::string> rollback_candidates(const std::set<std::string>& frozen,
                                               const std::vector<std::string>& watch) const;
  // The quantized projections the policy may freeze.
  const std::vector<std::string>& modules() const { return modules_; }
  bool rolls_back() const { return config_.policy == FreezeMode::automatic && config_.rollback; }
  // auto: whether an auto-frozen module is handed back once the learning rate has decayed.
  bool releases() const { return config_.policy == FreezeMode::automatic && config_.release_lr_factor > 0.0; }

 private:
  std::vector<std::string> matching(const std::vector<std::string>& patterns, int64_t layer) const;
  FreezeConfig config_;
  std::vector<std::string> modules_;
};

}  // namespace qkd::freeze
