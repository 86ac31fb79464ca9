#include "qkd/io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "qkd/common/atomic_file.h"
#include "qkd/common/error.h"
#include "qkd/common/mapped_file.h"
#include "safetensors_errors.h"

// safetensors stores little-endian data; tensors are handed out as views of the raw bytes.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; a big-endian host would need byte swapping"
#endif

namespace qkd::io {

using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// dtypes

namespace {

struct DTypeSpec {
  DType dtype;
  const char* name;
  size_t size;
  torch::ScalarType torch_type;
};

const DTypeSpec kDTypes[] = {
    {DType::f64, "F64", 8, torch::kFloat64},       {DType::f32, "F32", 4, torch::kFloat32},
    {DType::f16, "F16", 2, torch::kFloat16},       {DType::bf16, "BF16", 2, torch::kBFloat16},
    {DType::i64, "I64", 8, torch::kInt64},         {DType::i32, "I32", 4, torch::kInt32},
    {DType::i16, "I16", 2, torch::kInt16},         {DType::i8, "I8", 1, torch::kInt8},
    {DType::u8, "U8", 1, torch::kUInt8},           {DType::boolean, "BOOL", 1, torch::kBool},
    {DType::u16, "U16", 2, torch::kInt32},          // widened: LibTorch 1.13 has no uint16
    {DType::f8_e4m3, "F8_E4M3", 1, torch::kUInt8},  // its bytes: LibTorch 1.13 has no float8
};

const DTypeSpec& spec_of(DType dtype) {
  for (const auto& spec : kDTypes) {
    if (spec.dtype == dtype) return spec;
  }
  throw Error("dtype: invalid DType value " + std::to_string(static_cast<int>(dtype)));
}

const DTypeSpec* spec_named(const std::string& name) {
  for (const auto& spec : kDTypes) {
    if (name == spec.name) return &spec;
  }
  return nullptr;
}

}  // namespace

std::string dtype_name(DType dtype) { return spec_of(dtype).name; }
size_t dtype_size(DType dtype) { return spec_of(dtype).size; }
torch::ScalarType to_torch(DType dtype) { return spec_of(dtype).torch_type; }

DType from_torch(torch::ScalarType type) {
  for (const auto& spec : kDTypes) {
    if (spec.torch_type == type && spec.dtype != DType::u16 && spec.dtype != DType::f8_e4m3) return spec.dtype;
  }
  throw Error(std::string("dtype: torch dtype ") + c10::toString(type) + " has no safetensors equivalent");
}

namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << "]";
  return out.str();
}

