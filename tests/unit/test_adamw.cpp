// The in-house AdamW against LibTorch's torch::optim::AdamW, per-parameter bias correction for a
// parameter added late (a released projection), its learning-rate warm-up, the state round trip, and
// the fp32 master copies of bf16 parameters.
#include <gtest/gtest.h>

#include <cmath>

#include "qkd/optim/adamw.h"
#include "qkd/optim/lr_schedule.h"
#include "test_support.h"

namespace {

using qkd::optim::AdamW;
using qkd::optim::AdamWOptions;

torch::Tensor param_like(int64_t seed) {
  torch::manual_seed(seed);
  return torch::randn({16, 8}).requires_grad_(true);
}

void set_grad(torch::Tensor& p, int64_t seed) {
  torch::manual_seed(seed);
  p.mutable_grad() = torch::randn(p.sizes()) * 0.1;
}

TEST(AdamW, MatchesLibTorchAdamW) {
  auto ours = param_like(1), theirs = param_like(1);
  AdamW optimizer(AdamWOptions{0.9, 0.999, 1e-8, 0.01});
  optimizer.add_parameter("w", ours, /*decay=*/true);
  torch::optim::AdamW reference({theirs}, torch::optim::AdamWOptions(1e-3).weight_decay(0.01));
  for (int step = 0; step < 6; ++step) {
    set_grad(ours, 100 + step);
    set_grad(theirs, 100 + step);
    optimizer.step(1e-3);
    reference.step();
  }
  EXPECT_LT((ours - theirs).abs().max().item<double>(), 1e-7);
}

TEST(AdamW, ALateParameterStartsItsOwnBiasCorrection) {
  auto early = param_like(1), late = param_like(2), alone = param_like(2);
  AdamW optimizer(AdamWOptions{});
  optimizer.add_parameter("early", early, true);
  for (int step = 0; step < 5; ++step) {
    set_grad(early, step);
    optimizer.step(1e-3);
  }
  optimizer.add_parameter("late", late, true);  // a projection released after a freeze
  torch::optim::AdamW reference({alone}, torch::optim::AdamWOptions(1e-3).weight_decay(0.0));
  for (int step = 0; step < 3; ++step) {
    set_grad(early, 10 + step);
    set_grad(late, 20 + step);
    set_grad(alone, 20 + step);
    optimizer.step(1e-3);
    reference.step();
  }
  EXPECT_LT((late - alone).abs().max().item<double>(), 1e-7);
}

TEST(AdamW, WarmupRampsALateParametersFirstSteps) {
  auto p = param_like(3);
  const auto before = p.detach().clone();
  AdamW optimizer(AdamWOptions{});
  optimizer.add_parameter("w", p, true, /*warmup_steps=*/4);
  set_grad(p, 7);
  optimizer.step(1e-3);
  // First Adam step: sign(g) x lr, here lr / 4 (within float32 rounding of weights near 1; without
  // the ramp the step would be 1e-3).
  EXPECT_NEAR((p - before).abs().max().item<double>(), 1e-3 / 4, 2e-7);
  EXPECT_NEAR((p - before).abs().min().item<double>(), 1e-3 / 4, 2e-7);
}

TEST(AdamW, StateRoundTripContinuesIdentically) {
  auto a = param_like(4), b = param_like(4);
  AdamW first(AdamWOptions{}), second(AdamWOptions{});
  first.add_parameter("w", a, true, 3);
  set_grad(a, 1);
  first.step(1e-3);
  {
    torch::NoGradGuard no_grad;
    b.copy_(a);
  }
  second.add_parameter("w", b, true);
  second.load_state(first.state(), "test");
  set_grad(a, 2);
  set_grad(b, 2);
  first.step(1e-3);
  second.step(1e-3);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_EQ(second.step_count(), 2);
}

// bf16 parameters and their fp32 masters. Gradients are bf16 values, so the fp32 reference sees
// exactly the gradient the master path casts up.
torch::Tensor bf16_param(int64_t seed) { return param_like(seed).detach().to(torch::kBFloat16).requires_grad_(true); }

void set_bf16_grad(torch::Tensor& p, int64_t seed) {
  torch::manual_seed(seed);
  p.mutable_grad() = (torch::randn(p.sizes()) * 0.1).to(p.scalar_type());
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

// The update as it was before master weights, kept to pin fp32 parameters to it bit for bit (and to
// show what it did to bf16 ones).
struct LegacyAdamW {
  torch::Tensor param, exp_avg, exp_avg_sq;
  int64_t steps = 0;
  explicit LegacyAdamW(torch::Tensor p)
      : param(p),
        exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve)),
        exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve)) {}
  void step(double lr, double weight_decay) {
    torch::NoGradGuard no_grad;
    const auto& grad = param.grad();
    ++steps;
    const double bc1 = 1.0 - std::pow(0.9, static_cast<double>(steps));
    const double bc2_sqrt = std::sqrt(1.0 - std::pow(0.999, static_cast<double>(steps)));
    if (weight_decay != 0.0) param.mul_(1.0 - lr * weight_decay);
    exp_avg.lerp_(grad, 1.0 - 0.9);
    exp_avg_sq.mul_(0.999).addcmul_(grad, grad, 1.0 - 0.999);
    const auto denom = (exp_avg_sq.sqrt() / bc2_sqrt).add_(1e-8);
    param.addcdiv_(exp_avg, denom, -lr / bc1);
  }
};

