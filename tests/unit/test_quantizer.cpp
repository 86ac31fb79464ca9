// Fake-quantizers: level grids, ranges, clipping search, STE and LSQ gradients, spec validation.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>

#include "qkd/common/error.h"
#include "qkd/quant/activation_quantizer.h"
#include "qkd/quant/fake_quant.h"
#include "qkd/quant/quant_spec.h"
#include "qkd/quant/range_setting.h"
#include "qkd/quant/weight_quantizer.h"
#include "test_support.h"

using namespace qkd::quant;

namespace {

using qkd::test::expect_error;

QuantSpec spec_with(int64_t bits, Granularity g, bool symmetric, ScalePolicy policy = ScalePolicy::dynamic) {
  QuantSpec s;
  s.bits = bits;
  s.granularity = g;
  s.group_size = 4;
  s.symmetric = symmetric;
  s.scale_policy = policy;
  return s;
}

bool bitwise_equal(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || !a.sizes().equals(b.sizes())) return false;
  auto ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.numel() * ca.element_size()) == 0;
}

// Gradient of sum(fake_quantize(w) * g) with respect to w.
torch::Tensor ste_grad(WeightQuantizer& q, const torch::Tensor& w, const torch::Tensor& g) {
  auto x = w.clone().requires_grad_(true);
  (q.fake_quantize(x) * g).sum().backward();
  return x.grad();
}

}  // namespace

TEST(FakeQuant, SymmetricLevelGridPerBitWidth) {
  const auto x = torch::linspace(-300, 300, 20001);
  for (int64_t bits = 2; bits <= 8; ++bits) {
    const auto levels = levels_for(bits, true);
    EXPECT_EQ(levels.qmin, -(1 << (bits - 1)));
    EXPECT_EQ(levels.qmax, (1 << (bits - 1)) - 1);
    const auto scale = torch::tensor(0.5f);
    const auto k = fake_quant_value(x, scale, torch::Tensor(), levels) / 0.5;
    const auto unique = std::get<0>(torch::_unique(k));
    // Every level appears, nothing else does.
    EXPECT_TRUE(torch::equal(unique, torch::arange(levels.qmin, levels.qmax + 1, torch::kFloat))) << bits;
  }
}

TEST(FakeQuant, ThreeBitSymmetricValuesAreMultiplesOfScale) {
  auto q = WeightQuantizer(spec_with(3, Granularity::per_tensor, true), 1, 64, "m");
  const auto w = torch::randn({1, 64});
  const auto out = q.fake_quantize(w);
  const auto scale = w.abs().max() / 3;
  const auto k = out / scale;
  EXPECT_TRUE(torch::allclose(k, torch::round(k), 0, 1e-5));
  EXPECT_GE(torch::round(k).min().item<float>(), -4);
  EXPECT_LE(torch::round(k).max().item<float>(), 3);
}

TEST(FakeQuant, AsymmetricIntegerZeroPointAndLevels) {
  const auto w = torch::tensor({{-1.0f, 3.0f, 0.2f, 1.1f, 2.9f, -0.4f, 0.0f, 1.7f}});
  const auto p = minmax_params(w.view({1, 1, 8}), 3, false);
  EXPECT_NEAR(p.scale.item<float>(), 4.0f / 7.0f, 1e-7);
  EXPECT_EQ(p.zero.item<float>(), 2.0f);  // round(1 / (4/7)) = round(1.75)
  auto q = WeightQuantizer(spec_with(3, Granularity::per_channel, false), 1, 8, "m");
  const auto out = q.fake_quantize(w);
  const auto codes = out.view({1, 1, 8}) / p.scale + p.zero;
  EXPECT_TRUE(torch::allclose(codes, torch::round(codes), 0, 1e-5));
  EXPECT_GE(torch::round(codes).min().item<float>(), 0);
  EXPECT_LE(torch::round(codes).max().item<float>(), 7);
  // Zero is exactly representable with an integer zero point.
  EXPECT_EQ(out[0][6].item<float>(), 0.0f);
  // The zero point of an all-positive row is 0 (lo is clamped to 0).
  const auto pos = minmax_params(torch::tensor({1.0f, 2.0f, 3.0f}).view({1, 1, 3}), 4, false);
  EXPECT_EQ(pos.zero.item<float>(), 0.0f);
}

