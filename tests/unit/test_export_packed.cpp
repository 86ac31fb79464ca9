// compressed-tensors "pack-quantized" export: layout, metadata, round trip through the loader, the CLI.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/checkpoint/student_checkpoint.h"
#include "qkd/common/error.h"
#include "qkd/export/compressed_tensors.h"
#include "qkd/export/integer_weights.h"
#include "qkd/io/safetensors.h"
#include "qkd/quant/fp4_grid.h"
#include "qkd/quant/student.h"
#include "test_support.h"

namespace fs = std::filesystem;
using namespace qkd;
using nlohmann::json;

namespace {

std::string tiny_dir() { return test::fixture_path("models/tiny-llama-gqa-sharded"); }
std::string teacher_dir() { return qkd::test::shipped_teacher(); }

torch::Tensor token_batch(int64_t vocab, int64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(1, vocab, {2, 12}, torch::kLong);
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

exporting::ExportOptions fp32_options() {
  exporting::ExportOptions o;
  o.dtype = torch::kFloat32;
  return o;
}

void expect_round_trip(const quant::QuantSpec& spec, const std::string& tag) {
  auto student = test::load_student(tiny_dir(), spec);
  const auto dir = test::scratch_dir(tag) + "/packed";
  exporting::write_packed({*student, spec, tiny_dir()}, dir, fp32_options());
  ASSERT_TRUE(exporting::is_packed_checkpoint(dir));
  auto loaded = exporting::load_packed_checkpoint(dir);
  loaded->eval();
  torch::NoGradGuard no_grad;
  for (int64_t seed = 0; seed < 3; ++seed) {
    const auto ids = token_batch(student->config().vocab_size, seed);
    const auto a = student->forward(ids), b = loaded->forward(ids);
    EXPECT_LT((a - b).abs().max().item<double>(), 1e-4) << tag << " seed " << seed;
  }
  // The unpacked weights are the student's grid values.
  for (const auto& name : exporting::integer_weight_names(*student)) {
    const auto expected = exporting::integer_weight(*student, name).dequantize();
    const auto module = name.substr(0, name.size() - 7);
    torch::Tensor actual;
    for (auto& [m, linear] : loaded->named_linears())
      if (m == module) actual = linear->weight;
    ASSERT_TRUE(actual.defined()) << name;
    EXPECT_TRUE(torch::equal(actual, expected)) << name;
  }
}

}  // namespace

TEST(ExportPacked, RoundTripPerChannelSymmetric4Bit) {
  expect_round_trip(test::quant_spec(4, quant::Granularity::per_channel, true), "packed-ch4");
}

TEST(ExportPacked, RoundTripPerGroupAsymmetric4Bit) {
  expect_round_trip(test::quant_spec(4, quant::Granularity::per_group, false, 16), "packed-g4a");
}

TEST(ExportPacked, RoundTrip8BitAsymmetricPerChannelAndSymmetricPerGroup) {
  expect_round_trip(test::quant_spec(8, quant::Granularity::per_channel, false), "packed-ch8a");
  expect_round_trip(test::quant_spec(8, quant::Granularity::per_group, true, 16), "packed-g8");
}

TEST(ExportPacked, RoundTripPerTensorAnd2BitAndQuantizedLmHead) {
  expect_round_trip(test::quant_spec(4, quant::Granularity::per_tensor, false), "packed-t4a");
  auto s = test::quant_spec(2, quant::Granularity::per_channel, false);
  s.lm_head_bits = 8;
  expect_round_trip(s, "packed-ch2a-head8");
}

// A hand-computed layout: codes of row 0 of q_proj set explicitly, packed words written out.
TEST(ExportPacked, PackingLayoutMatchesHandComputedWords) {
  const auto spec = test::quant_spec(4, quant::Granularity::per_channel, true);
  auto student = test::load_student(tiny_dir(), spec);
  {
    torch::NoGradGuard no_grad;
    model::Linear q{nullptr};
    for (auto& [name, linear] : student->named_linears())
      if (name == "model.layers.0.self_attn.q_proj") q = linear;
    ASSERT_TRUE(q);
    auto row = torch::zeros({q->in_features()});
    const std::vector<float> codes = {1, 2, 3, 4, 5, 6, 7, -7, -1, -2, -3, -4, 0, 0, 0, 0};
    for (size_t i = 0; i < codes.size(); ++i) row[i] = codes[i] * 0.125f;  // scale = 0.875 / 7 = 0.125
    q->weight[0].copy_(row);
  }
  const auto dir = test::scratch_dir("packed-layout") + "/packed";
  exporting::write_packed({*student, spec, tiny_dir()}, dir, fp32_options());
  const auto file = io::SafetensorsFile::open(dir + "/model.safetensors");
  const auto packed = file.tensor("model.layers.0.self_attn.q_proj.weight_packed");
  // Fields = code + 8, first element in the lowest nibble:
  //   [9, 10, 11, 12, 13, 14, 15, 1] -> 0x1FEDCBA9; [7, 6, 5, 4, 8, 8, 8, 8] -> 0x88884567 (negative as int32)
  EXPECT_EQ(packed[0][0].item<int32_t>(), 0x1FEDCBA9);
  EXPECT_EQ(packed[0][1].item<int32_t>(), static_cast<int32_t>(0x88884567u));
  EXPECT_EQ(packed[0][2].item<int32_t>(), static_cast<int32_t>(0x88888888u));  // zeros
  EXPECT_FLOAT_EQ(file.tensor("model.layers.0.self_attn.q_proj.weight_scale")[0][0].item<float>(), 0.125f);
}

TEST(ExportPacked, ZeroPointsPackAlongOutputDimension) {
  const auto spec = test::quant_spec(4, quant::Granularity::per_group, false, 16);
  auto student = test::load_student(tiny_dir(), spec);
  const auto dir = test::scratch_dir("packed-zp") + "/packed";
  exporting::write_packed({*student, spec, tiny_dir()}, dir, fp32_options());
  const auto file = io::SafetensorsFile::open(dir + "/model.safetensors");
  const auto w = exporting::integer_weight(*student, "model.layers.0.mlp.down_proj.weight");  // [64, 176]
  const auto zp = file.tensor("model.layers.0.mlp.down_proj.weight_zero_point");
  ASSERT_EQ(zp.sizes(), (std::vector<int64_t>{64 / 8, 176 / 16}));
  // Word [r, g] holds the zero points of rows 8r..8r+7 of group g, row 8r in the lowest nibble.
  for (int64_t r = 0; r < 8; ++r)
    for (int64_t g = 0; g < 11; ++g) {
      uint32_t word = 0;
      for (int64_t i = 0; i < 8; ++i) word |= static_cast<uint32_t>(w.zero[8 * r + i][g].item<int32_t>()) << (4 * i);
      EXPECT_EQ(static_cast<uint32_t>(zp[r][g].item<int32_t>()), word) << r << "," << g;
    }
}

TEST(ExportPacked, TensorsDtypesAndConfigAsTheFormatSpecifies) {
  auto spec = test::quant_spec(4, quant::Granularity::per_group, true, 16);
  auto student = test::load_student(tiny_dir(), spec);
  const auto dir = test::scratch_dir("packed-meta") + "/packed";
  exporting::write_packed({*student, spec, tiny_dir()}, dir, exporting::ExportOptions{});  // fp16
  const auto file = io::SafetensorsFile::open(dir + "/model.safetensors");
  EXPECT_EQ(file.metadata().at("format"), "pt");
  const std::string m = "model.layers.1.mlp.down_proj";  // [64, 176]
  EXPECT_FALSE(file.contains(m + ".weight"));
  EXPECT_EQ(file.info(m + ".weight_packed").dtype, io::DType::i32);
  EXPECT_EQ(file.info(m + ".weight_packed").shape, (std::vector<int64_t>{64, 22}));
  EXPECT_EQ(file.info(m + ".weight_scale").dtype, io::DType::f16);
  EXPECT_EQ(file.info(m + ".weight_scale").shape, (std::vector<int64_t>{64, 11}));
  EXPECT_FALSE(file.contains(m + ".weight_zero_point"));  // symmetric
  EXPECT_EQ(file.info(m + ".weight_shape").dtype, io::DType::i64);
  EXPECT_EQ(file.tensor(m + ".weight_shape")[0].item<int64_t>(), 64);
  EXPECT_EQ(file.tensor(m + ".weight_shape")[1].item<int64_t>(), 176);
  EXPECT_EQ(file.info("model.embed_tokens.weight").dtype, io::DType::f16);
  EXPECT_EQ(file.info("model.norm.weight").dtype, io::DType::f16);
  EXPECT_EQ(file.info("lm_head.weight").dtype, io::DType::f16);

  const auto config = read_json(dir + "/config.json");
  EXPECT_EQ(config.at("model_type"), "llama");
  const auto& qc = config.at("quantization_config");
  EXPECT_EQ(qc.at("quant_method"), "compressed-tensors");
  EXPECT_EQ(qc.at("format"), "pack-quantized");
  EXPECT_EQ(qc.at("quantization_status"), "compressed");
  EXPECT_EQ(qc.at("ignore"), json::array({"lm_head"}));
  const auto& group = qc.at("config_groups").at("group_0");
  EXPECT_EQ(group.at("targets"), json::array({"re:.*_proj$"}));
  const auto& w = group.at("weights");
  EXPECT_EQ(w.at("num_bits"), 4);
  EXPECT_EQ(w.at("type"), "int");
  EXPECT_EQ(w.at("symmetric"), true);
  EXPECT_EQ(w.at("strategy"), "group");
  EXPECT_EQ(w.at("group_size"), 16);
  EXPECT_EQ(w.at("dynamic"), false);
  EXPECT_TRUE(group.at("input_activations").is_null());
  EXPECT_TRUE(fs::exists(dir + "/tokenizer.model"));
  EXPECT_TRUE(fs::exists(dir + "/generation_config.json"));
  EXPECT_TRUE(exporting::is_packed_checkpoint(dir));
  EXPECT_FALSE(exporting::is_packed_checkpoint(tiny_dir()));

  // fp16 scales: still close to the student.
  auto loaded = exporting::load_packed_checkpoint(dir);
  torch::NoGradGuard no_grad;
  const auto ids = token_batch(student->config().vocab_size, 7);
  EXPECT_LT((student->forward(ids) - loaded->forward(ids)).abs().max().item<double>(), 1e-2);
}

TEST(ExportPacked, StaticInputActivationsAreWrittenAsInputScale) {
  auto spec = test::quant_spec(4, quant::Granularity::per_channel, false);
  spec.act_bits = 8;
  auto student = test::load_student(tiny_dir(), spec);
  quant::begin_activation_calibration(*student);
  {
    torch::NoGradGuard no_grad;
    student->forward(token_batch(student->config().vocab_size, 3));
  }
  quant::end_activation_calibration(*student);
  const auto dir = test::scratch_dir("packed-act") + "/packed";
  exporting::write_packed({*student, spec, tiny_dir()}, dir, fp32_options());
  const auto file = io::SafetensorsFile::open(dir + "/model.safetensors");
  for (const auto& name : exporting::integer_weight_names(*student)) {
    const auto module = name.substr(0, name.size() - 7);
    ASSERT_TRUE(file.contains(module + ".input_scale")) << module;
    EXPECT_EQ(file.info(module + ".input_zero_point").dtype, io::DType::i8) << module;
    EXPECT_EQ(file.info(module + ".weight_zero_point").dtype, io::DType::i32) << module;
  }
  const auto act = read_json(dir + "/config.json")
                       .at("quantization_config")
                       .at("config_groups")
                       .at("group_0")
                       .at("input_activations");
  EXPECT_EQ(act.at("num_bits"), 8);
  EXPECT_EQ(act.at("strategy"), "tensor");
  EXPECT_EQ(act.at("dynamic"), false);
  EXPECT_EQ(act.at("symmetric"), false);
  // Loading simulates the input quantizers again, with the stored scales and zero points.
  auto loaded = exporting::load_packed_checkpoint(dir);
  loaded->eval();
  torch::NoGradGuard no_grad;
  for (int64_t seed = 10; seed < 13; ++seed) {
    const auto ids = token_batch(student->config().vocab_size, seed);
    EXPECT_LT((student->forward(ids) - loaded->forward(ids)).abs().max().item<double>(), 1e-4) << seed;
  }
}

TEST(ExportPacked, ShapesAndWidthsTheFormatCannotHoldFailBeforeWriting) {
  model::LlamaConfig c;
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.intermediate_size = 20;  // down_proj in_features 20: not a multiple of 8 four-bit codes
  c.num_hidden_layers = 1;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  model::LlamaForCausalLM m(c);
  const auto spec = test::quant_spec(4, quant::Granularity::per_channel, true);
  quant::attach_quantizers(*m, spec);
  const auto dir = test::scratch_dir("packed-bad") + "/packed";
  try {
    exporting::write_packed({*m, spec, ""}, dir, fp32_options());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.0.mlp.down_proj.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("in_features 20"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir));

  auto student = test::load_student(tiny_dir(), test::quant_spec(3, quant::Granularity::per_channel, true));
  try {
    exporting::check_packed({*student, test::quant_spec(3, quant::Granularity::per_channel, true), tiny_dir()});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("quant.bits:", 0), 0u) << e.what();
  }
}