TEST(AdamWMaster, Fp32ParametersUpdateExactlyAsBefore) {
  auto ours = param_like(11), theirs = param_like(11);
  AdamW optimizer(AdamWOptions{0.9, 0.999, 1e-8, 0.01});
  optimizer.add_parameter("w", ours, true);
  LegacyAdamW legacy(theirs);
  for (int step = 0; step < 6; ++step) {
    set_grad(ours, 300 + step);
    set_grad(theirs, 300 + step);
    optimizer.step(1e-3);
    legacy.step(1e-3, 0.01);
  }
  EXPECT_TRUE(torch::equal(ours, theirs));
  EXPECT_FALSE(has_state_tensor(optimizer, "w.master"));
}

TEST(AdamWMaster, Bf16ParameterFollowsTheFp32PathBitwise) {
  auto low = bf16_param(5);
  auto full = low.detach().to(torch::kFloat32).requires_grad_(true);
  const auto before = low.detach().clone();
  AdamW optimizer(AdamWOptions{0.9, 0.999, 1e-8, 0.01});
  optimizer.add_parameter("low", low, /*decay=*/true);
  optimizer.add_parameter("full", full, /*decay=*/true);
  // 1e-5 is the rate at which bf16 weights near 1 used to stay put (their rounding step is 2^-8).
  for (int step = 0; step < 6; ++step) {
    set_bf16_grad(low, 200 + step);
    full.mutable_grad() = low.grad().to(torch::kFloat32);
    optimizer.step(step < 3 ? 1e-3 : 1e-5);
  }
  const auto master = state_tensor(optimizer, "low.master");
  ASSERT_EQ(master.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::equal(master, full.detach()));
  EXPECT_TRUE(torch::equal(low.detach(), full.detach().to(torch::kBFloat16)));
  EXPECT_FALSE(torch::equal(low.detach(), before));
  EXPECT_EQ(state_tensor(optimizer, "low.exp_avg").scalar_type(), torch::kFloat32);
  EXPECT_FALSE(has_state_tensor(optimizer, "full.master"));  // fp32: no copy
}

