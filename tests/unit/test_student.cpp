// Student construction on a real (tiny) LLaMA: selection, errors, state round trip, PTQ export.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>

#include "qkd/common/error.h"
#include "qkd/model/llama.h"
#include "qkd/quant/student.h"
#include "qkd/quant/weight_quantizer.h"
#include "test_support.h"

using namespace qkd::quant;
using qkd::model::LlamaForCausalLM;

namespace {

using qkd::test::expect_error;

// Same seed, same weights: a teacher and its students share them.
LlamaForCausalLM tiny_model(bool tied = false) {
  LlamaForCausalLM m(qkd::test::tiny_llama_config(tied));
  torch::manual_seed(7);
  torch::NoGradGuard no_grad;
  for (auto& p : m->parameters()) p.normal_(0.0, 0.1);
  return m;
}

torch::Tensor batch(int64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(0, 100, {2, 8}, torch::kLong);
}

QuantSpec static_spec() {
  QuantSpec s;
  s.bits = 3;
  s.granularity = Granularity::per_group;
  s.group_size = 32;
  s.symmetric = false;
  s.scale_policy = ScalePolicy::fixed;
  s.learnable_scale = true;
  s.act_bits = 8;
  return s;
}

void calibrate(LlamaForCausalLM& m) {
  begin_activation_calibration(*m);
  for (int i = 0; i < 2; ++i) m->forward(batch(100 + i));
  end_activation_calibration(*m);
}

}  // namespace

TEST(Student, DefaultSpecQuantizesTheSevenProjectionsOnly) {
  auto teacher = tiny_model();
  auto student = tiny_model();
  const auto names = attach_quantizers(*student, QuantSpec{});
  ASSERT_EQ(names.size(), 14u);
  EXPECT_EQ(names.front(), "model.layers.0.self_attn.q_proj");
  EXPECT_EQ(names.back(), "model.layers.1.mlp.down_proj");
  EXPECT_EQ(quantized_modules(*student), names);
  EXPECT_FALSE(student->lm_head->weight_quantizer());
  // Dynamic min-max has no state; parameter names are unchanged.
  EXPECT_TRUE(quantizer_state(*student).empty());
  EXPECT_EQ(student->named_parameters().size(), teacher->named_parameters().size());
  const auto x = batch(1);
  const auto ls = student->forward(x), lt = teacher->forward(x);
  EXPECT_TRUE(torch::isfinite(ls).all().item<bool>());
  EXPECT_FALSE(torch::equal(ls, lt));
  EXPECT_LT((ls - lt).abs().max().item<float>(), 2.0f);
}

TEST(Student, PatternsAreRegexesAndLmHeadHasItsOwnBits) {
  auto m = tiny_model();
  QuantSpec s;
  s.modules = {"layers\\.1\\..*mlp"};
  s.lm_head_bits = 8;
  const std::vector<std::string> expected = {"model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj",
                                             "model.layers.1.mlp.down_proj", "lm_head"};
  EXPECT_EQ(attach_quantizers(*m, s), expected);
  auto wq = std::dynamic_pointer_cast<WeightQuantizer>(m->lm_head->weight_quantizer());
  ASSERT_TRUE(wq);
  EXPECT_EQ(wq->spec().bits, 8);
  expect_error([&] { attach_quantizers(*m, s); }, "model.layers.1.mlp.gate_proj: already has quantizers");
}

TEST(Student, SelectionErrorsNameTheFieldAndLeaveTheModelUntouched) {
  auto m = tiny_model();
  QuantSpec s;
  s.granularity = Granularity::per_group;
  s.group_size = 48;
  expect_error([&] { attach_quantizers(*m, s); },
               "quant.group_size: 48 does not divide in_features 64 of model.layers.0.self_attn.q_proj");
  EXPECT_TRUE(quantized_modules(*m).empty());
  s.group_size = 64;  // divides every in_features here (64, 128)
  s.modules = {"no_such_proj"};
  expect_error([&] { attach_quantizers(*m, s); }, "quant.modules: no Linear module matches");
  auto tied = tiny_model(/*tied=*/true);
  QuantSpec head;
  head.lm_head_bits = 8;
  expect_error([&] { attach_quantizers(*tied, head); }, "quant.lm_head_bits: lm_head is tied");
  QuantSpec bad;
  bad.bits = 9;
  expect_error([&] { attach_quantizers(*m, bad); }, "quant.bits: 9");
}

