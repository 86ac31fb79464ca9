#include "qkd/quant/range_setting.h"

namespace qkd::quant {
namespace {

QuantParams params_from_range(const torch::Tensor& lo, const torch::Tensor& hi, int64_t bits, double eps) {
  const auto levels = levels_for(bits, /*symmetric=*/false);
  QuantParams p;
  p.scale = (hi - lo).clamp_min(eps) / levels.qmax;
  p.zero = torch::round(-lo / p.scale);
  return p;
}

}  // namespace

QuantParams minmax_params(const torch::Tensor& blocks, int64_t bits, bool symmetric) {
  const double eps = min_scale(blocks.scalar_type());
  if (symmetric) {
    const auto levels = levels_for(bits, true);
    return QuantParams{blocks.abs().amax(-1, /*keepdim=*/true).clamp_min(eps) / levels.qmax, torch::Tensor()};
  }
  const auto lo = blocks.amin(-1, true).clamp_max(0);
  const auto hi = blocks.amax(-1, true).clamp_min(0);
  return params_from_range(lo, hi, bits, eps);
}

QuantParams clipped_params(const torch::Tensor& blocks, int64_t bits, bool symmetric, double ratio) {
  const double eps = min_scale(blocks.scalar_type());
  if (symmetric) {
    const auto levels = levels_for(bits, true);
    return QuantParams{(blocks.abs().amax(-1, true) * ratio).clamp_min(eps) / levels.qmax, torch::Tensor()};
  }
  const auto lo = blocks.amin(-1, true).clamp_max(0) * ratio;
  const auto hi = blocks.amax(-1, true).clamp_min(0) * ratio;
  return params_from_range(lo, hi, bits, eps);
}

}  // namespace qkd::quant