std::string span_text(size_t begin, size_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// mapping

// The private type the header declares: the mapped file plus where its data section starts. Views
// are zero-copy; the copy-on-write mapping lets an in-place op on a view change a private page
// instead of crashing on a read-only one.
struct SafetensorsFile::Mapping {
  std::shared_ptr<MappedFile> file;
  size_t data_start = 0;  // 8 + header length
};

namespace {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the limit the reference implementation uses
constexpr int kMaxJsonDepth = 8;                   // the format needs 3; deeper input is hostile

uint64_t read_u64_le(const unsigned char* bytes) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | bytes[i];
  return value;
}

// Validates the 8-byte header length against the file and returns it.
size_t header_length(const MappedFile& map) {
  const uint64_t length = read_u64_le(map.data());
  if (length > map.size() - 8) {
    header_fail(map.path(), "length prefix " + std::to_string(length) + " exceeds the file size (" +
                                std::to_string(map.size()) + " bytes); truncated or not a safetensors file");
  }
  if (length > kMaxHeaderBytes) {
    header_fail(map.path(), "length prefix " + std::to_string(length) + " exceeds the 100 MB limit");
  }
  return static_cast<size_t>(length);
}

// ---------------------------------------------------------------------------------------------
// header parsing

// nlohmann keeps the last of duplicate keys silently; the parser callback sees every key, so a
// duplicate tensor name (or field) is caught instead of silently picking one.
class DuplicateKeyGuard {
 public:
  explicit DuplicateKeyGuard(const std::string& path) : path_(path) {}

  bool operator()(int depth, json::parse_event_t event, json& parsed) {
    if (depth > kMaxJsonDepth)
      header_fail(path_, "JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    if (event == json::parse_event_t::object_start && depth == 1) entry_keys_.clear();
    if (event != json::parse_event_t::key) return true;
    const std::string key = parsed.get<std::string>();
    if (depth == 1) {
      if (!names_.insert(key).second) tensor_fail(path_, key, "appears twice in the header");
      current_ = key;
    }
    if (depth == 2 && !entry_keys_.insert(key).second) {
      tensor_fail(path_, current_, "field '" + one_line(key) + "' appears twice");
    }
    return true;
  }

 private:
  std::string path_;
  std::string current_;  // the top-level entry being parsed
  std::set<std::string> names_;
  std::set<std::string> entry_keys_;
};

json parse_header_json(const MappedFile& map, size_t length) {
  const char* begin = reinterpret_cast<const char*>(map.data()) + 8;
  json header;
  try {
    DuplicateKeyGuard guard(map.path());
    header = json::parse(begin, begin + length, std::ref(guard));
  } catch (const json::exception& e) {
    header_fail(map.path(), "invalid JSON: " + one_line(e.what()));
  }
  if (!header.is_object()) header_fail(map.path(), std::string("must be a JSON object, found ") + header.type_name());
  return header;
}

std::map<std::string, std::string> parse_metadata(const std::string& path, const json& header) {
  std::map<std::string, std::string> metadata;
  const auto it = header.find("__metadata__");
  if (it == header.end()) return metadata;
  if (!it->is_object()) fail(path, "__metadata__: not a JSON object");
  for (const auto& [key, value] : it->items()) {
    if (!value.is_string()) fail(path, "__metadata__: value of '" + one_line(key) + "' is not a string");
    metadata[key] = value.get<std::string>();
  }
  return metadata;
}

uint64_t non_negative_integer(const json& value, const std::string& path, const std::string& name,
                              const std::string& field) {
  if (!value.is_number_unsigned()) {
    tensor_fail(path, name, field + " must hold non-negative integers, found " + one_line(value.dump()).substr(0, 40));
  }
  return value.get<uint64_t>();
}

const json& required_field(const json& entry, const char* field, const std::string& path, const std::string& name) {
  const auto it = entry.find(field);
  if (it == entry.end()) tensor_fail(path, name, std::string("missing '") + field + "'");
  return *it;
}

DType parse_dtype(const json& entry, const std::string& path, const std::string& name) {
  const json& value = required_field(entry, "dtype", path, name);
  if (!value.is_string()) tensor_fail(path, name, "dtype is not a string");
  const std::string text = value.get<std::string>();
  const DTypeSpec* spec = spec_named(text);
  if (spec == nullptr) {
    tensor_fail(
        path, name,
        "unknown dtype '" + one_line(text) + "' (supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL U16 F8_E4M3)");
  }
  return spec->dtype;
}

std::vector<int64_t> parse_shape(const json& entry, const std::string& path, const std::string& name) {
  const json& value = required_field(entry, "shape", path, name);
  if (!value.is_array()) tensor_fail(path, name, "shape is not an array");
  std::vector<int64_t> shape;
  for (const auto& dim : value) {
    const uint64_t d = non_negative_integer(dim, path, name, "shape");
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      tensor_fail(path, name, "shape dimension too large");
    shape.push_back(static_cast<int64_t>(d));
  }
  return shape;
}

void parse_offsets(const json& entry, TensorInfo& info, const std::string& path) {
  const json& value = required_field(entry, "data_offsets", path, info.name);
  if (!value.is_array() || value.size() != 2) tensor_fail(path, info.name, "data_offsets is not an array [begin, end]");
  const uint64_t begin = non_negative_integer(value[0], path, info.name, "data_offsets");
  const uint64_t end = non_negative_integer(value[1], path, info.name, "data_offsets");
  if (begin > end) tensor_fail(path, info.name, "data_offsets " + span_text(begin, end) + " have begin > end");
  info.begin = static_cast<size_t>(begin);
  info.end = static_cast<size_t>(end);
}

// Bytes the shape needs, or throws when the product overflows.
uint64_t byte_count(const TensorInfo& info, const std::string& path) {
  uint64_t bytes = dtype_size(info.dtype);
  for (const int64_t dim : info.shape) {
    if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(dim), &bytes)) {
      tensor_fail(path, info.name, "shape " + shape_text(info.shape) + " is too large");
    }
  }
  return bytes;
}

