// fp32 master weights on the shipped small model: a bf16 student trained at a learning rate whose
// updates are far below bf16's rounding step follows the fp32 student, where updating the bf16
// weights in place (the optimizer before master weights) leaves most of them where they started.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/data/token_file.h"
#include "qkd/loss/kd_loss.h"
#include "qkd/optim/adamw.h"
#include "qkd/quant/student.h"
#include "test_support.h"

namespace {

using qkd::model::LlamaForCausalLM;
using qkd::test::repo_path;

constexpr int kSteps = 20;
constexpr double kLr = 1e-6;
constexpr double kBeta1 = 0.9, kBeta2 = 0.999;
constexpr int64_t kBatch = 2, kSeq = 32;

bool is_projection(const std::string& name) {
  return name.find(".self_attn.") != std::string::npos || name.find(".mlp.") != std::string::npos;
}

// The recipe's student: 4-bit quantized projections, the only parameters that train. Both dtypes
// start from the same bf16-representable weights, so the runs differ only in how they compute.
LlamaForCausalLM student(torch::Dtype dtype) {
  auto model = qkd::checkpoint::load_llama(qkd::test::shipped_teacher());
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.copy_(p.to(torch::kBFloat16));
  model->to(dtype);
  qkd::quant::attach_quantizers(*model, qkd::test::quant_spec(4, qkd::quant::Granularity::per_group, false, 32));
  model->train();
  for (auto& item : model->named_parameters()) item.value().requires_grad_(is_projection(item.key()));
  return model;
}

std::map<std::string, torch::Tensor> trainable(LlamaForCausalLM& model) {
  std::map<std::string, torch::Tensor> out;
  for (auto& item : model->named_parameters())
    if (item.value().requires_grad()) out[item.key()] = item.value();
  return out;
}

// Every projection weight as one flat fp32 vector, in name order.
torch::Tensor flat(const std::map<std::string, torch::Tensor>& tensors) {
  std::vector<torch::Tensor> parts;
  for (const auto& [_, t] : tensors) parts.push_back(t.detach().to(torch::kFloat32).reshape(-1));
  return torch::cat(parts);
}

torch::Tensor masters(const qkd::optim::AdamW& optimizer) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& [key, tensor] : optimizer.state())
    if (key.size() > 7 && key.compare(key.size() - 7, 7, ".master") == 0) out[key.substr(0, key.size() - 7)] = tensor;
  return flat(out);
}

double changed_fraction(const torch::Tensor& now, const torch::Tensor& start) {
  return (now != start).to(torch::kFloat64).mean().item<double>();
}

// Largest |m_hat| / sqrt(v_hat) at update t over all gradient sequences (Cauchy-Schwarz on the two
// exponential averages): no Adam step moves a weight by more than lr times this.
double adam_step_bound(int t) {
  double sum = 0.0;
  for (int k = 0; k < t; ++k) sum += std::pow(kBeta1 * kBeta1 / kBeta2, k);
  return (1.0 - kBeta1) * std::sqrt(1.0 - std::pow(kBeta2, t)) /
         ((1.0 - std::pow(kBeta1, t)) * std::sqrt(1.0 - kBeta2)) * std::sqrt(sum);
}

// The update before master weights: moments and update in the parameter's own dtype, in place.
struct InPlaceAdamW {
  struct Slot {
    torch::Tensor param, exp_avg, exp_avg_sq;
  };
  std::vector<Slot> slots;
  int64_t steps = 0;
  explicit InPlaceAdamW(const std::map<std::string, torch::Tensor>& params) {
    for (const auto& [_, p] : params) slots.push_back({p, torch::zeros_like(p), torch::zeros_like(p)});
  }
  void step(double lr) {
    torch::NoGradGuard no_grad;
    ++steps;
    const double bc1 = 1.0 - std::pow(kBeta1, static_cast<double>(steps));
    const double bc2_sqrt = std::sqrt(1.0 - std::pow(kBeta2, static_cast<double>(steps)));
    for (auto& s : slots) {
      const auto& grad = s.param.grad();
      s.exp_avg.lerp_(grad, 1.0 - kBeta1);
      s.exp_avg_sq.mul_(kBeta2).addcmul_(grad, grad, 1.0 - kBeta2);
      s.param.addcdiv_(s.exp_avg, (s.exp_avg_sq.sqrt() / bc2_sqrt).add_(1e-8), -lr / bc1);
      s.param.mutable_grad() = torch::Tensor();
    }
  }
};

