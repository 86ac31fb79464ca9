#include "qkd/export/gguf_writer.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "qkd/common/atomic_file.h"
#include "qkd/common/error.h"
#include "qkd/export/integer_weights.h"
#include "qkd/quant/weight_quantizer.h"
#include "gguf_blocks.h"
#include "gguf_format.h"
#include "gguf_vocab.h"

// A student as llama.cpp loads it: the tensor plan (names, shapes, ggml types), the metadata (the
// architecture, rope, the tokenizer), and the data, in the container of gguf_format.h.

namespace qkd::exporting {

namespace {

using namespace gguf;  // NOLINT: the container and block types read as llama.cpp names them
// The row permutation llama.cpp's converter applies to q_proj / k_proj (LlamaModel.permute): Hugging
// Face's rotate-half layout of each head to ggml's interleaved (GGML_ROPE_TYPE_NORM) pairs.
torch::Tensor permute_rows(const torch::Tensor& x, int64_t heads) {
  std::vector<int64_t> shape = {heads, 2, x.size(0) / heads / 2};
  for (int64_t d = 1; d < x.dim(); ++d) shape.push_back(x.size(d));
  return x.reshape(shape).transpose(1, 2).reshape(x.sizes()).contiguous();
}

// llama.cpp's rope_freqs for llama3 scaling (convert_hf_to_gguf.py, LlamaModel): per frequency, the
// factor ggml divides theta by, so that base_freq / factor is transformers' scaled frequency.
std::vector<float> llama3_rope_factors(const model::LlamaConfig& config) {
  // The converter computes in torch float32 (freqs is a float32 tensor; Python floats mix in as float32).
  const auto& rope = config.rope;
  const int64_t dim = config.head_dim;
  const float old_context = static_cast<float>(rope.original_max_position_embeddings);
  const float low = static_cast<float>(rope.low_freq_factor), high = static_cast<float>(rope.high_freq_factor);
  const float factor = static_cast<float>(rope.factor);
  const float low_freq_wavelen = static_cast<float>(rope.original_max_position_embeddings / rope.low_freq_factor);
  const float high_freq_wavelen = static_cast<float>(rope.original_max_position_embeddings / rope.high_freq_factor);
  const auto exponents = torch::arange(0, dim, 2, torch::kFloat32) / static_cast<double>(dim);
  const auto freqs =
      (1.0 / torch::pow(torch::tensor(rope.theta, torch::kFloat64).to(torch::kFloat32), exponents)).contiguous();
  std::vector<float> factors;
  for (int64_t i = 0; i < freqs.numel(); ++i) {
    const float freq = freqs.data_ptr<float>()[i];
    const float wavelen = static_cast<float>(2 * M_PI) / freq;
    if (wavelen < high_freq_wavelen) {
      factors.push_back(1.0f);
    } else if (wavelen > low_freq_wavelen) {
      factors.push_back(factor);
    } else {
      const float smooth = (old_context / wavelen - low) / (high - low);
      factors.push_back(1.0f / ((1.0f - smooth) / factor + smooth));
    }
  }
  return factors;
}

// llama.cpp's architecture for each family: mistral is llama's (convert_hf_to_gguf.py maps
// MistralForCausalLM to LLM_ARCH_LLAMA); qwen2 and qwen3 have their own.
const char* architecture(model::ModelType type) {
  switch (type) {
    case model::ModelType::llama:
    case model::ModelType::mistral: return "llama";
    case model::ModelType::qwen2: return "qwen2";
    case model::ModelType::qwen3: return "qwen3";
  }
  return "llama";
}

// llama's rope rotates interleaved pairs (the converter permutes q/k rows to them); qwen's rotates
// halves as transformers does (LLAMA_ROPE_TYPE_NEOX), so their rows stay as they are.
bool permutes_rope_rows(model::ModelType type) {
  return type == model::ModelType::llama || type == model::ModelType::mistral;
}

// ---- the tensor plan ----------------------------------------------------------------------------

struct Planned {
  std::string name;     // GGUF name, "blk.0.attn_q.weight"
  std::string hf_name;  // "model.layers.0.self_attn.q_proj.weight" ("" for rope_freqs)
  std::vector<int64_t> ne;
  TensorType type = TensorType::f32;
  int64_t permute_heads = 0;  // q/k rows: heads of the permutation; 0: none
  bool projection = false;    // a Linear weight written in options.gguf_type
  uint64_t offset = 0;
  uint64_t bytes = 0;
};

TensorType projection_type(const ExportOptions& options) {
  if (options.gguf_type == "q4_0") return TensorType::q4_0;
  if (options.gguf_type == "q8_0") return TensorType::q8_0;
  fail("gguf_type", "expected q4_0 or q8_0, got \"" + options.gguf_type + "\"");
}

std::vector<Planned> plan_tensors(model::LlamaForCausalLMImpl& student, const ExportOptions& options) {
  const auto& config = student.config();
  const auto proj_type = projection_type(options);
  const auto big_type = proj_type == TensorType::q8_0 ? TensorType::q8_0 : TensorType::f16;
  std::vector<Planned> plan;
  auto add = [&](std::string name, std::string hf_name, std::vector<int64_t> ne, TensorType type) -> Planned& {
    Planned p;
    p.name = std::move(name);
    p.hf_name = std::move(hf_name);
    p.ne = std::move(ne);
    p.type = type;
    plan.push_back(std::move(p));
    return plan.back();
  };
  auto add_linear = [&](const std::string& name, const std::string& hf_module, const model::Linear& linear,
                        int64_t permute_heads) {
    auto& p = add(name + ".weight", hf_module + ".weight", {linear->in_features(), linear->out_features()}, proj_type);
    p.projection = true;
    p.permute_heads = permute_heads;
    if (linear->bias.defined()) {
      auto& b = add(name + ".bias", hf_module + ".bias", {linear->out_features()}, TensorType::f32);
      b.permute_heads = permute_heads;
    }
  };

  if (config.rope.type == "llama3") add("rope_freqs.weight", "", {config.head_dim / 2}, TensorType::f32);
  add("token_embd.weight", "model.embed_tokens.weight", {config.hidden_size, config.vocab_size}, big_type);
  const int64_t q_heads = permutes_rope_rows(config.model_type) ? config.num_attention_heads : 0;
  const int64_t k_heads = permutes_rope_rows(config.model_type) ? config.num_key_value_heads : 0;
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    const auto& layer = student.model->layer_list.at(i);
    const auto hf = "model.layers." + std::to_string(i);
    const auto blk = "blk." + std::to_string(i);
    add(blk + ".attn_norm.weight", hf + ".input_layernorm.weight", {config.hidden_size}, TensorType::f32);
    add_linear(blk + ".attn_q", hf + ".self_attn.q_proj", layer->self_attn->q_proj, q_heads);
    add_linear(blk + ".attn_k", hf + ".self_attn.k_proj", layer->self_attn->k_proj, k_heads);
    if (config.qk_norm) {
      add(blk + ".attn_q_norm.weight", hf + ".self_attn.q_norm.weight", {config.head_dim}, TensorType::f32);
      add(blk + ".attn_k_norm.weight", hf + ".self_attn.k_norm.weight", {config.head_dim}, TensorType::f32);
    }
    add_linear(blk + ".attn_v", hf + ".self_attn.v_proj", layer->self_attn->v_proj, 0);
    add_linear(blk + ".attn_output", hf + ".self_attn.o_proj", layer->self_attn->o_proj, 0);
    add(blk + ".ffn_norm.weight", hf + ".post_attention_layernorm.weight", {config.hidden_size}, TensorType::f32);
    add_linear(blk + ".ffn_gate", hf + ".mlp.gate_proj", layer->mlp->gate_proj, 0);
    add_linear(blk + ".ffn_up", hf + ".mlp.up_proj", layer->mlp->up_proj, 0);
    add_linear(blk + ".ffn_down", hf + ".mlp.down_proj", layer->mlp->down_proj, 0);
  }
  add("output_norm.weight", "model.norm.weight", {config.hidden_size}, TensorType::f32);
  if (student.lm_head) {
    const bool quantized = static_cast<bool>(student.lm_head->weight_quantizer());
    auto& p = add("output.weight", "lm_head.weight", {config.hidden_size, config.vocab_size},
                  quantized ? proj_type : big_type);
    p.projection = quantized;
  }
  uint64_t offset = 0;
  for (auto& p : plan) {
    int64_t elements = 1;
    for (auto n : p.ne) elements *= n;
    p.offset = offset;
    p.bytes = tensor_bytes(p.type, elements);
    offset = align_up(offset + p.bytes);
  }
  return plan;
}

std::string describe(const Planned& p) { return p.hf_name.empty() ? p.name : p.hf_name + " (" + p.name + ")"; }

void check_plan(const std::vector<Planned>& plan, const model::LlamaConfig& config) {
  for (const auto& p : plan) {
    if ((p.type == TensorType::q4_0 || p.type == TensorType::q8_0) && p.ne[0] % kBlock != 0)
      fail(describe(p), "in_features " + std::to_string(p.ne[0]) + " is not a multiple of 32, the block length of " +
                            type_name(p.type) + " in llama.cpp");
    if (p.permute_heads > 0 && (p.ne.back() % (2 * p.permute_heads) != 0))
      fail(describe(p), std::to_string(p.ne.back()) + " rows do not split into " + std::to_string(p.permute_heads) +
                            " heads of rotary pairs");
  }
  if (config.rope.type != "default" && config.rope.type != "llama3")
    fail("rope_scaling", "rope type \"" + config.rope.type + "\" has no GGUF equivalent here (default or llama3)");
  if (config.head_dim % 2 != 0) fail("head_dim", std::to_string(config.head_dim) + " is odd");
}

std::string model_name(const ExportSource& source) {
  auto dir = std::filesystem::path(source.tokenizer_dir).lexically_normal();
  if (!dir.has_filename() && dir.has_parent_path()) dir = dir.parent_path();
  const auto name = dir.filename().string();
  return name.empty() || name == "." ? "qkd-train student" : name;
}

Metadata build_metadata(const ExportSource& source, const ExportOptions& options) {
  const auto& c = source.student.config();
  const std::string arch = architecture(c.model_type);
  Metadata m;
  m.string("general.architecture", arch);
  m.string("general.name", model_name(source));
  m.u32("general.alignment", kAlignment);
  m.u32("general.file_type", projection_type(options) == TensorType::q4_0 ? kFileTypeQ4_0 : kFileTypeQ8_0);
  m.u32("general.quantization_version", 2);
  m.u32(arch + ".context_length", c.max_position_embeddings);
  m.u32(arch + ".embedding_length", c.hidden_size);
  m.u32(arch + ".block_count", c.num_hidden_layers);
  m.u32(arch + ".feed_forward_length", c.intermediate_size);
  m.u32(arch + ".rope.dimension_count", c.head_dim);
  m.u32(arch + ".attention.head_count", c.num_attention_heads);
  m.u32(arch + ".attention.head_count_kv", c.num_key_value_heads);
  if (c.head_dim * c.num_attention_heads != c.hidden_size) {
    // llama.cpp derives head sizes from embedding_length / head_count unless these are set.
    m.u32(arch + ".attention.key_length", c.head_dim);
    m.u32(arch + ".attention.value_length", c.head_dim);
  }
  m.f32(arch + ".attention.layer_norm_rms_epsilon", c.rms_norm_eps);
  m.f32(arch + ".rope.freq_base", c.rope.theta);
  m.u32(arch + ".vocab_size", c.vocab_size);

  add_tokenizer_metadata(m, source);
  return m;
}

// ---- tensor data --------------------------------------------------------------------------------

model::Linear linear_of(model::LlamaForCausalLMImpl& student, const std::string& hf_weight_name) {
  const auto module = hf_weight_name.substr(0, hf_weight_name.size() - std::string(".weight").size());
  for (auto& [name, linear] : student.named_linears())
    if (name == module) return linear;
  fail(hf_weight_name, "no such projection in the student");
}

torch::Tensor float_parameter(model::LlamaForCausalLMImpl& student, const std::string& hf_name) {
  for (const auto& item : student.named_parameters(true))
    if (item.key() == hf_name) return item.value().detach().to(torch::kCPU, torch::kFloat).contiguous();
  fail(hf_name, "no such tensor in the student");
}

std::string raw_bytes(const torch::Tensor& t) {
  const auto c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
}

struct ProjectionReport {
  std::string name;
  ErrorSums sums;
  bool requantized = false;
  std::string why;
};

// Does the student's grid fit `type` as is (symmetric, codes within its levels, one scale per 32)?
std::string misfit(const IntegerWeight& w, TensorType type) {
  if (!w.symmetric || w.zero.defined()) return "asymmetric " + std::to_string(w.bits) + "-bit grid";
  const int64_t lo = type == TensorType::q4_0 ? -8 : -128, hi = type == TensorType::q4_0 ? 7 : 127;
  if (w.qmin < lo || w.qmax > hi) return std::to_string(w.bits) + "-bit grid";
  if (w.block_length() % kBlock != 0)
    return "groups of " + std::to_string(w.block_length()) + " (not a multiple of 32)";
  return "";
}

std::string projection_data(model::LlamaForCausalLMImpl& student, const Planned& p, ProjectionReport& report) {
  report.name = p.hf_name;
  auto linear = linear_of(student, p.hf_name);
  const bool quantized =
      static_cast<bool>(std::dynamic_pointer_cast<quant::WeightQuantizer>(linear->weight_quantizer()));
  if (quantized) {
    const auto w = integer_weight(student, p.hf_name);
    report.why = misfit(w, p.type);
    if (report.why.empty()) {
      const auto out = w.out_features(), in = w.in_features();
      // The scale of every 32-block: element (o, i) has scale index (o * in + i) / block_length.
      const auto flat_scale = w.scale.reshape({-1});
      const auto chunk_start = torch::arange(0, out * in, kBlock, torch::kLong);
      auto chunk_scale =
          flat_scale.index_select(0, chunk_start.div(w.block_length(), "floor")).reshape({out, in / kBlock});
      auto codes = w.codes;
      if (p.permute_heads > 0) {
        codes = permute_rows(codes, p.permute_heads);
        chunk_scale = permute_rows(chunk_scale, p.permute_heads);
      }
      // The error the fp16 scale adds, for the report.
      const auto dq = w.dequantize();
      const auto s16 = chunk_scale.to(torch::kHalf).to(torch::kFloat).repeat_interleave(kBlock, 1);
      const auto gg = codes.to(torch::kFloat) * s16;
      const auto ref = p.permute_heads > 0 ? permute_rows(dq, p.permute_heads) : dq;
      report.sums.diff2 = (ref - gg).to(torch::kDouble).pow(2).sum().item<double>();
      report.sums.ref2 = ref.to(torch::kDouble).pow(2).sum().item<double>();
      if (!torch::isfinite(chunk_scale.to(torch::kHalf)).all().item<bool>())
        fail(describe(p), "a scale does not fit fp16");
      return pack_codes(p.type, codes, chunk_scale);
    }
    report.requantized = true;
    auto weight = w.dequantize();
    if (p.permute_heads > 0) weight = permute_rows(weight, p.permute_heads);
    return quantize_floats(p.type, weight, report.sums);
  }
  report.requantized = true;
  report.why = "float (not quantized by the student)";
  auto weight = linear->weight.detach().to(torch::kCPU, torch::kFloat);
  if (p.permute_heads > 0) weight = permute_rows(weight, p.permute_heads);
  return quantize_floats(p.type, weight, report.sums);
}

std::string tensor_data(const ExportSource& source, const Planned& p, std::vector<ProjectionReport>& reports) {
  auto& student = source.student;
  if (p.name == "rope_freqs.weight") {
    const auto factors = llama3_rope_factors(student.config());
    return std::string(reinterpret_cast<const char*>(factors.data()), factors.size() * 4);
  }
  if (p.projection) {
    reports.emplace_back();
    return projection_data(student, p, reports.back());
  }
  auto t = float_parameter(student, p.hf_name);
  if (p.permute_heads > 0) t = permute_rows(t, p.permute_heads);
  switch (p.type) {
    case TensorType::f32: return raw_bytes(t);
    case TensorType::f16: return raw_bytes(t.to(torch::kHalf));
    default: {
      ErrorSums sums;
      auto data = quantize_floats(p.type, t, sums);
      spdlog::info("gguf: {} written as {}: relative weight error {:.3g}", describe(p), type_name(p.type),
                   sums.relative());
      return data;
    }
  }
}

void warn_about_requantization(const std::vector<ProjectionReport>& reports, const ExportOptions& options) {
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
  if (requantized.empty()) {
    spdlog::info(
        "gguf: {} projections written with the student's own codes and scales ({}); fp16 scale "
        "rounding adds a relative weight error of {:.3g}",
        reports.size(), options.gguf_type, total.relative());
    return;
  }
  spdlog::warn(
      "gguf: {} of {} projections re-quantized to {} because their grid does not fit it ({}); this adds "
      "weight error ||W_student - W_gguf|| / ||W_student||: worst {:.4g} ({}), overall {:.4g}",
      requantized.size(), reports.size(), options.gguf_type, reasons, worst->sums.relative(), worst->name,
      total.relative());
}

}  // namespace

