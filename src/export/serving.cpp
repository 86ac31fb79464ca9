#include "qkd/export/serving.h"

#include <memory>
#include <utility>

#include "gguf_format.h"
#include "gguf_projection.h"
#include "qkd/quant/weight_quantizer.h"

namespace qkd::exporting {

namespace {

struct Layer {
  std::string name;
  int64_t out = 0, in = 0;
  quant::QuantSpec grid;  // the quantizer's own spec (lm_head: its bits)
};

std::vector<Layer> quantized_layers(model::LlamaForCausalLMImpl& student) {
  std::vector<Layer> layers;
  for (auto& [name, linear] : student.named_linears())
    if (auto q = std::dynamic_pointer_cast<quant::WeightQuantizer>(linear->weight_quantizer()))
      layers.push_back({name, linear->out_features(), linear->in_features(), q->spec()});
  return layers;
}

std::vector<std::string> float_layers(model::LlamaForCausalLMImpl& student) {
  std::vector<std::string> names;
  for (auto& [name, linear] : student.named_linears())
    if (!linear->weight_quantizer() && name != "lm_head") names.push_back(name);
  return names;
}

// Rules and the layers that break each, in the order first seen.
class RuleBook {
 public:
  void check(bool broken, const std::string& rule, const std::string& layer) {
    if (!broken) return;
    for (auto& [r, layers] : rules_)
      if (r == rule) return layers.push_back(layer);
    rules_.push_back({rule, {layer}});
  }
  bool clean() const { return rules_.empty(); }
  void append_to(std::vector<std::string>& warnings, const std::string& who) const {
    for (const auto& [rule, layers] : rules_) warnings.push_back(who + ": " + rule + ": " + named(layers));
  }