TEST(AdamWMaster, SmallUpdatesAndDecayAccumulateInTheMaster) {
  auto p = torch::ones({64}, torch::kBFloat16).requires_grad_(true);
  AdamW optimizer(AdamWOptions{0.9, 0.999, 1e-8, 0.1});
  optimizer.add_parameter("w", p, true);
  // A constant gradient makes every Adam step lr / (1 + eps); with the decay each step moves a weight
  // near 1 by ~1.1e-5, far below bf16's rounding step there (2^-8): updating the bf16 weight directly
  // leaves it at 1 for ever (as the legacy update shows).
  auto in_place = torch::ones({64}, torch::kBFloat16).requires_grad_(true);
  LegacyAdamW legacy(in_place);
  double expected = 1.0;
  for (int step = 0; step < 400; ++step) {
    p.mutable_grad() = torch::ones({64}, torch::kBFloat16);
    in_place.mutable_grad() = torch::ones({64}, torch::kBFloat16);
    optimizer.step(1e-5);
    legacy.step(1e-5, 0.1);
    expected = expected * (1.0 - 1e-5 * 0.1) - 1e-5 / (1.0 + 1e-8);
  }
  EXPECT_TRUE((in_place == 1.0).all().item<bool>());
  const auto master = state_tensor(optimizer, "w.master");
  EXPECT_NEAR(master[0].item<double>(), expected, 400 * 6e-8);  // fp32 rounding of each update
  EXPECT_TRUE(torch::equal(p.detach(), master.to(torch::kBFloat16)));
  EXPECT_LT(p[0].item<double>(), 1.0);
}

TEST(AdamWMaster, StateBytesCountMomentsAndMasters) {
  auto full = param_like(1), low = bf16_param(2), low_too = bf16_param(3);
  AdamW optimizer(AdamWOptions{});
  optimizer.add_parameter("full", full, true);
  EXPECT_EQ(optimizer.state_bytes(), 128 * 4 * 2);
  optimizer.add_parameter("low", low, true);
  EXPECT_EQ(optimizer.state_bytes(), 128 * 4 * 2 + 128 * 4 * 3);
  EXPECT_EQ(optimizer.numel(), 256);

  AdamWOptions bf16_moments;
  bf16_moments.moment_dtype = torch::kBFloat16;
  AdamW small(bf16_moments);
  small.add_parameter("low", low_too, true);
  EXPECT_EQ(small.state_bytes(), 128 * (2 + 2 + 4));
}

// A resumed run gets its weights from the student file (bf16) and its master from the optimizer
// state; the next steps must be those of the run that never stopped.
TEST(AdamWMaster, StateRoundTripWithMastersContinuesBitwise) {
  auto a = bf16_param(4), b = bf16_param(99);
  AdamW first(AdamWOptions{0.9, 0.999, 1e-8, 0.01}), second(AdamWOptions{0.9, 0.999, 1e-8, 0.01});
  first.add_parameter("w", a, true, 3);
  for (int step = 0; step < 3; ++step) {
    set_bf16_grad(a, 10 + step);
    first.step(1e-4);
  }
  {
    torch::NoGradGuard no_grad;
    b.copy_(a);  // the student's bf16 weights
  }
  second.add_parameter("w", b, true);
  // The point of saving the master: it holds more than the bf16 weights do.
  ASSERT_FALSE(torch::equal(state_tensor(first, "w.master"), a.detach().to(torch::kFloat32)));
  second.load_state(first.state(), "test");
  EXPECT_TRUE(torch::equal(state_tensor(second, "w.master"), state_tensor(first, "w.master")));
  for (int step = 0; step < 3; ++step) {
    set_bf16_grad(a, 20 + step);
    set_bf16_grad(b, 20 + step);
    first.step(1e-4);
    second.step(1e-4);
    EXPECT_TRUE(torch::equal(a, b));
  }
  EXPECT_TRUE(torch::equal(state_tensor(second, "w.master"), state_tensor(first, "w.master")));
  EXPECT_EQ(second.step_count(), 6);
}

TEST(AdamWMaster, LoadStateSetsTheParameterFromTheMaster) {
  auto a = bf16_param(4), b = bf16_param(5);
  AdamW first(AdamWOptions{}), second(AdamWOptions{});
  first.add_parameter("w", a, true);
  set_bf16_grad(a, 1);
  first.step(1e-3);
  second.add_parameter("w", b, true);  // b still holds other weights
  second.load_state(first.state(), "test");
  EXPECT_TRUE(torch::equal(a, b));
}

