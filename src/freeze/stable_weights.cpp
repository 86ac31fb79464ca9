#include "qkd/freeze/stable_weights.h"

#include "qkd/common/error.h"

namespace qkd::freeze {

namespace {
bool belongs_to(const std::string& parameter, const std::string& module) {
  return parameter.size() > module.size() && parameter.compare(0, module.size(), module) == 0 &&
         parameter[module.size()] == '.';
}
}  // namespace

void StableWeights::capture(model::LlamaForCausalLMImpl& model, const std::vector<std::string>& modules) {
  torch::NoGradGuard no_grad;
  const auto params = model.named_parameters(/*recurse=*/true);
  for (const auto& module : modules) {
    auto& copies = by_module_[module];
    for (const auto& item : params) {
      if (!belongs_to(item.key(), module)) continue;
      auto& copy = copies[item.key()];
      if (copy.defined())
        copy.copy_(item.value());  // reuse the buffer: captured every measured step
      else
        copy = item.value().detach().clone();
    }
  }
}

std::vector<std::string> StableWeights::restore(model::LlamaForCausalLMImpl& model,
                                                const std::vector<std::string>& modules) const {
  torch::NoGradGuard no_grad;
  auto params = model.named_parameters(/*recurse=*/true);
  std::vector<std::string> restored;
  for (const auto& module : modules) {
    const auto it = by_module_.find(module);
    if (it == by_module_.end()) continue;
    for (const auto& [name, copy] : it->second) params[name].copy_(copy);
    restored.push_back(module);
  }
  return restored;
}

// Tensors are named "<module>|<parameter>" so the module grouping survives the round trip.
io::NamedTensors StableWeights::state() const {
  io::NamedTensors out;
  for (const auto& [module, copies] : by_module_)
    for (const auto& [name, copy] : copies) out.emplace_back(module + "|" + name, copy.detach().cpu());
  return out;
}

void StableWeights::load_state(const io::NamedTensors& state, model::LlamaForCausalLMImpl& model,
                               const std::string& source) {
  by_module_.clear();
  const auto params = model.named_parameters(/*recurse=*/true);
  for (const auto& [key, tensor] : state) {
    const auto bar = key.find('|');
    if (bar == std::string::npos) fail(source, "tensor '" + key + "' is not named <module>|<parameter>");
    const auto name = key.substr(bar + 1);
    const auto* param = params.find(name);
    if (!param || param->sizes() != tensor.sizes())
      fail(source, "tensor '" + key + "' does not match a student parameter");
    by_module_[key.substr(0, bar)][name] = tensor.to(param->device(), param->scalar_type()).clone();
  }
}

}  // namespace qkd::freeze