TEST(FakeQuant, ExactOpsSymmetricPerChannelDynamicBitwise) {
  torch::manual_seed(0);
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    const auto w = (torch::randn({96, 256}) * 0.05).to(dtype);
    w[3].zero_();
    auto q = WeightQuantizer(spec_with(4, Granularity::per_channel, true), 96, 256, "m");
    const auto scale = w.abs().amax(1, true).clamp(1e-8) / 7;
    const auto expected = torch::clamp(torch::round(w / scale), -8, 7) * scale;
    const auto got = q.fake_quantize(w.clone().requires_grad_(true));
    EXPECT_TRUE(bitwise_equal(got.detach(), expected)) << dtype;
    // Identity straight-through gradient.
    const auto g = torch::randn({96, 256}).to(dtype);
    EXPECT_TRUE(torch::equal(ste_grad(q, w, g), g));
  }
}

TEST(FakeQuant, AllZeroRowsAndGroupsGiveZeros) {
  for (auto g : {Granularity::per_channel, Granularity::per_group, Granularity::per_tensor}) {
    for (bool sym : {true, false}) {
      for (auto dtype : {torch::kFloat, torch::kBFloat16, torch::kHalf}) {
        auto w = torch::randn({4, 16}).to(dtype);
        w[1].zero_();
        w[2].slice(0, 4, 8).zero_();
        if (g == Granularity::per_tensor) w.zero_();
        for (auto policy : {ScalePolicy::dynamic, ScalePolicy::fixed}) {
          auto q = WeightQuantizer(spec_with(4, g, sym, policy), 4, 16, "m");
          q.initialize(w);
          const auto out = q.fake_quantize(w);
          EXPECT_FALSE(torch::isnan(out.to(torch::kFloat)).any().item<bool>());
          EXPECT_TRUE(torch::equal(out[1], torch::zeros({16}, dtype)));
          if (g == Granularity::per_group) EXPECT_TRUE(torch::equal(out[2].slice(0, 4, 8), torch::zeros({4}, dtype)));
          const auto grad = ste_grad(q, w, torch::ones({4, 16}, dtype));
          EXPECT_FALSE(torch::isnan(grad.to(torch::kFloat)).any().item<bool>());
        }
      }
    }
  }
}

TEST(FakeQuant, GroupsUseTheirOwnScale) {
  // Group 0 is small, group 1 large: a shared scale would round group 0 to zero.
  auto w = torch::tensor({{0.01f, -0.02f, 0.03f, 0.04f, 10.0f, -20.0f, 30.0f, 40.0f}});
  auto q = WeightQuantizer(spec_with(4, Granularity::per_group, true), 1, 8, "m");
  const auto p = q.params_for(w);
  ASSERT_EQ(p.scale.sizes(), torch::IntArrayRef({1, 2, 1}));
  EXPECT_FLOAT_EQ(p.scale[0][0][0].item<float>(), 0.04f / 7);
  EXPECT_FLOAT_EQ(p.scale[0][1][0].item<float>(), 40.0f / 7);
  const auto out = q.fake_quantize(w);
  EXPECT_TRUE(torch::allclose(out.slice(1, 0, 4), w.slice(1, 0, 4), 0.0, 0.04 / 14 + 1e-6));
  EXPECT_TRUE(torch::allclose(out.slice(1, 4, 8), w.slice(1, 4, 8), 0.0, 40.0 / 14 + 1e-4));
  EXPECT_NE(out[0][0].item<float>(), 0.0f);
}

TEST(FakeQuant, ClippedStaticRangeClampsAndMasksGradient) {
  const auto w = torch::tensor({{-1.0f, -0.5f, 0.25f, 1.0f}});
  for (bool sym : {true, false}) {
    auto q = WeightQuantizer(spec_with(4, Granularity::per_channel, sym, ScalePolicy::fixed), 1, 4, "m");
    q.initialize(w);
    const auto big = torch::tensor({{-3.0f, 0.3f, 2.0f, 0.9f}});
    const auto out = q.fake_quantize(big);
    const auto p = q.params_for(big);
    const auto levels = levels_for(4, sym);
    const float zero = sym ? 0.0f : p.zero.item<float>();
    const float s = p.scale.item<float>();
    EXPECT_FLOAT_EQ(out[0][0].item<float>(), (levels.qmin - zero) * s);
    EXPECT_FLOAT_EQ(out[0][2].item<float>(), (levels.qmax - zero) * s);
    const auto grad = ste_grad(q, big, torch::ones({1, 4}));
    EXPECT_TRUE(torch::equal(grad, torch::tensor({{0.0f, 1.0f, 0.0f, 1.0f}}))) << grad;
  }
}

