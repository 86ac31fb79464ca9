#pragma once
// The last weights of the watched projections that produced unremarkable gradients: what `auto`
// freeze rolls a destabilized projection back to. Captured on every judged step (auto watches o/v
// every step) before the optimizer update, i.e. the weights that gave those calm gradients, so a
// spike seen at step t undoes the updates since the last calm step.
#include <map>
#include <string>
#include <vector>

#include "qkd/io/safetensors.h"
#include "qkd/model/llama.h"

namespace qkd::freeze {

class StableWeights {
 public:
  // Copies every parameter of `modules` (weights, biases, quantizer parameters).
  void capture(model::LlamaForCausalLMImpl& model, const std::vector<std::string>& modules);
  // Writes the captured copies of `modules` back into the model; returns the modules it restored
  // (those never captured are left as they are).
  std::vector<std::string> restore(model::LlamaForCausalLMImpl& model, const std::vector<std::string>& modules) const;

  // For checkpoints, so a resumed run rolls back to the same weights.
  io::NamedTensors state() const;
  void load_state(const io::NamedTensors& state, model::LlamaForCausalLMImpl& model, const std::string& source);

 private:
  std::map<std::string, std::map<std::string, torch::Tensor>> by_module_;  // module -> parameter name -> copy
};

}  // namespace qkd::freeze
