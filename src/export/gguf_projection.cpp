#include "gguf_projection.h"

#include <spdlog/spdlog.h>

#include <memory>

#include "qkd/common/error.h"
#include "qkd/export/integer_weights.h"
#include "qkd/quant/fp4_grid.h"
#include "qkd/quant/weight_quantizer.h"

namespace qkd::exporting::gguf {

namespace fp4 = quant::fp4;

namespace {

model::Linear linear_of(model::LlamaForCausalLMImpl& student, const std::string& hf_weight_name) {
  const auto module = hf_weight_name.substr(0, hf_weight_name.size() - std::string(".weight").size());
  for (auto& [name, linear] : student.named_linears())
    if (name == module) return linear;
  fail(hf_weight_name, "no such projection in the student");
}

quant::WeightFormat fp4_format_of(TensorType type) {
  return type == TensorType::nvfp4 ? quant::WeightFormat::nvfp4 : quant::WeightFormat::mxfp4;
}

GridShape grid_of(const IntegerWeight& w) {
  return {w.format, w.bits, w.symmetric && !w.zero.defined(), w.block_length()};
}

torch::Tensor permuted(const torch::Tensor& x, int64_t heads) { return heads > 0 ? permute_rows(x, heads) : x; }

void add_error(ErrorSums& sums, const torch::Tensor& reference, const torch::Tensor& written) {
  sums.diff2 += (reference - written).to(torch::kDouble).pow(2).sum().item<double>();
  sums.ref2 += reference.to(torch::kDouble).pow(2).sum().item<double>();
}

// Integer codes into Q4_0 / Q8_0 with one fp16 scale per 32-block.
std::string integer_blocks(const IntegerWeight& w, TensorType type, int64_t heads, ProjectionReport& report) {
  const auto out = w.out_features(), in = w.in_features();
  // The scale of every 32-block: element (o, i) has scale index (o * in + i) / block_length.
  const auto chunk_start = torch::arange(0, out * in, kBlock, torch::kLong);
  auto chunk_scale =
      w.scale.reshape({-1}).index_select(0, chunk_start.div(w.block_length(), "floor")).reshape({out, in / kBlock});
  const auto codes = permuted(w.codes, heads);
  chunk_scale = permuted(chunk_scale, heads);
  // The error the fp16 scale adds, for the report.
  const auto s16 = chunk_scale.to(torch::kHalf).to(torch::kFloat).repeat_interleave(kBlock, 1);
  add_error(report.sums, permuted(w.dequantize(), heads), codes.to(torch::kFloat) * s16);
  if (!torch::isfinite(chunk_scale.to(torch::kHalf)).all().item<bool>()) fail(w.name, "a scale does not fit fp16");
  return pack_codes(type, codes, chunk_scale);
}

// An fp4 grid's codes into MXFP4 / NVFP4: the block scales as their E8M0 / E4M3 bytes, exactly.
ProjectionData fp4_blocks(const IntegerWeight& w, TensorType type, int64_t heads, ProjectionReport& report) {
  const auto codes = permuted(w.codes, heads);
  const auto scale = permuted(w.scale, heads);
  const auto bytes = type == TensorType::nvfp4 ? fp4::e4m3_bytes(scale) : fp4::e8m0_bytes(scale);
  // What llama.cpp computes back: the decoded bytes times the per-tensor scale.
  const auto decoded = type == TensorType::nvfp4 ? fp4::e4m3_from_bytes(bytes) : fp4::e8m0_from_bytes(bytes);
  const auto group = w.block_length();
  const auto values = fp4::dequantize(fp4::e2m1_values(codes).reshape({codes.size(0), -1, group}),
                                      decoded.unsqueeze(-1), w.tensor_scale);
  add_error(report.sums, permuted(w.dequantize(), heads), values.reshape(codes.sizes()));
  return {pack_fp4(type, codes, bytes), w.tensor_scale.item<float>()};
}

// Any float weight [rows, in] into MXFP4 / NVFP4 by qkd-train's own min-max fp4 quantizer (the one the
// fp4 formats train with; ggml's quantize_row_nvfp4_ref has no per-tensor scale, so small weights
// would fall into E4M3's subnormals).
ProjectionData fp4_requantized(const torch::Tensor& weight, TensorType type, ProjectionReport& report) {
  const auto format = fp4_format_of(type);
  const auto group = quant::fp4_group_size(format);
  const auto blocks = weight.reshape({weight.size(0), -1, group});
  const auto scales = fp4::fp4_scales(blocks, format, quant::RangeMethod::minmax, {});
  const auto e2m1 = fp4::e2m1_elements(blocks, scales);
  add_error(report.sums, weight, fp4::dequantize(e2m1, scales.block, scales.tensor).reshape(weight.sizes()));
  const auto block = scales.block.reshape({weight.size(0), -1});
  const auto bytes = type == TensorType::nvfp4 ? fp4::e4m3_bytes(block) : fp4::e8m0_bytes(block);
  return {pack_fp4(type, fp4::e2m1_codes(e2m1).reshape(weight.sizes()), bytes), scales.tensor.item<float>()};
}

// The dequantized weight as F32 (exact) or F16 (rounded once more, the error reported).
ProjectionData float_values(const torch::Tensor& weight, TensorType type, ProjectionReport& report) {
  auto values = weight.contiguous();
  if (type == TensorType::f16) {
    values = values.to(torch::kHalf);
    add_error(report.sums, weight, values.to(torch::kFloat));
  }
  return {std::string(static_cast<const char*>(values.data_ptr()), values.numel() * values.element_size()), 1.0f};
}

ProjectionData requantized(const torch::Tensor& weight, TensorType type, ProjectionReport& report) {
  report.requantized = true;
  if (is_fp4_type(type)) return fp4_requantized(weight, type, report);
  return {quantize_floats(type, weight, report.sums), 1.0f};
}

}  // namespace

TensorType projection_tensor_type(GgufType resolved) {
  switch (resolved) {
    case GgufType::q8_0: return TensorType::q8_0;
    case GgufType::mxfp4: return TensorType::mxfp4;
    case GgufType::nvfp4: return TensorType::nvfp4;
    case GgufType::f16: return TensorType::f16;
    case GgufType::f32: return TensorType::f32;
    default: return TensorType::q4_0;
  }
}

std::string grid_misfit(const GridShape& grid, TensorType type) {
  if (!is_block_type(type)) return "";  // dequantized: any grid
  const bool fp4_grid = quant::is_fp4(grid.format);
  if (is_fp4_type(type)) {
    if (grid.format == fp4_format_of(type)) return "";
    if (fp4_grid) return quant::weight_formats().name(grid.format) + " grid";
    return (grid.symmetric ? "" : "asymmetric ") + std::to_string(grid.bits) + "-bit integer grid";
  }
  if (fp4_grid) return quant::weight_formats().name(grid.format) + " grid (4-bit float, not integer levels)";
  if (!grid.symmetric) return "asymmetric " + std::to_string(grid.bits) + "-bit grid";
  if (type == TensorType::q4_0 && grid.bits > 4) return std::to_string(grid.bits) + "-bit grid";
  if (grid.block_length % kBlock != 0)
    return "groups of " + std::to_string(grid.block_length) + " (not a multiple of 32)";
  return "";
}

torch::Tensor permute_rows(const torch::Tensor& x, int64_t heads) {
  std::vector<int64_t> shape = {heads, 2, x.size(0) / heads / 2};
  for (int64_t d = 1; d < x.dim(); ++d) shape.push_back(x.size(d));
  return x.reshape(shape).transpose(1, 2).reshape(x.sizes()).contiguous();
}

ProjectionData projection_data(model::LlamaForCausalLMImpl& student, const std::string& hf_name, TensorType type,
                               int64_t heads, ProjectionReport& report) {
  report.name = hf_name;
  auto linear = linear_of(student, hf_name);
  if (!std::dynamic_pointer_cast<quant::WeightQuantizer>(linear->weight_quantizer())) {
    const auto weight = permuted(linear->weight.detach().to(torch::kCPU, torch::kFloat), heads);
    if (!is_block_type(type)) return float_values(weight, type, report);
    report.why = "float (not quantized by the student)";
    return requantized(weight, type, report);
  }
  const auto w = integer_weight(student, hf_name);
  if (!is_block_type(type)) return float_values(permuted(w.dequantize(), heads), type, report);
  report.why = grid_misfit(grid_of(w), type);
  if (!report.why.empty()) return requantized(permuted(w.dequantize(), heads), type, report);
  if (is_fp4_type(type)) return fp4_blocks(w, type, heads, report);
  return {integer_blocks(w, type, heads, report), 1.0f};
}

void log_projection_reports(const std::vector<ProjectionReport>& reports, TensorType type, const std::string& type_name) {
  ErrorSums total;
  const ProjectionReport* worst = nullptr;
  std::vector<std::string> requantized;
  std::string reasons;
  for (const auto& r : reports) {
    total.diff2 += r.sums.diff2;
    total.ref2 += r.sums.ref2;
    if (!r.requantized) continue;
    requantized.push_back(r.name);
    if (reasons.find(r.why) == std::string::npos) reasons += (reasons.empty() ? "" : "; ") + r.why;
    if (!worst || r.sums.relative() > worst->sums.relative()) worst = &r;
  }
  if (!is_block_type(type)) {
    spdlog::info("gguf: {} projections written dequantized ({}); relative weight error {:.3g}", reports.size(),
                 type_name, total.relative());
    return;
  }
  if (requantized.empty()) {
    spdlog::info(
        "gguf: {} projections written with the student's own codes and scales ({}); the scale "
        "encoding adds a relative weight error of {:.3g}",
        reports.size(), type_name, total.relative());
    return;
  }
  spdlog::warn(
      "gguf: {} of {} projections re-quantized to {} because their grid does not fit it ({}); this adds "
      "weight error ||W_student - W_gguf|| / ||W_student||: worst {:.4g} ({}), overall {:.4g}",
      requantized.size(), reports.size(), type_name, reasons, worst->sums.relative(), worst->name, total.relative());
}

}  // namespace qkd::exporting::gguf
