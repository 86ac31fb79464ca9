// The trainer against an independent plain-PyTorch KD-QAT run (tests/fixtures/reference/kdqat-trajectory.*):
// step-0 loss and gradients, the loss trajectory over 10 steps, and the monitor's step-0 squared
// gradient norms per projection type, with everything trainable and with o_proj/v_proj frozen.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/io/safetensors.h"
#include "qkd/loss/kd_loss.h"
#include "qkd/optim/adamw.h"
#include "qkd/quant/student.h"
#include "qkd/train/trainer.h"
#include "test_support.h"

namespace {

using nlohmann::json;
using qkd::test::read_jsonl;
using qkd::test::scratch_dir;
using qkd::test::fixture_path;

json reference() {
  json j;
  std::ifstream(fixture_path("reference/kdqat-trajectory.json")) >> j;
  return j;
}

qkd::io::SafetensorsFile reference_tensors() {
  return qkd::io::SafetensorsFile::open(fixture_path("reference/kdqat-trajectory.safetensors"));
}

qkd::quant::QuantSpec recipe_quant() {
  qkd::quant::QuantSpec spec;  // per-channel symmetric int4, dynamic min-max scale, STE
  spec.bits = 4;
  return spec;
}

// The 4x64 reference batch as a token file: read back in order, it is the same batch every step.
std::string write_batch_as_token_file(const std::string& dir) {
  const auto ids = reference_tensors().tensor("input_ids").reshape({-1}).to(torch::kInt32);
  const auto path = dir + "/batch.u16";
  std::ofstream out(path, std::ios::binary);
  for (int64_t i = 0; i < ids.numel(); ++i) {
    const uint16_t token = static_cast<uint16_t>(ids[i].item<int32_t>());
    out.write(reinterpret_cast<const char*>(&token), 2);
  }
  return path;
}

json recipe_config(const std::string& dir, bool ov_freeze) {
  return {{"run_dir", dir + "/run"},
          {"teacher", {{"path", fixture_path("models/kjv-teacher-7m")}, {"dtype", "float32"}}},
          {"quant", qkd::quant::quant_spec_to_json(recipe_quant())},
          {"data", {{"sources", {{{"path", write_batch_as_token_file(dir)}}}}, {"seq_len", 64}, {"shuffle", false}}},
          {"kd", {{"divergence", "forward_kl"}}},
          {"optim", {{"lr", 1e-3}, {"schedule", "constant"}, {"grad_clip", 0.0}, {"weight_decay", 0.0}}},
          {"train", {{"steps", 10}, {"micro_batch", 4}, {"log_interval", 1}, {"threads", 1}}},
          {"freeze", {{"policy", ov_freeze ? "ov" : "none"}}},
          {"monitor", {{"interval", 1}}},
          {"checkpoint", {{"resume", "never"}}},
          {"export", {{"formats", json::array()}}}};
}

class Trajectory : public ::testing::TestWithParam<bool> {};

TEST_P(Trajectory, LossesAndMonitoredGradientNormsMatchReference) {
  const bool ov = GetParam();
  const std::string mode = ov ? "ov_freeze" : "full";
  const auto dir = scratch_dir("trajectory-" + mode);
  const auto config = qkd::train::parse_run_config(recipe_config(dir, ov));
  const auto summary = qkd::train::run_training(config);
  ASSERT_EQ(summary.totals.steps_completed, 10);

  const auto ref = reference();
  const auto expected_losses = ref.at(mode + "_losses").get<std::vector<double>>();
  std::vector<double> losses;
  for (const auto& line : read_jsonl(dir + "/run/metrics.jsonl"))
    if (line.at("type") == "train") losses.push_back(line.at("loss").get<double>());
  ASSERT_EQ(losses.size(), 10u);
  EXPECT_NEAR(losses[0], expected_losses[0], 1e-5 * expected_losses[0]) << "step-0 loss";
  for (size_t i = 1; i < 10; ++i) EXPECT_NEAR(losses[i], expected_losses[i], 1e-2 * expected_losses[i]) << "step " << i;

  const auto signal = read_jsonl(dir + "/run/signal.jsonl");
  ASSERT_FALSE(signal.empty());
  ASSERT_EQ(signal.front().at("step"), 1);  // the first update's gradients: the reference's step 0
  const auto& totals = signal.front().at("total_grad_sq");
  for (const auto& [projection, value] : ref.at(mode + "_step0_sq_grad_norm_by_projection").items()) {
    const double expected = value.get<double>();
    const double got = totals.at(projection).get<double>();
    if (expected == 0.0)
      EXPECT_EQ(got, 0.0) << projection;
    else
      EXPECT_NEAR(got, expected, 1e-4 * expected) << projection;
  }
}

// The student, teacher and fixed batch of the recipe, and an AdamW over the trainable parameters.
struct RecipeRun {
  qkd::model::LlamaForCausalLM teacher{nullptr}, student{nullptr};
  torch::Tensor ids, teacher_logits;
  std::unique_ptr<qkd::optim::AdamW> optimizer;