void check_gguf(const ExportSource& source, const ExportOptions& options) {
  // GGUF has no place for activation quantization: written anyway, llama.cpp would run another model.
  if (source.spec.act_bits > 0)
    fail("quant.act_bits", std::to_string(source.spec.act_bits) +
                               "-bit activations cannot be expressed in GGUF (llama.cpp computes them in float); "
                               "export gguf from a student without act_bits, or leave gguf out of the formats");
  const auto plan = plan_tensors(source.student, options);
  check_plan(plan, source.student.config());
  check_tokenizer(source);
}

void write_gguf(const ExportSource& source, const std::string& path, const ExportOptions& options) {
  check_gguf(source, options);
  const auto plan = plan_tensors(source.student, options);
  const auto metadata = build_metadata(source, options);
  require_replaceable_output(path);

  torch::NoGradGuard no_grad;
  std::vector<ProjectionReport> reports;
  write_file_atomically(path, [&](std::ostream& os) {
    Out out(os);
    out.bytes("GGUF", 4);
    out.pod<uint32_t>(kGgufVersion);
    out.pod<uint64_t>(plan.size());
    out.pod<uint64_t>(metadata.count);
    out.bytes(metadata.buffer.data(), metadata.buffer.size());
    for (const auto& p : plan) {
      out.string(p.name);
      out.pod<uint32_t>(static_cast<uint32_t>(p.ne.size()));
      for (auto n : p.ne) out.pod<uint64_t>(static_cast<uint64_t>(n));
      out.pod<uint32_t>(static_cast<uint32_t>(p.type));
      out.pod<uint64_t>(p.offset);
    }
    out.pad_to_alignment();
    const auto data_start = out.written();
    for (const auto& p : plan) {
      const auto data = tensor_data(source, p, reports);
      if (data.size() != p.bytes)
        fail(describe(p),
             "internal error: " + std::to_string(data.size()) + " bytes, planned " + std::to_string(p.bytes));
      if (out.written() - data_start != p.offset) fail(describe(p), "internal error: misplaced tensor data");
      out.bytes(data.data(), data.size());
      out.pad_to_alignment();
    }
  });
  warn_about_requantization(reports, options);
  spdlog::info("gguf: wrote {} ({} tensors, {})", path, plan.size(), options.gguf_type);
}

}  // namespace qkd::exporting
