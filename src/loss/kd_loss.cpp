#include "qkd/loss/kd_loss.h"

#include "loss_chunks.h"
#include "precomputed_gradient.h"
#include "qkd/common/error.h"

namespace qkd::loss {

const EnumTable<Divergence>& divergences() {
  static const EnumTable<Divergence> table{
      {Divergence::forward_kl, "forward_kl"}, {Divergence::reverse_kl, "reverse_kl"}, {Divergence::jensen_shannon, "jsd"}};
  return table;
}

const EnumTable<TeacherSource>& teacher_sources() {
  static const EnumTable<TeacherSource> table{{TeacherSource::online, "online"}, {TeacherSource::cache, "cache"}};
  return table;
}

const EnumTable<CeTargets>& ce_targets() {
  static const EnumTable<CeTargets> table{{CeTargets::all, "all"}, {CeTargets::responses, "responses"}};
  return table;
}

void KdLossOptions::check(const std::string& path) const {
  if (kd_weight == 0.0 && ce_weight == 0.0) fail(path, "kd_weight and ce_weight are both 0: nothing to train");
}

KdLossResult kd_loss(const torch::Tensor& teacher_logits, const torch::Tensor& student_logits,
                     const torch::Tensor& input_ids, const KdLossOptions& options, const LossDenominators* over) {
  TORCH_CHECK(teacher_logits.sizes() == student_logits.sizes(), "teacher and student logits differ in shape");
  const int64_t vocab = student_logits.size(2);
  const auto t_flat = teacher_logits.detach().reshape({-1, vocab});
  const auto s_flat = student_logits.detach().reshape({-1, vocab});
  const auto scales = detail::loss_scales(input_ids, options, over);
  const auto targets = detail::next_token_targets(input_ids, scales, s_flat.device());
  auto grad = torch::empty(s_flat.sizes(), s_flat.options().dtype(torch::kFloat32));
  torch::Tensor divergence_sum, ce_sum;
  {
    torch::NoGradGuard no_grad;
    for (int64_t begin = 0; begin < scales.rows; begin += options.chunk_tokens) {
      const int64_t n = std::min(options.chunk_tokens, scales.rows - begin);
      auto chunk = detail::loss_chunk(t_flat.narrow(0, begin, n), s_flat.narrow(0, begin, n),
                                      scales.with_ce ? targets.narrow(0, begin, n) : targets, options, scales);
      divergence_sum = begin == 0 ? chunk.divergence_sum : divergence_sum + chunk.divergence_sum;
      ce_sum = begin == 0 ? chunk.ce_sum : ce_sum + chunk.ce_sum;
      grad.narrow(0, begin, n).copy_(chunk.grad);
    }
  }
  auto totals = detail::loss_totals(divergence_sum, ce_sum, options, scales);
  const auto value = torch::tensor(totals.total, student_logits.options().dtype(torch::kFloat32));
  totals.result.loss = PrecomputedGradient::apply(student_logits, value, grad.view_as(student_logits));
  return totals.result;
}

}  // namespace qkd::loss
