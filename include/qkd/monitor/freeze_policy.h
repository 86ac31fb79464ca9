#pragma once
// Which projections stop training, and when: none, ov (o_proj and v_proj of every layer from step
// 0), modules (a list of name patterns, for ablations) or auto (o/v frozen when the monitor sees
// their gradients spike, in the spiking layer or in all layers, and optionally released again once
// the learning rate has decayed).
#include <nlohmann/json.hpp>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "qkd/model/llama.h"
#include "qkd/monitor/instability_detector.h"
#include "qkd/monitor/monitor_config.h"

namespace qkd::monitor {

class FreezePolicy {
 public:
  // `modules`: the quantized projection names the policy may freeze ("model.layers.0.self_attn.v_proj").
  FreezePolicy(FreezeConfig config, std::vector<std::string> modules);

  // Modules frozen from the first step (ov, modules); empty for none/auto.
  std::vector<std::string> initial() const;
  // auto: modules to freeze now because of `events` (those already frozen are left out).
  std::vector<std::string> react(const std::vector<InstabilityEvent>& events,
                                 const std::set<std::string>& frozen) const;
  // auto: every module of auto_watch among the policy's modules, frozen or not.
  std::vector<std::string> watched_modules() const { return matching(config_.auto_watch, -1); }
  // auto with rollback: the watched modules still training, whose calm weights are worth keeping.
  std::vector<std::string> rollback_candidates(const std::set<std::string>& frozen) const;
  bool rolls_back() const { return config_.policy == FreezeMode::automatic && config_.rollback; }

  // auto: remembers the learning rate at which `modules` were frozen...
  void note_auto_freeze(const std::vector<std::string>& modules, double lr);
  // ...and hands them back once the learning rate is down to release_lr_factor of it.
  std::vector<std::string> take_releases(double lr);

  // Auto-freeze bookkeeping, for checkpoints.
  nlohmann::json state() const { return lr_at_freeze_; }
  void load_state(const nlohmann::json& state);

 private:
  std::vector<std::string> matching(const std::vector<std::string>& patterns, int64_t layer) const;
  FreezeConfig config_;
  std::vector<std::string> modules_;
  std::map<std::string, double> lr_at_freeze_;  // auto-frozen modules awaiting release
};

// Freezes a module's weight, bias and quantizer parameters: requires_grad off, so autograd computes
// no weight gradient for them at all, and any gradient already held is released.
// Returns the parameter names it froze.
std::vector<std::string> freeze_module(model::LlamaForCausalLMImpl& model, const std::string& module_name);
// Undoes freeze_module: requires_grad back on. Returns the parameter names it released.
std::vector<std::string> release_module(model::LlamaForCausalLMImpl& model, const std::string& module_name);

}  // namespace qkd::monitor
