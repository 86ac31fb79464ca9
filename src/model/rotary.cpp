#include <cmath>

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

RotaryEmbedding::RotaryEmbedding(const LlamaConfig& config) {
  const int64_t dim = config.head_dim;
  // Same op order as transformers: base ** (arange(0, dim, 2).float() / dim), then reciprocal.
  const auto exponents = torch::arange(0, dim, 2, torch::kInt64).to(torch::kFloat32) / static_cast<double>(dim);
  inv_freq_ = 1.0 / torch::pow(torch::tensor(config.rope.theta, torch::kFloat64).to(torch::kFloat32), exponents);
  if (config.rope.type == "llama3") inv_freq_ = llama3_scaled_inv_freq(inv_freq_, config.rope);
}

std::pair<torch::Tensor, torch::Tensor> RotaryEmbedding::tables(int64_t seq, torch::Dtype dtype,
                                                                torch::Device device) const {
  const auto positions = torch::arange(seq, torch::kInt64).to(torch::kFloat32);
  const auto freqs = torch::outer(positions, inv_freq_);
  const auto emb = torch::cat({freqs, freqs}, -1).to(device);
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

}  // namespace qkd::model
