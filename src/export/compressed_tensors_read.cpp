// Loading a compressed-tensors "pack-quantized" checkpoint (what write_packed writes, and what vLLM and
// transformers load) back into a student with its quantizers and their state.
#include <spdlog/spdlog.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <regex>
#include <set>

#include "qkd/checkpoint/hf_config.h"
#include "qkd/common/atomic_file.h"
#include "qkd/common/error.h"
#include "qkd/common/input_file.h"
#include "qkd/common/json_io.h"
#include "qkd/export/integer_weights.h"
#include "qkd/quant/activation_quantizer.h"
#include "qkd/quant/fake_quant.h"
#include "qkd/quant/weight_quantizer.h"

#include "compressed_tensors_fp4.h"
#include "compressed_tensors_layout.h"
#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/export/compressed_tensors.h"

namespace qkd::exporting {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace packed_layout;  // NOLINT: the layout's helpers, shared with the writer

namespace {

struct WeightScheme {
  quant::WeightFormat format = quant::WeightFormat::integer;  // nvfp4 / mxfp4: "type": "float"
  int64_t bits = 4;
  bool symmetric = true;
  std::string strategy;
  int64_t group_size = -1;
};

struct Group {
  std::vector<std::string> targets;
  WeightScheme weights;
  bool has_weights = false;
  bool has_activations = false;
  int64_t act_bits = 8;
  bool act_symmetric = false;
};

// compressed-tensors' match_name: "re:" prefix -> re.match (anchored at the start), else equality;
// "Linear" matches every linear layer by class.
bool target_matches(const std::string& target, const std::string& module) {
  if (target == "Linear") return true;
  if (target.rfind("re:", 0) == 0)
    return std::regex_search(module, std::regex(target.substr(3), std::regex::ECMAScript),
                             std::regex_constants::match_continuous);
  return target == module;
}

std::string field_path(const std::string& source, const std::string& field) { return source + ": " + field; }

WeightScheme parse_weight_scheme(const json& w, const std::string& where) {
  auto need = [&](const char* key) -> const json& {
    if (!w.contains(key)) fail(where, "missing field '" + std::string(key) + "'");
    return w.at(key);
  };
  WeightScheme s;
  if (w.is_object() && w.value("type", "int") == "float") {
    s.format = packed_fp4::parse_fp4_scheme(w, where);
    return s;
  }
  try {
    if (w.contains("type") && w.at("type") != "int")
      fail(where + ".type", "only \"int\" and fp4 \"float\" weights can be unpacked");
    s.bits = need("num_bits").get<int64_t>();
    s.symmetric = w.contains("symmetric") ? w.at("symmetric").get<bool>() : true;
    s.strategy = need("strategy").get<std::string>();
    if (w.contains("group_size") && !w.at("group_size").is_null()) s.group_size = w.at("group_size").get<int64_t>();
    if (w.contains("actorder") && !w.at("actorder").is_null())
      fail(where + ".actorder", "activation reordering (weight_g_idx) is not supported");
  } catch (const json::exception& e) {
    fail(where, e.what());
  }
  if (!packs_whole_words(s.bits)) fail(where + ".num_bits", std::to_string(s.bits) + " is not supported (2, 4 or 8)");
  if (s.strategy != "channel" && s.strategy != "group" && s.strategy != "tensor")
    fail(where + ".strategy", "\"" + s.strategy + "\" is not supported (channel, group or tensor)");
  return s;
}

// (code - zero) * scale in fp32, codes and zero in the library's signed convention.
torch::Tensor dequantize_packed(const std::string& module, const WeightScheme& s,
                                const std::map<std::string, torch::Tensor>& tensors, const std::string& source) {
  if (quant::is_fp4(s.format)) return packed_fp4::dequantize_fp4(module, s.format, tensors, source);
  const auto where = [&](const std::string& t) { return source + ": tensor '" + module + "." + t + "'"; };
  const auto packed = require_tensor(tensors, module + ".weight_packed", source);
  const auto shape_t = require_tensor(tensors, module + ".weight_shape", source).to(torch::kLong).reshape({-1});
  if (packed.scalar_type() != torch::kInt || packed.dim() != 2) fail(where("weight_packed"), "expected 2-D int32");
  if (shape_t.numel() != 2) fail(where("weight_shape"), "expected 2 elements");
  const int64_t out = shape_t[0].item<int64_t>(), in = shape_t[1].item<int64_t>();
  const int64_t per_word = 32 / s.bits;
  if (packed.size(0) != out || packed.size(1) != (in + per_word - 1) / per_word)
    fail(where("weight_packed"),
         "shape does not match weight_shape [" + std::to_string(out) + ", " + std::to_string(in) + "]");
  const int64_t half = int64_t{1} << (s.bits - 1);
  const auto codes = unpack_rows(packed, s.bits, in) - half;  // signed
  auto scale = require_tensor(tensors, module + ".weight_scale", source).to(torch::kFloat);
  int64_t rows = 1, blocks = 1;
  if (s.strategy == "channel") {
    rows = out;
  } else if (s.strategy == "group") {
    if (s.group_size <= 0 || in % s.group_size != 0)
      fail(where("weight_packed"),
           "group_size " + std::to_string(s.group_size) + " does not divide in_features " + std::to_string(in));
    rows = out;
    blocks = in / s.group_size;
  }
  if (scale.numel() != rows * blocks)
    fail(where("weight_scale"),
         "expected " + std::to_string(rows * blocks) + " elements, got " + std::to_string(scale.numel()));
  scale = scale.reshape({rows, blocks});
  auto levels = codes.reshape({rows, blocks, -1});
  if (!s.symmetric) {
    const auto zp_t = require_tensor(tensors, module + ".weight_zero_point", source);
    torch::Tensor zero;
    if (s.strategy == "tensor") {
      if (zp_t.numel() != 1) fail(where("weight_zero_point"), "expected 1 element");
      zero = zp_t.to(torch::kLong).reshape({1, 1});
    } else {
      if (zp_t.scalar_type() != torch::kInt || zp_t.dim() != 2 || zp_t.size(1) != blocks)
        fail(where("weight_zero_point"), "expected int32 [" + std::to_string((rows + per_word - 1) / per_word) + ", " +
                                             std::to_string(blocks) + "]");
      zero = unpack_rows(zp_t.t().contiguous(), s.bits, rows).t() - half;
    }
    levels = levels - zero.reshape({rows, blocks, 1});
  }
  return (levels.to(torch::kFloat) * scale.unsqueeze(-1)).reshape({out, in});
}

// An input quantizer whose calibrated range reproduces `scale` (and `zero`, our unsigned convention)
// exactly: the range is the one a calibration would have recorded, searched over a few float steps
// around (qmax - zero) * scale so that the quantizer's own min-max arithmetic gives back the stored scale.
std::shared_ptr<quant::ActivationQuantizer> input_quantizer_for(const std::string& module, int64_t bits, bool symmetric,
                                                                const torch::Tensor& scale, const torch::Tensor& zero,
                                                                const std::string& source) {
  quant::QuantSpec spec;
  spec.act_bits = bits;
  spec.act_symmetric = symmetric;
  auto q = std::make_shared<quant::ActivationQuantizer>(spec, module + ".input_quantizer");
  const float s = scale.item<float>();
  const auto levels = quant::levels_for(bits, symmetric);
  const float z = zero.defined() ? zero.item<float>() : 0.0f;
  if (!(s > 0) || z < 0 || z > static_cast<float>(levels.qmax))
    fail(source, "tensor '" + module + ".input_scale': scale/zero point cannot be an input range");
  const float lo = symmetric ? -s * static_cast<float>(levels.qmax) : -z * s;
  float hi = symmetric ? s * static_cast<float>(levels.qmax) : (static_cast<float>(levels.qmax) - z) * s;
  auto buffers = q->named_buffers();
  buffers["observed_batches"].fill_(1);
  for (int step = 0; step < 16; ++step) {
    // candidates: hi, hi+1ulp, hi-1ulp, hi+2ulp, ...
    float candidate = hi;
    for (int k = 0; k < (step + 1) / 2; ++k)
      candidate = std::nextafter(
          candidate, step % 2 ? std::numeric_limits<float>::infinity() : -std::numeric_limits<float>::infinity());
    buffers["range_min"].fill_(symmetric ? -candidate : lo);
    buffers["range_max"].fill_(candidate);
    q->on_state_loaded();
    const auto p = q->params();
    if (p.scale.item<float>() == s && (!p.zero.defined() || p.zero.item<float>() == z)) return q;
  }
  spdlog::warn("{}: input range of {} reproduces input_scale only approximately", source, module);
  buffers["range_min"].fill_(symmetric ? -hi : lo);
  buffers["range_max"].fill_(hi);
  return q;
}

}  // namespace

bool is_packed_checkpoint(const std::string& dir) {
  const auto path = fs::path(dir) / "config.json";
  if (!fs::exists(path)) return false;
  // The bounded reader: a deep or special config.json must not hang or overflow the detection either.
  const auto j = parse_json_or_discarded(read_text_file(path.string()));
  if (!j.is_object() || !j.contains("quantization_config")) return false;
  const auto& qc = j.at("quantization_config");
  return qc.is_object() && qc.contains("quant_method") && qc.at("quant_method") == "compressed-tensors";
}

model::LlamaForCausalLM load_packed_checkpoint(const std::string& dir, const checkpoint::LoadOptions& options) {
  const auto config_path = (fs::path(dir) / "config.json").string();
  const auto config_json = read_json_file(config_path);
  const auto config = checkpoint::parse_llama_config(config_json, config_path);
  if (!config_json.contains("quantization_config")) fail(config_path, "no quantization_config");
  const auto& qc = config_json.at("quantization_config");
  const auto qc_path = field_path(config_path, "quantization_config");
  if (!qc.is_object() || qc.value("quant_method", "") != "compressed-tensors")
    fail(qc_path + ".quant_method", "expected \"compressed-tensors\"");
  const auto format = qc.value("format", "");
  if (format != "pack-quantized" && !packed_fp4::is_fp4_format_name(format))
    fail(qc_path + ".format",
         "expected \"pack-quantized\", \"nvfp4-pack-quantized\" or \"mxfp4-pack-quantized\", got \"" + format + "\"");
  if (qc.contains("quantization_status") && qc.at("quantization_status") != "compressed")
    fail(qc_path + ".quantization_status", "expected \"compressed\"");

  std::vector<Group> groups;
  if (!qc.contains("config_groups") || !qc.at("config_groups").is_object())
    fail(qc_path + ".config_groups", "missing or not an object");
  for (const auto& [key, g] : qc.at("config_groups").items()) {
    const auto where = qc_path + ".config_groups." + key;
    if (g.contains("format") && g.at("format").is_string() && g.at("format") != "pack-quantized" &&
        !packed_fp4::is_fp4_format_name(g.at("format").get<std::string>()))
      fail(where + ".format", "only pack-quantized groups (integer, nvfp4 or mxfp4) can be loaded");
    Group group;
    if (!g.contains("targets") || !g.at("targets").is_array()) fail(where + ".targets", "missing");
    for (const auto& t : g.at("targets")) group.targets.push_back(t.get<std::string>());
    if (g.contains("weights") && !g.at("weights").is_null()) {
      group.weights = parse_weight_scheme(g.at("weights"), where + ".weights");
      group.has_weights = true;
    }
    if (g.contains("input_activations") && !g.at("input_activations").is_null()) {
      const auto& a = g.at("input_activations");
      const auto awhere = where + ".input_activations";
      try {
        group.act_bits = a.at("num_bits").get<int64_t>();
        group.act_symmetric = a.value("symmetric", true);
        if (a.value("type", "int") != "int") fail(awhere + ".type", "only int activations are supported");
        if (a.value("strategy", "tensor") != "tensor")
          fail(awhere + ".strategy", "only static per-tensor input ranges are supported");
        if (a.value("dynamic", false) != false) fail(awhere + ".dynamic", "only static input ranges are supported");
      } catch (const json::exception& e) {
        fail(awhere, e.what());
      }
      if (group.act_bits != 8 && group.act_bits != 16) fail(awhere + ".num_bits", "only 8 or 16 are supported");
      group.has_activations = true;
    }
    groups.push_back(group);
  }
  std::vector<std::string> ignore;
  if (qc.contains("ignore") && qc.at("ignore").is_array())
    for (const auto& t : qc.at("ignore")) ignore.push_back(t.get<std::string>());

  std::map<std::string, torch::Tensor> stored;
  for (auto& [name, t] : checkpoint::read_checkpoint_tensors(dir)) stored.emplace(name, t);
  const auto weights_source = (fs::path(dir) / "model.safetensors").string();

  model::LlamaForCausalLM model(config);
  io::NamedTensors tensors;
  std::vector<std::pair<std::string, const Group*>> act_modules;
  std::set<std::string> consumed;
  for (auto& [module, linear] : model->named_linears()) {
    (void)linear;
    if (!stored.count(module + ".weight_packed")) continue;
    bool ignored = false;
    for (const auto& t : ignore) ignored = ignored || target_matches(t, module);
    const Group* match = nullptr;
    for (const auto& g : groups)
      for (const auto& t : g.targets)
        if (!ignored && g.has_weights && target_matches(t, module)) match = match ? match : &g;
    if (!match)
      fail(weights_source,
           "tensor '" + module + ".weight_packed': no config group of " + qc_path + " quantizes " + module);
    tensors.emplace_back(module + ".weight", dequantize_packed(module, match->weights, stored, weights_source));
    if (match->has_activations) act_modules.emplace_back(module, match);
    for (const char* suffix : {".weight_packed", ".weight_scale", ".weight_zero_point", ".weight_shape", ".input_scale",
                               ".input_zero_point", ".weight_global_scale"})
      consumed.insert(module + suffix);
  }
  for (auto& [name, t] : stored)
    if (!consumed.count(name)) tensors.emplace_back(name, t);
  model->to(options.dtype);
  checkpoint::copy_weights_into(*model, tensors, config_path + " (weights " + weights_source + ")");
  for (const auto& [module, group] : act_modules) {
    const auto scale = require_tensor(stored, module + ".input_scale", weights_source).to(torch::kFloat).reshape({});
    torch::Tensor zero;
    if (!group->act_symmetric)
      zero = require_tensor(stored, module + ".input_zero_point", weights_source).to(torch::kFloat).reshape({}) +
             static_cast<float>(int64_t{1} << (group->act_bits - 1));
    for (auto& [m, linear] : model->named_linears())
      if (m == module)
        linear->set_input_quantizer(
            input_quantizer_for(module, group->act_bits, group->act_symmetric, scale, zero, weights_source));
  }
  model->to(options.device);
  return model;
}

}  // namespace qkd::exporting