TEST(Student, QuantizerStateRoundTripsThroughSpecAndTensors) {
  auto a = tiny_model();
  const auto spec = static_spec();
  attach_quantizers(*a, spec);
  calibrate(a);
  const auto state = quantizer_state(*a);
  bool found = false;
  for (const auto& [name, t] : state) found |= name == "model.layers.0.self_attn.v_proj.weight_quantizer.scale";
  EXPECT_TRUE(found);
  // 14 modules x (scale, zero_point, range_min, range_max, observed_batches).
  EXPECT_EQ(state.size(), 14u * 5);
  {  // Training moved the scales away from their initial values.
    torch::NoGradGuard no_grad;
    for (auto& [name, t] : state) {
      if (name.find(".scale") != std::string::npos) t.mul_(0.9);
    }
  }
  const auto x = batch(3);
  const auto expected = a->forward(x);

  auto b = tiny_model();
  attach_quantizers(*b, quant_spec_from_json(quant_spec_to_json(spec)));
  calibrate(b);
  EXPECT_FALSE(torch::equal(b->forward(x), expected));
  auto saved = state;
  for (auto& [name, t] : saved) t = t.clone();
  saved.emplace_back("model.embed_tokens.weight", torch::zeros({1}));  // non-quantizer names are ignored
  load_quantizer_state(*b, saved);
  EXPECT_TRUE(torch::equal(b->forward(x), expected));

  auto c = tiny_model();
  attach_quantizers(*c, spec);
  auto missing = saved;
  missing.erase(missing.begin());
  expect_error([&] { load_quantizer_state(*c, missing); }, "missing from the saved quantizer state");
  auto misshapen = saved;
  misshapen.front().second = torch::zeros({3});
  expect_error([&] { load_quantizer_state(*c, misshapen); }, "differs from the student's");
  auto extra = saved;
  extra.emplace_back("lm_head.weight_quantizer.scale", torch::zeros({1}));
  expect_error([&] { load_quantizer_state(*c, extra); }, "lm_head.weight_quantizer.scale: is not a quantizer tensor");
}

TEST(Student, LearnableScalesAndWeightsReceiveGradients) {
  auto m = tiny_model();
  attach_quantizers(*m, static_spec());
  calibrate(m);
  m->forward(batch(4)).square().mean().backward();
  for (const auto& item : m->named_parameters()) {
    const auto& name = item.key();
    const auto& t = item.value();
    if (name.find("proj") == std::string::npos) continue;
    ASSERT_TRUE(t.grad().defined()) << name;
    EXPECT_TRUE(torch::isfinite(t.grad()).all().item<bool>()) << name;
    EXPECT_GT(t.grad().abs().sum().item<float>(), 0.0f) << name;
  }
}

TEST(Student, ActivationQuantizersNeedCalibration) {
  auto m = tiny_model();
  attach_quantizers(*m, static_spec());
  expect_error([&] { m->forward(batch(5)); },
               "model.layers.0.self_attn.q_proj.input_quantizer: used before calibration");
  begin_activation_calibration(*m);
  expect_error([&] { end_activation_calibration(*m); }, "no batch was observed");
}

TEST(Student, QuantizationErrorsAndRtnExport) {
  std::vector<double> mean_error;
  for (int64_t bits : {2, 4, 8}) {
    auto m = tiny_model();
    QuantSpec s;
    s.bits = bits;
    attach_quantizers(*m, s);
    const auto errors = weight_quantization_errors(*m);
    ASSERT_EQ(errors.size(), 14u);
    double sum = 0;
    for (const auto& [name, e] : errors) {
      EXPECT_GT(e, 0.0) << name;
      EXPECT_LT(e, 1.0) << name;
      sum += e;
    }
    mean_error.push_back(sum / errors.size());
    const auto x = batch(6);
    const auto before = m->forward(x);
    const auto w_before = m->model->layer_list[0]->mlp->up_proj->weight.clone();
    rtn_quantize_weights(*m);
    EXPECT_FALSE(torch::equal(m->model->layer_list[0]->mlp->up_proj->weight, w_before));
    // The weights now lie on their grid: re-quantizing changes (almost) nothing.
    for (const auto& [name, e] : weight_quantization_errors(*m)) EXPECT_LT(e, 1e-6) << name;
    EXPECT_TRUE(torch::allclose(m->forward(x), before, 1e-5, 1e-5));
  }
  EXPECT_GT(mean_error[0], mean_error[1]);
  EXPECT_GT(mean_error[1], mean_error[2]);
}

TEST(Student, Bf16StudentKeepsFp32QuantizerState) {
  auto m = tiny_model();
  m->to(torch::kBFloat16);
  attach_quantizers(*m, static_spec());
  calibrate(m);
  m->to(torch::kBFloat16);
  for (const auto& [name, t] : quantizer_state(*m)) {
    if (name.find("observed_batches") == std::string::npos) EXPECT_EQ(t.scalar_type(), torch::kFloat) << name;
  }
  const auto logits = m->forward(batch(8));
  EXPECT_EQ(logits.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::isfinite(logits.to(torch::kFloat)).all().item<bool>());
}
