// GPTQ: the per-layer solver against direct least-squares solutions and brute force, its error
// against round to nearest on several grids, the sequential model pass, and the student checkpoint
// it writes (the stored quantizer reproduces the GPTQ weights bitwise).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "qkd/checkpoint/student_checkpoint.h"
#include "qkd/common/error.h"
#include "qkd/model/llama.h"
#include "qkd/ptq/gptq.h"
#include "qkd/ptq/ptq.h"
#include "qkd/quant/fake_quant.h"
#include "qkd/quant/range_setting.h"
#include "qkd/quant/student.h"
#include "qkd/quant/weight_quantizer.h"
#include "test_support.h"

namespace {

using qkd::ptq::gptq_quantize_weight;
using qkd::ptq::GptqOptions;
using qkd::quant::Granularity;
using qkd::quant::QuantSpec;
using qkd::test::expect_error;
using qkd::test::quant_spec;

// W [out, in] and H = 2 X Xᵀ / n (fp64) from n inputs whose components are correlated (a mixing
// matrix), so that H has large off-diagonal terms and error feedback matters.
struct Layer {
  torch::Tensor w;  // fp32
  torch::Tensor h;  // fp64
};

Layer random_layer(uint64_t seed, int64_t out = 8, int64_t in = 16, int64_t n = 64) {
  torch::manual_seed(seed);
  const auto w = torch::randn({out, in});
  const auto mix = torch::eye(in) + 0.6 * torch::randn({in, in});
  const auto x = torch::randn({n, in}).mm(mix).to(torch::kDouble);
  return {w, x.t().mm(x) * (2.0 / n)};
}

// tr((W - Q) H (W - Q)ᵀ): the output error GPTQ minimizes, in fp64.
double output_error(const Layer& l, const torch::Tensor& q) {
  const auto e = l.w.to(torch::kDouble) - q.to(torch::kDouble);
  return e.mm(l.h).mul(e).sum().item<double>();
}

torch::Tensor round_to_nearest(const torch::Tensor& w, const QuantSpec& spec) {
  qkd::quant::WeightQuantizer q(spec, w.size(0), w.size(1), "test");
  torch::NoGradGuard no_grad;
  return q.fake_quantize(w);
}

QuantSpec grid(int64_t bits, Granularity g, bool symmetric, int64_t group = 4) {
  return quant_spec(bits, g, symmetric, group);
}

std::string describe(const QuantSpec& s) { return qkd::quant::quant_spec_to_json(s).dump(); }

// Scale and zero of original column `column` in the solver's result, [out, 1] fp32.
std::pair<torch::Tensor, torch::Tensor> column_params(const qkd::ptq::GptqLayerResult& r, const QuantSpec& spec,
                                                      int64_t column) {
  const int64_t block = spec.granularity == Granularity::per_group ? column / spec.group_size : 0;
  return {r.scale.select(1, block), r.zero.defined() ? r.zero.select(1, block) : torch::Tensor()};
}

std::vector<int64_t> sweep_order(const Layer& l, bool act_order) {
  auto order = torch::arange(l.w.size(1), torch::kLong);
  if (act_order) order = std::get<1>(torch::sort(l.h.diagonal(), true, 0, true));
  return std::vector<int64_t>(order.data_ptr<int64_t>(), order.data_ptr<int64_t>() + order.numel());
}

// The least-squares best values of the columns `rest` given that `done` are fixed at Q:
// argmin_V tr(E H Eᵀ) with E = [W_done - Q_done, W_rest - V], i.e. V = W_rest + (H_rr⁻¹ H_rd Aᵀ)ᵀ,
// A = W_done - Q_done (the normal equations, solved directly).
torch::Tensor least_squares_rest(const Layer& l, const torch::Tensor& q, const torch::Tensor& done,
                                 const torch::Tensor& rest) {
  const auto w = l.w.to(torch::kDouble);
  const auto w_rest = w.index_select(1, rest);
  if (done.numel() == 0) return w_rest;
  const auto a = (w - q.to(torch::kDouble)).index_select(1, done);
  const auto h_rr = l.h.index_select(0, rest).index_select(1, rest);
  const auto h_rd = l.h.index_select(0, rest).index_select(1, done);
  return w_rest + torch::linalg::solve(h_rr, h_rd.mm(a.t()), true).t();
}

// Whether the grid position of x is within `tol` of a rounding boundary (where fp64 and fp32 paths
// may legitimately round differently).
torch::Tensor near_tie(const torch::Tensor& x, const torch::Tensor& scale, double tol = 1e-5) {
  const auto v = x.to(torch::kDouble) / scale.to(torch::kDouble);
  return ((v - torch::floor(v)) - 0.5).abs() < tol;
}

// The optimal brain surgeon property GPTQ relies on: when column j is rounded, its value is the
// least-squares best one given the columns quantized before it (in sweep order), whatever the block
// size and the lazy batching. So Q[:, j] is the grid point nearest to that value. For per-group
// scales set on the fly, the scale of a group is min-max of those best values of the group's columns.
void expect_columns_round_least_squares_values(const Layer& l, const QuantSpec& spec, const GptqOptions& o) {
  const auto r = gptq_quantize_weight(l.w, l.h, spec, o);
  const auto order = sweep_order(l, o.act_order);
  const auto levels = qkd::quant::levels_for(spec.bits, spec.symmetric);
  const int64_t n = l.w.size(1);
  for (int64_t j = 0; j < n; ++j) {
    const auto done = torch::tensor(std::vector<int64_t>(order.begin(), order.begin() + j), torch::kLong);
    const auto rest = torch::tensor(std::vector<int64_t>(order.begin() + j, order.end()), torch::kLong);
    const auto best = least_squares_rest(l, r.q, done, rest);
    const int64_t column = order[j];
    const auto [scale, zero] = column_params(r, spec, column);
    if (spec.granularity == Granularity::per_group && !o.act_order && column % spec.group_size == 0) {
      const auto group = best.slice(1, 0, spec.group_size).to(torch::kFloat).unsqueeze(1);
      const auto expected = qkd::quant::minmax_params(group, spec.bits, spec.symmetric);
      EXPECT_TRUE(torch::allclose(scale, expected.scale.squeeze(1), 1e-5, 0)) << describe(spec) << " group of " << j;
    }
    const auto target = best.slice(1, 0, 1);
    const auto expected = qkd::quant::fake_quant_value(target.to(torch::kFloat), scale, zero, levels);
    const auto got = r.q.slice(1, column, column + 1);
    const auto differ = (got != expected) & ~near_tie(target, scale);
    EXPECT_EQ(differ.sum().item<int64_t>(), 0)
        << describe(spec) << " act_order " << o.act_order << " block " << o.block_size << " sweep position " << j
        << "\nGPTQ " << got.t() << "\nnearest to least squares " << expected.t();
  }
}

GptqOptions options(int64_t block, bool act_order, double damp = 0.0) {
  GptqOptions o;
  o.block_size = block;
  o.act_order = act_order;
  o.damp = damp;
  return o;
}

TEST(Gptq, EveryColumnRoundsItsLeastSquaresValuePerChannel) {
  const auto l = random_layer(1);
  for (const auto& spec : {grid(3, Granularity::per_channel, true), grid(2, Granularity::per_channel, false),
                           grid(4, Granularity::per_tensor, true)})
    for (int64_t block : {128, 8, 5})
      for (bool act_order : {false, true})
        expect_columns_round_least_squares_values(l, spec, options(block, act_order));
}

// Groups inside a block, a group spanning several blocks, a block size that is not a multiple of the
// group size, and static groups under act order.
TEST(Gptq, EveryColumnRoundsItsLeastSquaresValuePerGroup) {
  const auto l = random_layer(2);
  for (int64_t group : {4, 8, 16})
    for (bool symmetric : {true, false})
      for (int64_t block : {128, 8, 5, 4})
        for (bool act_order : {false, true})
          expect_columns_round_least_squares_values(l, grid(3, Granularity::per_group, symmetric, group),
                                                    options(block, act_order));
}

// Under act order, groups are the reference's static groups: their scales are round to nearest's.
TEST(Gptq, ActOrderGroupsKeepTheScalesOfTheOriginalWeights) {
  const auto l = random_layer(3);
  const auto spec = grid(2, Granularity::per_group, false, 4);
  const auto r = gptq_quantize_weight(l.w, l.h, spec, options(128, true, 0.01));
  const auto expected = qkd::quant::minmax_params(l.w.reshape({8, 4, 4}), spec.bits, spec.symmetric);
  EXPECT_TRUE(torch::equal(r.scale, expected.scale));
  EXPECT_TRUE(torch::equal(r.zero, expected.zero));
}

// Two columns: column 1 is rounded to nearest; column 2 must be the grid point that minimizes the
// output error given column 1, found here by enumerating every level, and the nearest to the
// continuous optimum from the normal equations.
TEST(Gptq, TwoColumnsMatchBruteForceOverTheGrid) {
  for (const auto& spec : {grid(3, Granularity::per_channel, true), grid(2, Granularity::per_channel, false),
                           grid(4, Granularity::per_channel, false)}) {
    for (uint64_t seed : {11, 12, 13}) {
      const auto l = random_layer(seed, 8, 2, 64);
      const auto r = gptq_quantize_weight(l.w, l.h, spec, options(128, false));
      EXPECT_TRUE(torch::equal(r.q.slice(1, 0, 1), round_to_nearest(l.w, spec).slice(1, 0, 1))) << describe(spec);
      const auto levels = qkd::quant::levels_for(spec.bits, spec.symmetric);
      const auto h = l.h.accessor<double, 2>();
      for (int64_t row = 0; row < 8; ++row) {
        const double s = r.scale[row][0][0].item<float>();
        const double z = r.zero.defined() ? r.zero[row][0][0].item<float>() : 0.0;
        const double e1 = l.w[row][0].item<float>() - r.q[row][0].item<float>();
        const double w2 = l.w[row][1].item<float>();
        double best = 0, best_error = INFINITY;
        for (int64_t code = levels.qmin; code <= levels.qmax; ++code) {
          const double q2 = (code - z) * s, e2 = w2 - q2;
          const double error = e1 * e1 * h[0][0] + 2 * e1 * e2 * h[0][1] + e2 * e2 * h[1][1];
          if (error < best_error) best_error = error, best = q2;
        }
        EXPECT_NEAR(r.q[row][1].item<float>(), best, 1e-6 * s) << describe(spec) << " seed " << seed << " row " << row;
        // The continuous optimum of column 2: h11 (w2 - c) = -h01 e1.
        const auto c = w2 + torch::linalg::solve(l.h.slice(0, 1, 2).slice(1, 1, 2),
                                                 torch::full({1, 1}, h[0][1] * e1, torch::kDouble), true)
                                .item<double>();
        const double nearest = std::clamp(std::nearbyint(c / s + z), double(levels.qmin), double(levels.qmax));
        EXPECT_NEAR(r.q[row][1].item<float>(), (nearest - z) * s, 1e-6 * s) << describe(spec) << " row " << row;
      }
    }
  }
}

// Never worse than round to nearest on the objective, on every grid, with and without act order; and
// at 8 bits (rounding nearly the identity) both are tiny.
TEST(Gptq, OutputErrorIsAtMostRoundToNearestsOnEveryGrid) {
  std::vector<QuantSpec> grids = {grid(4, Granularity::per_channel, true),   grid(3, Granularity::per_channel, false),
                                  grid(2, Granularity::per_group, false, 4), grid(3, Granularity::per_group, true, 8),
                                  grid(3, Granularity::per_tensor, true),    grid(8, Granularity::per_channel, true)};
  auto searched = grid(3, Granularity::per_group, false, 8);
  searched.range = qkd::quant::RangeMethod::search;
  grids.push_back(searched);
  for (uint64_t seed : {21, 22, 23, 24}) {
    const auto l = random_layer(seed);
    for (const auto& spec : grids) {
      const double rtn = output_error(l, round_to_nearest(l.w, spec));
      for (bool act_order : {false, true}) {
        const double gptq = output_error(l, gptq_quantize_weight(l.w, l.h, spec, options(128, act_order, 0.01)).q);
        EXPECT_LE(gptq, rtn) << describe(spec) << " seed " << seed << " act_order " << act_order;
        if (spec.bits == 8) EXPECT_LT(gptq, 1e-3 * output_error(l, torch::zeros_like(l.w)));
      }
    }
  }
}

// Every value lies on its block's grid: codes round(Q / scale) + zero are integers in the levels and
// map back to Q exactly, through the quantizer's own arithmetic.
TEST(Gptq, ResultIsOnTheGridOfItsScales) {
  const auto l = random_layer(31);
  for (const auto& spec : {grid(3, Granularity::per_group, false, 4), grid(4, Granularity::per_channel, true)}) {
    const auto r = gptq_quantize_weight(l.w, l.h, spec, options(128, true, 0.01));
    const auto blocks =
        r.q.reshape(r.scale.size(1) == 1 ? std::vector<int64_t>{8, 1, 16} : std::vector<int64_t>{8, 4, 4});
    const auto levels = qkd::quant::levels_for(spec.bits, spec.symmetric);
    const auto zero = r.zero.defined() ? r.zero : torch::zeros_like(r.scale);
    const auto codes = torch::round(blocks / r.scale) + zero;
    EXPECT_TRUE(torch::allclose(blocks / r.scale + zero, codes, 0, 1e-4));
    EXPECT_GE(codes.min().item<float>(), levels.qmin);
    EXPECT_LE(codes.max().item<float>(), levels.qmax);
    EXPECT_TRUE(torch::equal(qkd::quant::fake_quant_value(blocks, r.scale, r.zero, levels), blocks)) << describe(spec);
  }
}

// The compensated latent weights: the values GPTQ rounded, kept inside the levels. They fake-quantize
// to Q bitwise, none is where the straight-through estimator masks the gradient, and they differ from
// Q (they keep their place inside the rounding bins).
TEST(Gptq, CompensatedLatentRoundsToQAndPassesGradient) {
  const auto l = random_layer(33);
  for (const auto& spec : {grid(2, Granularity::per_group, false, 4), grid(3, Granularity::per_channel, true)}) {
    const auto r = gptq_quantize_weight(l.w, l.h, spec, options(128, false, 0.01));
    const auto latent = qkd::ptq::gptq_compensated_latent(r, spec);
    const auto shape = r.scale.size(1) == 1 ? std::vector<int64_t>{8, 1, 16} : std::vector<int64_t>{8, 4, 4};
    const auto blocks = latent.reshape(shape);
    const auto levels = qkd::quant::levels_for(spec.bits, spec.symmetric);
    EXPECT_TRUE(torch::equal(qkd::quant::fake_quant_value(blocks, r.scale, r.zero, levels).reshape({8, 16}), r.q))
        << describe(spec);
    EXPECT_FALSE(qkd::quant::clipped_mask(blocks, r.scale, r.zero, levels).any().item<bool>()) << describe(spec);
    EXPECT_GT((latent != r.q).sum().item<int64_t>(), 64) << describe(spec);
    const auto inside = (r.rounded == latent);
    EXPECT_GT(inside.to(torch::kDouble).mean().item<double>(), 0.5) << describe(spec);
  }
}

// An input that is always zero: its weights become 0 (the reference's convention) and nothing is NaN.
TEST(Gptq, DeadInputsGetZeroWeights) {
  torch::manual_seed(41);
  const auto w = torch::randn({8, 16});
  auto x = torch::randn({64, 16}, torch::kDouble);
  x.select(1, 3).zero_();
  const auto h = x.t().mm(x) * (2.0 / 64);
  for (bool act_order : {false, true}) {
    const auto r = gptq_quantize_weight(w, h, grid(3, Granularity::per_group, false, 4), options(128, act_order, 0.01));
    EXPECT_TRUE(torch::isfinite(r.q).all().item<bool>());
    EXPECT_TRUE(torch::equal(r.q.select(1, 3), torch::zeros({8})));
  }
}

TEST(Gptq, BadInputsFailWithOneLine) {
  const auto l = random_layer(51);
  expect_error([&] { gptq_quantize_weight(l.w, l.h.slice(0, 0, 8), grid(4, Granularity::per_channel, true)); },
               "gptq: expected a Hessian [16, 16]");
  expect_error([&] { gptq_quantize_weight(l.w, -l.h, grid(4, Granularity::per_channel, true), options(128, false)); },
               {"gptq: the input Hessian is not positive definite", "--damp"});
  expect_error([&] { gptq_quantize_weight(l.w, l.h, grid(4, Granularity::per_group, true, 5)); },
               "quant.group_size: 5 does not divide in_features 16");
}

qkd::model::LlamaForCausalLM tiny_model() {
  qkd::model::LlamaForCausalLM m(qkd::test::tiny_llama_config());
  torch::manual_seed(7);
  torch::NoGradGuard no_grad;
  for (auto& p : m->parameters()) p.normal_(0.0, 0.1);
  for (auto& [_, linear] : m->named_linears()) linear->weight.normal_(0.0, 0.2);
  return m;
}

double equal_fraction(const torch::Tensor& a, const torch::Tensor& b) {
  return (a == b).to(torch::kDouble).mean().item<double>();
}

// Layer 1 is solved on the inputs that layer 0 produces once it is quantized (the standard sequential
// GPTQ): solving layer 1's q_proj again on the quantized student's own layer-1 inputs reproduces it,
// and solving it on the float teacher's inputs does not.
TEST(Gptq, LayersAreQuantizedSequentially) {
  auto teacher = tiny_model();
  auto student = tiny_model();
  auto spec = grid(2, Granularity::per_channel, false);
  spec.scale_policy = qkd::quant::ScalePolicy::fixed;
  qkd::quant::attach_quantizers(*student, spec);
  torch::manual_seed(3);
  const auto windows = torch::randint(0, 100, {12, 16}, torch::kLong);
  qkd::ptq::gptq_quantize_student(*student, windows, GptqOptions{});
  torch::NoGradGuard no_grad;
  auto layer1_input = [&](qkd::model::LlamaForCausalLM& m) {
    std::vector<torch::Tensor> hidden;
    m->forward(windows, &hidden);
    return m->model->layer_list[1]->input_layernorm(hidden[1]);
  };
  const auto w = teacher->model->layer_list[1]->self_attn->q_proj->weight;
  const auto got = student->model->layer_list[1]->self_attn->q_proj->weight;
  const auto sequential = gptq_quantize_weight(w, qkd::ptq::gptq_hessian(layer1_input(student)), spec).q;
  const auto from_float = gptq_quantize_weight(w, qkd::ptq::gptq_hessian(layer1_input(teacher)), spec).q;
  EXPECT_GT(equal_fraction(got, sequential), 0.99);
  EXPECT_LT(equal_fraction(got, from_float), equal_fraction(got, sequential));
}

// latent compensated changes the student's latent weights, not its forward.
TEST(Gptq, CompensatedLatentStudentComputesTheGptqModel) {
  auto spec = grid(3, Granularity::per_group, false, 16);
  spec.scale_policy = qkd::quant::ScalePolicy::fixed;
  torch::manual_seed(3);
  const auto windows = torch::randint(0, 100, {12, 16}, torch::kLong);
  auto quantized = tiny_model();
  qkd::quant::attach_quantizers(*quantized, spec);
  qkd::ptq::gptq_quantize_student(*quantized, windows, GptqOptions{});
  auto compensated = tiny_model();
  qkd::quant::attach_quantizers(*compensated, spec);
  GptqOptions o;
  o.latent = qkd::ptq::GptqLatent::compensated;
  qkd::ptq::gptq_quantize_student(*compensated, windows, o);
  torch::NoGradGuard no_grad;
  auto a = quantized->named_linears(), b = compensated->named_linears();
  for (size_t i = 0; i < a.size(); ++i) {
    if (!a[i].second->weight_quantizer()) continue;  // lm_head
    EXPECT_FALSE(torch::equal(a[i].second->weight, b[i].second->weight)) << a[i].first;
    EXPECT_TRUE(torch::equal(a[i].second->effective_weight(), b[i].second->effective_weight())) << a[i].first;
  }
  EXPECT_TRUE(torch::equal(quantized->forward(windows), compensated->forward(windows)));
}

TEST(Gptq, StudentWithDynamicScalesIsRefused) {
  auto student = tiny_model();
  qkd::quant::attach_quantizers(*student, grid(4, Granularity::per_channel, true));
  expect_error(
      [&] {
        qkd::ptq::gptq_quantize_student(*student, torch::zeros({1, 4}, torch::kLong));
      },
      "quant.scale_policy: GPTQ needs \"static\"");
}

// ptq --method gptq on the shipped teacher: the checkpoint's quantizers hold GPTQ's scales, so
// fake-quantizing the stored weights is the identity, bitwise, and their integer codes map back to
// them. Min-max on the stored weights would not give those scales everywhere (why the spec is static).
TEST(Gptq, CheckpointQuantizerReproducesTheGptqWeightsBitwise) {
  for (const auto& [spec, act_order] : {std::pair{grid(3, Granularity::per_group, false, 64), false},
                                        std::pair{grid(2, Granularity::per_channel, true), true}}) {
    qkd::ptq::PtqOptions o;
    o.model_dir = qkd::test::shipped_teacher();
    o.out_dir = qkd::test::scratch_dir("gptq-checkpoint") + "/student";
    o.spec = spec;
    o.spec.lm_head_bits = 4;
    o.method = qkd::ptq::PtqMethod::gptq;
    o.calib_file = qkd::test::repo_path("assets/data/kjv/kjv-train.u16");
    o.calib_batches = 4;
    o.calib_seq_len = 64;
    o.gptq.act_order = act_order;
    const auto report = qkd::ptq::run_ptq(o);
    EXPECT_EQ(report.quantized_modules, 6 * 7 + 1);
    auto loaded = qkd::checkpoint::load_model_or_student(o.out_dir);
    ASSERT_TRUE(loaded.quant.has_value());
    EXPECT_EQ(loaded.quant->scale_policy, qkd::quant::ScalePolicy::fixed);
    torch::NoGradGuard no_grad;
    int64_t scales_minmax_would_change = 0;
    for (auto& [name, linear] : loaded.model->named_linears()) {
      auto q = std::dynamic_pointer_cast<qkd::quant::WeightQuantizer>(linear->weight_quantizer());
      ASSERT_TRUE(q) << name;
      const auto w = linear->weight;
      EXPECT_TRUE(torch::equal(q->fake_quantize(w), w)) << name;
      const auto codes = q->integer_codes(w);
      const auto zero = codes.zero.defined() ? codes.zero : torch::zeros_like(codes.scale);
      EXPECT_TRUE(torch::equal(((codes.codes.to(torch::kFloat) - zero) * codes.scale).reshape(w.sizes()), w)) << name;
      EXPECT_GE(codes.codes.min().item<int64_t>(), q->levels().qmin);
      EXPECT_LE(codes.codes.max().item<int64_t>(), q->levels().qmax);
      const auto blocks = w.reshape({w.size(0), codes.scale.size(1), -1});
      const auto minmax = qkd::quant::minmax_params(blocks, q->spec().bits, q->spec().symmetric);
      if (!torch::equal(minmax.scale, codes.scale)) ++scales_minmax_would_change;
    }
    EXPECT_GT(scales_minmax_would_change, 0);
  }
}

TEST(Gptq, MethodNamesAreParsed) {
  EXPECT_EQ(qkd::ptq::parse_ptq_method("gptq", "--method"), qkd::ptq::PtqMethod::gptq);
  EXPECT_EQ(qkd::ptq::parse_ptq_method("rtn", "--method"), qkd::ptq::PtqMethod::rtn);
  expect_error([] { qkd::ptq::parse_ptq_method("nope", "--method"); }, "--method: expected rtn or gptq, got \"nope\"");
}

}  // namespace