TensorInfo parse_entry(const std::string& path, const std::string& name, const json& entry, size_t data_size) {
  if (!entry.is_object()) tensor_fail(path, name, "entry is not a JSON object");
  TensorInfo info;
  info.name = name;
  info.dtype = parse_dtype(entry, path, name);
  info.shape = parse_shape(entry, path, name);
  parse_offsets(entry, info, path);
  if (info.end > data_size) {
    tensor_fail(path, name,
                "data_offsets " + span_text(info.begin, info.end) + " extend past the end of the data section (" +
                    std::to_string(data_size) + " bytes); file truncated?");
  }
  const uint64_t needed = byte_count(info, path);
  if (needed != info.end - info.begin) {
    tensor_fail(path, name,
                "shape " + shape_text(info.shape) + " of " + dtype_name(info.dtype) + " needs " +
                    std::to_string(needed) + " bytes but data_offsets " + span_text(info.begin, info.end) + " span " +
                    std::to_string(info.end - info.begin));
  }
  return info;
}

// The spec requires the tensors to tile the data section exactly: no overlap, no gap, no tail.
void check_coverage(const std::string& path, const std::vector<TensorInfo>& sorted, size_t data_size) {
  size_t expected = 0;
  const TensorInfo* previous = nullptr;
  for (const auto& info : sorted) {
    if (info.begin < expected) {
      tensor_fail(path, info.name,
                  "data_offsets " + span_text(info.begin, info.end) + " overlap tensor '" + one_line(previous->name) +
                      "' " + span_text(previous->begin, previous->end));
    }
    if (info.begin > expected) {
      tensor_fail(path, info.name,
                  "gap of " + std::to_string(info.begin - expected) + " bytes before this tensor (data_offsets " +
                      span_text(info.begin, info.end) + ")");
    }
    expected = info.end;
    previous = &info;
  }
  if (expected == data_size) return;
  if (previous == nullptr)
    header_fail(path, "no tensors, but the data section holds " + std::to_string(data_size) + " bytes");
  tensor_fail(path, previous->name,
              std::to_string(data_size - expected) + " bytes after this last tensor are not covered by any tensor");
}

std::vector<TensorInfo> parse_tensors(const std::string& path, const json& header, size_t data_size) {
  std::vector<TensorInfo> tensors;
  for (const auto& [name, entry] : header.items()) {
    if (name != "__metadata__") tensors.push_back(parse_entry(path, name, entry, data_size));
  }
  // Empty tensors sort before a non-empty one at the same offset, so they never count as overlap.
  std::sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  check_coverage(path, tensors, data_size);
  return tensors;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile file;
  file.mapping_ = std::make_shared<Mapping>();
  file.mapping_->file = MappedFile::open(path);
  const auto& mapped = *file.mapping_->file;
  if (mapped.size() < 8)
    header_fail(path, "file is " + std::to_string(mapped.size()) + " bytes, shorter than the 8-byte header length");
  const size_t length = header_length(mapped);
  file.mapping_->data_start = 8 + length;
  const json header = parse_header_json(mapped, length);
  file.metadata_ = parse_metadata(path, header);
  file.tensors_ = parse_tensors(path, header, mapped.size() - file.mapping_->data_start);
  for (size_t i = 0; i < file.tensors_.size(); ++i) file.index_[file.tensors_[i].name] = i;
  return file;
}

