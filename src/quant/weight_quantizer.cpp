#include "qkd/quant/weight_quantizer.h"

#include <cmath>
#include <utility>

#include "qkd/common/error.h"

namespace qkd::quant {
namespace {

std::vector<int64_t> block_shape(const QuantSpec& spec, int64_t out, int64_t in) {
  switch (spec.granularity) {
    case Granularity::per_channel: return {out, 1, in};
    case Granularity::per_group: return {out, in / spec.group_size, spec.group_size};
    case Granularity::per_tensor: return {1, 1, out * in};
  }
  return {};
}

}  // namespace

WeightQuantizer::WeightQuantizer(const QuantSpec& spec, int64_t out_features, int64_t in_features, std::string module)
    : spec_(spec), out_features_(out_features), in_features_(in_features), module_(std::move(module)) {
  validate(spec_);
  if (spec_.granularity == Granularity::per_group && in_features_ % spec_.group_size != 0) {
    fail("quant.group_size", std::to_string(spec_.group_size) + " does not divide in_features " +
                                 std::to_string(in_features_) + " of " + module_);
  }
  levels_ = levels_for(spec_.bits, spec_.symmetric);
  if (spec_.scale_policy == ScalePolicy::dynamic) return;
  auto shape = block_shape(spec_, out_features_, in_features_);
  shape.back() = 1;
  // Registered now (zeros until initialize()) so that a saved state can be loaded into it.
  auto register_state = [&](const char* name) {
    auto t = torch::zeros(shape, torch::kFloat);
    return spec_.learnable_scale ? register_parameter(name, t) : register_buffer(name, t);
  };
  scale_ = register_state("scale");
  if (!spec_.symmetric) zero_point_ = register_state("zero_point");
}

torch::Tensor WeightQuantizer::to_blocks(const torch::Tensor& w) const {
  return w.reshape(block_shape(spec_, out_features_, in_features_));
}

void WeightQuantizer::check_shape(const torch::Tensor& w) const {
  if (w.dim() != 2 || w.size(0) != out_features_ || w.size(1) != in_features_) {
    fail(module_ + ".weight_quantizer", "expected a weight of shape [" + std::to_string(out_features_) + ", " +
                                            std::to_string(in_features_) + "], got " + c10::str(w.sizes()));
  }
}

QuantParams WeightQuantizer::params_for(const torch::Tensor& w) {
  check_shape(w);
  if (is_fp4(spec_.format)) fail(module_ + ".weight_quantizer", "an fp4 grid has no integer scale and zero point");
  if (spec_.scale_policy == ScalePolicy::fixed) return QuantParams{scale_, zero_point_};
  torch::NoGradGuard no_grad;
  if (w.scalar_type() == torch::kHalf && w.device().is_cpu()) {
    auto p = params_for(w.to(torch::kFloat));  // see fake_quantize
    return QuantParams{p.scale.to(torch::kHalf), p.zero.defined() ? p.zero.to(torch::kHalf) : p.zero};
  }
  const auto blocks = to_blocks(w.detach());
  if (spec_.range == RangeMethod::minmax) return minmax_params(blocks, spec_.bits, spec_.symmetric);
  auto p = search_params(blocks, spec_.bits, spec_.symmetric, clipping_grid(spec_));
  // Dynamic scales live in the weight's dtype, like the min-max ones.
  p.scale = p.scale.to(w.scalar_type());
  if (p.zero.defined()) p.zero = p.zero.to(w.scalar_type());
  return p;
}

void WeightQuantizer::initialize(const torch::Tensor& w) {
  if (spec_.scale_policy == ScalePolicy::dynamic) return;
  check_shape(w);
  torch::NoGradGuard no_grad;
  const auto blocks = to_blocks(w.detach()).to(torch::kFloat);
  const auto p = spec_.range == RangeMethod::search
                     ? search_params(blocks, spec_.bits, spec_.symmetric, clipping_grid(spec_))
                     : minmax_params(blocks, spec_.bits, spec_.symmetric);
  scale_.set_data(p.scale.to(w.device(), torch::kFloat));
  if (zero_point_.defined()) zero_point_.set_data(p.zero.to(w.device(), torch::kFloat));
  initialized_ = true;
}

double WeightQuantizer::lsq_grad_factor() const {
  if (!spec_.learnable_scale || !spec_.lsq_grad_scale) return 1.0;
  const auto shape = block_shape(spec_, out_features_, in_features_);
  return 1.0 / std::sqrt(static_cast<double>(shape.back()) * static_cast<double>(levels_.qmax));
}

WeightQuantRecipe WeightQuantizer::recipe(const torch::Tensor& w) {
  check_shape(w);
  if (is_fp4(spec_.format)) fail(module_ + ".weight_quantizer", "an fp4 grid has no integer recipe");
  WeightQuantRecipe r;
  r.block_shape = block_shape(spec_, out_features_, in_features_);
  r.levels = levels_;
  if (spec_.scale_policy == ScalePolicy::dynamic) {
    // LibTorch's CPU kernels lack fp16 clamp/round; fp16 weights on CPU are quantized in fp32.
    const bool via_fp32 = w.scalar_type() == torch::kHalf && w.device().is_cpu();
    r.dtype = via_fp32 ? torch::kFloat : w.scalar_type();
    auto p = params_for(via_fp32 ? w.detach().to(torch::kFloat) : w);
    r.scale = p.scale;
    r.zero = p.zero;
    // A min-max range holds every weight, so nothing is clipped: plain identity STE.
    r.mask_clipped = spec_.range == RangeMethod::search;
    return r;
  }
  if (!initialized_) fail(module_ + ".weight_quantizer", "static scale used before initialize()");
  r.dtype = torch::kFloat;
  // A learned scale could be driven to zero or below; the clamp keeps it a valid step size.
  r.scale = spec_.learnable_scale ? scale_.clamp_min(min_scale(torch::kFloat)) : scale_;
  r.zero = zero_point_;
  r.mask_clipped = true;
  r.grad_factor = lsq_grad_factor();
  return r;
}

torch::Tensor WeightQuantizer::fake_quantize(const torch::Tensor& w) {
  if (is_fp4(spec_.format)) return fp4_fake_quantize(w);
  return fake_quantize_weight(w, recipe(w));
}

torch::Tensor WeightQuantizer::linear(const torch::Tensor& input, const torch::Tensor& weight,
                                      const torch::Tensor& bias) {
  // fp4: the plain composition (the recomputing backward of quantized_linear is integer-only).
  if (is_fp4(spec_.format)) return model::TensorQuantizer::linear(input, weight, bias);
  return quantized_linear(input, weight, bias, recipe(weight));
}

fp4::Fp4Scales WeightQuantizer::fp4_scales_for(const torch::Tensor& blocks) const {
  return fp4::fp4_scales(blocks, spec_.format, spec_.range, clipping_grid(spec_));
}

// Always in fp32, whatever the weight's dtype: the scale encodings are defined on fp32 arithmetic.
torch::Tensor WeightQuantizer::fp4_fake_quantize(const torch::Tensor& w) {
  check_shape(w);
  const auto blocks = to_blocks(w).to(torch::kFloat);
  const auto scales = fp4_scales_for(blocks);
  const bool mask_saturated = spec_.range == RangeMethod::search;
  return fp4::fake_quant_ste(blocks, scales, mask_saturated).to(w.scalar_type()).reshape(w.sizes());
}

WeightQuantizer::Fp4Codes WeightQuantizer::fp4_codes(const torch::Tensor& w) {
  check_shape(w);
  if (!is_fp4(spec_.format)) fail(module_ + ".weight_quantizer", "an integer grid has no fp4 codes");
  torch::NoGradGuard no_grad;
  const auto blocks = to_blocks(w.detach()).to(torch::kFloat);
  auto scales = fp4_scales_for(blocks);
  return Fp4Codes{fp4::e2m1_codes(fp4::e2m1_elements(blocks, scales)), std::move(scales)};
}

WeightQuantizer::IntegerCodes WeightQuantizer::integer_codes(const torch::Tensor& w) {
  check_shape(w);
  if (is_fp4(spec_.format)) fail(module_ + ".weight_quantizer", "an fp4 grid has no integer codes (see fp4_codes)");
  torch::NoGradGuard no_grad;
  // The same dtype and parameters as fake_quantize: fp32 for static scales and for fp16 on CPU,
  // otherwise the weight's own dtype.
  const bool in_fp32 =
      spec_.scale_policy == ScalePolicy::fixed || (w.scalar_type() == torch::kHalf && w.device().is_cpu());
  const auto x = to_blocks(w.detach()).to(in_fp32 ? torch::kFloat : w.scalar_type());
  QuantParams p;
  if (spec_.scale_policy == ScalePolicy::fixed) {
    if (!initialized_) fail(module_ + ".weight_quantizer", "static scale used before initialize()");
    p = QuantParams{spec_.learnable_scale ? scale_.clamp_min(min_scale(torch::kFloat)) : scale_, zero_point_};
  } else {
    p = params_for(x.reshape(w.sizes()));
  }
  const auto zero = p.zero.defined() ? torch::round(p.zero.detach()) : torch::Tensor();
  auto v = torch::round(x / p.scale.detach());
  if (zero.defined()) v = v + zero;
  return IntegerCodes{torch::clamp(v, levels_.qmin, levels_.qmax).to(torch::kInt16), p.scale.detach(), zero};
}

void WeightQuantizer::to(torch::Device device, torch::Dtype /*dtype*/, bool non_blocking) {
  torch::nn::Module::to(device, non_blocking);
}

void WeightQuantizer::to(torch::Dtype /*dtype*/, bool /*non_blocking*/) {}

}  // namespace qkd::quant
