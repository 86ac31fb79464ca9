#include "qkd/export/aimet_encodings.h"

// AIMET quantization encodings (quic/aimet: Docs "Quantization Encoding Specification" for 0.4 .. 0.6.1,
// aimet_common AffineEncoding._to_0_6_1 / _to_1_0_0 for the 1.0.0 list form). Both versions store the
// offset in AIMET's unsigned convention: a value x maps to q = round(x / scale) - offset in
// [0, 2^b - 1] and back to (q + offset) * scale, so offset = -zero_point for our asymmetric grids and
// offset = -2^(b-1) for symmetric ones (codes shifted into the unsigned range); min = offset * scale,
// max = (offset + 2^b - 1) * scale.
//  - per channel / per tensor: version 0.6.1, {"param_encodings": {name: [one entry per output channel
//    (or one)]}, "activation_encodings": {name: [entry]}}, entries {bitwidth, dtype "int",
//    is_symmetric "True"/"False", scale, offset, min, max}.
//  - per group: version 1.0.0 (the first with block-wise encodings), lists of {name, enc_type
//    "PER_BLOCK", block_size, dtype "INT", bw, is_sym, scale [out * in/g], offset [...]} with the
//    blocks of a [out, in] weight in row-major (out, block) order.
#include <cmath>
#include <filesystem>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/checkpoint/hf_config.h"
#include "qkd/common/atomic_file.h"
#include "qkd/common/error.h"
#include "qkd/export/integer_weights.h"
#include "qkd/quant/activation_quantizer.h"
#include "qkd/quant/weight_quantizer.h"

namespace qkd::exporting {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct Entry {
  double scale;
  int64_t offset;
  int64_t bits;
  bool symmetric;
  double min() const { return static_cast<double>(offset) * scale; }
  double max() const { return static_cast<double>(offset + (int64_t{1} << bits) - 1) * scale; }
};

json entry_0_6_1(const Entry& e) {
  return {{"bitwidth", e.bits}, {"dtype", "int"}, {"is_symmetric", e.symmetric ? "True" : "False"},
          {"max", e.max()},     {"min", e.min()}, {"offset", e.offset},
          {"scale", e.scale}};
}

// Per block: scale and AIMET offset (-zero, or -2^(b-1) when symmetric), row-major over [rows, blocks].
std::vector<Entry> weight_entries(const IntegerWeight& w) {
  const auto scale = w.scale.contiguous();
  const auto* s = scale.data_ptr<float>();
  torch::Tensor zero = w.zero.defined() ? w.zero.to(torch::kLong).contiguous() : torch::Tensor();
  std::vector<Entry> entries;
  entries.reserve(scale.numel());
  for (int64_t i = 0; i < scale.numel(); ++i) {
    const int64_t offset = w.symmetric ? -(int64_t{1} << (w.bits - 1)) : -zero.data_ptr<int64_t>()[i];
    entries.push_back({static_cast<double>(s[i]), offset, w.bits, w.symmetric});
  }
  return entries;
}

}  // namespace

void check_encodings(const ExportSource& source) {
  const auto& spec = source.spec;
  if (quant::is_fp4(spec.format))
    fail("quant.format", quant::weight_formats().name(spec.format) +
                             " cannot be expressed: AIMET encodings describe integer grids (scale and offset)");
  // The encoding specification bounds bitwidth to 4..32.
  if (spec.bits < 4)
    fail("quant.bits", std::to_string(spec.bits) + " bits cannot be expressed: AIMET encodings need bitwidth >= 4");
  if (spec.lm_head_bits != 0 && spec.lm_head_bits < 4)
    fail("quant.lm_head_bits",
         std::to_string(spec.lm_head_bits) + " bits cannot be expressed: AIMET encodings need bitwidth >= 4");
  for (auto& [module, linear] : source.student.named_linears()) {
    if (!std::dynamic_pointer_cast<quant::WeightQuantizer>(linear->weight_quantizer())) continue;
    if (auto act = std::dynamic_pointer_cast<quant::ActivationQuantizer>(linear->input_quantizer()))
      if (!act->calibrated()) fail(module + ".input_quantizer", "not calibrated; no activation encoding to export");
  }
}

