// Document masking (data.document_mask): the layout of a packed window, and the model's attention and
// rotary positions under it. Reference: each document computed alone, in its own window from position 0.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "qkd/kernels/causal_attention.h"
#include "qkd/model/document_layout.h"
#include "qkd/model/llama.h"
#include "test_support.h"

using qkd::model::document_layout;
using qkd::model::document_layout_from_bos;

namespace {

constexpr int64_t kBos = 1;

qkd::model::LlamaForCausalLM random_tiny_model() {
  torch::manual_seed(11);
  qkd::model::LlamaForCausalLM model(qkd::test::tiny_llama_config());
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.normal_(0.0, 0.2);
  model->eval();
  return model;
}

// BOS, then `length` ids in 3..99 drawn from `seed`.
std::vector<int64_t> document(int64_t length, uint64_t seed) {
  std::vector<int64_t> ids{kBos};
  for (int64_t i = 0; i < length; ++i) ids.push_back(3 + static_cast<int64_t>((seed * 7919 + i * 104729) % 97));
  return ids;
}

torch::Tensor row(std::vector<int64_t> a, const std::vector<int64_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return torch::tensor(a, torch::kInt64).unsqueeze(0);
}

double max_difference(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

class DocumentMaskThreads : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override { torch::set_num_threads(GetParam()); }  // 2: the CPU kernel; 1: the eager formula
  void TearDown() override { torch::set_num_threads(2); }
};

}  // namespace

TEST(DocumentLayout, StartsAndPositionsRestartAtEachDocument) {
  const auto ids = torch::tensor(std::vector<int64_t>{7, 8, kBos, 9, 9, kBos, 4, 5}).unsqueeze(0);
  const auto layout = document_layout_from_bos(ids, kBos);
  // The window opens inside a document: its first token starts one.
  EXPECT_TRUE(torch::equal(layout.starts, torch::tensor(std::vector<int64_t>{0, 0, 2, 2, 2, 5, 5, 5}).unsqueeze(0)));
  EXPECT_TRUE(torch::equal(layout.positions, torch::tensor(std::vector<int64_t>{0, 1, 0, 1, 2, 0, 1, 2}).unsqueeze(0)));
  const auto blocked = qkd::model::blocked_keys(layout)[0];
  EXPECT_FALSE(blocked[4][2].item<bool>());  // same document, earlier
  EXPECT_TRUE(blocked[4][1].item<bool>());   // previous document
  EXPECT_TRUE(blocked[4][5].item<bool>());   // later
  EXPECT_FALSE(blocked[5][5].item<bool>());  // itself
  // Documents of 2, 3 and 3 tokens: n (n + 1) / 2 visible (query, key) pairs each.
  EXPECT_EQ(blocked.logical_not().sum().item<int64_t>(), 3 + 6 + 6);
}

TEST_P(DocumentMaskThreads, ATokensLogitsDoNotDependOnThePreviousDocumentInItsWindow) {
  auto model = random_tiny_model();
  torch::NoGradGuard no_grad;
  const auto b = document(12, 3);
  const auto short_a = row(document(5, 1), b), long_a = row(document(9, 2), b);
  const auto masked = [&](const torch::Tensor& ids) {
    const auto layout = document_layout_from_bos(ids, kBos);
    return model->forward(ids, nullptr, &layout);
  };
  const int64_t n = static_cast<int64_t>(b.size());
  const auto after_short = masked(short_a).narrow(1, short_a.size(1) - n, n);
  const auto after_long = masked(long_a).narrow(1, long_a.size(1) - n, n);
  // The reference: document B alone in its own window, plain causal attention from position 0.
  const auto alone = model->forward(torch::tensor(b, torch::kInt64).unsqueeze(0));
  EXPECT_LT(max_difference(after_short, alone), 1e-5);
  EXPECT_LT(max_difference(after_long, alone), 1e-5);
  // Without the mask, the previous document leaks into B's logits.
  const auto unmasked = model->forward(long_a).narrow(1, long_a.size(1) - n, n);
  EXPECT_GT(max_difference(unmasked, alone), 1e-2);
}

TEST_P(DocumentMaskThreads, GradientsStayInsideEachDocument) {
  auto model = random_tiny_model();
  const auto ids = row(document(6, 4), document(7, 5));
  const auto layout = document_layout_from_bos(ids, kBos);
  auto embedded = model->model->embed_tokens(ids).detach().requires_grad_(true);
  auto h = embedded;
  const auto inputs = model->model->attention_inputs(ids.size(1), torch::kFloat32, torch::kCPU, &layout);
  for (auto& layer : model->model->layer_list) h = layer->forward(h, inputs, nullptr);
  // A loss on the second document's tokens reaches none of the first document's inputs.
  h.narrow(1, 7, 8).sum().backward();
  EXPECT_EQ(embedded.grad().narrow(1, 0, 7).abs().max().item<double>(), 0.0);
  EXPECT_GT(embedded.grad().narrow(1, 7, 8).abs().max().item<double>(), 0.0);
}

INSTANTIATE_TEST_SUITE_P(KernelAndEager, DocumentMaskThreads, ::testing::Values(2, 1));

TEST(DocumentMaskKernel, MatchesTheEagerFormulaInValueAndGradient) {
  torch::set_num_threads(2);
  torch::manual_seed(3);
  const int64_t b = 2, t = 29, heads = 4, kv_heads = 2, d = 8;
  auto q1 = torch::randn({b, t, heads, d}).transpose(1, 2).requires_grad_(true);
  auto k1 = torch::randn({b, t, kv_heads, d}).transpose(1, 2).requires_grad_(true);
  auto v1 = torch::randn({b, t, kv_heads, d}).transpose(1, 2).requires_grad_(true);
  auto q2 = q1.detach().clone().requires_grad_(true), k2 = k1.detach().clone().requires_grad_(true),
       v2 = v1.detach().clone().requires_grad_(true);
  auto starts = torch::zeros({b, t}, torch::kBool);
  starts[0][10] = true;
  starts[0][11] = true;  // a one-token document
  starts[1][20] = true;
  const auto blocked = qkd::model::blocked_keys(document_layout(starts));
  const auto ours = qkd::kernels::causal_attention(q1, k1, v1, blocked);
  const auto eager = qkd::kernels::masked_attention(q2, k2, v2, blocked);
  EXPECT_LT(max_difference(ours, eager), 1e-5);
  const auto upstream = torch::randn(eager.sizes());
  (ours * upstream).sum().backward();
  (eager * upstream).sum().backward();
  EXPECT_LT(max_difference(q1.grad(), q2.grad()), 1e-4);
  EXPECT_LT(max_difference(k1.grad(), k2.grad()), 1e-4);
  EXPECT_LT(max_difference(v1.grad(), v2.grad()), 1e-4);
}
