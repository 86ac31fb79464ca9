#include "qkd/optim/blockwise_int8.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace qkd::optim {

namespace {

// bitsandbytes' create_dynamic_map(signed, max_exponent_bits=7, total_bits=8): for each decimal exponent
// 10^(i-6), i = 0..6, the midpoints of an even split of [0.1, 1] into 2^i pieces (signed) or 2^(i+1)
// pieces (unsigned), both signs when signed; then 0 and 1. 7 exponent bits leave no extra items.
torch::Tensor make_dynamic_code(bool is_signed) {
  std::vector<double> data;
  constexpr int kExponentBits = 7, kNonSignBits = 7;
  for (int i = 0; i < kExponentBits; ++i) {
    const int fraction_items =
        is_signed ? (1 << (i + kNonSignBits - kExponentBits)) + 1 : (1 << (i + kNonSignBits - kExponentBits + 1)) + 1;
    const double scale = std::pow(10.0, -(kExponentBits - 1) + i);
    for (int k = 0; k + 1 < fraction_items; ++k) {
      // torch.linspace(0.1, 1, n) in fp32, then the mean of neighbours, as the Python original.
      const auto lo = static_cast<float>(0.1 + 0.9 * k / (fraction_items - 1));
      const auto hi = static_cast<float>(0.1 + 0.9 * (k + 1) / (fraction_items - 1));
      const double mean = (static_cast<double>(lo) + static_cast<double>(hi)) / 2.0;
      data.push_back(scale * mean);
      if (is_signed) data.push_back(-scale * mean);
    }
  }
  data.push_back(0.0);
  data.push_back(1.0);
  std::sort(data.begin(), data.end());
  auto code = torch::empty({static_cast<int64_t>(data.size())}, torch::kFloat32);
  for (size_t i = 0; i < data.size(); ++i) code[static_cast<int64_t>(i)] = static_cast<float>(data[i]);
  return code;
}

// Half way between neighbouring code values: bucketize against these gives the nearest code's index.
const torch::Tensor& midpoints(bool is_signed) {
  static const torch::Tensor signed_mid = [] {
    const auto& c = dynamic_code(true);
    return ((c.slice(0, 0, -1) + c.slice(0, 1)) / 2).contiguous();
  }();
  static const torch::Tensor unsigned_mid = [] {
    const auto& c = dynamic_code(false);
    return ((c.slice(0, 0, -1) + c.slice(0, 1)) / 2).contiguous();
  }();
  return is_signed ? signed_mid : unsigned_mid;
}

// A CPU table (code map or midpoints) on `device`, copied there once per process: a copy per call
// would be a synchronous host-to-device copy per moment per step on CUDA. The copies are never freed
// (a static CUDA tensor destroyed after the CUDA context would fail at exit).
const torch::Tensor& on_device(const torch::Tensor& cpu, const torch::Device& device) {
  if (device.is_cpu()) return cpu;
  static std::mutex mutex;
  static auto* copies = new std::map<std::pair<const void*, std::string>, torch::Tensor>();
  const std::lock_guard<std::mutex> lock(mutex);
  auto& copy = (*copies)[{cpu.data_ptr(), device.str()}];
  if (!copy.defined()) copy = cpu.to(device);
  return copy;
}

// `flat` padded with zeros to whole blocks, as [blocks, 256].
torch::Tensor as_blocks(const torch::Tensor& flat) {
  const int64_t n = flat.numel(), blocks = int8_blocks(n);
  const int64_t pad = blocks * kInt8BlockSize - n;
  const auto padded = pad > 0 ? torch::constant_pad_nd(flat, {0, pad}, 0.0) : flat;
  return padded.view({blocks, kInt8BlockSize});
}

}  // namespace

const torch::Tensor& dynamic_code(bool is_signed) {
  static const torch::Tensor signed_code = make_dynamic_code(true);
  static const torch::Tensor unsigned_code = make_dynamic_code(false);
  return is_signed ? signed_code : unsigned_code;
}

BlockwiseInt8 quantize_blockwise(const torch::Tensor& values, bool is_signed) {
  torch::NoGradGuard no_grad;
  const auto flat = values.detach().to(torch::kFloat32).reshape(-1);
  const auto blocks = as_blocks(flat);
  auto absmax = std::get<0>(blocks.abs().max(1));
  // An all-zero block divides by 1 (its codes are 0 whatever the divisor).
  const auto divisor = torch::where(absmax > 0, absmax, torch::ones_like(absmax)).unsqueeze(1);
  const auto normalized = (blocks / divisor).reshape(-1).slice(0, 0, flat.numel());
  const auto index = torch::bucketize(normalized, on_device(midpoints(is_signed), values.device()), /*out_int32=*/true);
  return {(index - 128).to(torch::kChar).view(values.sizes()), absmax};
}

torch::Tensor dequantize_blockwise(const BlockwiseInt8& q, bool is_signed) {
  torch::NoGradGuard no_grad;
  const auto n = q.codes.numel();
  const auto index = q.codes.reshape(-1).to(torch::kInt) + 128;
  const auto normalized = on_device(dynamic_code(is_signed), q.codes.device()).index_select(0, index);
  return (as_blocks(normalized) * q.absmax.unsqueeze(1)).reshape(-1).slice(0, 0, n).view(q.codes.sizes());
}

}  // namespace qkd::optim
