#pragma once
// The GGUF v3 container as llama.cpp reads it (ggml/include/gguf.h, docs/gguf.md): a little-endian
// header, the key/value metadata, the tensor table (name, dims with ne[0] the fastest-varying, ggml
// type, offset into the data section), then the data section, every tensor aligned to
// general.alignment. Private to the export area: gguf_writer.cpp maps a student onto it.
#include <cstdint>
#include <limits>
#include <ostream>
#include <string>
#include <type_traits>
#include <vector>

#include "qkd/common/error.h"

namespace qkd::exporting::gguf {

constexpr uint32_t kGgufVersion = 3;
constexpr uint64_t kAlignment = 32;
constexpr int64_t kBlock = 32;          // elements per Q4_0 / Q8_0 / MXFP4 block (QK4_0, QK8_0, QK_MXFP4)
constexpr int64_t kNvfp4Block = 64;     // elements per NVFP4 block (QK_NVFP4): four sub-blocks of
constexpr int64_t kNvfp4SubBlock = 16;  // QK_NVFP4_SUB, each with its UE4M3 scale

// ggml_type (ggml/include/ggml.h; gguf-py GGMLQuantizationType)
enum class TensorType : uint32_t { f32 = 0, f16 = 1, q4_0 = 2, q8_0 = 8, mxfp4 = 39, nvfp4 = 40 };
// gguf_type
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
// llama_ftype (include/llama.h: LLAMA_FTYPE_MOSTLY_Q4_0, _Q8_0, _MXFP4_MOE, _NVFP4)
constexpr uint32_t kFileTypeF32 = 0, kFileTypeF16 = 1, kFileTypeQ4_0 = 2, kFileTypeQ8_0 = 7, kFileTypeMxfp4 = 38,
                   kFileTypeNvfp4 = 39;

inline const char* type_name(TensorType type) {
  switch (type) {
    case TensorType::f32: return "F32";
    case TensorType::f16: return "F16";
    case TensorType::q4_0: return "Q4_0";
    case TensorType::q8_0: return "Q8_0";
    case TensorType::mxfp4: return "MXFP4";
    case TensorType::nvfp4: return "NVFP4";
  }
  return "?";
}

inline bool is_block_type(TensorType type) { return type != TensorType::f32 && type != TensorType::f16; }
inline bool is_fp4_type(TensorType type) { return type == TensorType::mxfp4 || type == TensorType::nvfp4; }

// Elements per block along a row (the row length must be a multiple); 1 for float types.
inline int64_t block_length(TensorType type) {
  if (type == TensorType::nvfp4) return kNvfp4Block;
  return is_block_type(type) ? kBlock : 1;
}

inline uint64_t tensor_bytes(TensorType type, int64_t elements) {
  switch (type) {
    case TensorType::f32: return 4 * uint64_t(elements);
    case TensorType::f16: return 2 * uint64_t(elements);
    case TensorType::q4_0: return uint64_t(elements / kBlock) * 18;
    case TensorType::q8_0: return uint64_t(elements / kBlock) * 34;
    case TensorType::mxfp4: return uint64_t(elements / kBlock) * 17;       // block_mxfp4: e, qs[16]
    case TensorType::nvfp4: return uint64_t(elements / kNvfp4Block) * 36;  // block_nvfp4: d[4], qs[32]
  }
  return 0;
}

inline uint64_t align_up(uint64_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }

class Out {
 public:
  explicit Out(std::ostream& os) : os_(os) {}
  template <typename T>
  void pod(T value) {
    static_assert(std::is_trivially_copyable_v<T>);
    bytes(&value, sizeof(T));
  }
  void bytes(const void* data, size_t n) {
    os_.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
    written_ += n;
  }
  void string(const std::string& s) {
    pod<uint64_t>(s.size());
    bytes(s.data(), s.size());
  }
  void pad_to_alignment() {
    static const char zeros[kAlignment] = {};
    bytes(zeros, align_up(written_) - written_);
  }
  uint64_t written() const { return written_; }

 private:
  std::ostream& os_;
  uint64_t written_ = 0;
};

// One metadata value, serialized as it is added.
struct Metadata {
  std::string buffer;
  uint64_t count = 0;

  void key(const std::string& name, ValueType type) {
    count++;
    raw<uint64_t>(name.size());
    buffer += name;
    raw<uint32_t>(type);
  }
  template <typename T>
  void raw(T value) {
    buffer.append(reinterpret_cast<const char*>(&value), sizeof(T));
  }
  void str(const std::string& s) {
    raw<uint64_t>(s.size());
    buffer += s;
  }
  void u32(const std::string& name, uint64_t value) {
    if (value > std::numeric_limits<uint32_t>::max()) fail(name, std::to_string(value) + " does not fit uint32");
    key(name, kUint32);
    raw<uint32_t>(static_cast<uint32_t>(value));
  }
  void f32(const std::string& name, double value) {
    key(name, kFloat32);
    raw<float>(static_cast<float>(value));
  }
  void boolean(const std::string& name, bool value) {
    key(name, kBool);
    raw<uint8_t>(value ? 1 : 0);
  }
  void string(const std::string& name, const std::string& value) {
    key(name, kString);
    str(value);
  }
  template <typename T, typename F>
  void array(const std::string& name, ValueType element_type, const std::vector<T>& values, F&& write_one) {
    key(name, kArray);
    raw<uint32_t>(element_type);
    raw<uint64_t>(values.size());
    for (const auto& v : values) write_one(v);
  }
};

}  // namespace qkd::exporting::gguf