// Consecutive KJV windows and the fp32 teacher's logits on them, the same for every run.
struct Batches {
  std::vector<torch::Tensor> ids, teacher_logits;
  Batches() {
    const auto tokens = qkd::data::TokenFile::open(qkd::test::repo_path("assets/data/kjv/kjv-train.u16"));
    auto teacher = qkd::checkpoint::load_llama(qkd::test::shipped_teacher());
    torch::NoGradGuard no_grad;
    for (int i = 0; i < kSteps; ++i) {
      ids.push_back(tokens.slice(10000 + i * kBatch * kSeq, kBatch * kSeq).view({kBatch, kSeq}));
      teacher_logits.push_back(teacher->forward(ids.back()));
    }
  }
};

template <class Update>
void train(LlamaForCausalLM& model, const Batches& data, Update&& update) {
  for (int i = 0; i < kSteps; ++i) {
    qkd::loss::kd_loss(data.teacher_logits[i], model->forward(data.ids[i]), data.ids[i], {}).loss.backward();
    update();
  }
}

void report(const char* key, double value) {
  ::testing::Test::RecordProperty(key, std::to_string(value));
  std::cout << key << " = " << value << "\n";
}

TEST(MasterWeights, Bf16StudentFollowsTheFp32StudentAtLr1e6) {
  const Batches data;
  qkd::optim::AdamWOptions no_decay{kBeta1, kBeta2, 1e-8, 0.0};

  auto reference = student(torch::kFloat32);
  const auto start = flat(trainable(reference));
  qkd::optim::AdamW fp32_optimizer(no_decay);
  for (const auto& [name, p] : trainable(reference)) fp32_optimizer.add_parameter(name, p, false);
  train(reference, data, [&] {
    fp32_optimizer.step(kLr);
    fp32_optimizer.zero_grad();
  });
  const auto fp32_weights = flat(trainable(reference));

  auto low = student(torch::kBFloat16);
  ASSERT_TRUE(torch::equal(flat(trainable(low)), start));
  qkd::optim::AdamW optimizer(no_decay);
  for (const auto& [name, p] : trainable(low)) optimizer.add_parameter(name, p, false);
  train(low, data, [&] {
    optimizer.step(kLr);
    optimizer.zero_grad();
  });
  const auto master = masters(optimizer), bf16_weights = flat(trainable(low));

  auto in_place = student(torch::kBFloat16);
  InPlaceAdamW old_optimizer(trainable(in_place));
  train(in_place, data, [&] { old_optimizer.step(kLr); });
  const auto old_weights = flat(trainable(in_place));

  const double fp32_changed = changed_fraction(fp32_weights, start);
  const double master_changed = changed_fraction(master, start);
  const double bf16_changed = changed_fraction(bf16_weights, start);
  const double old_changed = changed_fraction(old_weights, start);
  // How much of the fp32 run's movement each bf16 run misses (0: all of it made, 1: none of it).
  const auto fp32_moved = (fp32_weights - start).norm().item<double>();
  const double master_miss = (master - fp32_weights).norm().item<double>() / fp32_moved;
  const double old_miss = (old_weights - fp32_weights).norm().item<double>() / fp32_moved;
  report("fp32_changed_fraction", fp32_changed);
  report("master_changed_fraction", master_changed);
  report("bf16_with_master_changed_fraction", bf16_changed);
  report("bf16_in_place_changed_fraction", old_changed);
  report("master_missed_movement", master_miss);
  report("in_place_missed_movement", old_miss);

  // Measured: 0.9998 of the fp32 weights and of the masters move; 0.035 of the bf16 weights (those
  // whose master crossed a rounding boundary: 20 x 1e-6 is below half a bf16 step for most weights)
  // and 0.0099 in place. The master misses 0.37 of the fp32 movement, from the bf16 forward's other
  // gradients (the optimizer adds no error of its own, see AdamWMaster.Bf16ParameterFollowsThe-
  // Fp32PathBitwise); in place misses 0.997 of it.
  EXPECT_GT(fp32_changed, 0.9);
  EXPECT_GT(master_changed, 0.9);
  EXPECT_LT(old_changed, 0.2);
  EXPECT_LT(master_miss, 0.6);
  EXPECT_GT(old_miss, 0.9);
  EXPECT_TRUE(torch::equal(bf16_weights, master.to(torch::kBFloat16).to(torch::kFloat32)));

  // Tolerance. Each run moves a weight by at most lr x adam_step_bound(t) at update t, so the master
  // and the fp32 weights (same start, gradients that differ by bf16 compute) are at most `drift` apart,
  // plus the fp32 rounding of both runs' 20 updates (2 x 20 x 2^-24 |w| < 2^-18 |w|). The bf16 weights
  // are the master rounded to nearest, at most half a unit in the last place away: <= 2^-8 |master|
  // (8 significant bits), so <= 2^-8 |w| + (1 + 2^-8) (drift + 2^-18 |w|) from the fp32 weights. This
  // bound alone cannot tell the old update from the new at this rate (the fp32 run moves less than
  // half a bf16 step): the changed fractions and the missed movement above do.
  double drift = 0.0;
  for (int t = 1; t <= kSteps; ++t) drift += 2.0 * kLr * adam_step_bound(t);
  report("drift_bound", drift);
  const auto w = fp32_weights.abs();
  const auto master_error = (master - fp32_weights).abs();
  const auto bf16_error = (bf16_weights - fp32_weights).abs();
  EXPECT_TRUE((master_error <= w * std::pow(2.0, -18) + drift).all().item<bool>());
  EXPECT_TRUE((bf16_error <= w * (std::pow(2.0, -8) + std::pow(2.0, -17)) + 1.01 * drift).all().item<bool>());
  report("max_master_error_over_drift", master_error.max().item<double>() / drift);
  const auto old_error = (old_weights - fp32_weights).abs();
  report("in_place_within_that_bound", (old_error <= w * (std::pow(2.0, -8) + std::pow(2.0, -17)) + 1.01 * drift)
                                           .to(torch::kFloat64)
                                           .mean()
                                           .item<double>());
}

