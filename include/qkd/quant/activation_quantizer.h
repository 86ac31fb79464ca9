#pragma once
// Fake-quantizer for the input of a quantized Linear layer: one static range per tensor, 8 or 16 bits.
// Lifecycle: begin_calibration(); forward passes (or observe()) over N batches update the running
// range while inputs pass through unchanged; end_calibration() freezes it. The range is kept in fp32
// buffers "range_min"/"range_max" (plus "observed_batches") so that it is saved with the student.
// Percentile calibration averages the per-batch percentiles (running mean over batches).
#include <torch/torch.h>

#include <atomic>
#include <string>

#include "qkd/model/linear.h"
#include "qkd/quant/quant_spec.h"
#include "qkd/quant/range_setting.h"

namespace qkd::quant {

class ActivationQuantizer : public qkd::model::TensorQuantizer {
 public:
  // Uses spec.act_* fields; `name` ("model.layers.0.mlp.down_proj.input_quantizer") serves errors.
  ActivationQuantizer(const QuantSpec& spec, std::string name, torch::Device device = torch::kCPU);

  // Calibrating: observes x and returns it unchanged. Otherwise fake-quantizes x in fp32 (result in
  // x's dtype) with a straight-through gradient that is zero outside the range.
  // Throws qkd::Error when neither calibrating nor calibrated.
  torch::Tensor fake_quantize(const torch::Tensor& x) override;

  void begin_calibration();  // forgets any previous range
  void observe(const torch::Tensor& x);
  void end_calibration();  // throws qkd::Error when nothing was observed
  bool calibrating() const { return calibrating_; }
  bool calibrated() const;  // a range is present (calibrated here or loaded)
  // Called after a saved state was copied into the buffers.
  void on_state_loaded() { known_calibrated_ = false; }

  // Scale and zero point (zero undefined when symmetric) of the frozen range, fp32 scalars.
  QuantParams params() const;

  using torch::nn::Module::to;
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;

 private:
  std::pair<torch::Tensor, torch::Tensor> batch_range(const torch::Tensor& x) const;

  QuantSpec spec_;
  std::string name_;
  Levels levels_;
  bool calibrating_ = false;
  // Caches a positive check (avoids a device sync per forward); atomic because row shards
  // (train/row_shards.h) run forwards of the same student on several threads at once.
  mutable std::atomic<bool> known_calibrated_{false};
  torch::Tensor range_min_;                // fp32 scalar
  torch::Tensor range_max_;                // fp32 scalar
  torch::Tensor observed_batches_;         // int64 scalar; 0: never calibrated
};

}  // namespace qkd::quant