const std::string& SafetensorsFile::path() const {
  static const std::string none;
  return mapping_ ? mapping_->file->path() : none;
}

const std::vector<TensorInfo>& SafetensorsFile::tensors() const { return tensors_; }
bool SafetensorsFile::contains(const std::string& name) const { return index_.count(name) != 0; }
const std::map<std::string, std::string>& SafetensorsFile::metadata() const { return metadata_; }

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  const auto it = index_.find(name);
  if (it == index_.end()) tensor_fail(path(), name, "not found in file");
  return tensors_[it->second];
}

namespace {

// torch assumes bool bytes are 0 or 1; anything else would be a silently wrong tensor.
void check_bool_bytes(const unsigned char* bytes, size_t count, const std::string& path, const std::string& name) {
  for (size_t i = 0; i < count; ++i) {
    if (bytes[i] > 1)
      tensor_fail(path, name, "BOOL byte " + std::to_string(i) + " has value " + std::to_string(bytes[i]));
  }
}

}  // namespace

namespace {

// U16 elements widened to int32 (LibTorch 1.13 has no uint16 type).
torch::Tensor widen_u16(const unsigned char* data, const std::vector<int64_t>& shape) {
  auto out = torch::empty(shape, torch::kInt32);
  int32_t* values = out.data_ptr<int32_t>();
  for (int64_t i = 0; i < out.numel(); ++i) {
    uint16_t v;
    std::memcpy(&v, data + 2 * i, 2);
    values[i] = v;
  }
  return out;
}

}  // namespace

torch::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const TensorInfo& meta = info(name);
  return rows(name, 0, meta.shape.empty() ? 1 : meta.shape[0]);
}

torch::Tensor SafetensorsFile::rows(const std::string& name, int64_t begin, int64_t count) const {
  const TensorInfo& meta = info(name);
  std::vector<int64_t> shape = meta.shape;
  const int64_t total = shape.empty() ? 1 : shape[0];
  if (begin < 0 || count < 0 || begin > total || count > total - begin)
    tensor_fail(path(), name,
                "rows [" + std::to_string(begin) + ", " + std::to_string(begin + count) + ") outside [0, " +
                    std::to_string(total) + ")");
  const size_t row_bytes = total == 0 ? 0 : (meta.end - meta.begin) / static_cast<size_t>(total);
  if (!shape.empty()) shape[0] = count;  // a scalar is handed out whole
  const auto options = torch::TensorOptions().dtype(to_torch(meta.dtype));
  const size_t bytes = row_bytes * static_cast<size_t>(count);
  if (bytes == 0) return torch::empty(shape, options);
  unsigned char* data = mapping_->file->data() + mapping_->data_start + meta.begin + row_bytes * begin;
  if (meta.dtype == DType::boolean) check_bool_bytes(data, bytes, path(), name);
  if (meta.dtype == DType::u16) return widen_u16(data, shape);
  if (reinterpret_cast<uintptr_t>(data) % dtype_size(meta.dtype) != 0) {
    // Misaligned (odd header length or mixed dtypes): element loads need alignment, so copy.
    auto copy = torch::empty(shape, options);
    std::memcpy(copy.data_ptr(), data, bytes);
    return copy;
  }
  auto keep_alive = mapping_;
  return torch::from_blob(
      data, shape, [keep_alive](void*) {}, options);
}

NamedTensors read_safetensors(const std::string& path) {
  const auto file = SafetensorsFile::open(path);
  NamedTensors out;
  for (const auto& info : file.tensors()) out.emplace_back(info.name, file.tensor(info.name));
  return out;
}

}  // namespace qkd::io