  explicit RecipeRun(bool ov_freeze) {
    teacher = qkd::checkpoint::load_llama(fixture_path("models/kjv-teacher-7m"));
    student = qkd::checkpoint::load_llama(fixture_path("models/kjv-teacher-7m"));
    qkd::quant::attach_quantizers(*student, recipe_quant());
    ids = reference_tensors().tensor("input_ids").clone();
    torch::NoGradGuard no_grad;
    teacher_logits = teacher->forward(ids);
    optimizer = std::make_unique<qkd::optim::AdamW>(qkd::optim::AdamWOptions{0.9, 0.999, 1e-8, 0.0});
    for (auto& item : student->named_parameters()) {
      const bool frozen = ov_freeze && (item.key().find("o_proj") != std::string::npos ||
                                        item.key().find("v_proj") != std::string::npos);
      if (frozen)
        item.value().requires_grad_(false);
      else
        optimizer->add_parameter(item.key(), item.value(), true);
    }
  }
  void backward() { qkd::loss::kd_loss(teacher_logits, student->forward(ids), ids, {}).loss.backward(); }
  void step() {
    optimizer->step(1e-3);
    optimizer->zero_grad();
  }
};

// Step-0 gradients, checked without the trainer or the monitor: per projection type, the squared
// Frobenius norms summed over layers equal the reference's step-0 values.
TEST_P(Trajectory, StepZeroGradientNormsPerProjectionMatchReference) {
  const bool ov = GetParam();
  RecipeRun run(ov);
  run.backward();
  const auto expected = reference().at(std::string(ov ? "ov_freeze" : "full") + "_step0_sq_grad_norm_by_projection");
  std::map<std::string, double> totals;
  for (const auto& item : run.student->named_parameters()) {
    for (const auto& [projection, _] : expected.items())
      if (item.key().find(projection + ".weight") != std::string::npos && item.value().grad().defined())
        totals[projection] += item.value().grad().to(torch::kFloat64).pow(2).sum().item<double>();
  }
  for (const auto& [projection, value] : expected.items()) {
    const double want = value.get<double>();
    if (want == 0.0)
      EXPECT_EQ(totals[projection], 0.0) << projection;
    else
      EXPECT_NEAR(totals[projection], want, 1e-4 * want) << projection;
  }
}

// Step-0 gradients of individual weights against the reference's "<mode>/grad0/<name>" tensors:
// relative Frobenius error of the difference at most 1e-4. Frozen weights have no gradient here and
// none in the reference.
TEST_P(Trajectory, StepZeroGradientsMatchReferenceTensors) {
  const bool ov = GetParam();
  const std::string prefix = std::string(ov ? "ov_freeze" : "full") + "/grad0/";
  const auto tensors = reference_tensors();
  RecipeRun run(ov);
  run.backward();
  const auto params = run.student->named_parameters();
  int checked = 0;
  for (const auto& info : tensors.tensors()) {
    if (info.name.rfind(prefix, 0) != 0) continue;
    const auto name = info.name.substr(prefix.size());
    const auto expected = tensors.tensor(info.name).to(torch::kFloat64);
    const auto got = params[name].grad();
    ASSERT_TRUE(got.defined()) << name;
    const double rel = ((got.to(torch::kFloat64) - expected).norm() / expected.norm()).item<double>();
    EXPECT_LT(rel, 1e-4) << name << ": norm " << got.norm().item<double>() << " vs " << expected.norm().item<double>();
    ++checked;
  }
  EXPECT_EQ(checked, ov ? 4 : 6);
}

INSTANTIATE_TEST_SUITE_P(Gradients, Trajectory, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "ov_freeze" : "full"; });

}  // namespace
