#include "qkd/kernels/causal_attention.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <limits>

#include "qkd/kernels/parallel_tasks.h"

namespace qkd::kernels {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct Shape {
  int64_t batch, heads, kv_heads, groups, seq, dim;
  double scale;
};

Shape shape_of(const torch::Tensor& q, const torch::Tensor& k) {
  const int64_t heads = q.size(1), kv_heads = k.size(1);
  return {q.size(0), heads, kv_heads, heads / kv_heads, q.size(2), q.size(3),
          1.0 / std::sqrt(static_cast<double>(q.size(3)))};
}

// [T, D] slab of head h of sequence b; BLAS needs a unit stride in D.
torch::Tensor head(const torch::Tensor& x, int64_t b, int64_t h) { return x.select(0, b).select(0, h); }

torch::Tensor unit_stride_in_dim(const torch::Tensor& x) { return x.stride(-1) == 1 ? x : x.contiguous(); }

// Probabilities of one head: softmax over the causally masked, scaled scores, into `probs` [T, T].
void head_probabilities(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& causal_mask,
                        double scale, torch::Tensor& scores, torch::Tensor& probs) {
  at::mm_out(scores, q, k.t());
  scores.mul_(scale);
  scores.masked_fill_(causal_mask, -std::numeric_limits<float>::infinity());
  at::_softmax_out(probs, scores, -1, false);
}

class CausalAttentionFunction : public torch::autograd::Function<CausalAttentionFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& q_in, const torch::Tensor& k_in,
                               const torch::Tensor& v_in, const torch::Tensor& blocked) {
    const auto q = unit_stride_in_dim(q_in), k = unit_stride_in_dim(k_in), v = unit_stride_in_dim(v_in);
    const auto s = shape_of(q, k);
    const auto options = q.options();
    auto out = torch::empty({s.batch, s.seq, s.heads, s.dim}, options);
    auto probs = torch::empty({s.batch, s.heads, s.seq, s.seq}, options);
    const auto causal_mask = torch::ones({s.seq, s.seq}, options.dtype(torch::kBool)).triu(1);
    // An empty `blocked` stands for plain causal attention (autograd functions take no undefined inputs).
    const bool causal = blocked.numel() == 0;
    const auto blocked_cpu = causal ? blocked : blocked.to(torch::kCPU).contiguous();
    parallel_tasks(s.batch * s.kv_heads, [&](int64_t task) {
      const int64_t b = task / s.kv_heads, kv = task % s.kv_heads;
      const auto mask = causal ? causal_mask : blocked_cpu.select(0, b);
      auto scores = torch::empty({s.seq, s.seq}, options);
      for (int64_t g = 0; g < s.groups; ++g) {
        const int64_t h = kv * s.groups + g;
        auto p = head(probs, b, h);
        head_probabilities(head(q, b, h), head(k, b, kv), mask, s.scale, scores, p);
        auto o = out.select(0, b).select(1, h);  // [T, D] with row stride H * D
        at::mm_out(o, p, head(v, b, kv));
      }
    });
    ctx->save_for_backward({q, k, v, probs});
    return out.transpose(1, 2);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &q = saved[0], &k = saved[1], &v = saved[2], &probs = saved[3];
    const auto grad_out = unit_stride_in_dim(grads[0]);
    const auto s = shape_of(q, k);
    const auto options = q.options();
    auto grad_q = torch::empty({s.batch, s.seq, s.heads, s.dim}, options);
    auto grad_k = torch::empty({s.batch, s.seq, s.kv_heads, s.dim}, options);
    auto grad_v = torch::empty({s.batch, s.seq, s.kv_heads, s.dim}, options);
    parallel_tasks(s.batch * s.kv_heads, [&](int64_t task) {
      const int64_t b = task / s.kv_heads, kv = task % s.kv_heads;
      const auto k_h = head(k, b, kv), v_h = head(v, b, kv);
      auto dk = grad_k.select(0, b).select(1, kv), dv = grad_v.select(0, b).select(1, kv);
      auto d_probs = torch::empty({s.seq, s.seq}, options);
      for (int64_t g = 0; g < s.groups; ++g) {
        const int64_t h = kv * s.groups + g;
        const auto p = head(probs, b, h), d_o = head(grad_out, b, h), q_h = head(q, b, h);
        // Heads of a group add into their shared key and value gradients.
        if (g == 0) {
          at::mm_out(dv, p.t(), d_o);
        } else {
          dv.addmm_(p.t(), d_o);
        }
        at::mm_out(d_probs, d_o, v_h.t());
        // Masked entries have probability 0, hence a zero score gradient.
        auto d_scores = at::_softmax_backward_data(d_probs, p, -1, torch::kFloat32).mul_(s.scale);
        auto dq = grad_q.select(0, b).select(1, h);
        at::mm_out(dq, d_scores, k_h);
        if (g == 0) {
          at::mm_out(dk, d_scores.t(), q_h);
        } else {
          dk.addmm_(d_scores.t(), q_h);
        }
      }
    });
    return {grad_q.transpose(1, 2), grad_k.transpose(1, 2), grad_v.transpose(1, 2), torch::Tensor()};
  }
};

}  // namespace

bool has_fast_path(const torch::Tensor& q) {
  return q.device().is_cpu() && q.scalar_type() == torch::kFloat32 && q.dim() == 4 && at::get_num_threads() > 1 &&
         !at::in_parallel_region();
}

torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& blocked) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4 && q.size(1) % k.size(1) == 0,
              "causal_attention: q [B, H, T, D] and k, v [B, Hkv, T, D] with H a multiple of Hkv");
  TORCH_CHECK(!blocked.defined() || (blocked.dim() == 3 && blocked.size(0) == q.size(0) &&
                                     blocked.size(1) == q.size(2) && blocked.size(2) == q.size(2)),
              "causal_attention: blocked must be [B, T, T]");
  return CausalAttentionFunction::apply(q, k, v,
                                       blocked.defined() ? blocked : torch::empty({0}, q.options().dtype(torch::kBool)));
}

torch::Tensor masked_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& blocked) {
  const int64_t groups = q.size(1) / k.size(1);
  const auto kk = groups > 1 ? k.repeat_interleave(groups, 1) : k;
  const auto vv = groups > 1 ? v.repeat_interleave(groups, 1) : v;
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  auto scores = torch::matmul(q, kk.transpose(-2, -1)) * scale;
  scores = scores.masked_fill(blocked.to(q.device()).unsqueeze(1), -std::numeric_limits<float>::infinity());
  const auto probs = torch::softmax(scores.to(torch::kFloat32), -1).to(q.scalar_type());
  return torch::matmul(probs, vv);
}

}  // namespace qkd::kernels
