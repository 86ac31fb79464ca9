#include "compressed_tensors_fp4.h"

#include "compressed_tensors_layout.h"
#include "qkd/common/error.h"
#include "qkd/quant/fp4_grid.h"

namespace qkd::exporting::packed_fp4 {

namespace fp4 = quant::fp4;
using nlohmann::json;

namespace {

bool nvfp4(quant::WeightFormat format) { return format == quant::WeightFormat::nvfp4; }

// Two codes per byte along each row, the first in the low nibble (pack_fp4_to_uint8).
torch::Tensor pack_nibbles(const torch::Tensor& codes) {
  const auto pairs = codes.to(torch::kInt).reshape({codes.size(0), -1, 2});
  return (pairs.select(2, 0) + pairs.select(2, 1) * 16).to(torch::kUInt8).contiguous();
}

torch::Tensor unpack_nibbles(const torch::Tensor& packed) {
  const auto bytes = packed.to(torch::kInt);
  return torch::stack({torch::remainder(bytes, 16), torch::div(bytes, 16, "floor")}, -1)
      .reshape({packed.size(0), -1})
      .to(torch::kShort);
}

}  // namespace

std::string format_name(quant::WeightFormat format) {
  return nvfp4(format) ? "nvfp4-pack-quantized" : "mxfp4-pack-quantized";
}

bool is_fp4_format_name(const std::string& name) {
  return name == "nvfp4-pack-quantized" || name == "mxfp4-pack-quantized";
}

json weight_args(const quant::QuantSpec& spec) {
  const bool nv = nvfp4(spec.format);
  return {{"num_bits", 4},
          {"type", "float"},
          {"symmetric", true},
          {"strategy", nv ? "tensor_group" : "group"},
          {"group_size", quant::fp4_group_size(spec.format)},
          {"block_structure", nullptr},
          {"dynamic", false},
          {"actorder", nullptr},
          {"scale_dtype", nv ? "torch.float8_e4m3fn" : "torch.uint8"},
          {"zp_dtype", nullptr},
          {"observer", spec.range == quant::RangeMethod::search ? "mse" : "minmax"},
          {"observer_kwargs", json::object()}};
}

void append_fp4(const IntegerWeight& w, const std::string& module, io::NamedTensors& out,
                std::map<std::string, io::DType>& stored_as) {
  const bool nv = nvfp4(w.format);
  out.emplace_back(module + ".weight_packed", pack_nibbles(w.codes));
  out.emplace_back(module + ".weight_scale", nv ? fp4::e4m3_bytes(w.scale) : fp4::e8m0_bytes(w.scale));
  if (!nv) return;
  stored_as.emplace(module + ".weight_scale", io::DType::f8_e4m3);
  out.emplace_back(module + ".weight_global_scale", w.global_scale.reshape({1}).to(torch::kFloat).contiguous());
}

quant::WeightFormat parse_fp4_scheme(const json& w, const std::string& where) {
  try {
    const auto bits = w.at("num_bits").get<int64_t>();
    const auto strategy = w.value("strategy", std::string());
    const auto group =
        w.contains("group_size") && !w.at("group_size").is_null() ? w.at("group_size").get<int64_t>() : 0;
    if (bits == 4 && strategy == "tensor_group" && group == 16 && w.value("symmetric", true))
      return quant::WeightFormat::nvfp4;
    if (bits == 4 && strategy == "group" && group == 32 && w.value("symmetric", true))
      return quant::WeightFormat::mxfp4;
  } catch (const json::exception& e) {
    fail(where, e.what());
  }
  fail(where, "float weights other than nvfp4 (4 bits, tensor_group of 16) and mxfp4 (4 bits, group of 32)");
}

torch::Tensor dequantize_fp4(const std::string& module, quant::WeightFormat format,
                             const std::map<std::string, torch::Tensor>& tensors, const std::string& source) {
  using packed_layout::require_tensor;
  const auto where = [&](const std::string& t) { return source + ": tensor '" + module + "." + t + "'"; };
  const auto packed = require_tensor(tensors, module + ".weight_packed", source);
  if (packed.scalar_type() != torch::kUInt8 || packed.dim() != 2) fail(where("weight_packed"), "expected 2-D uint8");
  const auto codes = unpack_nibbles(packed);
  const int64_t out = codes.size(0), in = codes.size(1), group = quant::fp4_group_size(format);
  if (in % group != 0)
    fail(where("weight_packed"), std::to_string(in) + " columns are not whole groups of " + std::to_string(group));
  const auto bytes = require_tensor(tensors, module + ".weight_scale", source);
  if (bytes.scalar_type() != torch::kUInt8 || bytes.dim() != 2 || bytes.size(0) != out || bytes.size(1) != in / group)
    fail(where("weight_scale"),
         "expected 1-byte scales [" + std::to_string(out) + ", " + std::to_string(in / group) + "]");
  auto tensor_scale = torch::ones({}, torch::kFloat);
  if (nvfp4(format)) {
    const auto global = require_tensor(tensors, module + ".weight_global_scale", source).to(torch::kFloat);
    if (global.numel() != 1) fail(where("weight_global_scale"), "expected 1 element");
    tensor_scale = torch::ones({}, torch::kFloat) / global.reshape({});
  }
  const auto block = nvfp4(format) ? fp4::e4m3_from_bytes(bytes) : fp4::e8m0_from_bytes(bytes);
  const auto e2m1 = fp4::e2m1_values(codes).reshape({out, in / group, group});
  return fp4::dequantize(e2m1, block.unsqueeze(-1), tensor_scale).reshape({out, in});
}

}  // namespace qkd::exporting::packed_fp4
