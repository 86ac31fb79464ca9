#pragma once
// The one place where LibTorch 1.13 (Debian) and LibTorch 2.x (CUDA wheels) differ for qkd-train.
// Everything else in the tree calls these helpers instead of the version-specific API.
#include <ATen/autocast_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/torch.h>
#if QKD_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

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

// The calling thread's autocast settings. Work a forward defers to the backward pass (activation
// checkpointing's recompute) re-establishes them there, since backward runs outside the forward's
// AutocastScope (and, on CUDA, on the autograd engine's own thread).
struct AutocastState {
  bool cuda_enabled = false;
  at::ScalarType cuda_dtype = at::kHalf;
  bool cpu_enabled = false;
  at::ScalarType cpu_dtype = at::kBFloat16;
};

inline AutocastState current_autocast_state() {
  AutocastState state;
#if QKD_TORCH2 && (TORCH_VERSION_MAJOR > 2 || TORCH_VERSION_MINOR >= 4)
  state.cuda_enabled = at::autocast::is_autocast_enabled(at::kCUDA);
  state.cuda_dtype = at::autocast::get_autocast_dtype(at::kCUDA);
  state.cpu_enabled = at::autocast::is_autocast_enabled(at::kCPU);
  state.cpu_dtype = at::autocast::get_autocast_dtype(at::kCPU);
#else
  state.cuda_enabled = at::autocast::is_enabled();
  state.cuda_dtype = at::autocast::get_autocast_gpu_dtype();
  state.cpu_enabled = at::autocast::is_cpu_enabled();
  state.cpu_dtype = at::autocast::get_autocast_cpu_dtype();
#endif
  return state;
}

inline void set_autocast_state(const AutocastState& state) {
#if QKD_TORCH2 && (TORCH_VERSION_MAJOR > 2 || TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_dtype(at::kCUDA, state.cuda_dtype);
  at::autocast::set_autocast_enabled(at::kCUDA, state.cuda_enabled);
  at::autocast::set_autocast_dtype(at::kCPU, state.cpu_dtype);
  at::autocast::set_autocast_enabled(at::kCPU, state.cpu_enabled);
#else
  at::autocast::set_autocast_gpu_dtype(state.cuda_dtype);
  at::autocast::set_enabled(state.cuda_enabled);
  at::autocast::set_autocast_cpu_dtype(state.cpu_dtype);
  at::autocast::set_cpu_enabled(state.cpu_enabled);
#endif
}

// `state` for the scope's lifetime, then the previous settings again.
class AutocastStateScope {
 public:
  explicit AutocastStateScope(const AutocastState& state)
      : previous_(current_autocast_state()), casting_(state.cuda_enabled || state.cpu_enabled) {
    set_autocast_state(state);
  }
  ~AutocastStateScope() {
    set_autocast_state(previous_);
    // The cast cache is keyed by the weight tensor, not its values: casts left in it (on the autograd
    // engine's thread nobody else clears) would be reused after the optimizer updated the weights.
    if (casting_) at::autocast::clear_cache();
  }
  AutocastStateScope(const AutocastStateScope&) = delete;
  AutocastStateScope& operator=(const AutocastStateScope&) = delete;

 private:
  AutocastState previous_;
  bool casting_;
};

// No autocast inside this scope, whatever the caller enabled: the teacher computes in its own dtype
// even when the student's forward is wrapped in bf16 autocast. Excluding the autocast dispatch keys
// is what autocast's own fallthrough does, and it is the same in 1.13 and 2.x.
class NoAutocastScope {
 public:
  NoAutocastScope() = default;
  NoAutocastScope(const NoAutocastScope&) = delete;
  NoAutocastScope& operator=(const NoAutocastScope&) = delete;

 private:
  c10::impl::ExcludeDispatchKeyGuard exclude_{c10::autocast_dispatch_keyset};
};

// Peak bytes the CUDA caching allocator has handed out on `device` since the process started (what a
// GPU run reports as peak memory); 0 in a build without CUDA. Index 0 of the stat arrays is the
// aggregate in every version (the StatType enum moved namespaces in 2.5).
inline double cuda_peak_allocated_mb(const torch::Device& device) {
#if QKD_WITH_CUDA
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.has_index() ? device.index() : 0);
  return static_cast<double>(stats.allocated_bytes[0].peak) / (1024.0 * 1024.0);
#else
  (void)device;
  return 0.0;
#endif
}

// Waits for the device's queued kernels (a no-op on the CPU, where every op has finished on return).
inline void synchronize(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.has_index() ? device.index() : -1);
}

}  // namespace qkd::compat

// c10d, PyTorch's distributed engine, for the files that define QKD_COMPAT_C10D before including this
// header (src/dist/ only; the headers are heavy). In 1.13 a process group is a c10d::ProcessGroup;
// from 2.0 the backends (Gloo, NCCL) are c10d::Backend and ProcessGroup dispatches to them. Both have
// the same allreduce/broadcast/allgather/barrier calls, so qkd::distributed holds the backend directly.
// A wheel built without Gloo (or its headers) leaves QKD_HAVE_GLOO 0; NCCL needs a CUDA LibTorch 2.x.
#ifdef QKD_COMPAT_C10D
#if __has_include(<gloo/algorithm.h>)
#define QKD_HAVE_GLOO 1
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#else
#define QKD_HAVE_GLOO 0
#endif
#if QKD_WITH_CUDA && QKD_TORCH2
#define QKD_HAVE_NCCL 1
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#else
#define QKD_HAVE_NCCL 0
#endif
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#if QKD_TORCH2
#include <torch/csrc/distributed/c10d/Backend.hpp>
#else
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#endif

namespace qkd::compat {
#if QKD_TORCH2
using CollectiveBackend = c10d::Backend;
#else
using CollectiveBackend = c10d::ProcessGroup;
#endif
}  // namespace qkd::compat
#endif  // QKD_COMPAT_C10D
