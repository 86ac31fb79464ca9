// The model against transformers: logits and hidden states of the three reference checkpoints.
#include <gtest/gtest.h>

#include <filesystem>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/io/safetensors.h"
#include "test_support.h"

namespace {

using qkd::test::fixture_path;

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

class ReferenceLogits : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceLogits, MatchTransformersWithin1e4) {
  const auto dir = fixture_path("models/" + GetParam());
  auto model = qkd::checkpoint::load_llama(dir);
  model->eval();
  torch::NoGradGuard no_grad;
  const auto reference = qkd::io::SafetensorsFile::open(dir + "/reference_logits.safetensors");
  int checked = 0;
  for (const auto& info : reference.tensors()) {
    if (info.name.rfind("input_ids_", 0) != 0) continue;
    const auto key = info.name.substr(10);
    const auto logits = model->forward(reference.tensor(info.name));
    const auto expected = reference.tensor("logits_" + key);
    ASSERT_EQ(logits.sizes(), expected.sizes());
    EXPECT_LT(max_abs_diff(logits, expected), 1e-4) << GetParam() << " logits_" << key;
    ++checked;
  }
  EXPECT_GE(checked, 1);
}

TEST_P(ReferenceLogits, HiddenStatesMatchTransformersWithin1e4) {
  const auto dir = fixture_path("models/" + GetParam());
  auto model = qkd::checkpoint::load_llama(dir);
  torch::NoGradGuard no_grad;
  const auto reference = qkd::io::SafetensorsFile::open(dir + "/reference_logits.safetensors");
  std::vector<torch::Tensor> hidden;
  model->forward(reference.tensor("input_ids_0"), &hidden);
  ASSERT_EQ(static_cast<int64_t>(hidden.size()), model->config().num_hidden_layers + 1);
  for (size_t j = 0; j < hidden.size(); ++j) {
    const auto expected = reference.tensor("hidden_0_" + std::to_string(j));
    EXPECT_LT(max_abs_diff(hidden[j], expected), 1e-4) << GetParam() << " hidden_0_" << j;
  }
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, ReferenceLogits,
                         ::testing::Values("kjv-teacher-7m", "tiny-llama-gqa-sharded",
                                           "tiny-llama-tied-llama3rope-bf16"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (auto& c : name)
                             if (c == '-') c = '_';
                           return name;
                         });

TEST(Checkpoint, Bf16ComputeStaysCloseToFp32) {
  const auto dir = fixture_path("models/kjv-teacher-7m");
  auto fp32 = qkd::checkpoint::load_llama(dir);
  auto bf16 = qkd::checkpoint::load_llama(dir, {torch::kBFloat16, torch::kCPU});
  torch::NoGradGuard no_grad;
  const auto ids = qkd::io::SafetensorsFile::open(dir + "/reference_logits.safetensors").tensor("input_ids_0");
  const auto a = torch::log_softmax(fp32->forward(ids), -1);
  const auto b = torch::log_softmax(bf16->forward(ids).to(torch::kFloat32), -1);
  EXPECT_EQ(bf16->parameters().front().scalar_type(), torch::kBFloat16);
  // bf16 keeps ~3 significant digits; the next-token distribution must still agree closely.
  const auto kl = (a.exp() * (a - b)).sum(-1).mean().item<double>();
  EXPECT_LT(kl, 0.02);
}

TEST(Checkpoint, ParameterNamesAreHuggingFaceNames) {
  auto model = qkd::checkpoint::load_llama(fixture_path("models/tiny-llama-gqa-sharded"));
  const auto params = model->named_parameters();
  EXPECT_TRUE(params.contains("model.layers.1.self_attn.v_proj.weight"));
  EXPECT_TRUE(params.contains("model.embed_tokens.weight"));
  EXPECT_TRUE(params.contains("lm_head.weight"));
  EXPECT_EQ(params["model.layers.0.self_attn.k_proj.weight"].sizes(), (std::vector<int64_t>{32, 64}));
  auto tied = qkd::checkpoint::load_llama(fixture_path("models/tiny-llama-tied-llama3rope-bf16"));
  EXPECT_FALSE(tied->named_parameters().contains("lm_head.weight"));
}

}  // namespace
