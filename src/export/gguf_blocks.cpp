#include "gguf_blocks.h"

#include <algorithm>
#include <cstring>

namespace qkd::exporting::gguf {

std::vector<uint16_t> to_fp16_bits(const torch::Tensor& values) {
  const auto half = values.to(torch::kFloat).contiguous().to(torch::kHalf).contiguous();
  std::vector<uint16_t> bits(half.numel());
  std::memcpy(bits.data(), half.data_ptr<at::Half>(), bits.size() * 2);
  return bits;
}

float fp16_value(float x) { return static_cast<float>(static_cast<at::Half>(x)); }

std::string pack_codes(TensorType type, const torch::Tensor& codes, const torch::Tensor& chunk_scale) {
  const auto rows = codes.size(0), in = codes.size(1), chunks = in / kBlock;
  const auto c = codes.to(torch::kShort).contiguous();
  const auto* code = c.data_ptr<int16_t>();
  const auto d = to_fp16_bits(chunk_scale);
  std::string out(tensor_bytes(type, rows * in), '\0');
  char* p = out.data();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < chunks; ++k) {
      const int16_t* q = code + r * in + k * kBlock;
      std::memcpy(p, &d[r * chunks + k], 2);
      p += 2;
      if (type == TensorType::q4_0) {
        for (int j = 0; j < 16; ++j) p[j] = static_cast<char>(uint8_t(q[j] + 8) | uint8_t((q[j + 16] + 8) << 4));
        p += 16;
      } else {
        for (int j = 0; j < 32; ++j) p[j] = static_cast<char>(static_cast<int8_t>(q[j]));
        p += 32;
      }
    }
  }
  return out;
}

std::string pack_fp4(TensorType type, const torch::Tensor& codes, const torch::Tensor& scale_bytes) {
  const bool nv = type == TensorType::nvfp4;
  const int64_t block = nv ? kNvfp4Block : kBlock, sub = nv ? kNvfp4SubBlock : kBlock;
  const auto c = codes.to(torch::kShort).contiguous();
  const auto d = scale_bytes.to(torch::kUInt8).contiguous();
  const auto* code = c.data_ptr<int16_t>();
  const auto* scale = d.data_ptr<uint8_t>();
  const int64_t n = c.numel();
  std::string out(tensor_bytes(type, n), '\0');
  char* p = out.data();
  // Rows are contiguous and a multiple of the block long, so the blocks simply follow each other.
  for (int64_t b = 0; b < n / block; ++b) {
    for (int64_t s = 0; s < block / sub; ++s) *p++ = static_cast<char>(scale[b * (block / sub) + s]);
    for (int64_t s = 0; s < block / sub; ++s) {
      const int16_t* q = code + b * block + s * sub;
      for (int64_t j = 0; j < sub / 2; ++j) *p++ = static_cast<char>(uint8_t(q[j]) | uint8_t(q[j + sub / 2] << 4));
    }
  }
  return out;
}

std::string quantize_floats(TensorType type, const torch::Tensor& weight, ErrorSums& sums) {
  const auto w = weight.to(torch::kFloat).contiguous();
  const auto rows = w.size(0), in = w.size(1), chunks = in / kBlock;
  const float* x = w.data_ptr<float>();
  std::string out(tensor_bytes(type, rows * in), '\0');
  char* p = out.data();
  for (int64_t b = 0; b < rows * chunks; ++b, x += kBlock) {
    float amax = 0, max = 0;
    for (int j = 0; j < kBlock; ++j) {
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = type == TensorType::q4_0 ? max / -8 : amax / 127;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    const auto dh = static_cast<at::Half>(d);
    const float dq = static_cast<float>(dh);
    std::memcpy(p, &dh.x, 2);
    p += 2;
    int q[kBlock];
    if (type == TensorType::q4_0) {
      for (int j = 0; j < kBlock; ++j) q[j] = std::min(15, static_cast<int>(static_cast<int8_t>(x[j] * id + 8.5f))) - 8;
      for (int j = 0; j < 16; ++j) p[j] = static_cast<char>(uint8_t(q[j] + 8) | uint8_t((q[j + 16] + 8) << 4));
      p += 16;
    } else {
      for (int j = 0; j < kBlock; ++j) {
        q[j] = static_cast<int>(std::round(x[j] * id));
        p[j] = static_cast<char>(static_cast<int8_t>(q[j]));
      }
      p += 32;
    }
    for (int j = 0; j < kBlock; ++j) {
      const double diff = double(x[j]) - double(q[j]) * dq;
      sums.diff2 += diff * diff;
      sums.ref2 += double(x[j]) * x[j];
    }
  }
  return out;
}

}  // namespace qkd::exporting::gguf
