#include "qkd/train/rng_state.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

namespace qkd::train {

nlohmann::json capture_rng_state() {
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  const auto state = generator.get_state();
  const auto* bytes = state.data_ptr<uint8_t>();
  return {{"cpu", std::vector<uint8_t>(bytes, bytes + state.numel())}};
}

void restore_rng_state(const nlohmann::json& state) {
  const auto bytes = state.at("cpu").get<std::vector<uint8_t>>();
  auto tensor = torch::tensor(std::vector<int64_t>(bytes.begin(), bytes.end())).to(torch::kUInt8);
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(tensor);
}

}  // namespace qkd::train
