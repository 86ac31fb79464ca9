#include "qkd/quant/quantized_linear.h"

namespace qkd::quant {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The forward value of fake_quantize_weight, by the same operations.
torch::Tensor fake_quantized_value(const torch::Tensor& w, const WeightQuantRecipe& r) {
  const auto blocks = w.reshape(r.block_shape).to(r.dtype);
  return fake_quant_value(blocks, r.scale, r.zero, r.levels).to(w.scalar_type()).reshape(w.sizes());
}

// linear(x, q(w), b) for x [N, in] or [B, T, in], contiguous, q's parameters constant. LibTorch
// computes that as one mm or addmm on x viewed as [N, in] (1.13 and 2.x), whose autograd formulas are
// grad_x = g.mm(q(w)), grad_w = g.t().mm(x) (w.t() being column-major) and grad_b = g summed to b's
// shape, each in the dtype the product ran in, then cast back to its input's dtype (which autocast
// may have changed). The backward below repeats exactly these operations, and then those of the
// fake-quantizer's own backward (reshape to blocks, cast, mask, cast back).
class QuantizedLinearFunction : public torch::autograd::Function<QuantizedLinearFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w,
                               const torch::Tensor& bias, const torch::Tensor& scale, const torch::Tensor& zero,
                               bool has_bias, bool has_zero, const std::vector<int64_t>& block_shape, int64_t dtype,
                               int64_t qmin, int64_t qmax, bool mask_clipped) {
    WeightQuantRecipe r{block_shape,
                        static_cast<torch::ScalarType>(dtype),
                        scale,
                        has_zero ? zero : torch::Tensor(),
                        Levels{qmin, qmax},
                        mask_clipped};
    const auto y = torch::nn::functional::linear(x, fake_quantized_value(w, r), has_bias ? bias : torch::Tensor());
    // x only serves the weight's gradient; w is the parameter itself, kept alive by the module.
    ctx->save_for_backward({w.requires_grad() ? x : torch::Tensor(), w, has_bias ? bias : torch::Tensor(), scale,
                            has_zero ? zero : torch::Tensor()});
    ctx->saved_data["x_dtype"] = static_cast<int64_t>(x.scalar_type());
    ctx->saved_data["block_shape"] = block_shape;
    ctx->saved_data["dtype"] = dtype;
    ctx->saved_data["qmin"] = qmin;
    ctx->saved_data["qmax"] = qmax;
    ctx->saved_data["mask_clipped"] = mask_clipped;
    // Under autocast the product ran in a lower precision than x and q(w) have; its output tells which.
    ctx->saved_data["product_dtype"] = static_cast<int64_t>(y.scalar_type());
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& w = saved[1];
    const auto& bias = saved[2];
    const WeightQuantRecipe r{ctx->saved_data["block_shape"].toIntVector(),
                              static_cast<torch::ScalarType>(ctx->saved_data["dtype"].toInt()),
                              saved[3],
                              saved[4],
                              Levels{ctx->saved_data["qmin"].toInt(), ctx->saved_data["qmax"].toInt()},
                              ctx->saved_data["mask_clipped"].toBool()};
    const auto product = static_cast<torch::ScalarType>(ctx->saved_data["product_dtype"].toInt());
    const auto g = grads[0].reshape({-1, w.size(0)});

    torch::Tensor grad_x, grad_w, grad_bias;
    if (ctx->needs_input_grad(0)) {
      auto sizes = grads[0].sizes().vec();
      sizes.back() = w.size(1);
      const auto x_dtype = static_cast<torch::ScalarType>(ctx->saved_data["x_dtype"].toInt());
      grad_x = g.mm(fake_quantized_value(w, r).to(product)).view(sizes).to(x_dtype);
    }
    if (ctx->needs_input_grad(1)) {
      auto gw = g.t().mm(x.reshape({-1, x.size(-1)}).to(product)).to(w.scalar_type());
      auto blocks = gw.reshape(r.block_shape).to(r.dtype);
      if (r.mask_clipped) {
        blocks = blocks.masked_fill(clipped_mask(w.reshape(r.block_shape).to(r.dtype), r.scale, r.zero, r.levels), 0);
      }
      grad_w = blocks.to(w.scalar_type()).reshape(w.sizes());
    }
    if (bias.defined() && ctx->needs_input_grad(2)) {
      grad_bias = g.sum_to_size(bias.sizes()).to(product).to(bias.scalar_type());
    }
    return {grad_x,          grad_w,          grad_bias,       torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

bool recomputable(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias,
                  const WeightQuantRecipe& r) {
  if (!torch::GradMode::is_enabled()) return false;
  if (!x.requires_grad() && !w.requires_grad() && !(bias.defined() && bias.requires_grad())) return false;
  // Learned (LSQ) parameters take gradients that need the whole fake-quantizer graph.
  if (r.scale.requires_grad() || (r.zero.defined() && r.zero.requires_grad())) return false;
  return (x.dim() == 2 || x.dim() == 3) && x.is_contiguous() && x.layout() == torch::kStrided && w.dim() == 2 &&
         w.layout() == torch::kStrided;
}

}  // namespace

torch::Tensor fake_quantize_weight(const torch::Tensor& w, const WeightQuantRecipe& r) {
  const auto blocks = w.reshape(r.block_shape).to(r.dtype);
  return fake_quant_ste(blocks, r.scale, r.zero, r.levels, r.mask_clipped, r.grad_factor)
      .to(w.scalar_type())
      .reshape(w.sizes());
}

torch::Tensor quantized_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias,
                               const WeightQuantRecipe& r) {
  if (!recomputable(x, w, bias, r)) return torch::nn::functional::linear(x, fake_quantize_weight(w, r), bias);
  // LibTorch 1.13 rejects undefined tensor inputs to custom functions: placeholders stand in.
  const auto placeholder = torch::empty({0}, w.options());
  return QuantizedLinearFunction::apply(
      x, w, bias.defined() ? bias : placeholder, r.scale, r.zero.defined() ? r.zero : placeholder, bias.defined(),
      r.zero.defined(), r.block_shape, static_cast<int64_t>(r.dtype), r.levels.qmin, r.levels.qmax, r.mask_clipped);
}

}  // namespace qkd::quant