 private:
  static std::string named(const std::vector<std::string>& layers) {
    std::string out;
    for (size_t i = 0; i < layers.size() && i < 4; ++i) out += (i ? ", " : "") + layers[i];
    if (layers.size() > 4) out += " and " + std::to_string(layers.size() - 4) + " more";
    return out;
  }
  std::vector<std::pair<std::string, std::vector<std::string>>> rules_;
};

// -1 per channel (vLLM's spelling), the group size per group, 0 per tensor.
int64_t vllm_group(const quant::QuantSpec& g) {
  if (g.granularity == quant::Granularity::per_channel) return -1;
  return g.granularity == quant::Granularity::per_group ? g.group_size : 0;
}

void check_marlin(const Layer& l, RuleBook& rules) {
  const auto group = vllm_group(l.grid);
  rules.check(group != -1 && group != 32 && group != 64 && group != 128,
              "group size " + std::to_string(group) + " is not -1, 32, 64 or 128 (MARLIN_SUPPORTED_GROUP_SIZES)",
              l.name);
  rules.check(!l.grid.symmetric && l.grid.bits != 4,
              "zero points only with 4-bit weights (uint4; query_marlin_supported_quant_types)", l.name);
  rules.check(l.out % 64 != 0, "out_features not a multiple of 64 (GPTQ_MARLIN_MIN_THREAD_N)", l.name);
  rules.check(l.in % 128 != 0, "in_features not a multiple of 128 (GPTQ_MARLIN_MIN_THREAD_K)", l.name);
}

void check_machete(const Layer& l, RuleBook& rules) {
  const auto group = vllm_group(l.grid);
  rules.check(group != -1 && group != 128,
              "group size " + std::to_string(group) + " is not -1 or 128 (MACHETE_SUPPORTED_GROUP_SIZES)", l.name);
  rules.check(l.in % 64 != 0, "in_features not a multiple of 64 (MACHETE_PREPACKED_BLOCK_SHAPE)", l.name);
  rules.check(l.out % 128 != 0, "out_features not a multiple of 128 (MACHETE_PREPACKED_BLOCK_SHAPE)", l.name);
}

// Whether vLLM has a compressed-tensors scheme for the layer's integer weights at all.
void check_vllm_scheme(const Layer& l, int64_t act_bits, RuleBook& rules) {
  const auto& g = l.grid;
  rules.check(g.bits != 4 && g.bits != 8, std::to_string(g.bits) + "-bit weights: WNA16 takes 4 or 8 bits", l.name);
  if (act_bits == 0 || l.name == "lm_head")
    return rules.check(g.granularity == quant::Granularity::per_tensor,
                       "per-tensor integer weights: WNA16 takes strategy channel or group (_is_wNa16_group_channel)",
                       l.name);
  const bool w8a8 = act_bits == 8 && g.bits == 8 && g.symmetric && g.granularity != quant::Granularity::per_group;
  rules.check(!w8a8,
              "static per-tensor int" + std::to_string(act_bits) +
                  " inputs: only W8A8 int8 with symmetric per-channel or per-tensor weights has a scheme "
                  "(_is_static_tensor_w8a8)",
              l.name);
}

void packed_int(const ExportSource& source, ServingReport& report) {
  RuleBook scheme, marlin, machete;
  bool all_groups = true;
  for (const auto& l : quantized_layers(source.student)) {
    check_vllm_scheme(l, source.spec.act_bits, scheme);
    all_groups = all_groups && l.grid.granularity == quant::Granularity::per_group;
    if (source.spec.act_bits > 0) continue;  // the W8A8 int8 kernels have no such shape rules
    check_marlin(l, marlin);
    check_machete(l, machete);
  }
  scheme.append_to(report.warnings, "vLLM (no compressed-tensors scheme)");
  if (scheme.clean() && source.spec.act_bits > 0) {
    report.runtimes.push_back("vLLM (compressed-tensors W8A8 int8, static per-tensor inputs)");
  } else if (scheme.clean()) {
    marlin.append_to(report.warnings, "vLLM Marlin (CUDA sm80+)");
    machete.append_to(report.warnings, "vLLM Machete (Hopper sm90)");
    if (marlin.clean()) report.runtimes.push_back("vLLM (compressed-tensors WNA16, Marlin kernel, CUDA sm80+)");
    if (machete.clean()) report.runtimes.push_back("vLLM on Hopper (compressed-tensors WNA16, Machete kernel)");
  }
  report.runtimes.push_back("transformers with compressed-tensors (decompressed to float)");
  // convert_hf_to_gguf.py asserts strategy "group" for pack-quantized (zero points are read too).
  if (all_groups)
    report.runtimes.push_back("llama.cpp's convert_hf_to_gguf.py (strategy group; dequantized, then re-quantized)");
}

void packed_fp4(const ExportSource& source, const ExportOptions& options, ServingReport& report) {
  if (source.spec.format == quant::WeightFormat::nvfp4) {
    report.runtimes.push_back(
        "vLLM (CompressedTensorsW4A16Fp4: Marlin FP4 on CUDA sm75+; weight-only, no input scales)");
    report.runtimes.push_back(
        "llama.cpp's convert_hf_to_gguf.py (nvfp4-pack-quantized to NVFP4, codes and scales kept)");
  } else {
    report.runtimes.push_back("vLLM (CompressedTensorsW4A16Mxfp4: Marlin on CUDA sm80+, bfloat16 activations)");
    if (options.dtype == torch::kFloat16)
      report.warnings.push_back(
          "vLLM Marlin MXFP4: no float16 kernel (CompressedTensorsW4A16Mxfp4 rejects float16 activations), and this "
          "export's torch_dtype is float16: serve with --dtype bfloat16 or export with dtype bfloat16: all layers");
  }
  report.runtimes.push_back(source.spec.format == quant::WeightFormat::nvfp4
                                ? "compressed-tensors' decompressor (it divides by weight_global_scale where the "
                                  "runtimes multiply by its inverse: values within 1 ulp)"
                                : "compressed-tensors' decompressor");
}

void gguf_file(const ExportSource& source, const ExportOptions& options, ServingReport& report) {
  const auto resolved = resolved_gguf_type(options.gguf_type, source.spec);
  const auto type = gguf::projection_tensor_type(resolved);
  const std::string name = gguf::type_name(type);
  RuleBook rules;
  for (const auto& l : quantized_layers(source.student)) {
    const int64_t block = l.grid.granularity == quant::Granularity::per_channel ? l.in
                          : l.grid.granularity == quant::Granularity::per_group ? l.grid.group_size
                                                                                : l.in * l.out;
    const gguf::GridShape grid{l.grid.format, l.grid.bits, l.grid.symmetric, block};
    const auto why = gguf::grid_misfit(grid, type);
    rules.check(!why.empty(),
                why + " is not " + name + "'s (symmetric codes, " +
                    (gguf::is_fp4_type(type) ? "the format's own scales" : "one fp16 scale per 32") + "): re-quantized",
                l.name);
  }
  for (const auto& layer : float_layers(source.student))
    rules.check(gguf::is_block_type(type), "float projection: quantized to " + name + " by the writer", layer);
  rules.append_to(report.warnings, "llama.cpp " + name);
  if (!gguf::is_block_type(type))
    report.runtimes.push_back("llama.cpp (GGUF v3, " + name +
                              " projections dequantized: llama-quantize can re-quantize them) and runtimes built on it");
  else if (gguf::is_fp4_type(type))
    report.runtimes.push_back("llama.cpp builds with GGML_TYPE_" + name +
                              (type == gguf::TensorType::nvfp4 ? " (40) and per-tensor \".scale\" tensors" : " (39)") +
                              ", as node-llama-cpp 3.21.1's (checked by the test suite)");
  else
    report.runtimes.push_back("llama.cpp (GGUF v3, " + name + ") and runtimes built on it");
}

}  // namespace

ServingReport serving_report(const ExportSource& source, Format format, const ExportOptions& options) {
  ServingReport report;
  switch (format) {
    case Format::hf:
      report.runtimes = {"transformers (LlamaForCausalLM, float weights)", "vLLM (unquantized)",
                         "llama.cpp's convert_hf_to_gguf.py (its own quantization)"};
      break;
    case Format::packed:
      if (quant::is_fp4(source.spec.format))
        packed_fp4(source, options, report);
      else
        packed_int(source, report);
      break;
    case Format::encodings:
      report.runtimes = {"AIMET quantsim and Qualcomm QNN converters (encodings over the fp32 weights)"};
      break;
    case Format::gguf: gguf_file(source, options, report); break;
  }
  if (format != Format::gguf) report.runtimes.push_back("qkd-train eval and logits");
  return report;
}

}  // namespace qkd::exporting