void write_encodings(const ExportSource& source, const std::string& dir, const ExportOptions& /*options*/) {
  check_encodings(source);
  auto& student = source.student;
  const auto& spec = source.spec;
  const bool blockwise = spec.granularity == quant::Granularity::per_group;

  json params = blockwise ? json::array() : json::object();
  json activations = blockwise ? json::array() : json::object();
  io::NamedTensors tensors;
  torch::NoGradGuard no_grad;
  std::map<std::string, model::Linear> linears;
  for (auto& [module, linear] : student.named_linears()) linears.emplace(module, linear);

  for (const auto& item : student.named_parameters(/*recurse=*/true)) {
    const auto& name = item.key();
    if (name.find("_quantizer.") != std::string::npos) continue;
    const bool is_weight = name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0;
    const auto module = is_weight ? name.substr(0, name.size() - 7) : std::string();
    const auto it = linears.find(module);
    if (it == linears.end() || !std::dynamic_pointer_cast<quant::WeightQuantizer>(it->second->weight_quantizer())) {
      tensors.emplace_back(name, item.value().detach().to(torch::kCPU, torch::kFloat).contiguous());
      continue;
    }
    const auto w = integer_weight(student, name);
    // The fp32 weight the encodings apply to: exactly the student's grid values.
    tensors.emplace_back(name, w.dequantize().contiguous());
    const auto entries = weight_entries(w);
    if (blockwise) {
      json scale = json::array(), offset = json::array();
      for (const auto& e : entries) {
        scale.push_back(e.scale);
        offset.push_back(e.offset);
      }
      params.push_back({{"name", name},
                        {"enc_type", "PER_BLOCK"},
                        {"block_size", w.block_length()},
                        {"dtype", "INT"},
                        {"bw", w.bits},
                        {"is_sym", w.symmetric},
                        {"scale", scale},
                        {"offset", offset}});
    } else {
      json list = json::array();
      for (const auto& e : entries) list.push_back(entry_0_6_1(e));
      params[name] = list;
    }
    if (auto act = std::dynamic_pointer_cast<quant::ActivationQuantizer>(it->second->input_quantizer())) {
      const auto p = act->params();
      const double scale = p.scale.item<float>();
      const int64_t offset = p.zero.defined() ? -static_cast<int64_t>(std::llround(p.zero.item<float>()))
                                              : -(int64_t{1} << (spec.act_bits - 1));
      const Entry e{scale, offset, spec.act_bits, spec.act_symmetric};
      const auto tensor_name = module + ".input";
      if (blockwise)
        activations.push_back({{"name", tensor_name},
                               {"enc_type", "PER_TENSOR"},
                               {"dtype", "INT"},
                               {"bw", e.bits},
                               {"is_sym", e.symmetric},
                               {"scale", {e.scale}},
                               {"offset", {e.offset}}});
      else
        activations[tensor_name] = json::array({entry_0_6_1(e)});
    }
  }

  const json quantizer_args = {
      {"activation_bitwidth", spec.act_bits > 0 ? spec.act_bits : 32},
      {"dtype", "int"},
      {"is_symmetric", spec.symmetric ? "True" : "False"},
      {"param_bitwidth", spec.bits},
      {"per_channel_quantization", spec.granularity == quant::Granularity::per_tensor ? "False" : "True"},
      {"quant_scheme", spec.range == quant::RangeMethod::search ? "post_training_tf_enhanced" : "post_training_tf"}};
  const json encodings = {{"version", blockwise ? "1.0.0" : "0.6.1"},
                          {"activation_encodings", activations},
                          {"param_encodings", params},
                          {"excluded_layers", json::array()},
                          {"quantizer_args", quantizer_args}};

  auto config = student.config();
  config.torch_dtype = "float32";
  const auto config_json = checkpoint::llama_config_to_json(config);

  write_directory_atomically(dir, format_kind(Format::encodings), [&](const std::string& temp) {
    io::write_safetensors((fs::path(temp) / "model.safetensors").string(), tensors);
    write_text_atomically((fs::path(temp) / "model.encodings").string(), encodings.dump(2) + "\n");
    write_hf_companion_files(source, temp, config_json);
  });
}

}  // namespace qkd::exporting
