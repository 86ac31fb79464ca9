#include "qkd/quant/fp4_grid.h"

#include <cmath>
#include <limits>
#include <tuple>

namespace qkd::quant::fp4 {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// 2^k for integer k in [-127, 127], exactly: built from the fp32 bit pattern (2^-127 is the one
// subnormal needed, E8M0's smallest scale).
torch::Tensor exp2_int(const torch::Tensor& k) {
  const auto kk = k.to(torch::kInt);
  const auto normal = ((kk.clamp(-126, 127) + 127) * (1 << 23)).to(torch::kInt).contiguous().view(torch::kFloat);
  return torch::where(kk < -126, torch::full_like(normal, std::ldexp(1.0f, -127)), normal);
}

// The binade of each (positive, finite) value: e with 2^e <= x < 2^(e+1), exactly (frexp, not log2,
// whose rounding can lift a value just below a power of two into the next binade). 0 gives -1.
torch::Tensor binade(const torch::Tensor& x) { return std::get<1>(torch::frexp(x)).to(torch::kInt) - 1; }

torch::Tensor mask_where(const torch::Tensor& keep, const torch::Tensor& value) {
  return torch::where(keep, value, torch::zeros_like(value));
}

// The E4M3 scale one step above each E4M3 value (448 stays 448).
torch::Tensor next_e4m3_up(const torch::Tensor& values) {
  const auto bytes = e4m3_bytes(values).to(torch::kInt);
  return e4m3_from_bytes((bytes + 1).clamp_max(0x7E).to(torch::kUInt8)).reshape(values.sizes());
}

// NVFP4 block scale from a block maximum: E4M3(min(g * (amax / 6), 448)), compressed-tensors'
// calculate_qparams with a global scale.
torch::Tensor nvfp4_block_scale(const torch::Tensor& amax, const torch::Tensor& global) {
  return round_e4m3((global * (amax / kE2M1Max)).clamp_max(kE4M3Max));
}

// MXFP4 block scale from a block maximum: 2^(floor(log2 amax) - 2), 2^-127 for an all-zero block.
torch::Tensor mxfp4_block_scale(const torch::Tensor& amax) {
  const auto k = torch::where(amax > 0, binade(amax) - 2, torch::full_like(amax, -127, torch::kInt));
  return exp2_int(k.clamp(-127, 127));
}

Fp4Scales minmax_scales(const torch::Tensor& blocks, WeightFormat format) {
  const auto amax = blocks.abs().amax(-1, /*keepdim=*/true);
  if (format == WeightFormat::mxfp4) return {mxfp4_block_scale(amax), torch::ones({}, torch::kFloat), {}};
  // generate_gparam: 448 * 6 / max(amax, tiny) in fp32, 1 where that is not finite.
  const auto tiny = std::numeric_limits<float>::min();
  auto global = torch::full({}, static_cast<float>(kE4M3Max * kE2M1Max)) / blocks.abs().max().clamp_min(tiny);
  if (!torch::isfinite(global).item<bool>()) global = torch::ones({}, torch::kFloat);
  const auto tensor = torch::ones({}, torch::kFloat) / global;
  return {nvfp4_block_scale(amax, global), tensor, global};
}

torch::Tensor squared_error(const torch::Tensor& blocks, const Fp4Scales& s) {
  return (dequantize(e2m1_elements(blocks, s), s.block, s.tensor) - blocks).square().sum(-1, /*keepdim=*/true);
}

// Per block, the candidate block scale with the least squared error, min-max first (kept on ties).
Fp4Scales searched_scales(const torch::Tensor& blocks, WeightFormat format, const std::vector<double>& grid) {
  auto best = minmax_scales(blocks, format);
  auto best_error = squared_error(blocks, best);
  const auto amax = blocks.abs().amax(-1, true);
  std::vector<torch::Tensor> candidates;
  candidates.push_back(format == WeightFormat::mxfp4 ? (best.block * 2).clamp_max(std::ldexp(1.0f, 127))
                                                     : next_e4m3_up(best.block));
  for (double ratio : grid) {
    if (ratio >= 1.0) continue;  // min-max is the starting point
    const auto clipped = amax * ratio;
    candidates.push_back(format == WeightFormat::mxfp4 ? mxfp4_block_scale(clipped)
                                                       : nvfp4_block_scale(clipped, best.global));
  }
  for (const auto& block : candidates) {
    const Fp4Scales candidate{block, best.tensor, best.global};
    const auto error = squared_error(blocks, candidate);
    const auto better = error < best_error;
    best.block = torch::where(better, block, best.block);
    best_error = torch::where(better, error, best_error);
  }
  return best;
}

// The straight-through estimator over the fp4 forward value (computed here, so the output is exactly
// dequantize(e2m1_elements(...))); the scales are constants.
class Fp4FakeQuantFunction : public torch::autograd::Function<Fp4FakeQuantFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& block_scale,
                               const torch::Tensor& tensor_scale, bool mask_saturated) {
    const Fp4Scales scales{block_scale, tensor_scale, {}};
    ctx->save_for_backward({mask_saturated ? saturated(x, scales) : torch::Tensor()});
    return dequantize(e2m1_elements(x, scales), block_scale, tensor_scale);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saturated_mask = ctx->get_saved_variables()[0];
    auto grad = grads[0];
    if (saturated_mask.defined()) grad = grad.masked_fill(saturated_mask, 0);
    return {grad, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor round_e2m1(const torch::Tensor& x) {
  const auto a = x.abs().clamp_max(kE2M1Max);
  // The grid's spacing in each binade: 0.5 below 2 (subnormals and [1, 2)), 1 in [2, 4), 2 in [4, 6].
  // Rounding a / step to an even integer is rounding the mantissa bit to 0 on ties.
  const auto step =
      torch::where(a < 2, torch::full_like(a, 0.5), torch::where(a < 4, torch::ones_like(a), torch::full_like(a, 2.0)));
  const auto m = torch::round(a / step) * step;
  // Zero is +0 whatever the sign of x: code 0, so that decoded codes and the forward agree bit for bit.
  return torch::where((x < 0) & (m > 0), -m, m);
}

torch::Tensor e2m1_codes(const torch::Tensor& values) {
  const auto twice = (values.abs() * 2).to(torch::kFloat);  // 0, 1, 2, 3, 4, 6, 8, 12
  auto index =
      torch::where(twice <= 4, twice,
                   torch::where(twice <= 6, torch::full_like(twice, 5),
                                torch::where(twice <= 8, torch::full_like(twice, 6), torch::full_like(twice, 7))));
  const auto negative = (values < 0).to(torch::kFloat) * 8;
  return (index + negative * (index > 0).to(torch::kFloat)).to(torch::kShort);
}

torch::Tensor e2m1_values(const torch::Tensor& codes) {
  static const auto magnitudes = torch::tensor({0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f});
  const auto c = codes.to(torch::kLong);
  const auto magnitude = magnitudes.index_select(0, torch::remainder(c, 8).reshape({-1})).reshape(c.sizes());
  return torch::where(c >= 8, -magnitude, magnitude);
}

torch::Tensor round_e4m3(const torch::Tensor& x) {
  const auto c = x.to(torch::kFloat).clamp(0, kE4M3Max);
  // 3 mantissa bits: the step in binade e is 2^(e-3); below 2^-6 the subnormal step 2^-9.
  const auto step = exp2_int(binade(c).clamp_min(-6) - 3);
  return torch::round(c / step) * step;
}

torch::Tensor e4m3_bytes(const torch::Tensor& values) {
  const auto v = values.to(torch::kFloat);
  auto [mantissa, exponent] = torch::frexp(v);  // v = m * 2^exponent, m in [0.5, 1)
  const auto e = exponent.to(torch::kInt) - 1;
  const auto normal = (e + 7) * 8 + torch::round((mantissa * 2 - 1) * 8).to(torch::kInt);
  const auto subnormal = torch::round(v * 512).to(torch::kInt);  // multiples of 2^-9
  return torch::where(v < std::ldexp(1.0f, -6), subnormal, normal).to(torch::kUInt8);
}

torch::Tensor e4m3_from_bytes(const torch::Tensor& bytes) {
  const auto b = bytes.to(torch::kInt);
  const auto magnitude = torch::remainder(b, 128);
  const auto e = torch::div(magnitude, 8, "floor"), m = torch::remainder(magnitude, 8);
  const auto mf = m.to(torch::kFloat);
  auto value = torch::where(e == 0, mf * std::ldexp(1.0f, -9), (mf + 8) * exp2_int(e - 10));
  value = torch::where(b >= 128, -value, value);
  return torch::where(magnitude == 0x7F, torch::full_like(value, std::numeric_limits<float>::quiet_NaN()), value);
}

torch::Tensor e8m0_bytes(const torch::Tensor& scales) {
  return (binade(scales.to(torch::kFloat)) + 127).to(torch::kUInt8);
}

torch::Tensor e8m0_from_bytes(const torch::Tensor& bytes) {
  const auto b = bytes.to(torch::kInt);
  const auto value = exp2_int(b.clamp_max(254) - 127);
  return torch::where(b == 255, torch::full_like(value, std::numeric_limits<float>::quiet_NaN()), value);
}

Fp4Scales fp4_scales(const torch::Tensor& blocks, WeightFormat format, RangeMethod range,
                     const std::vector<double>& grid) {
  torch::NoGradGuard no_grad;
  const auto x = blocks.detach().to(torch::kFloat);
  return range == RangeMethod::search ? searched_scales(x, format, grid) : minmax_scales(x, format);
}

torch::Tensor e2m1_elements(const torch::Tensor& blocks, const Fp4Scales& scales) {
  const auto step = scales.block * scales.tensor;
  return mask_where(step > 0, round_e2m1(blocks / step));
}

torch::Tensor dequantize(const torch::Tensor& e2m1, const torch::Tensor& block_scale,
                         const torch::Tensor& tensor_scale) {
  return (e2m1 * block_scale) * tensor_scale;
}

torch::Tensor saturated(const torch::Tensor& blocks, const Fp4Scales& scales) {
  const auto step = scales.block * scales.tensor;
  return (step > 0) & ((blocks / step).abs() > kE2M1Max);
}

torch::Tensor fake_quant_ste(const torch::Tensor& blocks, const Fp4Scales& scales, bool mask_saturated) {
  return Fp4FakeQuantFunction::apply(blocks, scales.block, scales.tensor, mask_saturated);
}

}  // namespace qkd::quant::fp4
