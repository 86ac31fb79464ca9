#include "qkd/train/teacher.h"

#include <spdlog/spdlog.h>

#include "qkd/common/dtype_names.h"
#include "qkd/common/error.h"
#include "qkd/common/torch_compat.h"
#include "qkd/train/run_setup.h"

namespace qkd::train {

TeacherTargets TeacherTargets::rows(int64_t begin, int64_t count) const {
  const auto narrow = [&](const torch::Tensor& x) { return x.defined() ? x.narrow(0, begin, count) : x; };
  TeacherTargets out{narrow(hidden), narrow(logits), std::nullopt};
  if (topk) out.topk = loss::topk_rows(*topk, begin, count);
  return out;
}

namespace {
std::unique_ptr<teacher_cache::CacheReader> open_cache(const RunConfig& config) {
  const auto& dir = config.kd().teacher_cache;
  std::unique_ptr<teacher_cache::CacheReader> reader;
  try {
    reader = std::make_unique<teacher_cache::CacheReader>(dir);
  } catch (const Error& e) {
    fail("kd.teacher_cache", e.what());
  }
  const auto& m = reader->manifest();
  const auto& train = config.train();
  teacher_cache::require_usable_for(m, teacher_cache_identity(config), train.steps * train.grad_accum, dir,
                                    "kd.teacher_cache");
  spdlog::info("teacher: top-{} log-probabilities cached in {} ({} micro-batches); the teacher model is not loaded",
               m.k, dir, m.micro_batches());
  return reader;
}
}  // namespace

Teacher::Teacher(const RunConfig& config, const torch::Device& device) {
  if (config.kd().teacher == loss::TeacherSource::cache)
    cache_ = open_cache(config);
  else
    model_ = load_teacher_model(config, device);
}

TeacherTargets Teacher::targets(const MicroBatch& batch, bool through_heads) {
  if (cache_) return {torch::Tensor(), torch::Tensor(), cache_->next(batch.input_ids)};
  if (!through_heads) return {torch::Tensor(), logits(batch), std::nullopt};
  const compat::NoAutocastScope no_autocast;
  torch::NoGradGuard no_grad;
  return {model_->final_hidden_states(batch.input_ids, batch.layout()), torch::Tensor(), std::nullopt};
}

torch::Tensor Teacher::logits(const MicroBatch& batch) {
  const compat::NoAutocastScope no_autocast;
  torch::NoGradGuard no_grad;
  return model_->forward(batch.input_ids, nullptr, batch.layout());
}

torch::Tensor Teacher::lm_head_weight() {
  torch::NoGradGuard no_grad;
  return model_->lm_head_weight();
}

void Teacher::seek(int64_t index) {
  if (cache_) cache_->seek(index);
}

teacher_cache::CacheIdentity teacher_cache_identity(const RunConfig& config) {
  teacher_cache::CacheIdentity id;
  id.teacher = teacher_cache::teacher_identity(config.teacher().path, dtype_name(config.teacher().dtype));
  id.data = teacher_cache::data_identity(config.data());
  id.micro_batch = config.train().micro_batch;
  id.grad_accum = config.train().grad_accum;
  id.seq_len = config.data().seq_len;
  id.steps = config.train().steps;
  id.temperature = config.kd().temperature;
  return id;
}

}  // namespace qkd::train
