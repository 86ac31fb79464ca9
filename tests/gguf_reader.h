#pragma once
// A test-only GGUF v3 reader (header only): parses a whole file independently of the writer and checks
// the structure the spec requires (magic, version, value types, tensor table, alignment, sizes).
// Tensors decode to float ([ne1, ne0] row-major, i.e. the Hugging Face [out, in] layout), and Q4_0 /
// Q8_0 blocks also to their integer levels and fp16 scales; MXFP4 / NVFP4 blocks as ggml-quants.c's
// dequantize_row_mxfp4 / dequantize_row_nvfp4 compute them (kvalues_fp4 doubled E2M1 values times
// E8M0 / UE4M3 halved scales) and to their 4-bit codes and scale bytes.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

namespace qkd::test::gguf {

enum ValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
enum TensorType : uint32_t { F32 = 0, F16 = 1, Q4_0 = 2, Q8_0 = 8, MXFP4 = 39, NVFP4 = 40 };

struct Value {
  ValueType type = kUint8;
  ValueType element_type = kUint8;  // arrays
  // Scalars: integers (and bools) in `integer`, floats in `real`, strings in `text`.
  int64_t integer = 0;
  double real = 0;
  std::string text;
  // Arrays, by element type.
  std::vector<int64_t> integers;
  std::vector<double> reals;
  std::vector<std::string> texts;
};

struct TensorInfo {
  std::string name;
  std::vector<int64_t> ne;
  TensorType type = F32;
  uint64_t offset = 0;  // relative to the data section
  int64_t elements() const {
    int64_t n = 1;
    for (auto d : ne) n *= d;
    return n;
  }
};

inline uint64_t type_size_bytes(TensorType type, int64_t elements) {
  switch (type) {
    case F32: return 4 * uint64_t(elements);
    case F16: return 2 * uint64_t(elements);
    case Q4_0:
      if (elements % 32) throw std::runtime_error("Q4_0 tensor with a partial block");
      return uint64_t(elements / 32) * 18;
    case Q8_0:
      if (elements % 32) throw std::runtime_error("Q8_0 tensor with a partial block");
      return uint64_t(elements / 32) * 34;
    case MXFP4:
      if (elements % 32) throw std::runtime_error("MXFP4 tensor with a partial block");
      return uint64_t(elements / 32) * 17;
    case NVFP4:
      if (elements % 64) throw std::runtime_error("NVFP4 tensor with a partial block");
      return uint64_t(elements / 64) * 36;
  }
  throw std::runtime_error("unknown ggml type " + std::to_string(type));
}

// ggml-common.h kvalues_fp4: E2M1 values doubled, indexed by the 4-bit code.
constexpr int8_t kFp4Values[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

// ggml-impl.h ggml_e8m0_to_fp32_half: 2^(e - 128) (the E8M0 scale halved, for the doubled values).
inline float e8m0_half(uint8_t e) {
  uint32_t bits = e < 2 ? 0x00200000u << e : uint32_t(e - 1) << 23;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// ggml-impl.h ggml_ue4m3_to_fp32: the UE4M3 scale halved; 0 and 0x7F decode to 0.
inline float ue4m3_half(uint8_t x) {
  if (x == 0 || x == 0x7F) return 0.0f;
  const int exp = (x >> 3) & 0xF, man = x & 0x7;
  const float raw = exp == 0 ? std::ldexp(float(man), -9) : std::ldexp(1.0f + man / 8.0f, exp - 7);
  return raw * 0.5f;
}

inline float half_to_float(uint16_t bits) {
  at::Half h;
  h.x = bits;
  return static_cast<float>(h);
}

class File {
 public:
  explicit File(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error(path + ": cannot open");
    std::ostringstream s;
    s << in.rdbuf();
    bytes_ = s.str();
    parse();
  }

  uint32_t version = 0;
  uint64_t alignment = 32;
  uint64_t data_start = 0;
  std::vector<std::string> keys;  // in file order
  std::map<std::string, Value> kv;
  std::vector<TensorInfo> tensors;  // in file order

  size_t file_size() const { return bytes_.size(); }
  bool has(const std::string& key) const { return kv.count(key) != 0; }
  const Value& at(const std::string& key) const {
    auto it = kv.find(key);
    if (it == kv.end()) throw std::runtime_error("no metadata key " + key);
    return it->second;
  }
  const TensorInfo& tensor(const std::string& name) const {
    for (const auto& t : tensors)
      if (t.name == name) return t;
    throw std::runtime_error("no tensor " + name);
  }
  bool has_tensor(const std::string& name) const {
    for (const auto& t : tensors)
      if (t.name == name) return true;
    return false;
  }
  const char* data(const TensorInfo& t) const { return bytes_.data() + data_start + t.offset; }

  // float32 [ne1, ne0] (or [ne0] for 1-D).
  torch::Tensor to_float(const TensorInfo& t) const {
    const auto n = t.elements();
    auto out = torch::empty({n}, torch::kFloat);
    float* y = out.data_ptr<float>();
    const char* p = data(t);
    switch (t.type) {
      case F32: std::memcpy(y, p, n * 4); break;
      case F16:
        for (int64_t i = 0; i < n; ++i) {
          uint16_t b;
          std::memcpy(&b, p + 2 * i, 2);
          y[i] = half_to_float(b);
        }
        break;
      case Q4_0:
      case Q8_0: {
        auto [levels, scales] = blocks(t);
        const auto l = levels.to(torch::kFloat).reshape({-1, 32}) * scales.reshape({-1, 1});
        std::memcpy(y, l.contiguous().data_ptr<float>(), n * 4);
        break;
      }
      case MXFP4:
      case NVFP4: {
        auto [codes, bytes] = fp4_blocks(t);
        const auto* c = codes.data_ptr<int16_t>();
        const auto* b = bytes.data_ptr<uint8_t>();
        const int64_t sub = t.type == MXFP4 ? 32 : 16;
        for (int64_t i = 0; i < n; ++i)
          y[i] = float(kFp4Values[c[i]]) * (t.type == MXFP4 ? e8m0_half(b[i / sub]) : ue4m3_half(b[i / sub]));
        break;
      }
    }
    return t.ne.size() == 2 ? out.reshape({t.ne[1], t.ne[0]}) : out;
  }

  // MXFP4 / NVFP4: the 4-bit codes int16 [ne1, ne0] and the scale bytes uint8 [ne1, ne0 / 32] (E8M0)
  // or [ne1, ne0 / 16] (UE4M3), read from block_mxfp4 {e, qs[16]} (qs[j]: code j low, j + 16 high)
  // and block_nvfp4 {d[4], qs[32]} (sub-block s: qs[8s + j]: code 16s + j low, 16s + j + 8 high).
  std::pair<torch::Tensor, torch::Tensor> fp4_blocks(const TensorInfo& t) const {
    if (t.type != MXFP4 && t.type != NVFP4) throw std::runtime_error(t.name + ": not an fp4 tensor");
    const int64_t n = t.elements(), block = t.type == MXFP4 ? 32 : 64, sub = t.type == MXFP4 ? 32 : 16;
    auto codes = torch::empty({n}, torch::kShort);
    auto bytes = torch::empty({n / sub}, torch::kUInt8);
    auto* c = codes.data_ptr<int16_t>();
    auto* d = bytes.data_ptr<uint8_t>();
    const auto* p = reinterpret_cast<const uint8_t*>(data(t));
    for (int64_t b = 0; b < n / block; ++b) {
      for (int64_t s = 0; s < block / sub; ++s) d[b * (block / sub) + s] = *p++;
      for (int64_t s = 0; s < block / sub; ++s)
        for (int64_t j = 0; j < sub / 2; ++j, ++p) {
          c[b * block + s * sub + j] = *p & 0x0F;
          c[b * block + s * sub + j + sub / 2] = *p >> 4;
        }
    }
    const auto rows = t.ne.size() == 2 ? t.ne[1] : 1;
    return {codes.reshape({rows, n / rows}), bytes.reshape({rows, n / sub / rows})};
  }

  // Q4_0 / Q8_0: levels int16 [ne1, ne0] (Q4_0: nibble - 8) and scales float32 [ne1, ne0 / 32] (the fp16 d).
  std::pair<torch::Tensor, torch::Tensor> blocks(const TensorInfo& t) const {
    const auto n = t.elements(), nblocks = n / 32;
    auto levels = torch::empty({n}, torch::kShort);
    auto scales = torch::empty({nblocks}, torch::kFloat);
    auto* q = levels.data_ptr<int16_t>();
    auto* d = scales.data_ptr<float>();
    const char* p = data(t);
    for (int64_t b = 0; b < nblocks; ++b) {
      uint16_t bits;
      std::memcpy(&bits, p, 2);
      d[b] = half_to_float(bits);
      p += 2;
      if (t.type == Q4_0) {
        for (int j = 0; j < 16; ++j) {
          const auto byte = static_cast<uint8_t>(p[j]);
          q[b * 32 + j] = int16_t(byte & 0x0f) - 8;
          q[b * 32 + j + 16] = int16_t(byte >> 4) - 8;
        }
        p += 16;
      } else if (t.type == Q8_0) {
        for (int j = 0; j < 32; ++j) q[b * 32 + j] = static_cast<int8_t>(p[j]);
        p += 32;
      } else {
        throw std::runtime_error(t.name + ": not a block-quantized tensor");
      }
    }
    const auto rows = t.ne.size() == 2 ? t.ne[1] : 1;
    return {levels.reshape({rows, n / rows}), scales.reshape({rows, nblocks / rows})};
  }

 private:
  std::string bytes_;
  size_t pos_ = 0;

  void need(size_t n) const {
    if (pos_ + n > bytes_.size()) throw std::runtime_error("GGUF truncated at byte " + std::to_string(pos_));
  }
  template <typename T>
  T pod() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string str() {
    const auto n = pod<uint64_t>();
    need(n);
    std::string s = bytes_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  void scalar(ValueType type, Value& v) {
    switch (type) {
      case kUint8: v.integer = pod<uint8_t>(); break;
      case kInt8: v.integer = pod<int8_t>(); break;
      case kUint16: v.integer = pod<uint16_t>(); break;
      case kInt16: v.integer = pod<int16_t>(); break;
      case kUint32: v.integer = pod<uint32_t>(); break;
      case kInt32: v.integer = pod<int32_t>(); break;
      case kUint64: v.integer = static_cast<int64_t>(pod<uint64_t>()); break;
      case kInt64: v.integer = pod<int64_t>(); break;
      case kFloat32: v.real = pod<float>(); break;
      case kFloat64: v.real = pod<double>(); break;
      case kBool: {
        const auto b = pod<uint8_t>();
        if (b > 1) throw std::runtime_error("bool value " + std::to_string(b));
        v.integer = b;
        break;
      }
      case kString: v.text = str(); break;
      default: throw std::runtime_error("bad scalar value type " + std::to_string(type));
    }
  }
  void parse() {
    if (bytes_.size() < 4 || bytes_.compare(0, 4, "GGUF") != 0) throw std::runtime_error("bad magic");
    pos_ = 4;
    version = pod<uint32_t>();
    const auto n_tensors = pod<uint64_t>();
    const auto n_kv = pod<uint64_t>();
    for (uint64_t i = 0; i < n_kv; ++i) {
      const auto key = str();
      if (kv.count(key)) throw std::runtime_error("duplicate key " + key);
      Value v;
      v.type = static_cast<ValueType>(pod<uint32_t>());
      if (v.type == kArray) {
        v.element_type = static_cast<ValueType>(pod<uint32_t>());
        if (v.element_type == kArray) throw std::runtime_error(key + ": nested arrays");
        const auto n = pod<uint64_t>();
        for (uint64_t j = 0; j < n; ++j) {
          Value e;
          scalar(v.element_type, e);
          if (v.element_type == kString)
            v.texts.push_back(e.text);
          else if (v.element_type == kFloat32 || v.element_type == kFloat64)
            v.reals.push_back(e.real);
          else
            v.integers.push_back(e.integer);
        }
      } else {
        scalar(v.type, v);
      }
      keys.push_back(key);
      kv.emplace(key, std::move(v));
    }
    if (kv.count("general.alignment")) {
      const auto& a = kv.at("general.alignment");
      if (a.type != kUint32) throw std::runtime_error("general.alignment is not uint32");
      alignment = static_cast<uint64_t>(a.integer);
    }
    for (uint64_t i = 0; i < n_tensors; ++i) {
      TensorInfo t;
      t.name = str();
      const auto dims = pod<uint32_t>();
      if (dims == 0 || dims > 4) throw std::runtime_error(t.name + ": " + std::to_string(dims) + " dims");
      for (uint32_t d = 0; d < dims; ++d) t.ne.push_back(static_cast<int64_t>(pod<uint64_t>()));
      t.type = static_cast<TensorType>(pod<uint32_t>());
      t.offset = pod<uint64_t>();
      tensors.push_back(t);
    }
    data_start = (pos_ + alignment - 1) / alignment * alignment;
    if (data_start > bytes_.size()) throw std::runtime_error("no data section");
    for (size_t i = pos_; i < data_start; ++i)
      if (bytes_[i] != 0) throw std::runtime_error("non-zero padding before the data section");
    // Offsets aligned, in bounds, non-overlapping.
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    for (const auto& t : tensors) {
      if (t.offset % alignment) throw std::runtime_error(t.name + ": offset not aligned");
      const auto size = type_size_bytes(t.type, t.elements());
      if (t.type == Q4_0 || t.type == Q8_0)
        if (t.ne[0] % 32) throw std::runtime_error(t.name + ": ne[0] not a multiple of the block");
      if (data_start + t.offset + size > bytes_.size()) throw std::runtime_error(t.name + ": data past the end");
      ranges.push_back({t.offset, t.offset + size});
    }
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 1; i < ranges.size(); ++i)
      if (ranges[i].first < ranges[i - 1].second) throw std::runtime_error("overlapping tensor data");
  }
};

}  // namespace qkd::test::gguf
