#include "qkd/loss/topk_kd_loss.h"

#include <filesystem>
#include <limits>

#include "loss_chunks.h"
#include "precomputed_gradient.h"
#include "qkd/common/error.h"

namespace qkd::loss {

namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// Log-sum-exp of each row over the columns outside `ids` (those set to -inf first).
torch::Tensor logsumexp_outside(const torch::Tensor& values, const torch::Tensor& ids) {
  return values.scatter(1, ids, kNegInf).logsumexp(1, /*keepdim=*/true);
}

// The teacher's k + 1 bucket log-probabilities of one chunk, renormalized: [rows, k] and [rows, 1].
std::pair<torch::Tensor, torch::Tensor> bucket_logprobs(const TopKTargets& t, int64_t begin, int64_t n,
                                                        const torch::Device& device) {
  const int64_t k = t.ids.size(-1);
  auto top = t.logprobs.reshape({-1, k}).narrow(0, begin, n).to(device, torch::kFloat32);
  auto rest = t.residual_logmass.reshape({-1, 1}).narrow(0, begin, n).to(device, torch::kFloat32);
  const auto norm = torch::cat({top, rest}, 1).logsumexp(1, /*keepdim=*/true);
  return {top - norm, rest - norm};
}

// d loss / d (one row's KL) and d loss / d (one row's cross-entropy).
struct Scales {
  double kd = 0.0, ce = 0.0;
};

struct ChunkResult {
  double divergence_sum = 0.0, ce_sum = 0.0;
  torch::Tensor grad;  // [rows, vocab] d loss / d student logits, fp32
};

// Next-token cross-entropy of one chunk at T = 1 (targets -1: none): its sum, and its gradient added
// to `grad` with weight `scale`.
double add_cross_entropy(const torch::Tensor& s_logits, const torch::Tensor& targets, double scale,
                         torch::Tensor& grad) {
  const auto log_probs = torch::log_softmax(s_logits.to(torch::kFloat32), -1);
  const auto valid = targets.ge(0).unsqueeze(1);
  const auto safe = targets.clamp_min(0).unsqueeze(1);
  const double nll = -(log_probs.gather(1, safe) * valid).sum().item<double>();
  auto ce_grad = log_probs.exp_();
  ce_grad.scatter_add_(1, safe, -torch::ones_like(safe, ce_grad.options()));
  grad.add_(ce_grad.mul_(valid * scale));
  return nll;
}

// One chunk of rows: the bucketed KL and (targets defined) the cross-entropy, with the gradient of the
// whole loss, in as few passes over [rows, vocab] as the formulas allow.
ChunkResult loss_chunk(const TopKTargets& t, int64_t begin, const torch::Tensor& s_logits, const torch::Tensor& targets,
                       double temp, Scales scales) {
  const int64_t n = s_logits.size(0);
  const auto ids = t.ids.reshape({-1, t.ids.size(-1)}).narrow(0, begin, n).to(s_logits.device(), torch::kInt64);
  const auto [log_p, log_p_rest] = bucket_logprobs(t, begin, n, s_logits.device());
  const auto p = log_p.exp(), p_rest = log_p_rest.exp();
  const auto s = s_logits.to(torch::kFloat32).div(temp);  // a new tensor: the in-place ops below never reach the logits
  const auto lse = s.logsumexp(1, /*keepdim=*/true);
  // q_rest as a log-sum-exp over the other logits: 1 - sum_K q cancels to garbage when q_rest is tiny.
  auto rest = s.scatter(1, ids, kNegInf);
  const auto lse_rest = rest.logsumexp(1, /*keepdim=*/true);
  const auto log_q_top = s.gather(1, ids) - lse;
  // p_rest = 0 (k = vocab, or a teacher certain of its top-k) contributes nothing, not 0 * -inf.
  const auto rest_terms = torch::where(p_rest > 0, p_rest * (log_p_rest - (lse_rest - lse)), torch::zeros_like(p_rest));
  ChunkResult out;
  out.divergence_sum = ((p * (log_p - log_q_top)).sum(1, true) + rest_terms).sum().item<double>();
  // Outside K: q_j (1 - p_rest / q_rest) = q_j - p_rest * (q_j / q_rest), and q_j / q_rest is a softmax over
  // the other logits (zero on K, and zero everywhere when K is the whole vocabulary). On K: q_j - p_j.
  rest.sub_(torch::where(torch::isinf(lse_rest), torch::zeros_like(lse_rest), lse_rest)).exp_().mul_(p_rest);
  const double kd = scales.kd / temp;
  auto grad = s.sub(lse).exp_();  // q
  const bool shared_softmax = targets.defined() && temp == 1.0;
  if (shared_softmax) {
    // At T = 1 the cross-entropy's softmax is q too: its gradient (q - onehot) joins in the same passes.
    const auto valid = targets.ge(0).unsqueeze(1).to(torch::kFloat32);
    const auto safe = targets.clamp_min(0).unsqueeze(1);
    out.ce_sum = -((s.gather(1, safe) - lse) * valid).sum().item<double>();
    grad.mul_(valid * scales.ce + kd).sub_(rest.mul_(kd));
    grad.scatter_add_(1, safe, valid * -scales.ce);
  } else {
    grad.sub_(rest).mul_(kd);
  }
  grad.scatter_add_(1, ids, p * -kd);
  if (targets.defined() && !shared_softmax) out.ce_sum = add_cross_entropy(s_logits, targets, scales.ce, grad);
  out.grad = grad;
  return out;
}

void check_shapes(const TopKTargets& t, const torch::Tensor& student_logits) {
  const auto rows = student_logits.sizes().slice(0, student_logits.dim() - 1);
  TORCH_CHECK(t.ids.dim() == student_logits.dim() && t.ids.sizes().slice(0, rows.size()) == rows, "top-k ids ",
              t.ids.sizes(), " do not match the student logits ", student_logits.sizes());
  TORCH_CHECK(t.logprobs.sizes() == t.ids.sizes(), "top-k log-probabilities ", t.logprobs.sizes(), " vs ids ",
              t.ids.sizes());
  TORCH_CHECK(t.residual_logmass.sizes() == rows, "residual ", t.residual_logmass.sizes(), " vs logits ",
              student_logits.sizes());
  TORCH_CHECK(t.ids.size(-1) <= student_logits.size(-1), "k ", t.ids.size(-1), " exceeds the vocabulary");
}

}  // namespace

