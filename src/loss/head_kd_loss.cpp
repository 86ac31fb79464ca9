#include "qkd/loss/head_kd_loss.h"

#include "loss_chunks.h"
#include "qkd/common/torch_compat.h"

namespace qkd::loss {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Hands the gradients computed in forward to backward, scaled by the incoming gradient (the
// accumulation share).
class PrecomputedHeadGradients : public torch::autograd::Function<PrecomputedHeadGradients> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& hidden, const torch::Tensor& head,
                               const torch::Tensor& loss_value, const torch::Tensor& grad_hidden,
                               const torch::Tensor& grad_head) {
    ctx->save_for_backward({grad_hidden, grad_head});
    ctx->saved_data["hidden_dtype"] = hidden.scalar_type();
    ctx->saved_data["head_dtype"] = head.scalar_type();
    return loss_value;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto scale = grad_outputs[0];
    const auto scaled = [&](const torch::Tensor& g, const char* dtype) {
      if (!g.defined() || g.numel() == 0) return torch::Tensor();
      return (g * scale.to(g.scalar_type())).to(ctx->saved_data[dtype].toScalarType());
    };
    return {scaled(saved[0], "hidden_dtype"), scaled(saved[1], "head_dtype"), torch::Tensor(), torch::Tensor(),
            torch::Tensor()};
  }
};

torch::Tensor teacher_chunk_logits(const torch::Tensor& hidden, const torch::Tensor& head) {
  const compat::NoAutocastScope no_autocast;
  return torch::mm(hidden, head.t());
}

}  // namespace

KdLossResult kd_loss_from_hidden(const torch::Tensor& teacher_hidden, const torch::Tensor& teacher_head,
                                 const torch::Tensor& student_hidden, const torch::Tensor& student_head,
                                 const torch::Tensor& input_ids, const KdLossOptions& options,
                                 const LossDenominators* over) {
  TORCH_CHECK(teacher_hidden.size(0) == student_hidden.size(0) && teacher_hidden.size(1) == student_hidden.size(1),
              "teacher and student hidden states differ in batch or sequence length");
  TORCH_CHECK(teacher_head.size(0) == student_head.size(0), "teacher and student vocabularies differ");
  const int64_t hidden_size = student_hidden.size(2);
  const auto t_rows = teacher_hidden.detach().reshape({-1, teacher_hidden.size(2)});
  const auto s_rows = student_hidden.detach().reshape({-1, hidden_size});
  const auto t_head = teacher_head.detach(), s_head = student_head.detach();
  const auto scales = detail::loss_scales(input_ids, options, over);
  const auto targets = detail::next_token_targets(input_ids, scales, s_rows.device());
  const bool head_grad = student_head.requires_grad();
  torch::Tensor grad_hidden, grad_head, divergence_sum, ce_sum;
  {
    torch::NoGradGuard no_grad;
    for (int64_t begin = 0; begin < scales.rows; begin += options.chunk_tokens) {
      const int64_t n = std::min(options.chunk_tokens, scales.rows - begin);
      const auto s_chunk = s_rows.narrow(0, begin, n);
      const auto s_logits = torch::mm(s_chunk, s_head.t());
      auto chunk = detail::loss_chunk(teacher_chunk_logits(t_rows.narrow(0, begin, n), t_head), s_logits,
                                      scales.with_ce ? targets.narrow(0, begin, n) : targets, options, scales);
      // The logit gradient enters the products in the logits' dtype, as the head's own backward would.
      const auto g = chunk.grad.to(s_logits.scalar_type());
      const auto chunk_grad_hidden = torch::mm(g, s_head.to(g.scalar_type()));
      if (begin == 0) {
        grad_hidden = torch::empty({scales.rows, hidden_size}, chunk_grad_hidden.options());
        divergence_sum = chunk.divergence_sum;
        ce_sum = chunk.ce_sum;
      } else {
        divergence_sum += chunk.divergence_sum;
        ce_sum += chunk.ce_sum;
      }
      grad_hidden.narrow(0, begin, n).copy_(chunk_grad_hidden);
      if (head_grad) {
        if (begin == 0) {
          grad_head = torch::mm(g.t(), s_chunk.to(g.scalar_type()));
        } else {
          grad_head.addmm_(g.t(), s_chunk.to(g.scalar_type()));
        }
      }
    }
  }
  auto totals = detail::loss_totals(divergence_sum, ce_sum, options, scales);
  const auto value = torch::tensor(totals.total, s_rows.options().dtype(torch::kFloat32));
  const auto placeholder = torch::empty({0}, s_head.options());
  totals.result.loss =
      PrecomputedHeadGradients::apply(student_hidden, student_head, value, grad_hidden.view(student_hidden.sizes()),
                                      head_grad ? grad_head : placeholder);
  return totals.result;
}

}  // namespace qkd::loss
