#include "loss_chunks.h"

#include <algorithm>

#include "qkd/common/error.h"

namespace qkd::loss::detail {

namespace {

struct DivergenceChunk {
  torch::Tensor per_token;  // [rows] divergence, fp32
  torch::Tensor grad;       // [rows, vocab] d(sum of per_token)/d(student logits), fp32
};

// Gradients through softmax(z/T): dL/dz = q * (g - <q, g>) / T, where g = dL/dq.
torch::Tensor through_softmax(const torch::Tensor& q, const torch::Tensor& g, double temperature) {
  return q * (g - (q * g).sum(-1, true)) / temperature;
}

// logits / T in fp32; at T = 1 without the pass over [rows, vocab] that would return the same values.
torch::Tensor tempered(const torch::Tensor& logits, double temperature) {
  const auto fp32 = logits.to(torch::kFloat32);
  return temperature == 1.0 ? fp32 : fp32 / temperature;
}

DivergenceChunk divergence_chunk(const torch::Tensor& t_logits, const torch::Tensor& s_logits, Divergence d,
                                 double temp) {
  const auto log_p = torch::log_softmax(tempered(t_logits, temp), -1);
  const auto log_q = torch::log_softmax(tempered(s_logits, temp), -1);
  const auto p = log_p.exp();
  const auto q = log_q.exp();
  switch (d) {
    case Divergence::forward_kl: return {(p * (log_p - log_q)).sum(-1), temp == 1.0 ? q - p : (q - p) / temp};
    case Divergence::reverse_kl: {
      const auto g = log_q - log_p;
      return {(q * g).sum(-1), through_softmax(q, g, temp)};
    }
    case Divergence::jensen_shannon: {
      const auto log_m = torch::log((p + q) * 0.5);
      const auto per_token = 0.5 * ((p * (log_p - log_m)).sum(-1) + (q * (log_q - log_m)).sum(-1));
      return {per_token, through_softmax(q, 0.5 * (log_q - log_m), temp)};
    }
  }
  fail("kd.loss", "unknown divergence");
}

torch::Tensor as_double(const torch::Tensor& sum) { return sum.to(torch::kFloat64); }

}  // namespace

}  // namespace qkd::loss::detail

namespace qkd::loss {

LossDenominators loss_denominators(const torch::Tensor& labels, const KdLossOptions& options) {
  const int64_t batch = labels.size(0), seq = labels.size(1);
  LossDenominators d;
  d.tokens = batch * seq;
  // At least 1: a batch without any target (all prompt) adds a zero cross-entropy, not a NaN.
  if (options.ce_weight > 0.0 && seq > 1)
    d.ce_targets = std::max<int64_t>(1, labels.narrow(1, 1, seq - 1).ge(0).sum().item<int64_t>());
  return d;
}

}  // namespace qkd::loss

namespace qkd::loss::detail {

LossScales loss_scales(const torch::Tensor& labels, const KdLossOptions& options, const LossDenominators* over) {
  const int64_t seq = labels.size(1);
  LossScales s;
  s.rows = labels.size(0) * seq;
  s.with_ce = options.ce_weight > 0.0 && seq > 1;
  const auto denominators = over ? *over : loss_denominators(labels, options);
  s.mean_rows = denominators.tokens;
  s.ce_rows = denominators.ce_targets;
  s.t2 = options.temperature * options.temperature;
  return s;
}

torch::Tensor next_token_targets(const torch::Tensor& input_ids, const LossScales& scales, torch::Device device) {
  if (!scales.with_ce) return {};
  const int64_t batch = input_ids.size(0), seq = input_ids.size(1);
  auto targets = torch::full({batch, seq}, -1, input_ids.options().dtype(torch::kInt64).device(device));
  targets.narrow(1, 0, seq - 1).copy_(input_ids.narrow(1, 1, seq - 1));
  return targets.reshape({-1});
}

ChunkLoss loss_chunk(const torch::Tensor& t_logits, const torch::Tensor& s_logits, const torch::Tensor& targets,
                     const KdLossOptions& options, const LossScales& scales) {
  auto chunk = divergence_chunk(t_logits, s_logits, options.divergence, options.temperature);
  ChunkLoss out;
  // Summed in fp32 per chunk, then in fp64 across chunks; read back once per loss, not per chunk.
  out.divergence_sum = as_double(chunk.per_token.sum());
  out.grad = chunk.grad * (options.kd_weight * scales.t2 / static_cast<double>(scales.mean_rows));
  if (!scales.with_ce) {
    out.ce_sum = torch::zeros({}, out.divergence_sum.options());
    return out;
  }
  const auto log_probs = torch::log_softmax(s_logits.to(torch::kFloat32), -1);
  const auto valid = targets.ge(0);
  const auto safe = targets.clamp_min(0).unsqueeze(1);
  const auto nll = -log_probs.gather(1, safe).squeeze(1) * valid;
  out.ce_sum = as_double(nll.sum());
  auto ce_grad = log_probs.exp();
  ce_grad.scatter_add_(1, safe, -torch::ones_like(safe, ce_grad.options()));
  out.grad += ce_grad * valid.unsqueeze(1) * (options.ce_weight / static_cast<double>(scales.ce_rows));
  return out;
}

LossTotals loss_totals(const torch::Tensor& divergence_sum, const torch::Tensor& ce_sum, const KdLossOptions& options,
                       const LossScales& scales) {
  LossTotals totals;
  auto& result = totals.result;
  result.divergence = divergence_sum.item<double>() / static_cast<double>(scales.mean_rows);
  result.cross_entropy = scales.with_ce ? ce_sum.item<double>() / static_cast<double>(scales.ce_rows) : 0.0;
  totals.total = options.kd_weight * scales.t2 * result.divergence +
                 (scales.with_ce ? options.ce_weight * result.cross_entropy : 0.0);
  return totals;
}

}  // namespace qkd::loss::detail