TopKTargets teacher_topk(const torch::Tensor& teacher_logits, int64_t k, double temperature, int64_t chunk_tokens) {
  const int64_t vocab = teacher_logits.size(-1);
  if (k < 1 || k > vocab) fail("top-k", "k must be in 1.." + std::to_string(vocab) + ", got " + std::to_string(k));
  torch::NoGradGuard no_grad;
  const auto flat = teacher_logits.detach().reshape({-1, vocab});
  const int64_t rows = flat.size(0);
  const auto on = flat.options();
  TopKTargets out{torch::empty({rows, k}, on.dtype(torch::kInt64)), torch::empty({rows, k}, on.dtype(torch::kFloat32)),
                  torch::empty({rows, 1}, on.dtype(torch::kFloat32))};
  for (int64_t begin = 0; begin < rows; begin += chunk_tokens) {
    const int64_t n = std::min(chunk_tokens, rows - begin);
    const auto log_p = torch::log_softmax(flat.narrow(0, begin, n).to(torch::kFloat32) / temperature, -1);
    const auto [values, ids] = log_p.topk(k, 1, /*largest=*/true, /*sorted=*/true);
    out.ids.narrow(0, begin, n).copy_(ids);
    out.logprobs.narrow(0, begin, n).copy_(values);
    out.residual_logmass.narrow(0, begin, n).copy_(logsumexp_outside(log_p, ids));
  }
  auto shape = teacher_logits.sizes().vec();  // [batch, seq]
  shape.pop_back();
  auto with_k = shape;  // [batch, seq, k]
  with_k.push_back(k);
  return {out.ids.view(with_k), out.logprobs.view(with_k), out.residual_logmass.view(shape)};
}

