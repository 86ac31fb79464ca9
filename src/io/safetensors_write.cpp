// Writing safetensors files: every tensor converted to the dtype it is stored in, the header in the
// given order, the whole file replaced atomically.
#include <algorithm>
#include <set>

#include <nlohmann/json.hpp>

#include "qkd/common/atomic_file.h"
#include "qkd/io/safetensors.h"
#include "safetensors_errors.h"

namespace qkd::io {

namespace {

struct PreparedTensor {
  std::string name;
  DType dtype;
  torch::Tensor data;  // CPU, contiguous
  size_t begin;
  size_t end;
};

// An integer tensor as the int16 bit pattern of its uint16 values (what U16 bytes are).
torch::Tensor to_u16_bits(const std::string& path, const std::string& name, const torch::Tensor& tensor) {
  if (torch::isFloatingType(tensor.scalar_type()) || tensor.scalar_type() == torch::kBool)
    tensor_fail(path, name, "only an integer tensor can be stored as U16");
  const auto wide = tensor.to(torch::kInt64);
  if (wide.numel() > 0 && (wide.min().item<int64_t>() < 0 || wide.max().item<int64_t>() > 65535))
    tensor_fail(path, name, "values outside 0..65535 cannot be stored as U16");
  return torch::where(wide >= 32768, wide - 65536, wide).to(torch::kInt16);
}

// `tensor` converted to the dtype it is stored in.
torch::Tensor converted(const std::string& path, const std::string& name, const torch::Tensor& tensor, DType dtype) {
  if (dtype == DType::u16) return to_u16_bits(path, name, tensor);
  // F8_E4M3 from its bytes: converting values would need a float8 type LibTorch 1.13 lacks.
  if (dtype == DType::f8_e4m3 && tensor.scalar_type() != torch::kUInt8)
    tensor_fail(path, name, "an F8_E4M3 tensor is written from its bytes (uint8)");
  return tensor.to(to_torch(dtype));
}

std::vector<PreparedTensor> prepare_tensors(const std::string& path, const NamedTensors& tensors,
                                            const std::map<std::string, DType>& stored_as) {
  std::vector<PreparedTensor> prepared;
  std::set<std::string> seen;
  size_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__") tensor_fail(path, name, "name is reserved for the metadata entry");
    if (!seen.insert(name).second) tensor_fail(path, name, "given twice");
    if (!tensor.defined()) tensor_fail(path, name, "tensor is undefined");
    if (tensor.layout() != torch::kStrided) tensor_fail(path, name, "only dense (strided) tensors can be written");
    const auto stored = stored_as.find(name);
    DType dtype;
    try {
      dtype = stored != stored_as.end() ? stored->second : from_torch(tensor.scalar_type());
    } catch (const Error& e) {
      tensor_fail(path, name, e.what());
    }
    auto data = tensor.detach().to(torch::kCPU);
    if (stored != stored_as.end()) data = converted(path, name, data, dtype);
    data = data.contiguous();
    const size_t bytes = static_cast<size_t>(data.numel()) * dtype_size(dtype);
    prepared.push_back({name, dtype, data, offset, offset + bytes});
    offset += bytes;
  }
  return prepared;
}

// Header JSON in the given order, padded with spaces so the data section starts 8-byte aligned.
std::string header_text(const std::string& path, const std::vector<PreparedTensor>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  for (const auto& t : tensors) {
    header[t.name] = {
        {"dtype", dtype_name(t.dtype)}, {"shape", t.data.sizes().vec()}, {"data_offsets", {t.begin, t.end}}};
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    header_fail(path, "cannot encode (tensor names and metadata must be UTF-8): " + one_line(e.what()));
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

void write_u64_le(std::ostream& out, uint64_t value) {
  char bytes[8];
  for (char& b : bytes) {
    b = static_cast<char>(value & 0xff);
    value >>= 8;
  }
  out.write(bytes, 8);
}

}  // namespace

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata,
                       const std::map<std::string, DType>& stored_as) {
  for (const auto& [name, _] : stored_as)
    if (std::none_of(tensors.begin(), tensors.end(), [&](const auto& t) { return t.first == name; }))
      tensor_fail(path, name, "named in stored_as but not given");
  const auto prepared = prepare_tensors(path, tensors, stored_as);
  const std::string header = header_text(path, prepared, metadata);
  write_file_atomically(path, [&](std::ostream& out) {
    write_u64_le(out, header.size());
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    for (const auto& t : prepared) {
      if (t.end == t.begin) continue;  // empty tensors may have no storage at all
      out.write(static_cast<const char*>(t.data.data_ptr()), static_cast<std::streamsize>(t.end - t.begin));
    }
  });
}

}  // namespace qkd::io
