#include "qkd/quant/activation_quantizer.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "qkd/common/error.h"

namespace qkd::quant {
namespace {

// Nearest-rank order statistic of flat `x` at quantile q in [0, 1].
torch::Tensor order_statistic(const torch::Tensor& flat, double q) {
  const int64_t n = flat.numel();
  const int64_t k = std::clamp<int64_t>(std::llround(q * static_cast<double>(n - 1)) + 1, 1, n);
  return std::get<0>(torch::kthvalue(flat, k));
}

}  // namespace

ActivationQuantizer::ActivationQuantizer(const QuantSpec& spec, std::string name, torch::Device device)
    : spec_(spec), name_(std::move(name)) {
  validate(spec_);
  if (spec_.act_bits == 0) fail("quant.act_bits", "0 means no activation quantization; " + name_ + " needs 8 or 16");
  levels_ = levels_for(spec_.act_bits, spec_.act_symmetric);
  const auto fp32 = torch::TensorOptions().dtype(torch::kFloat).device(device);
  range_min_ = register_buffer("range_min", torch::zeros({}, fp32));
  range_max_ = register_buffer("range_max", torch::zeros({}, fp32));
  observed_batches_ = register_buffer("observed_batches", torch::zeros({}, fp32.dtype(torch::kLong)));
}

bool ActivationQuantizer::calibrated() const {
  if (!known_calibrated_) known_calibrated_ = observed_batches_.item<int64_t>() > 0;
  return known_calibrated_;
}

void ActivationQuantizer::begin_calibration() {
  torch::NoGradGuard no_grad;
  range_min_.zero_();
  range_max_.zero_();
  observed_batches_.zero_();
  known_calibrated_ = false;
  calibrating_ = true;
}

std::pair<torch::Tensor, torch::Tensor> ActivationQuantizer::batch_range(const torch::Tensor& x) const {
  const auto flat = x.detach().reshape({-1}).to(range_min_.device(), torch::kFloat);
  if (spec_.act_range == ActRangeMethod::minmax) return {flat.min(), flat.max()};
  const double p = spec_.act_percentile / 100.0;
  return {order_statistic(flat, 1.0 - p), order_statistic(flat, p)};
}

void ActivationQuantizer::observe(const torch::Tensor& x) {
  if (x.numel() == 0) return;
  torch::NoGradGuard no_grad;
  auto [lo, hi] = batch_range(x);
  const auto first = observed_batches_ == 0;
  if (spec_.act_range == ActRangeMethod::minmax) {
    range_min_.copy_(torch::where(first, lo, torch::minimum(range_min_, lo)));
    range_max_.copy_(torch::where(first, hi, torch::maximum(range_max_, hi)));
  } else {
    const auto n = observed_batches_.to(torch::kFloat);
    range_min_.copy_((range_min_ * n + lo) / (n + 1));
    range_max_.copy_((range_max_ * n + hi) / (n + 1));
  }
  observed_batches_.add_(1);
}

void ActivationQuantizer::end_calibration() {
  calibrating_ = false;
  if (!calibrated()) fail(name_, "no batch was observed during calibration");
}

QuantParams ActivationQuantizer::params() const {
  // The same min-max formulas as for weights, applied to the two-value "block" {min, max}.
  const auto block = torch::stack({range_min_, range_max_}).view({1, 1, 2});
  auto p = minmax_params(block, spec_.act_bits, spec_.act_symmetric);
  p.scale = p.scale.reshape({});
  if (p.zero.defined()) p.zero = p.zero.reshape({});
  return p;
}

torch::Tensor ActivationQuantizer::fake_quantize(const torch::Tensor& x) {
  if (calibrating_) {
    observe(x);
    return x;
  }
  if (!calibrated()) {
    fail(name_, "used before calibration (calibrate over quant.act_calib_batches batches or load its state)");
  }
  const auto p = params();
  const auto q = fake_quant_ste(x.to(torch::kFloat), p.scale, p.zero, levels_, /*mask_clipped=*/true);
  return q.to(x.scalar_type());
}

void ActivationQuantizer::to(torch::Device device, torch::Dtype /*dtype*/, bool non_blocking) {
  torch::nn::Module::to(device, non_blocking);
}

void ActivationQuantizer::to(torch::Dtype /*dtype*/, bool /*non_blocking*/) {}

}  // namespace qkd::quant
