#pragma once
// The one place where LibTorch 1.13 (Debian) and LibTorch 2.x (CUDA wheels) differ for qkd-train.
// Everything else in the tree calls these helpers instead of the version-specific API.
#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include "qkd/common/precision.h"

#include <string>

#if defined(TORCH_VERSION_MAJOR) && TORCH_VERSION_MAJOR >= 2
#define QKD_TORCH2 1
#else
#define QKD_TORCH2 0
#endif

namespace qkd::compat {

// Causal grouped-query attention: q [B, H, T, D], k/v [B, Hkv, T, D] -> [B, H, T, D].
// Softmax is taken in fp32 for reduced-precision inputs, as transformers' eager attention does.
inline torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  const int64_t groups = q.size(1) / k.size(1);
  auto kk = groups > 1 ? k.repeat_interleave(groups, 1) : k;
  auto vv = groups > 1 ? v.repeat_interleave(groups, 1) : v;
#if QKD_TORCH2
  if (q.is_cuda()) {
    return at::scaled_dot_product_attention(q, kk, vv, /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/true);
  }
#endif
  const int64_t t = q.size(2);
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  auto scores = torch::matmul(q, kk.transpose(-2, -1)) * scale;
  auto mask = torch::ones({t, t}, torch::TensorOptions().dtype(torch::kBool).device(q.device())).triu(1);
  scores = scores.masked_fill(mask, -std::numeric_limits<float>::infinity());
  auto probs = torch::softmax(scores.to(torch::kFloat32), -1).to(q.scalar_type());
  return torch::matmul(probs, vv);
}

// Mixed precision for the scope's lifetime: CUDA autocast to bf16/fp16 on a CUDA device; nothing on
// the CPU (there the compute dtype of the modules decides).
class AutocastScope {
 public:
  AutocastScope(const torch::Device& device, Precision precision) {
    if (!device.is_cuda() || precision == Precision::fp32) return;
    const auto dtype = precision == Precision::bf16 ? at::kBFloat16 : at::kHalf;
#if QKD_TORCH2 && (TORCH_VERSION_MAJOR > 2 || TORCH_VERSION_MINOR >= 4)
    previous_ = at::autocast::is_autocast_enabled(at::kCUDA);
    at::autocast::set_autocast_dtype(at::kCUDA, dtype);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
#else
    previous_ = at::autocast::is_enabled();
    at::autocast::set_autocast_gpu_dtype(dtype);
    at::autocast::set_enabled(true);
#endif
    active_ = true;
  }
  ~AutocastScope() {
    if (!active_) return;
#if QKD_TORCH2 && (TORCH_VERSION_MAJOR > 2 || TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_enabled(at::kCUDA, previous_);
#else
    at::autocast::set_enabled(previous_);
#endif
    at::autocast::clear_cache();
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_ = false;
  bool previous_ = false;
};

}  // namespace qkd::compat
