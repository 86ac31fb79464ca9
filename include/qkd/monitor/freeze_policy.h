#pragma once
// Which projections stop training, and when: none, ov (o_proj and v_proj of every layer from step
// 0), modules (a list of name patterns, for ablations) or auto (o/v frozen when the monitor sees
// their gradients spike, in the spiking layer or in all layers).
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
  std::vector<std::string> react(const std::vector<InstabilityEvent>& events, const std::set<std::string>& frozen) const;

 private:
  std::vector<std::string> matching(const std::vector<std::string>& patterns, int64_t layer) const;
  FreezeConfig config_;
  std::vector<std::string> modules_;
};

// Freezes a module's weight, bias and quantizer parameters: requires_grad off, so autograd computes
// no weight gradient for them at all, and any gradient already held is released.
// Returns the parameter names it froze.
std::vector<std::string> freeze_module(model::LlamaForCausalLMImpl& model, const std::string& module_name);

}  // namespace qkd::monitor