TEST(AdamWMaster, LoadStateRefusesAMissingOrMismatchedMaster) {
  using qkd::test::expect_error;
  auto full = param_like(1);
  AdamW from_fp32(AdamWOptions{});
  from_fp32.add_parameter("w", full, true);  // an fp32 run saves no master
  auto low = bf16_param(1);
  AdamW optimizer(AdamWOptions{});
  optimizer.add_parameter("w", low, true);
  expect_error([&] { optimizer.load_state(from_fp32.state(), "run/optimizer.safetensors"); },
               {"run/optimizer.safetensors", "'w.master' missing", "BFloat16"});

  auto with_master = [&](torch::Tensor master) {
    auto state = optimizer.state();
    for (auto& [key, tensor] : state)
      if (key == "w.master") tensor = master;
    return state;
  };
  expect_error(
      [&] {
        optimizer.load_state(with_master(torch::zeros({8, 16})), "run/optimizer.safetensors");
      },
      {"run/optimizer.safetensors", "'w.master'", "shape"});
  expect_error(
      [&] {
        optimizer.load_state(with_master(torch::zeros({16, 8}, torch::kBFloat16)), "run/optimizer.safetensors");
      },
      {"run/optimizer.safetensors", "'w.master'", "dtype BFloat16"});
}

// A rollback writes old weights into a projection, then freezes it: removal drops the master, and a
// later release builds one from the weights the parameter holds then.
TEST(AdamWMaster, RemoveFreesTheMasterAndAddBuildsAFreshOne) {
  auto p = bf16_param(6);
  AdamW optimizer(AdamWOptions{});
  optimizer.add_parameter("w", p, true);
  set_bf16_grad(p, 1);
  optimizer.step(1e-3);
  const auto bytes_with = optimizer.state_bytes();
  optimizer.remove_parameter("w");
  EXPECT_EQ(optimizer.state_bytes(), 0);
  EXPECT_FALSE(has_state_tensor(optimizer, "w.master"));
  const auto old_weights = bf16_param(7).detach();
  {
    torch::NoGradGuard no_grad;
    p.copy_(old_weights);
  }
  optimizer.sync_master_from_parameter("w");  // no slot: nothing to do
  optimizer.add_parameter("w", p, true);
  EXPECT_EQ(optimizer.state_bytes(), bytes_with);
  EXPECT_TRUE(torch::equal(state_tensor(optimizer, "w.master"), old_weights.to(torch::kFloat32)));
}

TEST(AdamWMaster, SyncTakesAWriteIntoTheParameter) {
  auto p = bf16_param(6), q = bf16_param(7);
  AdamW optimizer(AdamWOptions{}), reference(AdamWOptions{});
  optimizer.add_parameter("w", p, true);
  for (int step = 0; step < 2; ++step) {
    set_bf16_grad(p, step);
    optimizer.step(1e-3);
  }
  {
    torch::NoGradGuard no_grad;
    p.copy_(q);
  }
  optimizer.sync_master_from_parameter("w");
  EXPECT_TRUE(torch::equal(state_tensor(optimizer, "w.master"), q.detach().to(torch::kFloat32)));
  // Without the sync this step would start from the old master and overwrite q's values with it; with
  // it the weights move from q by one Adam step (<= a few lr) and one bf16 rounding (<= 2^-8 |w|).
  set_bf16_grad(p, 9);
  optimizer.step(1e-3);
  const auto after = p.detach().to(torch::kFloat32), start = q.detach().to(torch::kFloat32);
  EXPECT_TRUE(((after - start).abs() <= start.abs() / 256 + 5e-3).all().item<bool>());
}