TEST(FakeQuant, SearchedRangeMasksGradientOutsideLevels) {
  torch::manual_seed(3);
  auto spec = spec_with(3, Granularity::per_channel, true);
  spec.range = RangeMethod::search;
  auto q = WeightQuantizer(spec, 1, 256, "m");
  const auto w = torch::randn({1, 256});
  const auto p = q.params_for(w);
  EXPECT_LT(p.scale.item<float>(), w.abs().max().item<float>() / 3);  // Gaussian tails get clipped
  const auto grad = ste_grad(q, w, torch::ones({1, 256}));
  const auto v = w / p.scale.view({1, 1});
  const auto inside = (v >= -4) & (v <= 3);
  EXPECT_TRUE(torch::equal(grad, inside.to(torch::kFloat)));
  EXPECT_GT((grad == 0).sum().item<int64_t>(), 0);
}

TEST(ClippingSearch, NeverWorseThanMinMaxPerGroup) {
  torch::manual_seed(1);
  const auto w = torch::randn({32, 256});
  for (int64_t bits : {2, 3}) {
    for (bool sym : {true, false}) {
      const auto blocks = w.view({32, 8, 32});
      const auto levels = levels_for(bits, sym);
      const auto mm = minmax_params(blocks, bits, sym);
      const auto se = search_params(blocks, bits, sym, clipping_grid(QuantSpec{}));
      const auto err_mm = (fake_quant_value(blocks, mm.scale, mm.zero, levels) - blocks).square().sum(-1);
      const auto err_se = (fake_quant_value(blocks, se.scale, se.zero, levels) - blocks).square().sum(-1);
      EXPECT_TRUE((err_se <= err_mm).all().item<bool>()) << bits << sym;
      EXPECT_LT(err_se.sum().item<float>(), 0.9f * err_mm.sum().item<float>()) << bits << sym;
    }
  }
}

TEST(Lsq, ScaleGradientMatchesFormulaAndFiniteDifferences) {
  torch::manual_seed(2);
  auto spec = spec_with(3, Granularity::per_channel, true, ScalePolicy::fixed);
  spec.learnable_scale = true;
  auto q = WeightQuantizer(spec, 4, 32, "m");
  const auto w = torch::randn({4, 32});
  q.initialize(w);
  auto params = q.named_parameters();
  ASSERT_TRUE(params.contains("scale"));
  auto scale = params["scale"];
  {
    torch::NoGradGuard ng;
    scale.mul_(0.8);  // clip some weights so both branches of the formula are exercised
  }
  const auto g = torch::randn({4, 32});
  (q.fake_quantize(w) * g).sum().backward();
  const auto s = scale.detach().view({4, 1});
  const auto v = w / s;
  const auto inside = (v >= -4) & (v <= 3);
  const auto d =
      torch::where(v < -4, torch::full_like(v, -4), torch::where(v > 3, torch::full_like(v, 3), torch::round(v) - v));
  const double factor = 1.0 / std::sqrt(32.0 * 3.0);
  const auto expected = ((g * d).sum(1) * factor).view({4, 1, 1});
  EXPECT_TRUE(torch::allclose(scale.grad(), expected, 1e-5, 1e-6)) << scale.grad() << expected;

  // Finite differences of the true loss give d/ds [round(v) s] = round(v) inside and the clamp level
  // outside (rounding held fixed by a tiny step); LSQ's STE adds -v inside.
  const double h = 1e-7;
  const auto wd = w.to(torch::kDouble), gd = g.to(torch::kDouble), sd = s.to(torch::kDouble);
  auto loss_at = [&](double delta) {
    return (fake_quant_value(wd, sd + delta, torch::Tensor(), levels_for(3, true)) * gd).sum(1);
  };
  const auto fd = (loss_at(h) - loss_at(-h)) / (2 * h);
  const auto lsq_from_fd = (fd - (gd * (wd / sd) * inside).sum(1)) * factor;
  EXPECT_TRUE(torch::allclose(lsq_from_fd.to(torch::kFloat), expected.view({4}), 1e-3, 1e-3));
}

