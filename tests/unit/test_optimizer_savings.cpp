// The optimizer's memory savings, each against an independent reference: block-wise int8 moments
// (bitsandbytes' dynamic map, nearest code by brute force; the 8-bit AdamW step re-implemented here),
// bf16-compensated master weights (Kahan summation) against the fp32 master over many steps, the
// bitwise resume and the ZeRO-1 shard split of every mode, and the refusals.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "qkd/common/error.h"
#include "qkd/optim/adamw.h"
#include "qkd/optim/blockwise_int8.h"
#include "qkd/train/run_config.h"
#include "test_support.h"

namespace {

using qkd::optim::AdamW;
using qkd::optim::AdamWOptions;
using qkd::optim::MasterWeights;

AdamWOptions options(torch::Dtype moments, MasterWeights master, double weight_decay = 0.0) {
  AdamWOptions o{0.9, 0.999, 1e-8, weight_decay};
  o.moment_dtype = moments;
  o.master_weights = master;
  return o;
}

// Gradients of very different sizes per row (a block of 256 spans rows of 128 here), as a model's are.
torch::Tensor gradient(const std::vector<int64_t>& shape, int64_t seed) {
  torch::manual_seed(seed);
  const auto rows = shape[0];
  const auto scale = torch::exp(torch::randn({rows, 1}) * 2.0);
  return torch::randn(shape) * scale * 1e-2;
}

torch::Tensor state_tensor(const AdamW& optimizer, const std::string& name) {
  for (const auto& [key, tensor] : optimizer.state())
    if (key == name) return tensor;
  ADD_FAILURE() << "no '" << name << "' in the optimizer state";
  return torch::Tensor();
}

bool has_state_tensor(const AdamW& optimizer, const std::string& name) {
  for (const auto& [key, _] : optimizer.state())
    if (key == name) return true;
  return false;
}

// ---------------------------------------------------------------------------------------- int8 codes

TEST(BlockwiseInt8, CodeMapsAreBitsandbytesDynamicMaps) {
  const auto s = qkd::optim::dynamic_code(true), u = qkd::optim::dynamic_code(false);
  ASSERT_EQ(s.numel(), 256);
  ASSERT_EQ(u.numel(), 256);
  EXPECT_TRUE(torch::equal(s, std::get<0>(s.sort())));  // ascending
  EXPECT_TRUE(torch::equal(u, std::get<0>(u.sort())));
  EXPECT_EQ((s > 0).sum().item<int64_t>(), 128);  // 127 fractions and 1
  EXPECT_EQ((s < 0).sum().item<int64_t>(), 127);
  EXPECT_EQ((u > 0).sum().item<int64_t>(), 255);  // 254 fractions and 1
  EXPECT_EQ(s[255].item<float>(), 1.0f);
  EXPECT_EQ(u[0].item<float>(), 0.0f);
  // The smallest magnitudes: 10^-6 x the middle of [0.1, 1] (signed: one piece), and 10^-6 x the middle
  // of [0.1, 0.55] (unsigned: two pieces); the largest fraction: the middle of the top piece of [0.1, 1]
  // split into 64 (signed) or 128 (unsigned).
  EXPECT_NEAR(s[128].item<double>(), 0.55e-6, 1e-12);
  EXPECT_NEAR(u[1].item<double>(), 0.325e-6, 1e-12);
  EXPECT_NEAR(s[0].item<double>(), -(1.0 - 0.9 / 64 / 2), 1e-6);
  EXPECT_NEAR(u[254].item<double>(), 1.0 - 0.9 / 128 / 2, 1e-6);
}

// The nearest code by exhaustive search, in fp64 distances: an implementation that shares nothing with
// the library's bucketize over midpoints.
struct Reference {
  torch::Tensor codes, absmax, dequantized, half_gap;
};

Reference reference_quantize(const torch::Tensor& x, bool is_signed) {
  const auto code = qkd::optim::dynamic_code(is_signed).to(torch::kDouble);
  const auto flat = x.reshape(-1).to(torch::kFloat32);
  const int64_t n = flat.numel();
  Reference r;
  r.codes = torch::empty({n}, torch::kLong);
  r.absmax = torch::empty({(n + 255) / 256}, torch::kFloat32);
  r.dequantized = torch::empty({n}, torch::kFloat32);
  r.half_gap = torch::empty({n}, torch::kDouble);
  for (int64_t b = 0; b * 256 < n; ++b) {
    const auto block = flat.slice(0, b * 256, std::min(n, (b + 1) * 256));
    const float absmax = block.abs().max().item<float>();
    r.absmax[b] = absmax;
    for (int64_t i = 0; i < block.numel(); ++i) {
      const double v = absmax > 0 ? static_cast<double>(block[i].item<float>() / absmax) : 0.0;
      const auto index = (code - v).abs().argmin().item<int64_t>();
      r.codes[b * 256 + i] = index;
      r.dequantized[b * 256 + i] = code[index].item<float>() * absmax;
      // Half the gap to the neighbour on v's side: the largest error the nearest code can leave. A value
      // beyond the extreme code (the signed map's lowest code is -0.993, so a block whose absmax is
      // negative) has no neighbour there: its error is at most the whole gap to the inner neighbour.
      const auto other =
          code[index].item<double>() < v ? std::min<int64_t>(index + 1, 255) : std::max<int64_t>(index - 1, 0);
      const auto inner = other != index ? other : (index == 0 ? 1 : 254);
      r.half_gap[b * 256 + i] =
          std::abs(code[inner].item<double>() - code[index].item<double>()) / (other != index ? 2 : 1) * absmax;
    }
  }
  return r;
}

TEST(BlockwiseInt8, NearestCodeAgreesWithExhaustiveSearchAndStaysWithinHalfAStep) {
  torch::manual_seed(3);
  // 5 blocks and a 232-element tail; magnitudes over ~10 orders; one all-zero block.
  auto x = torch::randn({1256}) * torch::exp(torch::randn({1256}) * 3.0);
  x.slice(0, 512, 768).zero_();
  for (const bool is_signed : {true, false}) {
    const auto values = is_signed ? x : x.abs();
    const auto q = qkd::optim::quantize_blockwise(values, is_signed);
    const auto r = reference_quantize(values, is_signed);
    ASSERT_EQ(q.codes.scalar_type(), torch::kChar);
    ASSERT_EQ(q.codes.sizes(), values.sizes());
    EXPECT_TRUE(torch::equal(q.absmax, r.absmax));
    EXPECT_TRUE(torch::equal(q.codes.to(torch::kLong) + 128, r.codes)) << (is_signed ? "signed" : "unsigned");
    const auto back = qkd::optim::dequantize_blockwise(q, is_signed);
    EXPECT_TRUE(torch::equal(back, r.dequantized));
    const auto error = (back.to(torch::kDouble) - values.to(torch::kDouble)).abs();
    EXPECT_TRUE((error <= r.half_gap * (1 + 1e-6) + 1e-30).all().item<bool>());
    EXPECT_TRUE((back.slice(0, 512, 768) == 0).all().item<bool>());
    // Each block's largest magnitude comes back exactly (code 1) for unsigned, within the top gap signed.
    if (!is_signed) EXPECT_EQ(back.slice(0, 0, 256).max().item<float>(), values.slice(0, 0, 256).max().item<float>());
  }
}

// 8-bit AdamW written out with the exhaustive-search quantizer: the library's step, bitwise.
TEST(Int8Moments, AdamWStepEqualsAnIndependentEightBitAdamW) {
  const std::vector<int64_t> shape{64, 128};
  auto p = (torch::randn(shape) * 0.02).requires_grad_(true);
  auto ref = p.detach().clone();
  AdamW optimizer(options(torch::kChar, MasterWeights::fp32));
  optimizer.add_parameter("w", p, false);
  Reference m_q{torch::full({64 * 128}, 128, torch::kLong), torch::zeros({32}), torch::zeros({64 * 128}), {}};
  Reference v_q{torch::zeros({64 * 128}, torch::kLong), torch::zeros({32}), torch::zeros({64 * 128}), {}};
  for (int step = 1; step <= 8; ++step) {
    const auto g = gradient(shape, 500 + step);
    p.mutable_grad() = g.clone();
    optimizer.step(1e-3);
    auto m = m_q.dequantized.view(shape).clone(), v = v_q.dequantized.view(shape).clone();
    m.lerp_(g, 1.0 - 0.9);
    v.mul_(0.999).addcmul_(g, g, 1.0 - 0.999);
    const double bc1 = 1 - std::pow(0.9, step), bc2_sqrt = std::sqrt(1 - std::pow(0.999, step));
    ref.addcdiv_(m, (v.sqrt() / bc2_sqrt).add_(1e-8), -1e-3 / bc1);
    m_q = reference_quantize(m, true);
    v_q = reference_quantize(v, false);
    ASSERT_TRUE(torch::equal(p.detach(), ref)) << "step " << step;
    ASSERT_TRUE(torch::equal(state_tensor(optimizer, "w.exp_avg").to(torch::kLong).reshape(-1) + 128, m_q.codes));
    ASSERT_TRUE(torch::equal(state_tensor(optimizer, "w.exp_avg_sq.absmax"), v_q.absmax));
  }
}

TEST(Int8Moments, StayCloseToFp32MomentsAndStoreOneBytePerElement) {
  // Rows of 256: each int8 block is one row, as in every LLaMA projection (hidden 4096). Blocks that
  // straddle rows of very different gradient scale are where 8-bit moments (bitsandbytes' as well as
  // these) go wrong: a v below 1.6e-7 of its block's absmax stores as 0 while its m does not, and the
  // next step is m / sqrt(0.001 g^2), about 30 times Adam's.
  const std::vector<int64_t> shape{32, 256};
  torch::manual_seed(5);
  const auto init = torch::randn(shape) * 0.02;
  auto p8 = init.clone().requires_grad_(true), p32 = init.clone().requires_grad_(true);
  auto small = torch::randn({100}).requires_grad_(true);  // under kMinInt8Elements: fp32 moments
  AdamW int8(options(torch::kChar, MasterWeights::fp32)), fp32(options(torch::kFloat32, MasterWeights::fp32));
  int8.add_parameter("w", p8, false);
  int8.add_parameter("norm", small, false);
  fp32.add_parameter("w", p32, false);
  EXPECT_EQ(int8.state_bytes(), 2 * (32 * 256 + 32 * 4) + 2 * 100 * 4);
  EXPECT_EQ(state_tensor(int8, "w.exp_avg").scalar_type(), torch::kChar);
  EXPECT_EQ(state_tensor(int8, "w.exp_avg_sq.absmax").sizes(), (std::vector<int64_t>{32}));
  EXPECT_EQ(state_tensor(int8, "norm.exp_avg").scalar_type(), torch::kFloat32);
  EXPECT_FALSE(has_state_tensor(int8, "norm.exp_avg.absmax"));
  const double lr = 1e-3;
  // Each row keeps its gradient scale from step to step, as a model's rows do.
  torch::manual_seed(77);
  const auto row_scale = torch::exp(torch::randn({shape[0], 1}) * 2.0);
  for (int step = 0; step < 50; ++step) {
    torch::manual_seed(900 + step);
    const auto g = torch::randn(shape) * row_scale * 1e-2;
    p8.mutable_grad() = g.clone();
    p32.mutable_grad() = g.clone();
    small.mutable_grad() = torch::ones({100});
    int8.step(lr);
    fp32.step(lr);
  }
  // Every Adam step moves a weight by about lr; the stored estimates' rounding (a few per cent of a
  // moment at the top of its block's range) perturbs each step by a small fraction of that.
  const auto moved = (p32 - init).abs().mean().item<double>();
  const auto diff = (p8 - p32).abs();
  ::testing::Test::RecordProperty("mean_diff_over_mean_movement", std::to_string(diff.mean().item<double>() / moved));
  EXPECT_LT(diff.mean().item<double>(), 0.05 * moved);
  EXPECT_LT(diff.max().item<double>(), 50 * lr * 0.25);
}

// ------------------------------------------------------------------------------- compensated masters

torch::Tensor bf16_weights(const std::vector<int64_t>& shape, int64_t seed) {
  torch::manual_seed(seed);
  return (torch::randn(shape) * 0.02).to(torch::kBFloat16).requires_grad_(true);
}

// Updates of ~lr = 2e-6 on weights of ~0.02 (bf16's half step there: 3e-5 to 6e-5): in bf16 alone they are
// lost; with the compensation they accumulate as on the fp32 master. Same gradients (bf16 values) and
// no decay, so both runs take the same fp32 update every step and differ only by the compensated
// pair's rounding: at most 2^-16 |w| per step (the bf16 residual of a value at most half a bf16 step,
// 2^-8 |w|, keeps 8 significant bits), plus fp32 rounding of the sums.
TEST(CompensatedMaster, TracksTheFp32MasterOverManyStepsWhereBf16AloneLosesTheUpdates) {
  const std::vector<int64_t> shape{32, 64};
  constexpr int kSteps = 300;
  constexpr double kLr = 2e-6;
  auto master_p = bf16_weights(shape, 7), comp_p = bf16_weights(shape, 7), none_p = bf16_weights(shape, 7);
  const auto start = master_p.detach().to(torch::kFloat32);
  AdamW with_master(options(torch::kFloat32, MasterWeights::fp32)),
      compensated(options(torch::kFloat32, MasterWeights::bf16_compensated)),
      plain(options(torch::kFloat32, MasterWeights::none));
  with_master.add_parameter("w", master_p, false);
  compensated.add_parameter("w", comp_p, false);
  plain.add_parameter("w", none_p, false);
  EXPECT_EQ(compensated.state_bytes(), 32 * 64 * (4 + 4 + 2));
  EXPECT_EQ(plain.state_bytes(), 32 * 64 * (4 + 4));
  torch::manual_seed(11);
  const auto direction = torch::randn(shape);  // a steady gradient direction, so the weights drift
  for (int step = 0; step < kSteps; ++step) {
    torch::manual_seed(1000 + step);
    const auto g = (direction + torch::randn(shape) * 0.5).to(torch::kBFloat16);
    master_p.mutable_grad() = g.clone();
    comp_p.mutable_grad() = g.clone();
    none_p.mutable_grad() = g.clone();
    with_master.step(kLr);
    compensated.step(kLr);
    plain.step(kLr);
  }
  const auto master = state_tensor(with_master, "w.master");
  const auto comp = state_tensor(compensated, "w.compensation");
  ASSERT_EQ(comp.scalar_type(), torch::kBFloat16);
  const auto exact = comp_p.detach().to(torch::kFloat32) + comp.to(torch::kFloat32);
  const auto w = master.abs() + kSteps * kLr * 4;  // the largest |w| along the way (Adam steps < ~3.2 lr)
  const auto error = (exact - master).abs();
  const auto moved = (master - start).abs();
  EXPECT_TRUE((error <= w * (kSteps * std::pow(2.0, -16) + 2 * kSteps * std::pow(2.0, -24))).all().item<bool>());
  EXPECT_LT(error.mean().item<double>(), 0.02 * moved.mean().item<double>());
  // The bf16 weights are the compensated value rounded: the master's rounding, up to one bf16 step.
  const auto ulp = w * std::pow(2.0, -7);
  EXPECT_TRUE(((comp_p.detach().to(torch::kFloat32) - master_p.detach().to(torch::kFloat32)).abs() <= ulp + 1e-30)
                  .all()
                  .item<bool>());
  const double same = (comp_p.detach() == master_p.detach()).to(torch::kDouble).mean().item<double>();
  const double none_changed = (none_p.detach().to(torch::kFloat32) != start).to(torch::kDouble).mean().item<double>();
  const double master_changed =
      (master_p.detach().to(torch::kFloat32) != start).to(torch::kDouble).mean().item<double>();
  ::testing::Test::RecordProperty("bf16_weights_equal_to_master_run", std::to_string(same));
  ::testing::Test::RecordProperty("none_changed_fraction", std::to_string(none_changed));
  ::testing::Test::RecordProperty("master_changed_fraction", std::to_string(master_changed));
  ::testing::Test::RecordProperty("mean_error_over_mean_movement",
                                  std::to_string(error.mean().item<double>() / moved.mean().item<double>()));
  EXPECT_GT(same, 0.9);
  EXPECT_GT(master_changed, 0.5);
  EXPECT_LT(none_changed, 0.1 * master_changed);  // bf16 alone: most updates rounded away
}

TEST(CompensatedMaster, DecayAndSyncActOnTheCompensatedValue) {
  auto p = torch::ones({64}, torch::kBFloat16).requires_grad_(true);
  AdamW optimizer(options(torch::kFloat32, MasterWeights::bf16_compensated, 0.1));
  optimizer.add_parameter("w", p, true);
  double expected = 1.0;
  for (int step = 0; step < 400; ++step) {  // as AdamWMaster.SmallUpdatesAndDecayAccumulateInTheMaster
    p.mutable_grad() = torch::ones({64}, torch::kBFloat16);
    optimizer.step(1e-5);
    expected = expected * (1.0 - 1e-5 * 0.1) - 1e-5 / (1.0 + 1e-8);
  }
  const auto exact = p.detach().to(torch::kFloat32) + state_tensor(optimizer, "w.compensation").to(torch::kFloat32);
  EXPECT_NEAR(exact[0].item<double>(), expected, 400 * std::pow(2.0, -16));
  EXPECT_LT(p[0].item<double>(), 1.0);
  {
    torch::NoGradGuard no_grad;
    p.fill_(0.5);  // a rollback writes weights in
  }
  optimizer.sync_master_from_parameter("w");
  EXPECT_TRUE((state_tensor(optimizer, "w.compensation") == 0).all().item<bool>());
}

// --------------------------------------------------------------------------------- resume and shards

struct Mode {
  const char* name;
  torch::Dtype moments;
  MasterWeights master;
};
const Mode kModes[] = {{"int8 moments, fp32 master", torch::kChar, MasterWeights::fp32},
                       {"fp32 moments, bf16 compensated", torch::kFloat32, MasterWeights::bf16_compensated},
                       {"int8 moments, bf16 compensated", torch::kChar, MasterWeights::bf16_compensated},
                       {"bf16 moments, no master", torch::kBFloat16, MasterWeights::none},
                       {"int8 moments, no master", torch::kChar, MasterWeights::none}};

// A bf16 projection-sized weight (int8 moments apply), a small bf16 norm and an fp32 tensor.
std::vector<torch::Tensor> fresh_parameters() {
  torch::manual_seed(21);
  return {(torch::randn({48, 128}) * 0.02).to(torch::kBFloat16).requires_grad_(true),
          torch::ones({48}, torch::kBFloat16).requires_grad_(true), torch::randn({40, 128}).requires_grad_(true)};
}
const std::vector<std::string> kNames{"a", "b", "c"};

void set_gradients(std::vector<torch::Tensor>& params, int64_t seed) {
  torch::manual_seed(seed);
  for (auto& p : params) p.mutable_grad() = (torch::randn(p.sizes()) * 0.1).to(p.scalar_type());
}

// The checkpointed run's weights come from the student file (bf16 bits as they were); its optimizer
// from the state. The next steps equal the uninterrupted run's bitwise, state included.
TEST(OptimizerSavings, EveryModeResumesBitwise) {
  for (const auto& mode : kModes) {
    SCOPED_TRACE(mode.name);
    auto first_p = fresh_parameters();
    AdamW first(options(mode.moments, mode.master, 0.01));
    for (size_t i = 0; i < kNames.size(); ++i) first.add_parameter(kNames[i], first_p[i], i != 1, 2);
    for (int step = 0; step < 3; ++step) {
      set_gradients(first_p, 40 + step);
      first.step(1e-4);
    }
    const auto saved = first.state();
    auto second_p = fresh_parameters();
    {
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < kNames.size(); ++i) second_p[i].copy_(first_p[i]);
    }
    AdamW second(options(mode.moments, mode.master, 0.01));
    for (size_t i = 0; i < kNames.size(); ++i) second.add_parameter(kNames[i], second_p[i], i != 1, 2);
    second.load_state(saved, "test");
    for (int step = 0; step < 3; ++step) {
      set_gradients(first_p, 50 + step);
      set_gradients(second_p, 50 + step);
      first.step(1e-4);
      second.step(1e-4);
      for (size_t i = 0; i < kNames.size(); ++i) ASSERT_TRUE(torch::equal(first_p[i], second_p[i])) << kNames[i];
    }
    const auto a = first.state(), b = second.state();
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].first, b[i].first);
      EXPECT_TRUE(torch::equal(a[i].second, b[i].second)) << a[i].first;
    }
    EXPECT_EQ(has_state_tensor(first, "a.compensation"), mode.master == MasterWeights::bf16_compensated);
    EXPECT_EQ(has_state_tensor(first, "a.master"), mode.master == MasterWeights::fp32);
    EXPECT_EQ(has_state_tensor(first, "a.exp_avg.absmax"), mode.moments == torch::kChar);
    EXPECT_FALSE(has_state_tensor(first, "c.master") || has_state_tensor(first, "c.compensation"));  // fp32
  }
}