std::map<std::string, torch::Tensor> state_by_suffix(const qkd::optim::AdamW& optimizer, const std::string& suffix) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& [key, tensor] : optimizer.state())
    if (key.size() > suffix.size() && key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0)
      out[key.substr(0, key.size() - suffix.size())] = tensor;
  return out;
}

// optim.master_weights bf16_compensated on the same run: the bf16 weights plus their bf16 compensation
// follow the fp32 master (2 bytes per weight instead of 4), where master_weights none, which keeps
// nothing, loses the movement as the in-place update did.
TEST(MasterWeights, CompensatedBf16StudentFollowsTheFp32MasterAtLr1e6) {
  const Batches data;
  using qkd::optim::MasterWeights;
  auto train_with = [&](MasterWeights mode, LlamaForCausalLM& model) {
    qkd::optim::AdamWOptions options{kBeta1, kBeta2, 1e-8, 0.0};
    options.master_weights = mode;
    qkd::optim::AdamW optimizer(options);
    for (const auto& [name, p] : trainable(model)) optimizer.add_parameter(name, p, false);
    train(model, data, [&] {
      optimizer.step(kLr);
      optimizer.zero_grad();
    });
    return optimizer;
  };
  auto with_master = student(torch::kBFloat16), compensated = student(torch::kBFloat16),
       plain = student(torch::kBFloat16);
  const auto start = flat(trainable(with_master));
  const auto master = masters(train_with(MasterWeights::fp32, with_master));
  const auto comp_optimizer = train_with(MasterWeights::bf16_compensated, compensated);
  train_with(MasterWeights::none, plain);
  const auto exact = flat(trainable(compensated)) + flat(state_by_suffix(comp_optimizer, ".compensation"));
  const auto moved = (master - start).norm().item<double>();
  const double comp_miss = (exact - master).norm().item<double>() / moved;
  const double none_miss = (flat(trainable(plain)) - master).norm().item<double>() / moved;
  report("compensated_missed_movement_vs_master", comp_miss);
  report("none_missed_movement_vs_master", none_miss);
  report("compensated_bf16_weights_equal_to_master_run",
         (flat(trainable(compensated)) == flat(trainable(with_master))).to(torch::kFloat64).mean().item<double>());
  EXPECT_LT(comp_miss, 0.1);
  EXPECT_GT(none_miss, 0.9);
}

}  // namespace
