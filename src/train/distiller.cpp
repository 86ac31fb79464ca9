#include "qkd/train/distiller.h"

#include "qkd/common/torch_compat.h"
#include "qkd/kernels/parallel_tasks.h"
#include "qkd/loss/head_kd_loss.h"
#include "qkd/loss/topk_kd_loss.h"
#include "qkd/train/grad_utils.h"
#include "qkd/train/row_shards.h"

namespace qkd::train {

Distiller::Distiller(Teacher& teacher, model::LlamaForCausalLM student, const loss::KdLossOptions& kd,
                     const ComputeSection& compute, const torch::Device& device)
    : teacher_(teacher), student_(std::move(student)), kd_(kd), compute_(compute), device_(device) {}

loss::KdLossResult Distiller::distill(const MicroBatch& batch, int64_t shards, double loss_multiplier,
                                      PhaseTimer& phases) {
  if (shards > 1) return in_row_shards(batch, shards, loss_multiplier, phases);
  GradientSink into_grad;
  return one_pass(batch, std::nullopt, loss_multiplier, phases, into_grad);
}

torch::Tensor Distiller::student_outputs(const TeacherTargets& targets, const MicroBatch& batch) {
  const compat::AutocastScope autocast(device_, compute_.precision);
  if (!targets.pair_with_student_hidden()) return student_->forward(batch.input_ids, nullptr, batch.layout());
  return student_->final_hidden_states(batch.input_ids, batch.layout());
}

loss::KdLossResult Distiller::loss(const TeacherTargets& targets, const torch::Tensor& student_outputs,
                                   const MicroBatch& batch) {
  const auto* over = batch.loss_denominators();
  if (targets.topk) return loss::topk_kd_loss(*targets.topk, student_outputs, batch.labels, kd_, over);
  if (!targets.pair_with_student_hidden()) return loss::kd_loss(targets.logits, student_outputs, batch.labels, kd_, over);
  const auto teacher_head = teacher_.lm_head_weight();
  // The student's head products run under its autocast, as its own lm_head would.
  const compat::AutocastScope autocast(device_, compute_.precision);
  return loss::kd_loss_from_hidden(targets.hidden, teacher_head, student_outputs, student_->lm_head_weight(),
                                   batch.labels, kd_, over);
}

// `cached`: the teacher's targets for these rows, read beforehand (a cache's top-k is read in stream
// order, once per micro-batch); otherwise the teacher runs here.
loss::KdLossResult Distiller::one_pass(const MicroBatch& batch, std::optional<TeacherTargets> cached,
                                       double loss_multiplier, PhaseTimer& phases, GradientSink& sink) {
  torch::Tensor student;
  TeacherTargets teacher;
  loss::KdLossResult result;
  if (cached) {
    teacher = std::move(*cached);
  } else {
    const auto timed = phases.measure(Phase::teacher_forward);  // or the read of the cached top-k
    teacher = teacher_.targets(batch, through_heads());
  }
  {
    const auto timed = phases.measure(Phase::student_forward);
    student = student_outputs(teacher, batch);
  }
  {
    const auto timed = phases.measure(Phase::loss);
    result = loss(teacher, student, batch);
    teacher = TeacherTargets();  // the teacher's outputs are not needed by backward
  }
  const auto timed = phases.measure(Phase::backward);
  const auto scaled = result.loss * loss_multiplier;
  if (!sink.parameters)
    scaled.backward();
  else
    sink.captured = torch::autograd::grad({scaled}, *sink.parameters, {}, /*retain_graph=*/false,
                                          /*create_graph=*/false, /*allow_unused=*/true);
  result.loss = result.loss.detach();
  return result;
}

loss::KdLossResult Distiller::in_row_shards(const MicroBatch& batch, int64_t shards, double loss_multiplier,
                                            PhaseTimer& phases) {
  const auto whole = loss::loss_denominators(batch.labels, kd_);
  const auto ranges = row_ranges(batch.input_ids.size(0), shards);
  std::optional<TeacherTargets> cached;
  if (teacher_.cached()) {
    const auto timed = phases.measure(Phase::teacher_forward);
    cached = teacher_.targets(batch, through_heads());
  }
  const auto parameters = trainable_parameters(*student_);
  std::vector<loss::KdLossResult> results(ranges.size());
  std::vector<GradientSink> sinks(ranges.size(), GradientSink{&parameters, {}});
  std::vector<PhaseTimer> shard_phases(ranges.size(), PhaseTimer(device_, false));
  kernels::run_on_cores(shards, [&](int64_t i) {
    const auto range = ranges[static_cast<size_t>(i)];
    std::optional<TeacherTargets> rows;
    if (cached) rows = cached->rows(range.begin, range.count);
    results[i] = one_pass(micro_batch_rows(batch, range, whole), std::move(rows), loss_multiplier,
                          i == 0 ? phases : shard_phases[i], sinks[i]);
  });
  const auto timed = phases.measure(Phase::backward);
  std::vector<std::vector<torch::Tensor>> gradients;
  for (auto& sink : sinks) gradients.push_back(std::move(sink.captured));
  accumulate_shard_gradients(parameters, gradients);
  // Each shard's loss is its share of the micro-batch's mean: the sum is the micro-batch's.
  loss::KdLossResult total{torch::zeros({}, torch::kFloat64), 0.0, 0.0};
  for (const auto& r : results) {
    total.loss += r.loss.to(torch::kFloat64);
    total.divergence += r.divergence;
    total.cross_entropy += r.cross_entropy;
  }
  return total;
}

}  // namespace qkd::train