// Two optimizers owning a share each (ZeRO-1, as two ranks): together the unsharded step bitwise, and
// their parameter_state() parts (a non-owner's zeros have the owner's names, shapes and dtypes)
// reassemble its state bitwise.
TEST(OptimizerSavings, EveryModeShardsAsZero1) {
  for (const auto& mode : kModes) {
    SCOPED_TRACE(mode.name);
    auto whole_p = fresh_parameters(), p0 = fresh_parameters(), p1 = fresh_parameters();
    AdamW whole(options(mode.moments, mode.master)), s0(options(mode.moments, mode.master)),
        s1(options(mode.moments, mode.master));
    s0.shard([](const std::string& n) { return n != "a"; });
    s1.shard([](const std::string& n) { return n == "a"; });
    for (size_t i = 0; i < kNames.size(); ++i) {
      whole.add_parameter(kNames[i], whole_p[i], true);
      s0.add_parameter(kNames[i], p0[i], true);
      s1.add_parameter(kNames[i], p1[i], true);
    }
    EXPECT_EQ(s0.state_bytes() + s1.state_bytes(), whole.state_bytes());
    for (int step = 0; step < 3; ++step) {
      set_gradients(whole_p, 60 + step);
      set_gradients(p0, 60 + step);
      set_gradients(p1, 60 + step);
      whole.step(1e-3);
      s0.step(1e-3);
      s1.step(1e-3);
      torch::NoGradGuard no_grad;  // the owners' broadcast
      p0[0].copy_(p1[0]);
      p1[1].copy_(p0[1]);
      p1[2].copy_(p0[2]);
      for (size_t i = 0; i < kNames.size(); ++i) {
        ASSERT_TRUE(torch::equal(whole_p[i], p0[i])) << kNames[i];
        ASSERT_TRUE(torch::equal(whole_p[i], p1[i])) << kNames[i];
      }
    }
    std::map<std::string, qkd::optim::ParameterState> parts;
    for (const auto& n : kNames) {
      parts[n] = (n == "a" ? s1 : s0).parameter_state(n);
      const auto empty = (n == "a" ? s0 : s1).parameter_state(n);
      ASSERT_EQ(empty.size(), parts[n].size());
      for (size_t i = 0; i < empty.size(); ++i) {
        EXPECT_EQ(empty[i].first, parts[n][i].first);
        EXPECT_EQ(empty[i].second.sizes(), parts[n][i].second.sizes()) << parts[n][i].first;
        EXPECT_EQ(empty[i].second.scalar_type(), parts[n][i].second.scalar_type()) << parts[n][i].first;
      }
    }
    const auto expected = whole.state(), gathered = s0.state_from(parts);
    ASSERT_EQ(gathered.size(), expected.size());
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_EQ(gathered[i].first, expected[i].first);
      EXPECT_TRUE(torch::equal(gathered[i].second, expected[i].second)) << expected[i].first;
    }
  }
}