TEST(AdamWMaster, Bf16MomentsAreStoredAsBf16AndStayClose) {
  AdamWOptions bf16_moments;
  bf16_moments.moment_dtype = torch::kBFloat16;
  auto p = param_like(8), reference = param_like(8), low = bf16_param(8);
  AdamW optimizer(bf16_moments), fp32_moments(AdamWOptions{});
  optimizer.add_parameter("w", p, true);
  optimizer.add_parameter("low", low, true);
  fp32_moments.add_parameter("w", reference, true);
  for (int step = 0; step < 5; ++step) {
    set_grad(p, 30 + step);
    set_grad(reference, 30 + step);
    set_bf16_grad(low, 30 + step);
    optimizer.step(1e-3);
    fp32_moments.step(1e-3);
  }
  for (const auto* name : {"w.exp_avg", "w.exp_avg_sq", "low.exp_avg", "low.exp_avg_sq"})
    EXPECT_EQ(state_tensor(optimizer, name).scalar_type(), torch::kBFloat16) << name;
  EXPECT_EQ(state_tensor(optimizer, "low.master").scalar_type(), torch::kFloat32);
  EXPECT_EQ(p.scalar_type(), torch::kFloat32);
  // Updates are ~1e-3 each; bf16 moments (8 significant bits) perturb them by a few per mille.
  EXPECT_LT((p - reference).abs().max().item<double>(), 5 * 1e-3 * 2e-2);
  EXPECT_FALSE(torch::equal(p, reference));

  // Round trip: bf16 moments resume bitwise, and fp32 moments load into bf16 ones.
  auto resumed = p.detach().clone().requires_grad_(true);
  AdamW second(bf16_moments);
  second.add_parameter("w", resumed, true);
  second.add_parameter("low", bf16_param(0), true);
  second.load_state(optimizer.state(), "test");
  set_grad(p, 40);
  set_grad(resumed, 40);
  optimizer.step(1e-3);
  second.step(1e-3);
  EXPECT_TRUE(torch::equal(p, resumed));

  AdamW third(bf16_moments);
  auto from_fp32 = reference.detach().clone().requires_grad_(true);
  third.add_parameter("w", from_fp32, true);
  third.load_state(fp32_moments.state(), "test");
  EXPECT_TRUE(
      torch::equal(state_tensor(third, "w.exp_avg"), state_tensor(fp32_moments, "w.exp_avg").to(torch::kBFloat16)));
}

TEST(AdamWMaster, MomentDtypeIsFloat32Bfloat16OrInt8) {
  AdamWOptions options;
  options.moment_dtype = torch::kFloat16;
  qkd::test::expect_error([&] { AdamW optimizer(options); },
                          {"optim.moment_dtype", "float32, bfloat16 or int8", "Half"});
}

}  // namespace

TEST(LrSchedule, WarmupThenCosineToTheFloorOrConstant) {
  using qkd::optim::learning_rate_at;
  using qkd::optim::LrSchedule;
  const qkd::optim::LrScheduleOptions cosine{1e-3, 4, LrSchedule::cosine, 0.1};
  EXPECT_DOUBLE_EQ(learning_rate_at(0, 104, cosine), 2.5e-4);  // warm-up: (step + 1) / 4 of the peak
  EXPECT_DOUBLE_EQ(learning_rate_at(3, 104, cosine), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate_at(4, 104, cosine), 1e-3);                         // decay starts at the peak
  EXPECT_NEAR(learning_rate_at(54, 104, cosine), 1e-3 * (0.1 + 0.9 * 0.5), 1e-15);  // half way
  EXPECT_DOUBLE_EQ(learning_rate_at(104, 104, cosine), 1e-4);                       // the floor, min_ratio x peak
  const qkd::optim::LrScheduleOptions constant{1e-3, 0, LrSchedule::constant, 0.1};
  EXPECT_DOUBLE_EQ(learning_rate_at(50, 104, constant), 1e-3);
}