TEST(ExportPacked, CliEvalOnPackedDirMatchesStudent) {
  const auto spec = test::quant_spec(4, quant::Granularity::per_group, false, 32);
  auto student = test::load_student(teacher_dir(), spec);
  const auto scratch = test::scratch_dir("packed-cli");
  const auto student_dir = scratch + "/student", packed_dir = scratch + "/packed";
  checkpoint::save_student_checkpoint(*student, spec, student_dir, torch::kFloat32, teacher_dir());
  exporting::write_packed({*student, spec, teacher_dir()}, packed_dir, fp32_options());
  const auto val = qkd::test::kjv_val_tokens();
  const std::string common = " --ppl " + val + " --max-windows 3 --seq-len 64 --batch-size 3";
  const auto a = test::run_cli(
      "eval --model " + teacher_dir() + " --student " + student_dir + common + " --json " + scratch + "/a.json", "",
      300);
  ASSERT_EQ(a.exit_code, 0) << a.output;
  const auto b = test::run_cli("eval --model " + packed_dir + common + " --json " + scratch + "/b.json", "", 300);
  ASSERT_EQ(b.exit_code, 0) << b.output;
  // One perplexity file: the only entry of "ppl".
  const auto ppl_of = [&](const std::string& name) {
    const auto ppl = read_json(scratch + "/" + name).at("ppl");
    EXPECT_EQ(ppl.size(), 1u) << ppl.dump();
    return ppl.begin().value().get<double>();
  };
  const double ppl_a = ppl_of("a.json");
  const double ppl_b = ppl_of("b.json");
  EXPECT_GT(ppl_a, 1.0);
  EXPECT_NEAR(ppl_b, ppl_a, 1e-6 * ppl_a);
  // --student accepts a packed directory too.
  const auto c = test::run_cli(
      "eval --model " + teacher_dir() + " --student " + packed_dir + common + " --json " + scratch + "/c.json", "",
      300);
  ASSERT_EQ(c.exit_code, 0) << c.output;
  EXPECT_NEAR(ppl_of("c.json"), ppl_a, 1e-6 * ppl_a);

  // `logits` reads the packed directory too: fp32 logits of the student.
  const auto reference = test::fixture_path("models/kjv-teacher-7m/reference_logits.safetensors");
  const auto d = test::run_cli(
      "logits --model " + packed_dir + " --input " + reference + " --output " + scratch + "/logits.safetensors", "",
      300);
  ASSERT_EQ(d.exit_code, 0) << d.output;
  const auto input = io::SafetensorsFile::open(reference).tensor("input_ids_0");
  const auto logits = io::SafetensorsFile::open(scratch + "/logits.safetensors").tensor("logits_0");
  torch::NoGradGuard no_grad;
  EXPECT_LT((logits - student->forward(input)).abs().max().item<double>(), 1e-4);
}

