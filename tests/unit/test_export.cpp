// The export core: integer codes that reproduce the student's forward weights bitwise, and the hf
// writer whose directory reloads as a float model computing the quantized student.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/common/error.h"
#include "qkd/export/export.h"
#include "qkd/export/hf_export.h"
#include "qkd/export/integer_weights.h"
#include "qkd/export/serving.h"
#include "qkd/io/safetensors.h"
#include "qkd/quant/student.h"
#include "qkd/train/run_config.h"
#include "test_support.h"

namespace {

namespace fs = std::filesystem;
using qkd::model::LlamaForCausalLM;
using namespace qkd::quant;

const std::string kTeacher = qkd::test::shipped_teacher();

LlamaForCausalLM student(const QuantSpec& spec) { return qkd::test::load_student(kTeacher, spec); }

torch::Tensor tokens() {
  torch::manual_seed(5);
  return torch::randint(0, 4096, {2, 24}, torch::kLong);
}

struct Grid {
  const char* name;
  QuantSpec spec;
};

std::vector<Grid> grids() {
  std::vector<Grid> out;
  QuantSpec s;  // 4-bit per channel symmetric min-max, dynamic
  out.push_back({"w4_channel_sym", s});
  s.granularity = Granularity::per_group;
  s.group_size = 64;
  s.symmetric = false;
  out.push_back({"w4_group64_asym", s});
  s = QuantSpec{};
  s.bits = 8;
  s.granularity = Granularity::per_tensor;
  out.push_back({"w8_tensor_sym", s});
  s = QuantSpec{};
  s.range = RangeMethod::search;
  s.search_grid = {0.7, 0.85, 1.0};
  out.push_back({"w4_channel_search", s});
  s = QuantSpec{};
  s.scale_policy = ScalePolicy::fixed;
  s.learnable_scale = true;
  s.bits = 3;
  s.symmetric = false;
  out.push_back({"w3_lsq_asym", s});
  return out;
}

TEST(IntegerWeights, DequantizedCodesAreTheForwardWeightsBitwise) {
  for (const auto& grid : grids()) {
    auto model = student(grid.spec);
    if (grid.spec.learnable_scale) {  // a learned scale that moved away from its min-max start
      torch::NoGradGuard no_grad;
      for (auto& [name, t] : quantizer_state(*model))
        if (name.find(".scale") != std::string::npos) t.mul_(0.8);
    }
    int checked = 0;
    for (auto& [module, linear] : model->named_linears()) {
      if (!linear->weight_quantizer()) continue;
      const auto w = qkd::exporting::integer_weight(*model, module + ".weight");
      torch::NoGradGuard no_grad;
      EXPECT_TRUE(torch::equal(w.dequantize(), linear->effective_weight().to(torch::kFloat)))
          << grid.name << " " << module;
      EXPECT_GE(w.codes.min().item<int>(), w.qmin) << grid.name;
      EXPECT_LE(w.codes.max().item<int>(), w.qmax) << grid.name;
      EXPECT_EQ(w.block_length(), grid.spec.granularity == Granularity::per_channel ? w.in_features()
                                  : grid.spec.granularity == Granularity::per_group ? 64
                                                                                    : w.codes.numel());
      EXPECT_EQ(w.zero.defined(), !grid.spec.symmetric);
      ++checked;
    }
    EXPECT_EQ(checked, 6 * 7) << grid.name;
  }
}

TEST(IntegerWeights, NameThatIsNoQuantizedProjectionFails) {
  auto model = student(QuantSpec{});
  try {
    qkd::exporting::integer_weight(*model, "model.norm.weight");
    ADD_FAILURE();
  } catch (const qkd::Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.norm.weight"), std::string::npos) << e.what();
  }
}

torch::Tensor logits(qkd::model::LlamaForCausalLMImpl& model) {
  torch::NoGradGuard no_grad;
  return model.forward(tokens()).to(torch::kFloat);
}

TEST(HfExport, ReloadsAsAFloatModelWithTheStudentsLogits) {
  for (const auto& grid : grids()) {
    auto model = student(grid.spec);
    const auto out = qkd::test::scratch_dir("hf-export");
    qkd::exporting::ExportOptions options;
    options.dtype = torch::kFloat32;
    const auto written =
        qkd::exporting::export_student({*model, grid.spec, kTeacher}, {qkd::exporting::Format::hf}, out, options);
    ASSERT_EQ(written, std::vector<std::string>{out + "/hf"});
    for (const char* file : {"config.json", "generation_config.json", "tokenizer.model", "model.safetensors"})
      EXPECT_TRUE(fs::is_regular_file(out + "/hf/" + file)) << file;
    auto reloaded = qkd::checkpoint::load_llama(out + "/hf");
    const double diff = (logits(*reloaded) - logits(*model)).abs().max().item<double>();
    EXPECT_LT(diff, 1e-4) << grid.name;
  }
}

TEST(HfExport, Fp16ExportStaysCloseAndIsSmaller) {
  auto model = student(QuantSpec{});
  const auto out = qkd::test::scratch_dir("hf-fp16");
  qkd::exporting::write_hf({*model, QuantSpec{}, kTeacher}, out + "/hf", {});
  const auto tensors = qkd::io::read_safetensors(out + "/hf/model.safetensors");
  for (const auto& [name, t] : tensors) EXPECT_EQ(t.scalar_type(), torch::kHalf) << name;
  auto reloaded = qkd::checkpoint::load_llama(out + "/hf");
  const double diff = (logits(*reloaded) - logits(*model)).abs().max().item<double>();
  std::printf("fp16 hf export: max |logit difference| %.3g\n", diff);
  EXPECT_LT(diff, 5e-2);
}

TEST(HfExport, LargeModelsAreShardedWithAnIndex) {
  auto model = student(QuantSpec{});
  const auto out = qkd::test::scratch_dir("hf-shards");
  qkd::exporting::ExportOptions options;
  options.dtype = torch::kFloat32;
  options.max_shard_bytes = 4 << 20;
  qkd::exporting::write_hf({*model, QuantSpec{}, kTeacher}, out + "/hf", options);
  EXPECT_FALSE(fs::exists(out + "/hf/model.safetensors"));
  EXPECT_TRUE(fs::exists(out + "/hf/model.safetensors.index.json"));
  int shards = 0;
  for (const auto& entry : fs::directory_iterator(out + "/hf"))
    shards += entry.path().filename().string().rfind("model-", 0) == 0;
  EXPECT_GT(shards, 1);
  auto reloaded = qkd::checkpoint::load_llama(out + "/hf");
  EXPECT_LT((logits(*reloaded) - logits(*model)).abs().max().item<double>(), 1e-4);
}

// An export that fails half way (here: no tokenizer to copy, after the weights were written) leaves
// neither the directory nor its temporary behind.
TEST(HfExport, FailureLeavesNothingThatLooksComplete) {
  auto model = student(QuantSpec{});
  const auto out = qkd::test::scratch_dir("hf-fail");
  const auto empty = qkd::test::scratch_dir("no-tokenizer");
  try {
    qkd::exporting::write_hf({*model, QuantSpec{}, empty}, out + "/hf", {});
    ADD_FAILURE() << "expected a failure";
  } catch (const qkd::Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.model"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fs::is_empty(out)) << fs::directory_iterator(out)->path();
}

TEST(ExportFormats, ParseListsAndRejectUnknownNames) {
  using qkd::exporting::Format;
  EXPECT_EQ(qkd::exporting::parse_format_list("hf,gguf,hf", "--format"),
            (std::vector<Format>{Format::hf, Format::gguf}));
  for (const char* bad : {"hf,,gguf", "onnx", ""}) {
    try {
      qkd::exporting::parse_format_list(bad, "--format");
      ADD_FAILURE() << bad;
    } catch (const qkd::Error& e) {
      EXPECT_NE(std::string(e.what()).find("--format"), std::string::npos) << e.what();
    }
  }
}

TEST(ExportFormats, RunConfigSectionTakesAListAndNamesTheOldKey) {
  nlohmann::json config = {
      {"run_dir", "/tmp/x"},
      {"teacher", {{"path", kTeacher}}},
      {"data", {{"sources", {{{"path", qkd::test::repo_path("assets/data/kjv/kjv-train.u16")}}}}}}};
  config["export"] = {{"formats", {"gguf", "hf"}}, {"gguf_type", "q8_0"}};
  const auto parsed = qkd::train::parse_run_config(config);
  EXPECT_EQ(parsed.export_config().formats,
            (std::vector<qkd::exporting::Format>{qkd::exporting::Format::gguf, qkd::exporting::Format::hf}));
  EXPECT_EQ(qkd::exporting::gguf_types().name(parsed.export_config().gguf_type), "q8_0");
  for (const auto& [section, needle] :
       std::vector<std::pair<nlohmann::json, std::string>>{{{{"hf", true}}, "export.hf: replaced by export.formats"},
                                                           {{{"formats", {"onnx"}}}, "export.formats"},
                                                           {{{"gguf_type", "q2_k"}}, "export.gguf_type"}}) {
    config["export"] = section;
    try {
      qkd::train::parse_run_config(config);
      ADD_FAILURE() << section.dump();
    } catch (const qkd::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  }
}

QuantSpec fp4_spec(WeightFormat format) { return quant_spec_from_json({{"format", weight_formats().name(format)}}); }

// fp4 students: the codes decode to the forward weights bitwise, and an fp32 hf export holds exactly
// those weights.
TEST(IntegerWeights, Fp4CodesAreTheForwardWeightsBitwise) {
  for (auto format : {WeightFormat::nvfp4, WeightFormat::mxfp4}) {
    const auto spec = fp4_spec(format);
    auto model = student(spec);
    int checked = 0;
    for (auto& [module, linear] : model->named_linears()) {
      if (!linear->weight_quantizer()) continue;
      const auto w = qkd::exporting::integer_weight(*model, module + ".weight");
      torch::NoGradGuard no_grad;
      EXPECT_TRUE(torch::equal(w.dequantize(), linear->effective_weight().to(torch::kFloat))) << module;
      EXPECT_TRUE(w.fp4());
      EXPECT_EQ(w.block_length(), fp4_group_size(format));
      EXPECT_GE(w.codes.min().item<int>(), 0);
      EXPECT_LE(w.codes.max().item<int>(), 15);
      EXPECT_EQ(w.global_scale.defined(), format == WeightFormat::nvfp4);
      ++checked;
    }
    EXPECT_EQ(checked, 6 * 7);
    const auto out = qkd::test::scratch_dir("hf-fp4");
    qkd::exporting::ExportOptions options;
    options.dtype = torch::kFloat32;
    qkd::exporting::export_student({*model, spec, kTeacher}, {qkd::exporting::Format::hf}, out, options);
    for (const auto& [name, tensor] : qkd::io::read_safetensors(out + "/hf/model.safetensors")) {
      if (name.find("_proj.weight") == std::string::npos) continue;
      EXPECT_TRUE(torch::equal(tensor, qkd::exporting::integer_weight(*model, name).dequantize())) << name;
    }
  }
}

TEST(ExportFormats, EncodingsRefuseFp4NamingTheKey) {
  const auto spec = fp4_spec(WeightFormat::mxfp4);
  auto model = student(spec);
  qkd::test::expect_error(
      [&] {
        qkd::exporting::check_export({*model, spec, kTeacher}, {qkd::exporting::Format::encodings});
      },
      {"quant.format", "mxfp4", "AIMET"});
}

bool has(const std::vector<std::string>& lines, const std::string& part) {
  return std::any_of(lines.begin(), lines.end(),
                     [&](const std::string& l) { return l.find(part) != std::string::npos; });
}

// Which runtimes load an export, and the kernel rules a student breaks, named with the layer.
TEST(Serving, PackedInt4NamesVllmKernelsAndTheRulesBroken) {
  using qkd::exporting::Format;
  using qkd::exporting::serving_report;
  // W4 g128 asymmetric on the shipped teacher (widths 128, 256, 768): Marlin and Machete both take it.
  auto spec = qkd::test::quant_spec(4, Granularity::per_group, false, 128);
  auto model = student(spec);
  auto r = serving_report({*model, spec, kTeacher}, Format::packed);
  EXPECT_TRUE(has(r.runtimes, "Marlin kernel")) << r.runtimes.front();
  EXPECT_TRUE(has(r.runtimes, "Machete kernel"));
  EXPECT_TRUE(r.warnings.empty()) << r.warnings.front();
  // Groups of 32: Marlin yes, Machete no (group size), named with the layer and the rule's source.
  spec = qkd::test::quant_spec(4, Granularity::per_group, true, 32);
  model = student(spec);
  r = serving_report({*model, spec, kTeacher}, Format::packed);
  EXPECT_TRUE(has(r.runtimes, "Marlin kernel"));
  EXPECT_FALSE(has(r.runtimes, "Machete kernel"));
  EXPECT_TRUE(has(r.warnings,
                  "vLLM Machete (Hopper sm90): group size 32 is not -1 or 128 "
                  "(MACHETE_SUPPORTED_GROUP_SIZES): model.layers.0.self_attn.q_proj"));
  // 8-bit asymmetric: no Marlin zero points; per tensor: no vLLM scheme at all.
  spec = qkd::test::quant_spec(8, Granularity::per_channel, false);
  model = student(spec);
  r = serving_report({*model, spec, kTeacher}, Format::packed);
  EXPECT_TRUE(has(r.warnings, "zero points only with 4-bit weights"));
  EXPECT_TRUE(has(r.runtimes, "Machete kernel"));
  spec = qkd::test::quant_spec(4, Granularity::per_tensor, true);
  model = student(spec);
  r = serving_report({*model, spec, kTeacher}, Format::packed);
  EXPECT_TRUE(has(r.warnings, "per-tensor integer weights"));
  EXPECT_FALSE(has(r.runtimes, "vLLM"));
  // Widths: the unit-test shape (hidden 64) breaks Marlin's in_features rule on every projection.
  spec = qkd::test::quant_spec(4, Granularity::per_channel, true);
  auto tiny = qkd::test::load_student(qkd::test::fixture_path("models/tiny-llama-gqa-sharded"), spec);
  r = serving_report({*tiny, spec, qkd::test::fixture_path("models/tiny-llama-gqa-sharded")}, Format::packed);
  EXPECT_TRUE(has(r.warnings, "in_features not a multiple of 128 (GPTQ_MARLIN_MIN_THREAD_K)"));
}

TEST(Serving, GgufNamesTheAsymmetricRuleAndFp4Runtimes) {
  using qkd::exporting::Format;
  auto spec = qkd::test::quant_spec(4, Granularity::per_group, false, 128);
  auto model = student(spec);
  auto r = qkd::exporting::serving_report({*model, spec, kTeacher}, Format::gguf);
  EXPECT_TRUE(has(r.warnings, "llama.cpp Q4_0: asymmetric 4-bit grid is not Q4_0's")) << r.warnings.front();
  EXPECT_TRUE(has(r.warnings, "model.layers.0.self_attn.q_proj"));
  spec = fp4_spec(WeightFormat::nvfp4);
  model = student(spec);
  r = qkd::exporting::serving_report({*model, spec, kTeacher}, Format::gguf);
  EXPECT_TRUE(r.warnings.empty());
  EXPECT_TRUE(has(r.runtimes, "GGML_TYPE_NVFP4 (40)"));
  r = qkd::exporting::serving_report({*model, spec, kTeacher}, Format::packed);
  EXPECT_TRUE(has(r.runtimes, "CompressedTensorsW4A16Fp4"));
  // MXFP4 in vLLM needs bfloat16 activations: a float16 export is flagged.
  spec = fp4_spec(WeightFormat::mxfp4);
  model = student(spec);
  r = qkd::exporting::serving_report({*model, spec, kTeacher}, Format::packed);
  EXPECT_TRUE(has(r.warnings, "no float16 kernel"));
  qkd::exporting::ExportOptions bf16;
  bf16.dtype = torch::kBFloat16;
  EXPECT_TRUE(qkd::exporting::serving_report({*model, spec, kTeacher}, Format::packed, bf16).warnings.empty());
}

}  // namespace
