// The chunked KD losses against the textbook formulas differentiated by autograd.
#include <gtest/gtest.h>

#include "qkd/common/error.h"
#include "qkd/loss/head_kd_loss.h"
#include "qkd/loss/kd_loss.h"
#include "qkd/loss/topk_kd_loss.h"

namespace {

using qkd::loss::Divergence;

torch::Tensor naive_loss(const torch::Tensor& t, const torch::Tensor& s, const torch::Tensor& ids, Divergence d,
                         double temp, double kd_w, double ce_w) {
  const auto log_p = torch::log_softmax(t / temp, -1), log_q = torch::log_softmax(s / temp, -1);
  const auto p = log_p.exp(), q = log_q.exp();
  torch::Tensor div;
  if (d == Divergence::forward_kl) div = (p * (log_p - log_q)).sum(-1).mean();
  if (d == Divergence::reverse_kl) div = (q * (log_q - log_p)).sum(-1).mean();
  if (d == Divergence::jensen_shannon) {
    const auto log_m = torch::log((p + q) / 2);
    div = 0.5 * ((p * (log_p - log_m)).sum(-1) + (q * (log_q - log_m)).sum(-1)).mean();
  }
  auto loss = kd_w * temp * temp * div;
  if (ce_w > 0) {
    const int64_t v = s.size(-1), n = s.size(1);
    const auto logits = s.narrow(1, 0, n - 1).reshape({-1, v});
    loss = loss + ce_w * torch::nn::functional::cross_entropy(logits, ids.narrow(1, 1, n - 1).reshape({-1}));
  }
  return loss;
}

struct Case {
  Divergence divergence;
  double temperature, kd_weight, ce_weight;
  int64_t chunk;
};

class KdLossCase : public ::testing::TestWithParam<Case> {};

TEST_P(KdLossCase, ValueAndGradientMatchAutogradOfTheFormula) {
  const auto c = GetParam();
  torch::manual_seed(7);
  const auto teacher = torch::randn({3, 5, 11}, torch::kFloat64) * 2;
  const auto ids = torch::randint(0, 11, {3, 5}, torch::kInt64);
  auto s1 = (torch::randn({3, 5, 11}, torch::kFloat64) * 2).requires_grad_(true);
  auto s2 = s1.detach().clone().requires_grad_(true);
  qkd::loss::KdLossOptions options{c.divergence, c.kd_weight, c.ce_weight, c.temperature, c.chunk};
  const auto ours = qkd::loss::kd_loss(teacher, s1, ids, options);
  ours.loss.backward();
  const auto expected = naive_loss(teacher, s2, ids, c.divergence, c.temperature, c.kd_weight, c.ce_weight);
  expected.backward();
  EXPECT_NEAR(ours.loss.item<double>(), expected.item<double>(), 1e-5 * std::abs(expected.item<double>()));
  const double rel = ((s1.grad() - s2.grad()).norm() / s2.grad().norm()).item<double>();
  EXPECT_LT(rel, 1e-5);
}

// The same loss from hidden states through both output heads: value and the gradients of the
// student's hidden states and head equal autograd through head and formula.
TEST_P(KdLossCase, FromHiddenStatesMatchesAutogradThroughTheHeads) {
  const auto c = GetParam();
  torch::manual_seed(11);
  const auto t_hidden = torch::randn({3, 5, 6}, torch::kFloat64), t_head = torch::randn({11, 6}, torch::kFloat64);
  const auto ids = torch::randint(0, 11, {3, 5}, torch::kInt64);
  auto h1 = torch::randn({3, 5, 6}, torch::kFloat64).requires_grad_(true);
  auto w1 = torch::randn({11, 6}, torch::kFloat64).requires_grad_(true);
  auto h2 = h1.detach().clone().requires_grad_(true), w2 = w1.detach().clone().requires_grad_(true);
  qkd::loss::KdLossOptions options{c.divergence, c.kd_weight, c.ce_weight, c.temperature, c.chunk};
  const auto ours = qkd::loss::kd_loss_from_hidden(t_hidden, t_head, h1, w1, ids, options);
  (ours.loss * 3.0).backward();  // the incoming scale (accumulation share, say) reaches both gradients
  const auto expected = naive_loss(torch::matmul(t_hidden, t_head.t()), torch::matmul(h2, w2.t()), ids, c.divergence,
                                   c.temperature, c.kd_weight, c.ce_weight);
  (expected * 3.0).backward();
  EXPECT_NEAR(ours.loss.item<double>(), expected.item<double>(), 1e-5 * std::abs(expected.item<double>()));
  EXPECT_LT(((h1.grad() - h2.grad()).norm() / h2.grad().norm()).item<double>(), 1e-5);
  EXPECT_LT(((w1.grad() - w2.grad()).norm() / w2.grad().norm()).item<double>(), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Divergences, KdLossCase,
                         ::testing::Values(Case{Divergence::forward_kl, 1.0, 1.0, 0.0, 4},
                                           Case{Divergence::forward_kl, 2.0, 1.0, 0.5, 7},
                                           Case{Divergence::reverse_kl, 1.0, 1.0, 0.0, 15},
                                           Case{Divergence::reverse_kl, 1.5, 0.5, 1.0, 1},
                                           Case{Divergence::jensen_shannon, 1.0, 1.0, 0.0, 2},
                                           Case{Divergence::jensen_shannon, 3.0, 1.0, 1.0, 100}));

TEST(KdLoss, IdenticalDistributionsGiveZeroDivergence) {
  const auto logits = torch::randn({2, 4, 9});
  const auto ids = torch::zeros({2, 4}, torch::kInt64);
  for (auto d : {Divergence::forward_kl, Divergence::reverse_kl, Divergence::jensen_shannon}) {
    const auto r = qkd::loss::kd_loss(logits, logits.clone().requires_grad_(true), ids, {d});
    EXPECT_NEAR(r.divergence, 0.0, 1e-6);
  }
}

TEST(KdLoss, ReportsCrossEntropySeparately) {
  const auto ids = torch::tensor({{1, 2, 3}}, torch::kInt64);
  const auto logits = torch::zeros({1, 3, 4});
  const auto r =
      qkd::loss::kd_loss(logits, logits.clone().requires_grad_(true), ids, {Divergence::forward_kl, 1.0, 1.0, 1.0, 2});
  EXPECT_NEAR(r.cross_entropy, std::log(4.0), 1e-6);  // uniform over 4 tokens
  EXPECT_NEAR(r.loss.item<double>(), std::log(4.0), 1e-6);
}

TEST(KdLoss, FromHiddenStatesLeavesAFixedHeadWithoutGradient) {
  torch::manual_seed(3);
  const auto t_hidden = torch::randn({2, 4, 5}), head = torch::randn({9, 5});
  const auto ids = torch::randint(0, 9, {2, 4}, torch::kInt64);
  auto hidden = torch::randn({2, 4, 5}).requires_grad_(true);
  const auto r = qkd::loss::kd_loss_from_hidden(t_hidden, head, hidden, head, ids, {Divergence::forward_kl});
  r.loss.backward();
  EXPECT_TRUE(hidden.grad().defined());
  EXPECT_FALSE(head.grad().defined());
  EXPECT_GT(r.divergence, 0.0);
}

TEST(KdLoss, UnknownDivergenceNamesTheField) {
  try {
    qkd::loss::divergences().parse("kl", "kd.divergence");
    FAIL();
  } catch (const qkd::Error& e) {
    EXPECT_NE(std::string(e.what()).find("kd.divergence"), std::string::npos);
  }
}

}  // namespace

// kd.ce_on responses: negative labels are no targets; the cross-entropy is the mean over the others
// (torch's cross_entropy with that ignore_index), the divergence still covers every position.
TEST(KdLoss, NegativeLabelsAreLeftOutOfTheCrossEntropyMean) {
  torch::manual_seed(8);
  const int64_t vocab = 11;
  const auto teacher = torch::randn({2, 6, vocab});
  auto labels = torch::randint(0, vocab, {2, 6}, torch::kInt64);
  labels.narrow(1, 0, 3).fill_(-1);  // prompts
  labels[1][4] = -1;
  const qkd::loss::KdLossOptions options{Divergence::forward_kl, 1.0, 0.5, 1.0, 5};
  const auto expected_for = [&](const torch::Tensor& student) {
    const auto log_p = torch::log_softmax(teacher, -1), log_q = torch::log_softmax(student, -1);
    const auto kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean();
    const auto ce = torch::nn::functional::cross_entropy(
        student.narrow(1, 0, 5).reshape({-1, vocab}), labels.narrow(1, 1, 5).reshape({-1}),
        torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-1));
    return kl + 0.5 * ce;
  };
  auto s1 = torch::randn({2, 6, vocab}).requires_grad_(true);
  auto s2 = s1.detach().clone().requires_grad_(true);
  const auto ours = qkd::loss::kd_loss(teacher, s1, labels, options);
  const auto expected = expected_for(s2);
  EXPECT_NEAR(ours.loss.item<double>(), expected.item<double>(), 1e-5);
  ours.loss.backward();
  expected.backward();
  EXPECT_LT((s1.grad() - s2.grad()).abs().max().item<double>(), 1e-6);
  // The top-k loss with k = vocab is the same loss.
  auto s3 = s1.detach().clone().requires_grad_(true);
  const auto topk = qkd::loss::topk_kd_loss(qkd::loss::teacher_topk(teacher, vocab, 1.0), s3, labels, options);
  EXPECT_NEAR(topk.cross_entropy, ours.cross_entropy, 1e-5);
  // All labels negative: no cross-entropy, and no NaN.
  const auto none =
      qkd::loss::kd_loss(teacher, s1.detach().requires_grad_(true), torch::full({2, 6}, -1, torch::kInt64), options);
  EXPECT_EQ(none.cross_entropy, 0.0);
  EXPECT_TRUE(std::isfinite(none.loss.item<double>()));
}

