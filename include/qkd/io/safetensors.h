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

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

std::string dtype_name(DType dtype);  // "F32", ...
size_t dtype_size(DType dtype);       // bytes per element
torch::ScalarType to_torch(DType dtype);
DType from_torch(torch::ScalarType type);  // throws qkd::Error for unsupported types

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
  // misaligned for the dtype). Keeps the mapping alive.
  torch::Tensor tensor(const std::string& name) const;

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
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// Reads every tensor of a file, as views (see SafetensorsFile::tensor).
NamedTensors read_safetensors(const std::string& path);

}  // namespace qkd::io
