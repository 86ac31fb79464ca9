#pragma once
// fp16 dynamic loss scaling (the rule of PyTorch's GradScaler): the loss is multiplied by the scale
// before backward so that small gradients survive fp16, and the gradients are divided by it before
// anything reads them. A step whose gradients overflow is skipped (its update, the monitor's judgement
// and the freeze policy never see it) and halves the scale; `growth_interval` clean steps in a row
// double it.
#include <nlohmann/json.hpp>

#include <cstdint>

namespace qkd::train {

class LossScaler {
 public:
  // Disabled (scale 1, never changes) unless the student computes in fp16.
  explicit LossScaler(bool enabled, double initial_scale = 65536.0, int64_t growth_interval = 2000);

  bool enabled() const { return enabled_; }
  double scale() const { return enabled_ ? scale_ : 1.0; }
  // After a step's backward: `finite` is whether its unscaled gradients were all finite.
  void update(bool finite);

  nlohmann::json state() const { return {{"scale", scale_}, {"clean_steps", clean_steps_}}; }
  void load_state(const nlohmann::json& state);

 private:
  bool enabled_;
  double scale_;
  int64_t growth_interval_;
  int64_t clean_steps_ = 0;  // finite steps since the last overflow or growth
};

}  // namespace qkd::train
