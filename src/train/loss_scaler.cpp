#include "qkd/train/loss_scaler.h"

#include <algorithm>

namespace qkd::train {

LossScaler::LossScaler(bool enabled, double initial_scale, int64_t growth_interval)
    : enabled_(enabled), scale_(initial_scale), growth_interval_(growth_interval) {}

void LossScaler::update(bool finite) {
  if (!enabled_) return;
  if (!finite) {
    scale_ = std::max(1.0, scale_ / 2.0);
    clean_steps_ = 0;
    return;
  }
  if (++clean_steps_ < growth_interval_) return;
  scale_ *= 2.0;
  clean_steps_ = 0;
}

// Checkpoints before this class saved the scale alone, as a number.
void LossScaler::load_state(const nlohmann::json& state) {
  if (state.is_number()) {
    scale_ = state.get<double>();
    clean_steps_ = 0;
  } else if (state.is_object()) {
    scale_ = state.value("scale", scale_);
    clean_steps_ = state.value("clean_steps", int64_t{0});
  }
}

}  // namespace qkd::train