// Row shards of a micro-batch (train/row_shards.h), each averaged over the whole micro-batch's counts,
// add up to the micro-batch's loss and gradients: through both heads and from cached top-k, with prompt
// tokens left out of the cross-entropy (whose count differs between the shards).
TEST(KdLoss, RowShardsOverTheWholeDenominatorsAddUpToTheBatch) {
  torch::manual_seed(21);
  const int64_t vocab = 13, hidden = 6;
  const qkd::loss::KdLossOptions options{Divergence::forward_kl, 1.0, 0.5, 1.0, 4};
  auto labels = torch::randint(0, vocab, {4, 7}, torch::kInt64);
  labels.narrow(1, 0, 3).narrow(0, 0, 1).fill_(-1);  // row 0 (shard 0) has fewer targets
  labels[3][5] = -1;
  const auto t_hidden = torch::randn({4, 7, hidden}), t_head = torch::randn({vocab, hidden});
  const auto s_hidden = torch::randn({4, 7, hidden}, torch::kFloat64).to(torch::kFloat32);
  const auto s_head = torch::randn({vocab, hidden});
  const auto whole = qkd::loss::loss_denominators(labels, options);
  EXPECT_EQ(whole.tokens, 28);

  auto h_all = s_hidden.clone().requires_grad_(true), w_all = s_head.clone().requires_grad_(true);
  const auto all = qkd::loss::kd_loss_from_hidden(t_hidden, t_head, h_all, w_all, labels, options);
  all.loss.backward();
  auto h_rows = s_hidden.clone().requires_grad_(true), w_rows = s_head.clone().requires_grad_(true);
  double loss = 0.0, divergence = 0.0, ce = 0.0;
  for (const auto& [begin, count] : {std::pair<int64_t, int64_t>{0, 2}, {2, 2}}) {
    const auto r =
        qkd::loss::kd_loss_from_hidden(t_hidden.narrow(0, begin, count), t_head, h_rows.narrow(0, begin, count), w_rows,
                                       labels.narrow(0, begin, count), options, &whole);
    r.loss.backward();
    loss += r.loss.item<double>();
    divergence += r.divergence;
    ce += r.cross_entropy;
  }
  EXPECT_NEAR(loss, all.loss.item<double>(), 1e-5);
  EXPECT_NEAR(divergence, all.divergence, 1e-6);
  EXPECT_NEAR(ce, all.cross_entropy, 1e-6);
  EXPECT_LT(((h_rows.grad() - h_all.grad()).abs().max()).item<double>(), 1e-6);
  EXPECT_LT(((w_rows.grad() - w_all.grad()).abs().max()).item<double>(), 1e-6);

  // Each shard on its own counts would not add up: the test can fail.
  const auto own = qkd::loss::kd_loss_from_hidden(t_hidden.narrow(0, 0, 2), t_head, s_hidden.narrow(0, 0, 2), s_head,
                                                  labels.narrow(0, 0, 2), options);
  const auto other = qkd::loss::kd_loss_from_hidden(t_hidden.narrow(0, 2, 2), t_head, s_hidden.narrow(0, 2, 2), s_head,
                                                    labels.narrow(0, 2, 2), options);
  EXPECT_GT(std::abs(own.loss.item<double>() + other.loss.item<double>() - all.loss.item<double>()), 0.1);

  // Cached top-k targets, split by qkd::loss::topk_rows.
  const auto logits = torch::matmul(t_hidden, t_head.t());
  const auto topk = qkd::loss::teacher_topk(logits, 4, 1.0);
  const auto student_logits = torch::matmul(s_hidden, s_head.t());
  auto z_all = student_logits.clone().requires_grad_(true), z_rows = student_logits.clone().requires_grad_(true);
  const auto cached_all = qkd::loss::topk_kd_loss(topk, z_all, labels, options);
  cached_all.loss.backward();
  double cached_loss = 0.0;
  for (const auto& [begin, count] : {std::pair<int64_t, int64_t>{0, 3}, {3, 1}}) {
    const auto r = qkd::loss::topk_kd_loss(qkd::loss::topk_rows(topk, begin, count), z_rows.narrow(0, begin, count),
                                           labels.narrow(0, begin, count), options, &whole);
    r.loss.backward();
    cached_loss += r.loss.item<double>();
  }
  EXPECT_NEAR(cached_loss, cached_all.loss.item<double>(), 1e-5);
  EXPECT_LT(((z_rows.grad() - z_all.grad()).abs().max()).item<double>(), 1e-6);
}