// A tensor above kUpdatePiece elements is updated piece by piece: the same values as the same elements
// held as two parameters of one piece each (the pieces start at multiples of the int8 block).
TEST(OptimizerSavings, PiecewiseUpdateOfALargeTensorEqualsTheWholeUpdate) {
  const int64_t n = qkd::optim::kUpdatePiece + 5000;  // a tail of int8 size too
  // One mode (int8 moments and the compensation: both kinds of state in pieces); 16.8M elements are
  // slow on a loaded CPU.
  for (const auto& mode : {kModes[2]}) {
    SCOPED_TRACE(mode.name);
    torch::manual_seed(8);
    const auto init = (torch::randn({n}) * 0.02).to(torch::kBFloat16);
    auto big = init.clone().requires_grad_(true);
    auto head = init.slice(0, 0, qkd::optim::kUpdatePiece).clone().requires_grad_(true);
    auto tail = init.slice(0, qkd::optim::kUpdatePiece).clone().requires_grad_(true);
    AdamW one(options(mode.moments, mode.master, 0.01)), two(options(mode.moments, mode.master, 0.01));
    one.add_parameter("big", big, true);
    two.add_parameter("head", head, true);
    two.add_parameter("tail", tail, true);
    for (int step = 0; step < 2; ++step) {
      torch::manual_seed(80 + step);
      const auto g = (torch::randn({n}) * 0.1).to(torch::kBFloat16);
      big.mutable_grad() = g;
      head.mutable_grad() = g.slice(0, 0, qkd::optim::kUpdatePiece).clone();
      tail.mutable_grad() = g.slice(0, qkd::optim::kUpdatePiece).clone();
      one.step(1e-3);
      two.step(1e-3);
    }
    EXPECT_TRUE(torch::equal(big.detach(), torch::cat({head.detach(), tail.detach()})));
    for (const auto* part : {"exp_avg", "exp_avg_sq"})
      EXPECT_TRUE(torch::equal(
          state_tensor(one, std::string("big.") + part),
          torch::cat({state_tensor(two, std::string("head.") + part), state_tensor(two, std::string("tail.") + part)})))
          << part;
  }
}

