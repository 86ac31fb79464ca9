#include "qkd/loss/kd_loss.h"

#include "qkd/common/error.h"

namespace qkd::loss {

Divergence parse_divergence(const std::string& name, const std::string& where) {
  if (name == "forward_kl") return Divergence::ForwardKL;
  if (name == "reverse_kl") return Divergence::ReverseKL;
  if (name == "jsd") return Divergence::JensenShannon;
  fail(where, "expected one of forward_kl, reverse_kl, jsd, got \"" + name + "\"");
}

void KdLossOptions::check(const std::string& path) const {
  if (kd_weight == 0.0 && ce_weight == 0.0) fail(path, "kd_weight and ce_weight are both 0: nothing to train");
}

std::string divergence_name(Divergence d) {
  switch (d) {
    case Divergence::ForwardKL: return "forward_kl";
    case Divergence::ReverseKL: return "reverse_kl";
    case Divergence::JensenShannon: return "jsd";
  }
  return "?";
}

namespace {

struct ChunkResult {
  torch::Tensor per_token;  // [rows] divergence, fp32
  torch::Tensor grad;       // [rows, vocab] d(sum of per_token)/d(student logits), fp32
};

// Gradients through softmax(z/T): dL/dz = q * (g - <q, g>) / T, where g = dL/dq.
torch::Tensor through_softmax(const torch::Tensor& q, const torch::Tensor& g, double temperature) {
  return q * (g - (q * g).sum(-1, true)) / temperature;
}

ChunkResult divergence_chunk(const torch::Tensor& t_logits, const torch::Tensor& s_logits, Divergence d, double temp) {
  const auto log_p = torch::log_softmax(t_logits.to(torch::kFloat32) / temp, -1);
  const auto log_q = torch::log_softmax(s_logits.to(torch::kFloat32) / temp, -1);
  const auto p = log_p.exp();
  const auto q = log_q.exp();
  switch (d) {
    case Divergence::ForwardKL: return {(p * (log_p - log_q)).sum(-1), (q - p) / temp};
    case Divergence::ReverseKL: {
      const auto g = log_q - log_p;
      return {(q * g).sum(-1), through_softmax(q, g, temp)};
    }
    case Divergence::JensenShannon: {
      const auto log_m = torch::log((p + q) * 0.5);
      const auto per_token = 0.5 * ((p * (log_p - log_m)).sum(-1) + (q * (log_q - log_m)).sum(-1));
      return {per_token, through_softmax(q, 0.5 * (log_q - log_m), temp)};
    }
  }
  fail("kd.loss", "unknown divergence");
}

// The whole loss is computed in forward(); backward() scales the stored fp32 gradient.
class KdLossFunction : public torch::autograd::Function<KdLossFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor student_logits,
                               torch::Tensor loss_value, torch::Tensor grad) {
    ctx->save_for_backward({grad});
    ctx->saved_data["dtype"] = student_logits.scalar_type();
    return loss_value;
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grad_outputs) {
    const auto grad = ctx->get_saved_variables()[0];
    // The incoming scale (fp16 loss scale, accumulation share) multiplies the fp32 gradient before it
    // is cast to the logits' dtype: in fp16 most unscaled entries of a 32k-vocabulary softmax underflow.
    return {(grad * grad_outputs[0].to(torch::kFloat32)).to(ctx->saved_data["dtype"].toScalarType()), torch::Tensor(),
            torch::Tensor()};
  }
};

}  // namespace

KdLossResult kd_loss(const torch::Tensor& teacher_logits, const torch::Tensor& student_logits,
                     const torch::Tensor& input_ids, const KdLossOptions& options) {
  TORCH_CHECK(teacher_logits.sizes() == student_logits.sizes(), "teacher and student logits differ in shape");
  const int64_t batch = student_logits.size(0), seq = student_logits.size(1), vocab = student_logits.size(2);
  const auto t_flat = teacher_logits.detach().reshape({-1, vocab});
  const auto s_flat = student_logits.detach().reshape({-1, vocab});
  const int64_t rows = t_flat.size(0);
  const double t2 = options.temperature * options.temperature;
  const bool with_ce = options.ce_weight > 0.0 && seq > 1;
  // Targets for CE: position t predicts token t+1; the last position of each sequence has none.
  torch::Tensor targets;
  if (with_ce) {
    targets = torch::full({batch, seq}, -1, input_ids.options().dtype(torch::kInt64).device(s_flat.device()));
    targets.narrow(1, 0, seq - 1).copy_(input_ids.narrow(1, 1, seq - 1));
    targets = targets.reshape({-1});
  }
  const int64_t ce_rows = batch * (seq - 1);
  auto grad = torch::empty(s_flat.sizes(), s_flat.options().dtype(torch::kFloat32));
  double divergence_sum = 0.0, ce_sum = 0.0;
  torch::NoGradGuard no_grad;
  for (int64_t begin = 0; begin < rows; begin += options.chunk_tokens) {
    const int64_t n = std::min(options.chunk_tokens, rows - begin);
    auto chunk = divergence_chunk(t_flat.narrow(0, begin, n), s_flat.narrow(0, begin, n), options.divergence,
                                  options.temperature);
    divergence_sum += chunk.per_token.sum().item<double>();
    auto g = chunk.grad * (options.kd_weight * t2 / static_cast<double>(rows));
    if (with_ce) {
      const auto log_probs = torch::log_softmax(s_flat.narrow(0, begin, n).to(torch::kFloat32), -1);
      const auto tgt = targets.narrow(0, begin, n);
      const auto valid = tgt.ge(0);
      const auto safe = tgt.clamp_min(0).unsqueeze(1);
      const auto nll = -log_probs.gather(1, safe).squeeze(1) * valid;
      ce_sum += nll.sum().item<double>();
      auto ce_grad = log_probs.exp();
      ce_grad.scatter_add_(1, safe, -torch::ones_like(safe, ce_grad.options()));
      g += ce_grad * valid.unsqueeze(1) * (options.ce_weight / static_cast<double>(ce_rows));
    }
    grad.narrow(0, begin, n).copy_(g);
  }
  KdLossResult result;
  result.divergence = divergence_sum / static_cast<double>(rows);
  result.cross_entropy = with_ce ? ce_sum / static_cast<double>(ce_rows) : 0.0;
  const double total =
      options.kd_weight * t2 * result.divergence + (with_ce ? options.ce_weight * result.cross_entropy : 0.0);
  const auto value = torch::tensor(total, student_logits.options().dtype(torch::kFloat32));
  torch::AutoGradMode enable(true);
  result.loss = KdLossFunction::apply(student_logits, value, grad.view_as(student_logits));
  return result;
}

}  // namespace qkd::loss