// fp4 students: nvfp4-pack-quantized / mxfp4-pack-quantized as compressed-tensors lays them out (two
// codes a byte, the first low; E4M3 or E8M0 scale bytes; NVFP4's global scale g with 1 / g = s_t), and
// the loader's weights are the student's forward weights bitwise.
TEST(ExportPacked, Fp4StudentsRoundTripBitwise) {
  for (auto format : {quant::WeightFormat::nvfp4, quant::WeightFormat::mxfp4}) {
    SCOPED_TRACE(quant::weight_formats().name(format));
    const bool nv = format == quant::WeightFormat::nvfp4;
    const auto spec = quant::quant_spec_from_json({{"format", quant::weight_formats().name(format)}});
    auto student = test::load_student(teacher_dir(), spec);
    const auto dir = test::scratch_dir("packed-fp4") + "/packed";
    exporting::write_packed({*student, spec, teacher_dir()}, dir, fp32_options());
    const auto qc = read_json(dir + "/config.json").at("quantization_config");
    EXPECT_EQ(qc.at("format"), nv ? "nvfp4-pack-quantized" : "mxfp4-pack-quantized");
    const auto& weights = qc.at("config_groups").at("group_0").at("weights");
    EXPECT_EQ(weights.at("type"), "float");
    EXPECT_EQ(weights.at("num_bits"), 4);
    EXPECT_EQ(weights.at("strategy"), nv ? "tensor_group" : "group");
    EXPECT_EQ(weights.at("group_size"), nv ? 16 : 32);
    EXPECT_EQ(weights.at("scale_dtype"), nv ? "torch.float8_e4m3fn" : "torch.uint8");
    const auto file = io::SafetensorsFile::open(dir + "/model.safetensors");
    for (const auto& name : exporting::integer_weight_names(*student)) {
      const auto module = name.substr(0, name.size() - 7);
      const auto w = exporting::integer_weight(*student, name);
      const auto packed = file.tensor(module + ".weight_packed");
      ASSERT_EQ(file.info(module + ".weight_packed").dtype, io::DType::u8);
      ASSERT_EQ(packed.sizes(), (std::vector<int64_t>{w.out_features(), w.in_features() / 2}));
      const auto bytes = packed.to(torch::kInt);
      const auto codes = w.codes.to(torch::kInt).reshape({w.out_features(), -1, 2});
      EXPECT_TRUE(torch::equal(torch::remainder(bytes, 16), codes.select(2, 0))) << name;
      EXPECT_TRUE(torch::equal(torch::div(bytes, 16, "floor"), codes.select(2, 1))) << name;
      EXPECT_EQ(file.info(module + ".weight_scale").dtype, nv ? io::DType::f8_e4m3 : io::DType::u8);
      EXPECT_TRUE(torch::equal(file.tensor(module + ".weight_scale"),
                               nv ? quant::fp4::e4m3_bytes(w.scale) : quant::fp4::e8m0_bytes(w.scale)));
      EXPECT_EQ(file.contains(module + ".weight_global_scale"), nv);
      if (nv) {
        const auto g = file.tensor(module + ".weight_global_scale");
        EXPECT_EQ(g.sizes(), std::vector<int64_t>{1});
        EXPECT_EQ(1.0f / g.item<float>(), w.tensor_scale.item<float>());  // what vLLM and llama.cpp multiply by
      }
    }
    auto loaded = exporting::load_packed_checkpoint(dir);
    for (auto& [module, linear] : loaded->named_linears()) {
      if (module == "lm_head") continue;
      torch::NoGradGuard no_grad;
      EXPECT_TRUE(torch::equal(linear->weight, exporting::integer_weight(*student, module + ".weight").dequantize()))
          << module;
    }
  }
}
