#include "qkd/quant/fake_quant.h"

namespace qkd::quant {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// x / scale + round(zero), where the straight-through estimator decides what was clipped. `zr` is the
// rounded zero point, or zeros when symmetric. Shared by the backward below and clipped_mask, so that
// a gradient recomputed elsewhere masks exactly the same elements.
torch::Tensor grid_position(const torch::Tensor& x, const torch::Tensor& scale, const torch::Tensor& zr) {
  return x / scale + zr;
}

// Custom function rather than `x + (q - x).detach()`: the latter can differ from q in the last bit,
// and a golden reference depends on the forward value being exactly q.
class FakeQuantFunction : public torch::autograd::Function<FakeQuantFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& scale,
                               const torch::Tensor& zero, bool has_zero, int64_t qmin, int64_t qmax, bool mask_clipped,
                               double grad_factor) {
    ctx->save_for_backward({x, scale, has_zero ? zero : torch::Tensor()});
    ctx->saved_data["qmin"] = qmin;
    ctx->saved_data["qmax"] = qmax;
    ctx->saved_data["mask_clipped"] = mask_clipped;
    ctx->saved_data["grad_factor"] = grad_factor;
    return fake_quant_value(x, scale, has_zero ? zero : torch::Tensor(), Levels{qmin, qmax});
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& scale = saved[1];
    const auto& zero = saved[2];
    const auto qmin = static_cast<double>(ctx->saved_data["qmin"].toInt());
    const auto qmax = static_cast<double>(ctx->saved_data["qmax"].toInt());
    const double factor = ctx->saved_data["grad_factor"].toDouble();
    const auto& g = grads[0];

    const auto zr = zero.defined() ? torch::round(zero) : torch::zeros_like(scale);
    const auto v = grid_position(x, scale, zr);
    const auto below = v < qmin;
    const auto above = v > qmax;
    const auto outside = below | above;

    torch::Tensor grad_x, grad_scale, grad_zero;
    if (ctx->needs_input_grad(0)) {
      grad_x = ctx->saved_data["mask_clipped"].toBool() ? g.masked_fill(outside, 0) : g;
    }
    if (ctx->needs_input_grad(1)) {
      const auto d = torch::where(below, qmin - zr, torch::where(above, qmax - zr, torch::round(v) - v));
      grad_scale = (g * d).sum_to_size(scale.sizes()) * factor;
    }
    if (zero.defined() && ctx->needs_input_grad(2)) {
      const auto d = torch::where(outside, -scale.expand_as(v), torch::zeros_like(v));
      grad_zero = (g * d).sum_to_size(zero.sizes()) * factor;
    }
    return {grad_x,          grad_scale,      grad_zero,       torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

Levels levels_for(int64_t bits, bool symmetric) {
  if (symmetric) return Levels{-(int64_t{1} << (bits - 1)), (int64_t{1} << (bits - 1)) - 1};
  return Levels{0, (int64_t{1} << bits) - 1};
}

double min_scale(torch::ScalarType dtype) { return dtype == torch::kHalf ? 6.103515625e-05 : 1e-8; }

torch::Tensor fake_quant_value(const torch::Tensor& x, const torch::Tensor& scale, const torch::Tensor& zero,
                               Levels levels) {
  if (!zero.defined()) return torch::clamp(torch::round(x / scale), levels.qmin, levels.qmax) * scale;
  const auto zr = torch::round(zero);
  return (torch::clamp(torch::round(x / scale) + zr, levels.qmin, levels.qmax) - zr) * scale;
}

torch::Tensor clipped_mask(const torch::Tensor& x, const torch::Tensor& scale, const torch::Tensor& zero,
                           Levels levels) {
  const auto zr = zero.defined() ? torch::round(zero) : torch::zeros_like(scale);
  const auto v = grid_position(x, scale, zr);
  return (v < static_cast<double>(levels.qmin)) | (v > static_cast<double>(levels.qmax));
}

torch::Tensor fake_quant_ste(const torch::Tensor& x, const torch::Tensor& scale, const torch::Tensor& zero,
                             Levels levels, bool mask_clipped, double grad_factor) {
  // LibTorch 1.13 rejects undefined tensor inputs to custom functions: a placeholder stands in for
  // the zero point of symmetric quantization.
  const bool has_zero = zero.defined();
  return FakeQuantFunction::apply(x, scale, has_zero ? zero : torch::zeros({}, scale.options()), has_zero, levels.qmin,
                                  levels.qmax, mask_clipped, grad_factor);
}

}  // namespace qkd::quant
