#include "qkd/export/compressed_tensors.h"
#include "qkd/common/dtype_names.h"

// compressed-tensors "pack-quantized" (the layout of vLLM's and transformers' compressed-tensors
// loaders), as read in vllm-project/compressed-tensors (compressors/pack_quantized/{base,helpers}.py,
// quantization/utils/helpers.py calculate_range / calculate_qparams, quantization/quant_args.py):
//  - codes are signed in [-2^(b-1), 2^(b-1)-1] for symmetric AND asymmetric schemes; the asymmetric
//    zero point lives in the same signed range, and w = (q - zp) * scale.
//  - pack_to_int32 adds 2^(b-1) to each code (so the stored field is unsigned) and packs along the
//    input dimension, element i of a row at bit i*b of the row's bit stream, little-end first:
//    word k holds elements k*(32/b) .. k*(32/b)+32/b-1, the first in the lowest bits.
//  - weight_zero_point (asymmetric, channel/group) is packed the same way along dim 0 (out_features):
//    int32 [out / (32/b), blocks]; per-tensor asymmetric keeps an int8 [1] zero point.
//  - weight_shape is the unpacked [out, in]; weight_scale is [out, blocks] ([1] per tensor).
// Our asymmetric codes are unsigned (0..2^b-1, zero point in that range): code - 2^(b-1) is the
// library's code and zero - 2^(b-1) its zero point, so the packed fields are our codes unchanged.
// fp4 students write nvfp4-pack-quantized / mxfp4-pack-quantized instead (compressed_tensors_fp4.h).
#include <spdlog/spdlog.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <regex>
#include <set>

#include "compressed_tensors_fp4.h"
#include "compressed_tensors_layout.h"
#include "qkd/checkpoint/hf_config.h"
#include "qkd/common/atomic_file.h"
#include "qkd/common/error.h"
#include "qkd/common/input_file.h"
#include "qkd/common/json_io.h"
#include "qkd/export/integer_weights.h"
#include "qkd/quant/activation_quantizer.h"
#include "qkd/quant/fake_quant.h"
#include "qkd/quant/weight_quantizer.h"

namespace qkd::exporting {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

using namespace packed_layout;  // NOLINT: the layout's helpers, shared with the reader

json weight_args(int64_t bits, const quant::QuantSpec& spec) {
  if (quant::is_fp4(spec.format)) return packed_fp4::weight_args(spec);
  json args = {
      {"num_bits", bits},
      {"type", "int"},
      {"symmetric", spec.symmetric},
      {"strategy", strategy_name(spec.granularity)},
      {"group_size", spec.granularity == quant::Granularity::per_group ? json(spec.group_size) : json(nullptr)},
      {"block_structure", nullptr},
      {"dynamic", false},
      {"actorder", nullptr},
      {"observer", spec.range == quant::RangeMethod::search ? "mse" : "minmax"},
      {"observer_kwargs", json::object()}};
  return args;
}

json activation_args(const quant::QuantSpec& spec) {
  return {{"num_bits", spec.act_bits},
          {"type", "int"},
          {"symmetric", spec.act_symmetric},
          {"strategy", "tensor"},
          {"group_size", nullptr},
          {"block_structure", nullptr},
          {"dynamic", false},
          {"actorder", nullptr},
          {"observer", spec.act_range == quant::ActRangeMethod::percentile ? "percentile" : "minmax"},
          {"observer_kwargs", json::object()}};
}

// The zero-point dtype compressed-tensors uses for an int scheme of `bits` (QuantizationArgs.pytorch_dtype).
torch::Dtype signed_dtype_for(int64_t bits) { return bits <= 8 ? torch::kInt8 : torch::kInt16; }

// The packed tensors of one projection, appended to `out`.
void append_packed(const IntegerWeight& w, torch::Dtype scale_dtype, const std::string& module, io::NamedTensors& out) {
  const int64_t half = int64_t{1} << (w.bits - 1);
  const int64_t max_field = (int64_t{1} << w.bits) - 1;
  // Unsigned fields: symmetric codes are shifted by 2^(b-1); asymmetric ones already are.
  auto fields = w.codes.to(torch::kLong);
  if (w.symmetric) fields = fields + half;
  if (fields.min().item<int64_t>() < 0 || fields.max().item<int64_t>() > max_field)
    fail(w.name, "codes outside the " + std::to_string(w.bits) + "-bit range");
  out.emplace_back(module + ".weight_packed", pack_rows(fields, w.bits));
  auto scale = w.scale;
  if (w.granularity == quant::Granularity::per_tensor) scale = scale.reshape({1});
  out.emplace_back(module + ".weight_scale", scale.to(scale_dtype).contiguous());
  if (!w.symmetric) {
    const auto zero = w.zero.to(torch::kLong);
    if (zero.min().item<int64_t>() < 0 || zero.max().item<int64_t>() > max_field)
      fail(module + ".weight_zero_point", "zero point outside 0.." + std::to_string(max_field) +
                                              " cannot be stored in the format's " + std::to_string(w.bits) +
                                              "-bit field");
    if (w.granularity == quant::Granularity::per_tensor)
      out.emplace_back(module + ".weight_zero_point", (zero.reshape({1}) - half).to(torch::kInt8));
    else
      out.emplace_back(module + ".weight_zero_point", pack_rows(zero.t().contiguous(), w.bits).t().contiguous());
  }
  out.emplace_back(module + ".weight_shape", torch::tensor({w.out_features(), w.in_features()}, torch::kLong));
}

}  // namespace

