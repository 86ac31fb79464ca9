#pragma once
// The teacher the student is distilled towards: the frozen model run beside the student (`online`), or
// its top-k log-probabilities that `qkd-train cache-teacher` stored (kd.teacher `cache`), read in
// stream order without loading the model.
#include <torch/torch.h>

#include <memory>
#include <optional>

#include "qkd/loss/topk_kd_loss.h"
#include "qkd/model/llama.h"
#include "qkd/teacher_cache/cache_reader.h"
#include "qkd/teacher_cache/manifest.h"
#include "qkd/train/micro_batch.h"
#include "qkd/train/run_config.h"

namespace qkd::train {

// What the student is distilled towards on one micro-batch. Online, the teacher's final hidden states:
// the loss applies both output heads chunk by chunk (loss::kd_loss_from_hidden), except under fp16,
// whose loss scale needs the logits path. With a cache, the micro-batch's cached top-k.
struct TeacherTargets {
  torch::Tensor hidden;                   // online: [batch, seq, hidden] in teacher.dtype
  torch::Tensor logits;                   // online under fp16: [batch, seq, vocab] in teacher.dtype
  std::optional<loss::TopKTargets> topk;  // cache
  // The student output these targets are compared with: final hidden states or logits.
  bool pair_with_student_hidden() const { return hidden.defined(); }
  // Rows [begin, begin + count) (views).
  TeacherTargets rows(int64_t begin, int64_t count) const;
};

class Teacher {
 public:
  // Online: loads the model in teacher.dtype on `device`. Cache: opens kd.teacher_cache and checks it
  // against `config` (teacher, data, batch shape, steps) before anything is computed.
  Teacher(const RunConfig& config, const torch::Device& device);

  bool cached() const { return cache_ != nullptr; }
  // The model; null with a cache (whose run then has no teacher perplexity).
  model::LlamaForCausalLM model() const { return model_; }

  // The targets of `batch`: from the model (outside any autocast the caller has open; hidden states when
  // `through_heads`, else logits), or the cache's next micro-batch, checked against `batch`.
  TeacherTargets targets(const MicroBatch& batch, bool through_heads);
  // The model's logits for `batch` in teacher.dtype, outside any autocast the caller has open.
  torch::Tensor logits(const MicroBatch& batch);
  // The output head, for the loss that applies it chunk by chunk (online only).
  torch::Tensor lm_head_weight();
  // Cache: micro-batch `index` is read next (a resumed run starts at step x grad_accum).
  void seek(int64_t index);

 private:
  model::LlamaForCausalLM model_{nullptr};
  std::unique_ptr<teacher_cache::CacheReader> cache_;
};

// What a cache for `config` is a function of (the teacher, the data section, the batch shape, the
// steps, kd.temperature).
teacher_cache::CacheIdentity teacher_cache_identity(const RunConfig& config);

}  // namespace qkd::train
