#include <algorithm>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <vector>

#include <c10/core/InferenceMode.h>

#include "qkd/model/llama.h"

namespace qkd::model {

// Meta's llama3 recipe: long wavelengths are divided by `factor`, short ones kept, and the band in
// between interpolated smoothly (same formula as transformers' _compute_llama3_parameters).
torch::Tensor llama3_scaled_inv_freq(const torch::Tensor& inv_freq, const RopeConfig& rope) {
  const double old_context = static_cast<double>(rope.original_max_position_embeddings);
  const double low_freq_wavelen = old_context / rope.low_freq_factor;
  const double high_freq_wavelen = old_context / rope.high_freq_factor;
  const auto wavelen = 2.0 * M_PI / inv_freq;
  auto scaled = torch::where(wavelen > low_freq_wavelen, inv_freq / rope.factor, inv_freq);
  const auto smooth = (old_context / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor);
  const auto smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled;
  const auto is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen);
  return torch::where(is_medium, smoothed, scaled);
}

// Keyed on the exact length rather than slicing one long table: CPU kernels may compute an element
// differently depending on where it falls in the tensor (vectorized body or scalar tail of a thread's
// chunk; with 3 or 4 intra-op threads, fp32 rows sliced from a 4096-row table differ from a fresh
// table for many lengths), and the tables must stay bitwise those of a fresh computation. A training
// run uses one length; evaluation may use many, hence the bound.
struct RotaryEmbedding::TableCache {
  struct Entry {
    int64_t seq;
    torch::Dtype dtype;
    torch::Device device;
    torch::Tensor cos, sin;
    uint64_t last_use;
  };
  static constexpr size_t kMaxEntries = 8;
  std::mutex mutex;
  std::vector<Entry> entries;
  uint64_t clock = 0;
};

RotaryEmbedding::RotaryEmbedding(const LlamaConfig& config) : cache_(std::make_shared<TableCache>()) {
  const int64_t dim = config.head_dim;
  // Same op order as transformers: base ** (arange(0, dim, 2).float() / dim), then reciprocal.
  const auto exponents = torch::arange(0, dim, 2, torch::kInt64).to(torch::kFloat32) / static_cast<double>(dim);
  inv_freq_ = 1.0 / torch::pow(torch::tensor(config.rope.theta, torch::kFloat64).to(torch::kFloat32), exponents);
  if (config.rope.type == "llama3") inv_freq_ = llama3_scaled_inv_freq(inv_freq_, config.rope);
}

std::pair<torch::Tensor, torch::Tensor> RotaryEmbedding::tables(int64_t seq, torch::Dtype dtype,
                                                                torch::Device device) const {
  std::lock_guard<std::mutex> lock(cache_->mutex);
  auto& entries = cache_->entries;
  const auto hit = std::find_if(entries.begin(), entries.end(), [&](const TableCache::Entry& e) {
    return e.seq == seq && e.dtype == dtype && e.device == device;
  });
  if (hit != entries.end()) {
    hit->last_use = ++cache_->clock;
    return {hit->cos, hit->sin};
  }
  auto [cos, sin] = [&] {
    // Tables first made under inference mode would be inference tensors, which a later training
    // forward could not save for backward.
    c10::InferenceMode normal_tensors(false);
    return compute_tables(seq, dtype, device);
  }();
  if (entries.size() >= TableCache::kMaxEntries) {
    entries.erase(std::min_element(entries.begin(), entries.end(),
                                   [](const auto& a, const auto& b) { return a.last_use < b.last_use; }));
  }
  entries.push_back({seq, dtype, device, cos, sin, ++cache_->clock});
  return {cos, sin};
}

std::pair<torch::Tensor, torch::Tensor> RotaryEmbedding::compute_tables(int64_t seq, torch::Dtype dtype,
                                                                        torch::Device device) const {
  const auto positions = torch::arange(seq, torch::kInt64).to(torch::kFloat32);
  const auto freqs = torch::outer(positions, inv_freq_);
  const auto emb = torch::cat({freqs, freqs}, -1).to(device);
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

}  // namespace qkd::model
