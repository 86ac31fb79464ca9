#include "qkd/optim/optim_config.h"

namespace qkd::optim {

namespace {
bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool exempt_from_decay(const std::string& name) {
  return name.find("norm") != std::string::npos || ends_with(name, ".bias") ||
         name.find("_quantizer.") != std::string::npos;
}

bool is_projection_parameter(const std::string& name) {
  return name.find(".self_attn.") != std::string::npos || name.find(".mlp.") != std::string::npos;
}
}  // namespace

const EnumTable<torch::Dtype>& moment_dtypes() {
  static const EnumTable<torch::Dtype> table{
      {torch::kFloat32, "float32"}, {torch::kBFloat16, "bfloat16"}, {torch::kChar, "int8"}};
  return table;
}

const EnumTable<MasterWeights>& master_weights_modes() {
  static const EnumTable<MasterWeights> table{{MasterWeights::fp32, "fp32"},
                                              {MasterWeights::bf16_compensated, "bf16_compensated"},
                                              {MasterWeights::none, "none"}};
  return table;
}

bool OptimConfig::decays(const std::string& parameter) const {
  return decay_norms_and_biases || !exempt_from_decay(parameter);
}

bool OptimConfig::trains(const std::string& parameter) const {
  return train_embeddings || is_projection_parameter(parameter);
}

}  // namespace qkd::optim