TEST(Lsq, ZeroPointGradientIsMinusScaleOutside) {
  auto spec = spec_with(2, Granularity::per_tensor, false, ScalePolicy::fixed);
  spec.learnable_scale = true;
  spec.lsq_grad_scale = false;
  auto q = WeightQuantizer(spec, 1, 4, "m");
  q.initialize(torch::tensor({{-1.0f, 0.0f, 1.0f, 2.0f}}));  // scale 1, zero 1
  auto zero = q.named_parameters()["zero_point"];
  EXPECT_EQ(zero.item<float>(), 1.0f);
  (q.fake_quantize(torch::tensor({{-5.0f, 0.4f, 1.0f, 9.0f}})) * torch::tensor({{1.0f, 2.0f, 3.0f, 4.0f}}))
      .sum()
      .backward();
  EXPECT_FLOAT_EQ(zero.grad().item<float>(), -(1.0f + 4.0f) * 1.0f);
}

TEST(WeightQuantizer, StaticStateStaysFp32ForBf16Weights) {
  auto spec = spec_with(4, Granularity::per_group, true, ScalePolicy::fixed);
  spec.learnable_scale = true;
  auto q = std::make_shared<WeightQuantizer>(spec, 8, 16, "m");
  const auto w = torch::randn({8, 16}).to(torch::kBFloat16);
  q->initialize(w);
  q->to(torch::kBFloat16);
  EXPECT_EQ(q->named_parameters()["scale"].scalar_type(), torch::kFloat);
  const auto out = q->fake_quantize(w);
  EXPECT_EQ(out.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::allclose(out.to(torch::kFloat), w.to(torch::kFloat), 0, 0.3));
}

TEST(WeightQuantizer, BadInputsAreErrors) {
  auto s = spec_with(4, Granularity::per_group, true);
  s.group_size = 48;
  expect_error([&] { WeightQuantizer(s, 8, 256, "model.layers.0.mlp.down_proj"); },
               "quant.group_size: 48 does not divide in_features 256 of model.layers.0.mlp.down_proj");
  for (int64_t bits : {1, 9}) {
    s.bits = bits;
    s.group_size = 32;
    expect_error([&] { WeightQuantizer(s, 8, 256, "m"); }, {"quant.bits: " + std::to_string(bits)});
    expect_error([&] { quant_spec_from_json({{"bits", bits}}); }, "quant.bits");
  }
  auto q = WeightQuantizer(spec_with(4, Granularity::per_channel, true, ScalePolicy::fixed), 2, 4, "m");
  expect_error([&] { q.fake_quantize(torch::zeros({2, 4})); }, "m.weight_quantizer: static scale used before");
  expect_error([&] { q.initialize(torch::zeros({4, 2})); }, "m.weight_quantizer: expected a weight of shape [2, 4]");
}

namespace {

QuantSpec act_spec(int64_t bits, bool symmetric, ActRangeMethod range) {
  QuantSpec s;
  s.act_bits = bits;
  s.act_symmetric = symmetric;
  s.act_range = range;
  return s;
}

}  // namespace

TEST(ActivationQuantizer, MinMaxCalibrationThenFrozen) {
  ActivationQuantizer q(act_spec(8, false, ActRangeMethod::minmax), "a.input_quantizer");
  expect_error([&] { q.fake_quantize(torch::ones({2, 3})); }, "a.input_quantizer: used before calibration");
  q.begin_calibration();
  const auto x1 = torch::tensor({{-1.0f, 2.0f}}), x2 = torch::tensor({{0.5f, 3.0f}});
  EXPECT_TRUE(torch::equal(q.fake_quantize(x1), x1));  // calibrating: pass-through
  q.observe(x2);
  q.end_calibration();
  const auto p = q.params();
  EXPECT_FLOAT_EQ(p.scale.item<float>(), 4.0f / 255.0f);
  EXPECT_EQ(p.zero.item<float>(), std::round(1.0f / (4.0f / 255.0f)));
  // Frozen: values beyond the range are clamped, with zero gradient there.
  auto x = torch::tensor({{-2.0f, 0.7f, 2.5f, 10.0f}}).requires_grad_(true);
  const auto out = q.fake_quantize(x);
  EXPECT_NEAR(out[0][0].item<float>(), -p.zero.item<float>() * p.scale.item<float>(), 1e-6);
  EXPECT_NEAR(out[0][3].item<float>(), (255 - p.zero.item<float>()) * p.scale.item<float>(), 1e-6);
  const auto codes = out / p.scale + p.zero;
  EXPECT_TRUE(torch::allclose(codes, torch::round(codes), 0, 1e-3));
  out.sum().backward();
  EXPECT_TRUE(torch::equal(x.grad(), torch::tensor({{0.0f, 1.0f, 1.0f, 0.0f}})));
  // Uncalibrated again only after begin_calibration().
  q.begin_calibration();
  expect_error([&] { q.end_calibration(); }, "no batch was observed");
}