TopKTargets topk_rows(const TopKTargets& t, int64_t begin, int64_t count) {
  return {t.ids.narrow(0, begin, count), t.logprobs.narrow(0, begin, count),
          t.residual_logmass.narrow(0, begin, count)};
}

KdLossResult topk_kd_loss(const TopKTargets& teacher, const torch::Tensor& student_logits,
                          const torch::Tensor& input_ids, const KdLossOptions& options, const LossDenominators* over) {
  if (options.divergence != Divergence::forward_kl)
    fail("kd.divergence", "\"" + divergences().name(options.divergence) +
                              "\" needs the teacher's whole distribution; top-k targets support forward_kl only");
  check_shapes(teacher, student_logits);
  const int64_t seq = student_logits.size(1), vocab = student_logits.size(2);
  const auto s_flat = student_logits.detach().reshape({-1, vocab});
  const auto shared = detail::loss_scales(input_ids, options, over);
  const int64_t rows = shared.rows, mean_rows = shared.mean_rows, ce_rows = shared.ce_rows;
  const double t2 = shared.t2;
  const bool with_ce = shared.with_ce;
  torch::NoGradGuard no_grad;
  const auto targets = detail::next_token_targets(input_ids, shared, s_flat.device());
  const Scales scales{options.kd_weight * t2 / static_cast<double>(mean_rows),
                      with_ce ? options.ce_weight / static_cast<double>(ce_rows) : 0.0};
  torch::Tensor grad;
  double divergence_sum = 0.0, ce_sum = 0.0;
  for (int64_t begin = 0; begin < rows; begin += options.chunk_tokens) {
    const int64_t n = std::min(options.chunk_tokens, rows - begin);
    auto chunk = loss_chunk(teacher, begin, s_flat.narrow(0, begin, n),
                            with_ce ? targets.narrow(0, begin, n) : torch::Tensor(), options.temperature, scales);
    divergence_sum += chunk.divergence_sum;
    ce_sum += chunk.ce_sum;
    if (n == rows) {
      grad = chunk.grad;  // one chunk: no copy
    } else {
      if (!grad.defined()) grad = torch::empty(s_flat.sizes(), s_flat.options().dtype(torch::kFloat32));
      grad.narrow(0, begin, n).copy_(chunk.grad);
    }
  }
  KdLossResult result;
  result.divergence = divergence_sum / static_cast<double>(mean_rows);
  result.cross_entropy = with_ce ? ce_sum / static_cast<double>(ce_rows) : 0.0;
  const double total =
      options.kd_weight * t2 * result.divergence + (with_ce ? options.ce_weight * result.cross_entropy : 0.0);
  const auto value = torch::tensor(total, student_logits.options().dtype(torch::kFloat32));
  torch::AutoGradMode enable(true);
  result.loss = PrecomputedGradient::apply(student_logits, value, grad.view_as(student_logits));
  return result;
}

void check_teacher_source(const KdLossOptions& options, const std::string& path) {
  if (options.teacher != TeacherSource::cache) return;
  if (options.teacher_cache.empty())
    fail(path + ".teacher_cache", "required with " + path + ".teacher cache: the directory cache-teacher wrote");
  if (!std::filesystem::is_directory(options.teacher_cache))
    fail(path + ".teacher_cache", "directory not found: " + options.teacher_cache);
  if (options.divergence != Divergence::forward_kl)
    fail(path + ".divergence", "\"" + divergences().name(options.divergence) +
                                   "\" needs the teacher's whole distribution; " + path +
                                   ".teacher cache holds its top-k, for forward_kl only");
}

}  // namespace qkd::loss
