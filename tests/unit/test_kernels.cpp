// The CPU attention kernel against the eager formula (compat::causal_attention), values and gradients.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "qkd/common/torch_compat.h"
#include "qkd/kernels/causal_attention.h"

namespace {

struct Heads {
  int64_t heads, kv_heads;
};

class CausalAttentionCase : public ::testing::TestWithParam<Heads> {};

double relative(const torch::Tensor& a, const torch::Tensor& b) { return ((a - b).norm() / b.norm()).item<double>(); }

TEST_P(CausalAttentionCase, MatchesTheEagerFormulaInValueAndGradient) {
  const auto [heads, kv_heads] = GetParam();
  torch::set_num_threads(2);
  ASSERT_TRUE(qkd::kernels::has_fast_path(torch::zeros({1, 1, 1, 1})));
  torch::manual_seed(5);
  const int64_t b = 3, t = 37, d = 16;
  // Inputs as the model makes them: transposed views of [B, T, H, D] projections.
  auto q1 = torch::randn({b, t, heads, d}).transpose(1, 2).requires_grad_(true);
  auto k1 = torch::randn({b, t, kv_heads, d}).transpose(1, 2).requires_grad_(true);
  auto v1 = torch::randn({b, t, kv_heads, d}).transpose(1, 2).requires_grad_(true);
  auto q2 = q1.detach().clone().requires_grad_(true), k2 = k1.detach().clone().requires_grad_(true),
       v2 = v1.detach().clone().requires_grad_(true);
  const auto ours = qkd::kernels::causal_attention(q1, k1, v1);
  const auto eager = qkd::compat::causal_attention(q2, k2, v2);
  ASSERT_EQ(ours.sizes(), eager.sizes());
  EXPECT_LT(relative(ours, eager), 1e-6);
  const auto upstream = torch::randn(eager.sizes());
  (ours * upstream).sum().backward();
  (eager * upstream).sum().backward();
  EXPECT_LT(relative(q1.grad(), q2.grad()), 1e-5);
  EXPECT_LT(relative(k1.grad(), k2.grad()), 1e-5);
  EXPECT_LT(relative(v1.grad(), v2.grad()), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(GroupedAndPlain, CausalAttentionCase, ::testing::Values(Heads{4, 4}, Heads{8, 2}, Heads{6, 3}));

TEST(CausalAttention, AFutureTokenDoesNotChangeEarlierOutputs) {
  torch::set_num_threads(2);
  torch::manual_seed(9);
  auto q = torch::randn({1, 2, 10, 8}), k = torch::randn({1, 1, 10, 8}), v = torch::randn({1, 1, 10, 8});
  const auto before = qkd::kernels::causal_attention(q, k, v);
  k.select(2, 9).add_(5.0);
  v.select(2, 9).add_(5.0);
  const auto after = qkd::kernels::causal_attention(q, k, v);
  EXPECT_TRUE(torch::equal(before.narrow(2, 0, 9), after.narrow(2, 0, 9)));
  EXPECT_FALSE(torch::equal(before.narrow(2, 9, 1), after.narrow(2, 9, 1)));
}

TEST(CausalAttention, OneThreadOrAnotherDtypeTakesTheEagerPath) {
  torch::set_num_threads(1);
  EXPECT_FALSE(qkd::kernels::has_fast_path(torch::zeros({1, 1, 1, 1})));
  torch::set_num_threads(2);
  EXPECT_FALSE(qkd::kernels::has_fast_path(torch::zeros({1, 1, 1, 1}, torch::kFloat64)));
}

}  // namespace
