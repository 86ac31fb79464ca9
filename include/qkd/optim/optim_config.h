#pragma once
// The `optim` section of a run config: AdamW's hyper-parameters, the learning-rate schedule, clipping,
// which parameters train, and how the moments are stored.
#include <torch/torch.h>

#include <cstdint>
#include <limits>
#include <string>

#include "qkd/common/config_fields.h"
#include "qkd/common/dtype_names.h"
#include "qkd/optim/adamw.h"
#include "qkd/optim/lr_schedule.h"

namespace qkd::optim {

// optim.moment_dtype's choices: float32, bfloat16 to halve the moments' memory, or int8 (block-wise
// 8-bit codes, a quarter of it: blockwise_int8.h).
const EnumTable<torch::Dtype>& moment_dtypes();
// optim.master_weights' choices: fp32, bf16_compensated, none (adamw.h).
const EnumTable<MasterWeights>& master_weights_modes();

struct OptimConfig {
  double lr = 1e-4;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;
  bool decay_norms_and_biases = false;
  LrSchedule schedule = LrSchedule::cosine;
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.0;
  double grad_clip = 1.0;                       // global norm; 0 disables
  bool train_embeddings = true;                 // embeddings, norms and lm_head train too (false: only the projections)
  torch::Dtype moment_dtype = torch::kFloat32;  // AdamW moments; bfloat16 halves their memory, int8 quarters it
  // What keeps a bf16/fp16 student's exact weights: an fp32 master (4 bytes per trainable parameter), a
  // bf16 compensation (2 bytes; bf16 students only) or nothing.
  MasterWeights master_weights = MasterWeights::fp32;
  template <class Fields>
  void fields(Fields& f) {
    f.positive("lr", lr);
    f.number("beta1", beta1, 0.0, 0.999999);
    f.number("beta2", beta2, 0.0, 0.999999999);
    f.positive("eps", eps);
    f.number("weight_decay", weight_decay, 0.0, 1.0);
    f.flag("decay_norms_and_biases", decay_norms_and_biases);
    f.choice("schedule", schedule, lr_schedules());
    f.integer("warmup_steps", warmup_steps, 0, kMaxSteps);
    f.number("min_lr_ratio", min_lr_ratio, 0.0, 1.0);
    f.number("grad_clip", grad_clip, 0.0, 1e9);
    f.flag("train_embeddings", train_embeddings);
    f.choice("moment_dtype", moment_dtype, moment_dtypes());
    f.choice("master_weights", master_weights, master_weights_modes());
  }
  static constexpr int64_t kMaxSteps = int64_t{1} << 40;

  AdamWOptions adamw() const { return {beta1, beta2, eps, weight_decay, moment_dtype, master_weights}; }
  LrScheduleOptions lr_schedule() const { return {lr, warmup_steps, schedule, min_lr_ratio}; }
  // Whether weight decay applies to `parameter` (norms, biases and quantizer scales are exempt unless
  // decay_norms_and_biases).
  bool decays(const std::string& parameter) const;
  // Whether `parameter` trains at all: every one, or with train_embeddings false only the projections.
  bool trains(const std::string& parameter) const;
};

}  // namespace qkd::optim
