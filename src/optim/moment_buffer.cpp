#include "qkd/optim/moment_buffer.h"

#include "qkd/common/error.h"
#include "qkd/optim/blockwise_int8.h"

namespace qkd::optim {

torch::Dtype moment_storage(torch::Dtype requested, int64_t numel) {
  if (requested == torch::kChar && numel < kMinInt8Elements) return torch::kFloat32;
  return requested;
}

MomentBuffer::MomentBuffer(const torch::Tensor& like, torch::Dtype storage, bool is_signed)
    : storage_(storage), signed_(is_signed) {
  data_ = torch::zeros_like(like, like.options().dtype(storage), torch::MemoryFormat::Contiguous);
  if (storage == torch::kChar)
    absmax_ = torch::zeros({int8_blocks(like.numel())}, like.options().dtype(torch::kFloat32));
}

torch::Tensor MomentBuffer::values(torch::Dtype type) const {
  if (storage_ == torch::kChar) return dequantize_blockwise({data_, absmax_}, signed_).to(type);
  return storage_ == type ? data_ : data_.to(type);
}

torch::Tensor MomentBuffer::values(torch::Dtype type, std::pair<int64_t, int64_t> range) const {
  const auto [first, last] = range;
  const auto part = data_.view(-1).slice(0, first, last);
  if (storage_ == torch::kChar) {
    const auto scales = absmax_.slice(0, first / kInt8BlockSize, int8_blocks(last));
    return dequantize_blockwise({part, scales}, signed_).to(type);
  }
  return storage_ == type ? part : part.to(type);
}

void MomentBuffer::store(const torch::Tensor& values) {
  torch::NoGradGuard no_grad;
  if (values.is_same(data_)) return;
  if (storage_ != torch::kChar) {
    data_.copy_(values);
    return;
  }
  auto q = quantize_blockwise(values, signed_);
  data_.copy_(q.codes);
  absmax_.copy_(q.absmax);
}

void MomentBuffer::store(const torch::Tensor& values, std::pair<int64_t, int64_t> range) {
  torch::NoGradGuard no_grad;
  const auto [first, last] = range;
  auto part = data_.view(-1).slice(0, first, last);
  if (storage_ != torch::kChar) {
    if (values.data_ptr() != part.data_ptr()) part.copy_(values);
    return;
  }
  auto q = quantize_blockwise(values, signed_);
  part.copy_(q.codes);
  absmax_.slice(0, first / kInt8BlockSize, int8_blocks(last)).copy_(q.absmax);
}

int64_t MomentBuffer::bytes() const {
  auto size = [](const torch::Tensor& t) {
    return t.defined() ? t.numel() * static_cast<int64_t>(t.element_size()) : 0;
  };
  return size(data_) + size(absmax_);
}

std::vector<std::pair<std::string, torch::Tensor>> MomentBuffer::state(const std::string& key) const {
  std::vector<std::pair<std::string, torch::Tensor>> out{{key, data_.detach()}};
  if (storage_ == torch::kChar) out.emplace_back(key + ".absmax", absmax_.detach());
  return out;
}

std::vector<std::pair<std::string, torch::Tensor>> MomentBuffer::empty_state(const std::string& key,
                                                                             const torch::Tensor& like,
                                                                             torch::Dtype storage) {
  return MomentBuffer(like, storage, true).state(key);
}

void MomentBuffer::load(const std::string& key, const std::map<std::string, torch::Tensor>& by_name,
                        const std::string& source) {
  const auto it = by_name.find(key);
  if (it == by_name.end()) fail(source, "tensor '" + key + "' missing from optimizer state");
  const auto& saved = it->second;
  if (saved.sizes() != data_.sizes()) fail(source, "tensor '" + key + "': shape differs from the model");
  torch::NoGradGuard no_grad;
  if (saved.scalar_type() == torch::kChar) {
    const auto scale = by_name.find(key + ".absmax");
    if (scale == by_name.end())
      fail(source, "tensor '" + key + ".absmax' missing from optimizer state (the int8 moment '" + key + "' needs it)");
    if (scale->second.dim() != 1 || scale->second.size(0) != int8_blocks(saved.numel()) ||
        scale->second.scalar_type() != torch::kFloat32)
      fail(source, "tensor '" + key + ".absmax': expected fp32 [" + std::to_string(int8_blocks(saved.numel())) +
                       "] block maxima");
    if (!torch::isfinite(scale->second).all().item<bool>() || scale->second.min().item<float>() < 0)
      fail(source, "tensor '" + key + ".absmax': block maxima must be finite and not negative");
    if (storage_ == torch::kChar) {  // same format: taken as saved, bit for bit
      data_.copy_(saved);
      absmax_.copy_(scale->second);
      return;
    }
    data_.copy_(dequantize_blockwise({saved, scale->second}, signed_));
    return;
  }
  if (!saved.is_floating_point())
    fail(source, "tensor '" + key + "': dtype " + std::string(c10::toString(saved.scalar_type())) +
                     ", expected a float or int8 moment");
  // A resumed moment must be one an update could have produced: finite, and a second moment not
  // negative (its square root would turn every later update into NaN).
  if (!torch::isfinite(saved).all().item<bool>()) fail(source, "tensor '" + key + "': holds NaN or Inf values");
  if (!signed_ && saved.numel() > 0 && saved.min().item<double>() < 0)
    fail(source, "tensor '" + key + "': negative values in a second moment (a mean of squares)");
  store(saved.to(data_.device()).to(torch::kFloat32));
}

}  // namespace qkd::optim
