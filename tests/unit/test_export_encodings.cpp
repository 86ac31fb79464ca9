// AIMET encodings export: the JSON parsed back reproduces the student's integer codes from the fp32 weights.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/common/error.h"
#include "qkd/export/aimet_encodings.h"
#include "qkd/export/integer_weights.h"
#include "qkd/io/safetensors.h"
#include "qkd/quant/student.h"
#include "test_support.h"

namespace fs = std::filesystem;
using namespace qkd;
using nlohmann::json;

namespace {

std::string tiny_dir() { return test::fixture_path("models/tiny-llama-gqa-sharded"); }

model::LlamaForCausalLM make_student(const quant::QuantSpec& spec) {
  auto model = test::load_student(tiny_dir(), spec);
  if (spec.act_bits > 0) {
    quant::begin_activation_calibration(*model);
    torch::NoGradGuard no_grad;
    torch::manual_seed(5);
    model->forward(torch::randint(1, model->config().vocab_size, {2, 16}, torch::kLong));
    quant::end_activation_calibration(*model);
  }
  return model;
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

// Per block (row-major [out, blocks]) scale and offset of one weight, from either version.
struct Blocks {
  torch::Tensor scale, offset;  // float32 / int64, [n]
  int64_t bits = 0;
  bool symmetric = false;
};

Blocks blocks_of(const json& enc, const std::string& name) {
  Blocks b;
  std::vector<float> scale;
  std::vector<int64_t> offset;
  if (enc.at("version") == "0.6.1") {
    const auto& list = enc.at("param_encodings").at(name);
    for (const auto& e : list) {
      scale.push_back(e.at("scale").get<float>());
      offset.push_back(e.at("offset").get<int64_t>());
      b.bits = e.at("bitwidth").get<int64_t>();
      b.symmetric = e.at("is_symmetric") == "True";
      EXPECT_EQ(e.at("dtype"), "int");
      const double s = e.at("scale").get<double>(), o = e.at("offset").get<double>();
      EXPECT_DOUBLE_EQ(e.at("min").get<double>(), o * s) << name;
      EXPECT_DOUBLE_EQ(e.at("max").get<double>(), (o + std::pow(2.0, b.bits) - 1) * s) << name;
    }
  } else {
    const json* found = nullptr;
    for (const auto& e : enc.at("param_encodings"))
      if (e.at("name") == name) found = &e;
    if (!found) throw std::runtime_error("no encoding for " + name);
    for (const auto& v : found->at("scale")) scale.push_back(v.get<float>());
    for (const auto& v : found->at("offset")) offset.push_back(v.get<int64_t>());
    b.bits = found->at("bw").get<int64_t>();
    b.symmetric = found->at("is_sym").get<bool>();
  }
  b.scale = torch::tensor(scale, torch::kFloat);
  b.offset = torch::tensor(offset, torch::kLong);
  return b;
}

// Quantizes the exported fp32 weights with the encodings, AIMET's way: clamp(round(w / scale) - offset,
// 0, 2^b - 1), and compares with the student's codes (shifted to unsigned when symmetric).
void expect_codes_reproduced(model::LlamaForCausalLMImpl& student, const std::string& dir, const std::string& tag) {
  const auto enc = read_json(dir + "/model.encodings");
  const auto weights = io::SafetensorsFile::open(dir + "/model.safetensors");
  const auto names = exporting::integer_weight_names(student);
  ASSERT_FALSE(names.empty());
  EXPECT_EQ(enc.at("param_encodings").size(), names.size()) << tag;  // object (0.6.1) or list (1.0.0)
  for (const auto& name : names) {
    const auto iw = exporting::integer_weight(student, name);
    const auto b = blocks_of(enc, name);
    EXPECT_EQ(b.bits, iw.bits) << name;
    EXPECT_EQ(b.symmetric, iw.symmetric) << name;
    ASSERT_EQ(b.scale.numel(), iw.scale.numel()) << name;
    if (iw.granularity == quant::Granularity::per_channel) EXPECT_EQ(b.scale.numel(), iw.out_features()) << name;
    ASSERT_EQ(weights.info(name).dtype, io::DType::f32) << name;
    const auto w = weights.tensor(name).reshape({iw.scale.size(0), iw.scale.size(1), -1});
    const auto scale = b.scale.reshape({iw.scale.size(0), iw.scale.size(1), 1});
    const auto offset = b.offset.reshape({iw.scale.size(0), iw.scale.size(1), 1});
    const auto q = torch::clamp(torch::round(w / scale).to(torch::kLong) - offset, 0, (int64_t{1} << iw.bits) - 1);
    auto expected = iw.codes.to(torch::kLong).reshape(q.sizes());
    if (iw.symmetric) expected = expected + (int64_t{1} << (iw.bits - 1));
    EXPECT_TRUE(torch::equal(q, expected)) << tag << " " << name;
  }
}

}  // namespace

TEST(ExportEncodings, PerChannelSymmetric4BitReproducesCodes) {
  const auto spec = test::quant_spec(4, quant::Granularity::per_channel, true);
  auto student = make_student(spec);
  const auto dir = test::scratch_dir("enc-ch4") + "/encodings";
  exporting::write_encodings({*student, spec, tiny_dir()}, dir, {});
  const auto enc = read_json(dir + "/model.encodings");
  EXPECT_EQ(enc.at("version"), "0.6.1");
  EXPECT_TRUE(enc.at("activation_encodings").empty());
  // Symmetric: AIMET's unsigned offset is -2^(b-1).
  EXPECT_EQ(enc.at("param_encodings").at("model.layers.0.self_attn.q_proj.weight")[0].at("offset"), -8);
  expect_codes_reproduced(*student, dir, "ch4");
  EXPECT_TRUE(fs::exists(dir + "/config.json"));
  EXPECT_TRUE(fs::exists(dir + "/tokenizer.model"));
  // The fp32 weights are the student's effective ones: same logits.
  auto loaded = checkpoint::load_llama(dir);
  torch::NoGradGuard no_grad;
  torch::manual_seed(1);
  const auto ids = torch::randint(1, 4096, {2, 10}, torch::kLong);
  EXPECT_LT((loaded->forward(ids) - student->forward(ids)).abs().max().item<double>(), 1e-4);
}

TEST(ExportEncodings, PerChannelAsymmetric8BitWithActivationEncodings) {
  auto spec = test::quant_spec(8, quant::Granularity::per_channel, false);
  spec.act_bits = 8;
  auto student = make_student(spec);
  const auto dir = test::scratch_dir("enc-ch8a") + "/encodings";
  exporting::write_encodings({*student, spec, tiny_dir()}, dir, {});
  expect_codes_reproduced(*student, dir, "ch8a");
  const auto enc = read_json(dir + "/model.encodings");
  const auto& acts = enc.at("activation_encodings");
  const auto names = exporting::integer_weight_names(*student);
  EXPECT_EQ(acts.size(), names.size());
  for (const auto& name : names) {
    const auto input = name.substr(0, name.size() - 7) + ".input";
    ASSERT_TRUE(acts.contains(input)) << input;
    const auto& e = acts.at(input).at(0);
    EXPECT_EQ(e.at("bitwidth"), 8);
    EXPECT_EQ(e.at("is_symmetric"), "False");
    EXPECT_GT(e.at("scale").get<double>(), 0.0);
    EXPECT_LE(e.at("offset").get<int64_t>(), 0);
    EXPECT_GE(e.at("offset").get<int64_t>(), -255);
  }
}

TEST(ExportEncodings, PerGroupUsesBlockwiseVersion) {
  const auto spec = test::quant_spec(4, quant::Granularity::per_group, false, 16);
  auto student = make_student(spec);
  const auto dir = test::scratch_dir("enc-g4a") + "/encodings";
  exporting::write_encodings({*student, spec, tiny_dir()}, dir, {});
  const auto enc = read_json(dir + "/model.encodings");
  EXPECT_EQ(enc.at("version"), "1.0.0");
  for (const auto& e : enc.at("param_encodings")) {
    EXPECT_EQ(e.at("enc_type"), "PER_BLOCK");
    EXPECT_EQ(e.at("block_size"), 16);
    EXPECT_EQ(e.at("dtype"), "INT");
  }
  expect_codes_reproduced(*student, dir, "g4a");
}

TEST(ExportEncodings, PerTensorAndQuantizedLmHead) {
  auto spec = test::quant_spec(6, quant::Granularity::per_tensor, false);
  spec.lm_head_bits = 8;
  auto student = make_student(spec);
  const auto dir = test::scratch_dir("enc-t6") + "/encodings";
  exporting::write_encodings({*student, spec, tiny_dir()}, dir, {});
  const auto enc = read_json(dir + "/model.encodings");
  EXPECT_EQ(enc.at("param_encodings").at("lm_head.weight").size(), 1u);
  EXPECT_EQ(enc.at("param_encodings").at("lm_head.weight")[0].at("bitwidth"), 8);
  expect_codes_reproduced(*student, dir, "t6");
}

TEST(ExportEncodings, WidthsBelowFourBitsAreRejectedBeforeWriting) {
  const auto spec = test::quant_spec(2, quant::Granularity::per_channel, true);
  auto student = make_student(spec);
  const auto dir = test::scratch_dir("enc-bad") + "/encodings";
  try {
    exporting::write_encodings({*student, spec, tiny_dir()}, dir, {});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("quant.bits:", 0), 0u) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir));
}