void check_packed(const ExportSource& source) {
  const auto& spec = source.spec;
  for (const auto& [field, bits] : {std::pair<std::string, int64_t>{"quant.bits", spec.bits},
                                    std::pair<std::string, int64_t>{"quant.lm_head_bits", spec.lm_head_bits}}) {
    if (field == "quant.lm_head_bits" && bits == 0) continue;
    if (!packs_whole_words(bits))
      fail(field,
           std::to_string(bits) +
               "-bit codes cannot be written as pack-quantized: only 2, 4 and 8 bits "
               "fill int32 words exactly (compressed-tensors versions disagree on how other widths straddle words)");
  }
  if (spec.act_bits != 0 && spec.act_bits != 8 && spec.act_bits != 16)
    fail("quant.act_bits", std::to_string(spec.act_bits) + " cannot be expressed");
  for (auto& [module, linear] : source.student.named_linears()) {
    const auto quantizer = weight_quantizer_of(linear);
    if (!quantizer) continue;
    const int64_t bits = quantizer->spec().bits;
    const int64_t per_word = 32 / bits;
    if (module != kLmHead && !ends_with(module, "_proj"))
      fail(module, "quantized module is not a *_proj projection; the config's target \"re:.*_proj$\" would miss it");
    if (linear->in_features() % per_word != 0)
      fail(module + ".weight", "in_features " + std::to_string(linear->in_features()) + " is not a multiple of " +
                                   std::to_string(per_word) + ", the number of " + std::to_string(bits) +
                                   "-bit codes per int32 word of weight_packed");
    if (!quantizer->spec().symmetric && quantizer->spec().granularity != quant::Granularity::per_tensor &&
        linear->out_features() % per_word != 0)
      fail(module + ".weight_zero_point", "out_features " + std::to_string(linear->out_features()) +
                                              " is not a multiple of " + std::to_string(per_word) +
                                              ": asymmetric zero points are packed along the output dimension");
  }
}

void write_packed(const ExportSource& source, const std::string& dir, const ExportOptions& options) {
  check_packed(source);
  auto& student = source.student;
  const auto& spec = source.spec;

  // Which linears are quantized, and with which bits.
  std::map<std::string, model::Linear> quantized;
  std::vector<std::string> ignore;
  bool any_projection = false, lm_head_quantized = false;
  for (auto& [module, linear] : student.named_linears()) {
    if (weight_quantizer_of(linear)) {
      quantized.emplace(module, linear);
      (module == kLmHead ? lm_head_quantized : any_projection) = true;
    } else {
      ignore.push_back(module);
    }
  }
  if (quantized.empty()) fail("quant.modules", "the student has no quantized projection to pack");

  json groups = json::object();
  if (any_projection) {
    groups["group_0"] = {{"targets", {kProjectionTarget}},
                         {"weights", weight_args(spec.bits, spec)},
                         {"input_activations", spec.act_bits > 0 ? activation_args(spec) : json(nullptr)},
                         {"output_activations", nullptr}};
  }
  if (lm_head_quantized) {
    groups[any_projection ? "group_1" : "group_0"] = {{"targets", {kLmHead}},
                                                      {"weights", weight_args(spec.lm_head_bits, spec)},
                                                      {"input_activations", nullptr},
                                                      {"output_activations", nullptr}};
  }
  const auto format = quant::is_fp4(spec.format) ? packed_fp4::format_name(spec.format) : "pack-quantized";
  const json quantization_config = {{"quant_method", "compressed-tensors"},
                                    {"format", format},
                                    {"quantization_status", "compressed"},
                                    {"config_groups", groups},
                                    {"ignore", ignore},
                                    {"kv_cache_scheme", nullptr},
                                    {"global_compression_ratio", nullptr},
                                    {"sparsity_config", json::object()}};

  // Tensors in model order: packed projections in place of their weight.
  io::NamedTensors tensors;
  std::map<std::string, io::DType> stored_as;
  torch::NoGradGuard no_grad;
  for (const auto& item : student.named_parameters(/*recurse=*/true)) {
    const auto& name = item.key();
    if (name.find("_quantizer.") != std::string::npos) continue;
    const auto module = ends_with(name, ".weight") ? name.substr(0, name.size() - 7) : std::string();
    const auto it = quantized.find(module);
    if (it == quantized.end()) {
      tensors.emplace_back(name, item.value().detach().to(torch::kCPU, options.dtype).contiguous());
      continue;
    }
    const auto w = integer_weight(student, name);
    if (w.fp4())
      packed_fp4::append_fp4(w, module, tensors, stored_as);
    else
      append_packed(w, options.dtype, module, tensors);
    if (auto act = std::dynamic_pointer_cast<quant::ActivationQuantizer>(it->second->input_quantizer())) {
      if (!act->calibrated()) fail(module + ".input_quantizer", "not calibrated; nothing to export as input_scale");
      const auto p = act->params();
      tensors.emplace_back(module + ".input_scale", p.scale.reshape({1}).to(torch::kCPU, options.dtype));
      if (p.zero.defined()) {
        const int64_t half = int64_t{1} << (spec.act_bits - 1);
        const auto zero = torch::round(p.zero).to(torch::kCPU, torch::kLong).reshape({1}) - half;
        tensors.emplace_back(module + ".input_zero_point", zero.to(signed_dtype_for(spec.act_bits)));
      }
    }
  }

  auto config = student.config();
  config.torch_dtype = dtype_name(options.dtype);
  auto config_json = checkpoint::llama_config_to_json(config);
  config_json["quantization_config"] = quantization_config;

  write_directory_atomically(dir, format_kind(Format::packed), [&](const std::string& temp) {
    io::write_safetensors((fs::path(temp) / "model.safetensors").string(), tensors, {{"format", "pt"}}, stored_as);
    write_hf_companion_files(source, temp, config_json);
  });
}

}  // namespace qkd::exporting
