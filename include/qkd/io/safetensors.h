#pragma once
// safetensors (https://github.com/huggingface/safetensors) reader and writer.
// Reading memory-maps the file; tensors are zero-copy views into the mapping (the mapping stays alive
// as long as any view does). The header is validated completely before any tensor is handed out.
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace qkd::io {

// U16 has no LibTorch 1.13 type: it is read as int32 (a widened copy) and written from an integer
// tensor through write_safetensors' `stored_as` (token ids of vocabularies up to 65536 in half the bytes).
// F8_E4M3 (float8_e4m3fn) neither: it is read as its bytes (uint8) and written from a uint8 tensor of
// bytes through `stored_as` (compressed-tensors' NVFP4 block scales).
enum class DType { f64, f32, f16, bf16, i64, i32, i16, i8, u8, boolean, u16, f8_e4m3 };

std::string dtype_name(DType dtype);       // "F32", ...
size_t dtype_size(DType dtype);            // bytes per element
torch::ScalarType to_torch(DType dtype);   // the type a tensor of `dtype` is handed out in (U16: int32, F8_E4M3: uint8)
DType from_torch(torch::ScalarType type);  // throws qkd::Error for unsupported types; never U16 or F8_E4M3

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  size_t begin = 0;  // byte offsets relative to the start of the data section
  size_t end = 0;
};

class SafetensorsFile {
 public:
  // Maps and validates `path`. Throws qkd::Error("<path>: tensor '<name>': <problem>") on any defect:
  // truncated file, bad header length, invalid JSON, unknown dtype, shape/byte-span mismatch,
  // offsets out of bounds, overlapping or non-contiguous tensors.
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const;
  const std::vector<TensorInfo>& tensors() const;  // in file order (by offset)
  bool contains(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;  // throws qkd::Error when absent
  const std::map<std::string, std::string>& metadata() const;

  // Zero-copy CPU view of the tensor's bytes with its stored dtype (a copy only when the data is
  // misaligned for the dtype, and for U16, widened to int32). Keeps the mapping alive.
  torch::Tensor tensor(const std::string& name) const;
  // Entries [begin, begin + count) along the first dimension, as tensor() hands them out: reads only
  // those bytes of a large tensor. Throws qkd::Error naming the file and tensor when out of range.
  torch::Tensor rows(const std::string& name, int64_t begin, int64_t count) const;

 private:
  struct Mapping;
  std::shared_ptr<Mapping> mapping_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// Writes tensors (any device, made contiguous on CPU) in the given order, atomically.
// Metadata defaults to {"format": "pt"} so the Python safetensors library loads it as PyTorch.
// `stored_as` names tensors stored in another dtype than their own (converted on write; an integer
// tensor stored as U16 must hold values in 0..65535).
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}},
                       const std::map<std::string, DType>& stored_as = {});

// Reads every tensor of a file, as views (see SafetensorsFile::tensor).
NamedTensors read_safetensors(const std::string& path);

}  // namespace qkd::io
