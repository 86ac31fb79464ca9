#pragma once
// What one micro-batch of KD-QAT computes: the teacher's targets, the fake-quantized student's forward
// on the same tokens, the distillation loss, and its backward into the student's .grad. In one pass, or
// as row shards on several cores at once (row_shards.h). The gradient flows into the student only.
#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "qkd/loss/kd_loss.h"
#include "qkd/model/llama.h"
#include "qkd/train/micro_batch.h"
#include "qkd/train/phase_timer.h"
#include "qkd/train/teacher.h"
#include "qkd/train/train_sections.h"

namespace qkd::train {

class Distiller {
 public:
  Distiller(Teacher& teacher, model::LlamaForCausalLM student, const loss::KdLossOptions& kd,
            const ComputeSection& compute, const torch::Device& device);

  // Teacher, student, loss and backward of `batch`, computed in `shards` row shards (1: one pass). The
  // loss is multiplied by `loss_multiplier` for backward only (fp16 loss scale over grad_accum); the
  // returned loss is the unscaled, detached one. Phases are timed into `phases` (shard 0's, which run
  // beside the others).
  loss::KdLossResult distill(const MicroBatch& batch, int64_t shards, double loss_multiplier, PhaseTimer& phases);

  // The student's forward that `targets` pair with (final hidden states or logits), under the autocast
  // of train.precision on CUDA.
  torch::Tensor student_outputs(const TeacherTargets& targets, const MicroBatch& batch);
  // The kd loss of `student_outputs` against `targets`: from hidden states through both heads, kd_loss of
  // logits, or topk_kd_loss for cached targets.
  loss::KdLossResult loss(const TeacherTargets& targets, const torch::Tensor& student_outputs, const MicroBatch& batch);

 private:
  // Where backward leaves the gradients: accumulated into the parameters' .grad, or (a row shard)
  // returned per parameter, so that shards computed at once are added in a fixed order.
  struct GradientSink {
    const std::vector<torch::Tensor>* parameters = nullptr;  // null: into .grad
    std::vector<torch::Tensor> captured;
  };
  loss::KdLossResult one_pass(const MicroBatch& batch, std::optional<TeacherTargets> cached, double loss_multiplier,
                              PhaseTimer& phases, GradientSink& sink);
  loss::KdLossResult in_row_shards(const MicroBatch& batch, int64_t shards, double loss_multiplier, PhaseTimer& phases);
  // fp16's loss scale must multiply the fp32 logit gradient before any fp16 product, and it is only
  // known in backward: that precision keeps the logits path.
  bool through_heads() const { return compute_.precision != Precision::fp16; }

  Teacher& teacher_;
  model::LlamaForCausalLM student_;
  loss::KdLossOptions kd_;
  ComputeSection compute_;
  torch::Device device_;
};

}  // namespace qkd::train