TEST(ActivationQuantizer, PercentileIgnoresOutliersAndAveragesBatches) {
  ActivationQuantizer q(act_spec(16, true, ActRangeMethod::percentile), "a");
  q.begin_calibration();
  auto x = torch::linspace(-1, 1, 100001);
  x[0] = -1000.0;
  x[-1] = 1000.0;
  q.observe(x);
  q.observe(x * 3);
  q.end_calibration();
  const auto p = q.params();
  // Mean of the 99.99th percentiles (~1 and ~3) over 32767 levels; the outliers are ignored.
  EXPECT_NEAR(p.scale.item<float>() * 32767, 2.0f, 0.01f);
  EXPECT_FALSE(p.zero.defined());
  const auto y = torch::randn({64}).to(torch::kBFloat16);
  EXPECT_EQ(q.fake_quantize(y).scalar_type(), torch::kBFloat16);
}

TEST(ActivationQuantizer, RangeIsStateThatSurvivesDtypeChange) {
  ActivationQuantizer q(act_spec(8, true, ActRangeMethod::minmax), "a");
  q.to(torch::kHalf);
  auto buffers = q.named_buffers();
  ASSERT_TRUE(buffers.contains("range_min") && buffers.contains("range_max"));
  EXPECT_EQ(buffers["range_max"].scalar_type(), torch::kFloat);
  buffers["range_min"].fill_(-2.0);
  buffers["range_max"].fill_(1.0);
  buffers["observed_batches"].fill_(4);
  EXPECT_TRUE(q.calibrated());
  EXPECT_FLOAT_EQ(q.params().scale.item<float>(), 2.0f / 127.0f);
}

TEST(QuantSpecJson, RoundTripAndFieldErrors) {
  QuantSpec s;
  s.bits = 3;
  s.granularity = Granularity::per_group;
  s.group_size = 64;
  s.symmetric = false;
  s.range = RangeMethod::search;
  s.search_grid = {0.8, 0.9, 1.0};
  s.scale_policy = ScalePolicy::fixed;
  s.learnable_scale = true;
  s.modules = {"layers\\.[01]\\..*proj"};
  s.lm_head_bits = 8;
  s.act_bits = 16;
  s.act_range = ActRangeMethod::percentile;
  EXPECT_EQ(quant_spec_from_json(quant_spec_to_json(s)), s);
  EXPECT_EQ(quant_spec_from_json(nlohmann::json::object()), QuantSpec{});
  using nlohmann::json;
  expect_error([] { quant_spec_from_json({{"bitz", 4}}); }, "quant.bitz: unknown key");
  expect_error([] { quant_spec_from_json({{"granularity", "rows"}}); }, "quant.granularity: expected one of");
  expect_error([] { quant_spec_from_json({{"learnable_scale", true}}); }, "quant.learnable_scale: requires");
  expect_error([] { quant_spec_from_json({{"act_bits", 4}}); }, "quant.act_bits");
  expect_error([] { quant_spec_from_json({{"lm_head_bits", 1}}); }, "quant.lm_head_bits");
  expect_error([] { quant_spec_from_json({{"search_grid", {0.5, 1.5}}}); }, "quant.search_grid");
  expect_error([] { quant_spec_from_json({{"modules", {"q_proj", "("}}}); }, "quant.modules[1]");
  expect_error([] { quant_spec_from_json({{"group_size", "64"}}); }, "quant.group_size: expected an integer");
  expect_error([] { quant_spec_from_json({{"act_percentile", 20}}); }, "quant.act_percentile");
}
