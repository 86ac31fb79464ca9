// The in-house AdamW against LibTorch's torch::optim::AdamW, per-parameter bias correction for a
// parameter added late (a released projection), its learning-rate warm-up, and the state round trip.
#include <gtest/gtest.h>

#include "qkd/train/adamw.h"
#include "qkd/train/lr_schedule.h"

namespace {

using qkd::train::AdamW;
using qkd::train::AdamWOptions;

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

}  // namespace

TEST(LrSchedule, WarmupThenCosineToTheFloorOrConstant) {
  using qkd::train::learning_rate_at;
  using qkd::train::LrSchedule;
  const qkd::train::LrScheduleOptions cosine{1e-3, 4, LrSchedule::cosine, 0.1};
  EXPECT_DOUBLE_EQ(learning_rate_at(0, 104, cosine), 2.5e-4);  // warm-up: (step + 1) / 4 of the peak
  EXPECT_DOUBLE_EQ(learning_rate_at(3, 104, cosine), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate_at(4, 104, cosine), 1e-3);                         // decay starts at the peak
  EXPECT_NEAR(learning_rate_at(54, 104, cosine), 1e-3 * (0.1 + 0.9 * 0.5), 1e-15);  // half way
  EXPECT_DOUBLE_EQ(learning_rate_at(104, 104, cosine), 1e-4);                       // the floor, min_ratio x peak
  const qkd::train::LrScheduleOptions constant{1e-3, 0, LrSchedule::constant, 0.1};
  EXPECT_DOUBLE_EQ(learning_rate_at(50, 104, constant), 1e-3);
}