// A run may resume with another mode: moments are converted to their storage, and a master and a
// compensation are converted into each other (the parameter holds the model file's bf16 weights).
TEST(OptimizerSavings, StateConvertsBetweenModes) {
  auto p = fresh_parameters();
  AdamW with_master(options(torch::kFloat32, MasterWeights::fp32));
  for (size_t i = 0; i < kNames.size(); ++i) with_master.add_parameter(kNames[i], p[i], true);
  for (int step = 0; step < 3; ++step) {
    set_gradients(p, 70 + step);
    with_master.step(1e-5);
  }
  const auto master = state_tensor(with_master, "a.master");
  auto q = fresh_parameters();
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < kNames.size(); ++i) q[i].copy_(p[i]);
  }
  AdamW compensated(options(torch::kChar, MasterWeights::bf16_compensated));
  for (size_t i = 0; i < kNames.size(); ++i) compensated.add_parameter(kNames[i], q[i], true);
  compensated.load_state(with_master.state(), "test");
  const auto exact =
      q[0].detach().to(torch::kFloat32) + state_tensor(compensated, "a.compensation").to(torch::kFloat32);
  EXPECT_TRUE(((exact - master).abs() <= master.abs() * std::pow(2.0, -16)).all().item<bool>());
  EXPECT_TRUE(torch::equal(q[0], master.to(torch::kBFloat16)));
  EXPECT_TRUE(torch::equal(state_tensor(compensated, "a.exp_avg_sq.absmax"),
                           qkd::optim::quantize_blockwise(state_tensor(with_master, "a.exp_avg_sq"), false).absmax));

  AdamW back(options(torch::kFloat32, MasterWeights::fp32));
  auto r = fresh_parameters();
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < kNames.size(); ++i) r[i].copy_(q[i]);
  }
  for (size_t i = 0; i < kNames.size(); ++i) back.add_parameter(kNames[i], r[i], true);
  back.load_state(compensated.state(), "test");
  EXPECT_TRUE(torch::equal(state_tensor(back, "a.master"), exact));
  const auto v = state_tensor(compensated, "a.exp_avg_sq");
  EXPECT_TRUE(
      torch::equal(state_tensor(back, "a.exp_avg_sq"),
                   qkd::optim::dequantize_blockwise({v, state_tensor(compensated, "a.exp_avg_sq.absmax")}, false)));
}

