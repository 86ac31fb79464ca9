// Precision of a run: the teacher computes in teacher.dtype outside the student's autocast, and fp16
// loss scaling keeps small gradients, skips overflowed steps unjudged and grows after clean steps.
#include <gtest/gtest.h>

#include "qkd/common/torch_compat.h"
#include "qkd/loss/kd_loss.h"
#include "qkd/train/loss_scaler.h"
#include "qkd/train/stop_signal.h"
#include "qkd/train/trainer.h"
#include "qkd/train/training_session.h"
#include "test_support.h"

namespace {

using nlohmann::json;
using qkd::test::read_jsonl;
using qkd::test::repo_path;

TEST(LossScaler, GrowsAfterCleanStepsInARowNotOnEveryNthStep) {
  qkd::train::LossScaler scaler(true, 1024.0, 3);
  scaler.update(true);
  scaler.update(true);
  EXPECT_EQ(scaler.scale(), 1024.0);
  scaler.update(false);  // an overflow restarts the count
  EXPECT_EQ(scaler.scale(), 512.0);
  scaler.update(true);
  scaler.update(true);
  EXPECT_EQ(scaler.scale(), 512.0);
  scaler.update(true);
  EXPECT_EQ(scaler.scale(), 1024.0);
  EXPECT_EQ(qkd::train::LossScaler(false, 1024.0).scale(), 1.0);  // off: the loss is not scaled
}

TEST(LossScaler, StateRoundTripsAndReadsTheOldScalarForm) {
  qkd::train::LossScaler a(true, 256.0, 4), b(true, 1.0, 4);
  a.update(true);
  a.update(true);
  b.load_state(a.state());
  for (int i = 0; i < 2; ++i) {
    a.update(true);
    b.update(true);
  }
  EXPECT_EQ(a.scale(), 512.0);
  EXPECT_EQ(b.scale(), 512.0);
  qkd::train::LossScaler legacy(true, 1.0, 4);
  legacy.load_state(json(8192.0));  // checkpoints before LossScaler held the bare scale
  EXPECT_EQ(legacy.scale(), 8192.0);
}

// With a 32k vocabulary the per-entry logit gradient of a mean over tokens is ~1e-9, below fp16's
// smallest subnormal (6e-8): stored in fp16 before the loss scale multiplies it, nearly all of it
// would be zero. The loss scale reaches it before the fp16 cast.
TEST(KdLoss, Fp16LogitGradientIsScaledBeforeItIsStored) {
  torch::manual_seed(0);
  const int64_t vocab = 32000;
  const auto ids = torch::randint(0, vocab, {1, 1024}, torch::kInt64);
  const auto teacher = torch::randn({1, 1024, vocab}).to(torch::kHalf);
  const auto student32 = torch::randn({1, 1024, vocab});
  auto student = student32.to(torch::kHalf).requires_grad_(true);
  const double scale = 65536.0;
  const auto result = qkd::loss::kd_loss(teacher, student, ids, {});
  (result.loss * scale).backward();
  ASSERT_EQ(student.grad().scalar_type(), torch::kHalf);

  auto reference = student32.to(torch::kHalf).to(torch::kFloat32).requires_grad_(true);
  (qkd::loss::kd_loss(teacher.to(torch::kFloat32), reference, ids, {}).loss * scale).backward();
  const auto nonzero = reference.grad().ne(0);
  const double kept = student.grad().ne(0).logical_and(nonzero).sum().item<double>() / nonzero.sum().item<double>();
  const double unscaled_kept =
      (reference.grad() / scale).to(torch::kHalf).ne(0).logical_and(nonzero).sum().item<double>() /
      nonzero.sum().item<double>();
  EXPECT_GT(kept, 0.99) << "entries of the scaled fp16 gradient that survived";
  EXPECT_LT(unscaled_kept, 0.5) << "the test's premise: unscaled fp16 storage loses most entries";
  EXPECT_TRUE(torch::allclose(student.grad().to(torch::kFloat32), reference.grad(), 1e-2, 1e-3));
}

json tiny_run(const std::string& dir) {
  return {{"run_dir", dir},
          {"teacher", {{"path", qkd::test::shipped_teacher()}}},
          {"data", {{"sources", {{{"path", qkd::test::kjv_val_tokens()}}}}, {"seq_len", 16}}},
          {"train", {{"steps", 4}, {"micro_batch", 2}, {"threads", 1}}},
          {"checkpoint", {{"interval", 0}, {"resume", "never"}}},
          {"export", {{"formats", json::array()}}}};
}

// Records the dtype of every attention and MLP output: what the layer's matmuls produced.
struct DtypeObserver : qkd::model::ActivationObserver {
  std::set<torch::Dtype> seen;
  void observe(int64_t, const char*, const torch::Tensor& output) override { seen.insert(output.scalar_type()); }
};

std::set<torch::Dtype> teacher_output_dtypes(qkd::train::TrainingSession& s, const torch::Tensor& batch,
                                             bool through_session) {
  DtypeObserver observer;
  s.teacher().model()->set_activation_observer(&observer);
  // The student's autocast (bf16 here on the CPU, as on CUDA in a bf16 run) is open around the call.
  qkd::compat::AutocastState bf16;
  bf16.cpu_enabled = true;
  bf16.cpu_dtype = at::kBFloat16;
  {
    const qkd::compat::AutocastStateScope autocast(bf16);
    torch::NoGradGuard no_grad;
    const auto logits =
        through_session ? s.teacher().logits({batch, std::nullopt, batch}) : s.teacher().model()->forward(batch);
    observer.seen.insert(logits.scalar_type());
  }
  s.teacher().model()->set_activation_observer(nullptr);
  return observer.seen;
}

TEST(TeacherPrecision, MatmulsRunInTeacherDtypeOutsideTheStudentsAutocast) {
  auto config = tiny_run(qkd::test::scratch_dir("teacher-dtype"));
  const auto batch = torch::randint(3, 4000, {2, 16}, torch::kInt64);
  auto s = qkd::train::open_session(qkd::train::parse_run_config(config));
  EXPECT_EQ(teacher_output_dtypes(*s, batch, true), std::set<torch::Dtype>{torch::kFloat32});
  // Control: the same forward left inside the autocast runs in bf16, so the check above can fail.
  EXPECT_EQ(teacher_output_dtypes(*s, batch, false).count(torch::kBFloat16), 1u);

  config["run_dir"] = qkd::test::scratch_dir("teacher-dtype-bf16");
  config["teacher"]["dtype"] = "bfloat16";
  auto bf16 = qkd::train::open_session(qkd::train::parse_run_config(config));
  EXPECT_EQ(teacher_output_dtypes(*bf16, batch, true), std::set<torch::Dtype>{torch::kBFloat16});
}

// kd_weight 1e6 makes every backward at a scale near fp32's limit overflow for real. Overflowed steps
// skip their update, leave no signal record and never reach auto freeze (whose watched o/v gradients
// are then non-finite, which it treats as instability, whatever the spike factor); the scale halves
// per overflow and doubles after 2 clean steps. Spikes and loss rises are out of reach here, so any
// freeze would come from an overflow.
TEST(LossScaling, OverflowedStepsAreSkippedUnjudgedAndTheScaleRecovers) {
  const auto dir = qkd::test::scratch_dir("loss-scaling");
  auto config = tiny_run(dir);
  config["train"] = {{"steps", 40},         {"micro_batch", 2},   {"threads", 1},
                     {"precision", "fp16"}, {"loss_scale", 1e38}, {"loss_scale_growth_interval", 2}};
  config["kd"] = {{"kd_weight", 1e6}};
  config["freeze"] = {{"policy", "auto"}};
  config["monitor"] = {{"interval", 1}, {"spike_factor", 1e6}, {"loss_factor", 1e6}};
  qkd::train::clear_stop_request();
  const auto summary = qkd::train::run_training(qkd::train::parse_run_config(config));
  std::set<int64_t> overflowed;
  for (const auto& e : read_jsonl(dir + "/events.jsonl")) {
    EXPECT_NE(e.at("kind"), "freeze") << e.dump();
    if (e.at("kind") == "skip") {
      EXPECT_NE(e.at("reason").get<std::string>().find("fp16 loss scale"), std::string::npos) << e.dump();
      overflowed.insert(e.at("step").get<int64_t>());
    }
  }
  ASSERT_FALSE(overflowed.empty()) << "the test's premise: the first steps overflow";
  EXPECT_LT(overflowed.size(), 40u) << "the scale never came down far enough";
  EXPECT_EQ(summary.totals.skipped_steps, static_cast<int64_t>(overflowed.size()));
  std::set<int64_t> recorded;
  for (const auto& r : read_jsonl(dir + "/signal.jsonl")) recorded.insert(r.at("step").get<int64_t>());
  for (int64_t step = 1; step <= 40; ++step)
    EXPECT_EQ(recorded.count(step), overflowed.count(step) ? 0u : 1u) << "step " << step;
  // Growth after 2 clean steps brings the scale back to the overflow point again and again.
  EXPECT_GT(*overflowed.rbegin(), *overflowed.begin() + 2);
}

}  // namespace
