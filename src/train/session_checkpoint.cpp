// How a TrainingSession saves its state into a checkpoint and restores it: the student's weights and
// quantizer state, the optimizer (gathered from its owners when sharded), the data cursor, the freeze
// controller, the monitor, the RNG, the step counters and the fp16 loss scale.
#include <spdlog/spdlog.h>

#include <filesystem>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/checkpoint/student_checkpoint.h"
#include "qkd/common/error.h"
#include "qkd/common/json_io.h"
#include "qkd/quant/student.h"
#include "qkd/train/rng_state.h"
#include "qkd/train/training_session.h"

namespace qkd::train {

namespace {

// Refuses a checkpoint whose teacher/student/quant sections differ from the config, showing how.
void check_identity(const nlohmann::json& saved, const nlohmann::json& current, const std::string& dir) {
  if (saved == current) return;
  std::string diff;
  for (const auto& op : nlohmann::json::diff(saved, current)) {
    const nlohmann::json::json_pointer at(op.value("path", std::string("/")));
    diff += (diff.empty() ? "" : "; ") + op.value("path", std::string()) + ": checkpoint " +
            (saved.contains(at) ? json_excerpt(saved.at(at)) : std::string("(absent)")) + ", config " +
            json_excerpt(op.value("value", nlohmann::json()));
  }
  fail(dir, "checkpoint was made with a different model or quantizer config (" + diff + ")");
}

// Checkpoints written before the freeze controller kept the frozen list beside the release schedule.
nlohmann::json saved_freeze_state(const nlohmann::json& state) {
  const auto freeze = state.value("freeze", nlohmann::json());
  if (freeze.is_object() && freeze.contains("frozen")) return freeze;
  return {{"frozen", state.at("frozen")}, {"release_lr", freeze}};
}

}  // namespace

std::optional<std::string> TrainingSession::checkpoint_to_resume() const {
  const auto& resume = config_.checkpoint().resume;
  const auto& store = run_dir_->checkpoints();
  if (resume == "never") {
    if (store.newest())
      fail("checkpoint.resume",
           "\"never\" but " + config_.run_dir() + " already has checkpoints; use auto or another run_dir");
    return std::nullopt;
  }
  if (resume == "auto") return store.newest();
  if (!std::filesystem::is_directory(resume))
    fail("checkpoint.resume", "expected auto, never or a checkpoint directory, got \"" + resume + "\"");
  return resume;
}

std::string TrainingSession::save_checkpoint() {
  auto optimizer = optimizer_->state();  // every rank takes part in gathering it
  if (!ranks_->is_root()) return run_dir_->checkpoints().directory_for_step(step_);
  CheckpointData data;
  data.step = step_;
  data.student = checkpoint::model_weights(*student(), student()->parameters().front().scalar_type());
  for (auto& item : quant::quantizer_state(*student())) data.student.push_back(std::move(item));
  data.optimizer = std::move(optimizer);
  data.stable_weights = freeze_->rollback_weights();
  data.state = {{"identity", model_identity(config_)}, {"data_cursor", data_->cursor()},
                {"freeze", freeze_->state()},           {"monitor", monitor_->state()},
                {"rng", capture_rng_state()},           {"skipped_steps", skipped_steps_},
                {"loss_scale", loss_scaler_.state()},   {"teacher_digest", teacher_digest_}};
  const auto dir = run_dir_->checkpoints().save(data, config_.checkpoint().keep_last);
  spdlog::info("checkpoint {}", dir);
  return dir;
}

// state.json was written by this program, but a hand-edited or damaged one must still fail with
// its name and not nlohmann's bare "key 'identity' not found".
void TrainingSession::restore(const std::string& dir) {
  try {
    restore_state(dir);
  } catch (const nlohmann::json::exception& e) {
    fail(dir + "/state.json", "malformed checkpoint state: " + json_error_text(e));
  }
}

void TrainingSession::restore_state(const std::string& dir) {
  auto data = CheckpointStore::load(dir);
  check_identity(data.state.at("identity"), model_identity(config_), dir);
  // Checkpoints from before the digest was recorded resume on the path alone.
  const auto saved_teacher = data.state.value("teacher_digest", std::string());
  if (!saved_teacher.empty() && saved_teacher != teacher_digest_)
    fail(dir, "was trained from another teacher: the files at teacher.path " + config_.teacher().path +
                  " changed since (contents " + saved_teacher + ", now " + teacher_digest_ + ")");
  // Frozen modules first: the optimizer state then holds exactly the parameters still training.
  freeze_->restore(saved_freeze_state(data.state), data.stable_weights, dir + "/stable_weights.safetensors");
  checkpoint::copy_weights_into(*student(), data.student, dir + "/student.safetensors");
  checkpoint::load_quantizer_state_from(*student(), data.student, dir + "/student.safetensors");
  optimizer_->load_state(data.optimizer, dir + "/optimizer.safetensors");
  data_->restore(data.state.at("data_cursor"));
  monitor_->load_state(data.state.at("monitor"));
  restore_rng_state(data.state.at("rng"));
  step_ = data.step;
  skipped_steps_ = data.state.value("skipped_steps", int64_t{0});
  loss_scaler_.load_state(data.state.value("loss_scale", nlohmann::json()));
  spdlog::info("resumed from {} at step {}", dir, step_);
}

}  // namespace qkd::train