// ------------------------------------------------------------------------------------------ refusals

TEST(OptimizerSavings, UnsupportedCombinationsFailWithTheKey) {
  using qkd::test::expect_error;
  AdamW compensated(options(torch::kFloat32, MasterWeights::bf16_compensated));
  auto half = torch::zeros({4}, torch::kHalf).requires_grad_(true);
  expect_error([&] { compensated.add_parameter("model.norm.weight", half, true); },
               {"optim.master_weights", "bf16_compensated", "'model.norm.weight'", "Half"});

  nlohmann::json config{
      {"run_dir", qkd::test::scratch_dir("savings") + "/run"},
      {"teacher", {{"path", qkd::test::shipped_teacher()}}},
      {"data", {{"sources", {{{"path", qkd::test::kjv_val_tokens()}}}}, {"seq_len", 32}}},
      {"optim", {{"master_weights", "bf16_compensated"}}}};
  expect_error([&] { qkd::train::parse_run_config(config); },
               {"optim.master_weights", "bf16_compensated", "student.dtype bfloat16", "float32"});
  config["student"] = {{"dtype", "float16"}};
  expect_error([&] { qkd::train::parse_run_config(config); }, {"optim.master_weights", "float16"});
  config["student"] = {{"dtype", "bfloat16"}};
  config["optim"]["moment_dtype"] = "int8";
  const auto c = qkd::train::parse_run_config(config);
  EXPECT_EQ(c.optim().master_weights, MasterWeights::bf16_compensated);
  EXPECT_EQ(c.resolved().at("optim").at("moment_dtype"), "int8");
  EXPECT_EQ(qkd::train::parse_run_config(c.resolved()).resolved(), c.resolved());
  config["optim"]["master_weights"] = "bf8";
  expect_error([&] { qkd::train::parse_run_config(config); }, {"optim.master_weights", "fp32, bf16_compensated, none"});
  // none with an fp32 student: nothing to keep, said once.
  config["student"] = {{"dtype", "float32"}};
  config["optim"]["master_weights"] = "none";
  const auto unread = qkd::train::parse_run_config(config).unread_settings();
  ASSERT_EQ(unread.size(), 1u);
  EXPECT_NE(unread[0].find("optim.master_weights"), std::string::npos);
}

}  // namespace