namespace {

// Two optimizers that each own half of the parameters (ZeRO stage 1, as two ranks would), fed the same
// gradients: together they take exactly the unsharded optimizer's step, hold only their own state, and
// their parameter_state() parts reassemble its state bitwise.
TEST(AdamWShard, TwoShardsTakeTheUnshardedStepAndReassembleItsState) {
  torch::manual_seed(4);
  const std::vector<std::string> names{"a", "b", "c"};
  std::vector<torch::Tensor> init{torch::randn({4, 3}).to(torch::kBFloat16), torch::randn({5}), torch::randn({2, 2})};
  const auto params = [&] {
    std::vector<torch::Tensor> p;
    for (const auto& t : init) p.push_back(t.clone().requires_grad_(true));
    return p;
  };
  auto whole_p = params(), shard0_p = params(), shard1_p = params();
  AdamW whole(AdamWOptions{}), shard0(AdamWOptions{}), shard1(AdamWOptions{});
  shard0.shard([](const std::string& n) { return n != "b"; });
  shard1.shard([](const std::string& n) { return n == "b"; });
  for (size_t i = 0; i < names.size(); ++i) {
    whole.add_parameter(names[i], whole_p[i], true);
    shard0.add_parameter(names[i], shard0_p[i], true);
    shard1.add_parameter(names[i], shard1_p[i], true);
  }
  EXPECT_GT(shard0.state_bytes(), 0);
  EXPECT_EQ(shard0.state_bytes() + shard1.state_bytes(), whole.state_bytes());
  for (int step = 0; step < 3; ++step) {
    for (size_t i = 0; i < names.size(); ++i) {
      const auto g = torch::randn(init[i].sizes()).to(init[i].scalar_type());
      whole_p[i].mutable_grad() = g.clone();
      shard0_p[i].mutable_grad() = g.clone();
      shard1_p[i].mutable_grad() = g.clone();
    }
    whole.step(1e-2);
    shard0.step(1e-2);
    shard1.step(1e-2);
    {
      torch::NoGradGuard no_grad;  // what the owners' broadcast does
      shard0_p[1].copy_(shard1_p[1]);
      shard1_p[0].copy_(shard0_p[0]);
      shard1_p[2].copy_(shard0_p[2]);
    }
    for (size_t i = 0; i < names.size(); ++i) {
      EXPECT_TRUE(torch::equal(whole_p[i], shard0_p[i])) << names[i] << " step " << step;
      EXPECT_TRUE(torch::equal(whole_p[i], shard1_p[i])) << names[i] << " step " << step;
    }
  }
  std::map<std::string, qkd::optim::ParameterState> parts;
  for (const auto& n : names) parts[n] = (n == "b" ? shard1 : shard0).parameter_state(n);
  const auto expected = whole.state(), gathered = shard0.state_from(parts);
  ASSERT_EQ(gathered.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(gathered[i].first, expected[i].first);
    EXPECT_TRUE(torch::equal(gathered[i].second, expected[i].second)) << expected[i].first;
  }
  // A non-owner's parameter_state is zeros shaped like the owner's (to receive into).
  const auto empty = shard0.parameter_state("b");
  ASSERT_EQ(empty.size(), parts["b"].size());
  for (size_t i = 0; i < empty.size(); ++i) {
    EXPECT_EQ(empty[i].first, parts["b"][i].first);
    EXPECT_EQ(empty[i].second.sizes(), parts["b"][i].second.sizes());
  }
  // Each shard resumes its own entries from the full state.
  AdamW resumed(AdamWOptions{});
  resumed.shard([](const std::string& n) { return n == "b"; });
  auto resumed_p = params();
  for (size_t i = 0; i < names.size(); ++i) resumed.add_parameter(names[i], resumed_p[i], true);
  resumed.load_state(expected, "state");
  const auto mine = resumed.parameter_state("b");
  for (size_t i = 0; i < mine.size(); ++i) EXPECT_TRUE(torch::equal(mine[i].second, parts["b"][i].second));
}

}  // namespace
