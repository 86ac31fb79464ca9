// The KD-QAT loop. Each step: release of auto-frozen projections whose learning rate has decayed;
// teacher forward, student forward, loss, backward (over micro-batches); gradient check (fp16
// overflow skips the step); monitor; freeze of what the monitor saw destabilize (before the update);
// clip and optimizer step; then logging, validation and checkpoints.
#include "qkd/train/trainer.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <filesystem>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/checkpoint/student_checkpoint.h"
#include "qkd/common/atomic_file.h"
#include "qkd/common/input_file.h"
#include "qkd/common/json_io.h"
#include "qkd/common/system.h"
#include "qkd/common/torch_compat.h"
#include "qkd/freeze/freeze_controller.h"
#include "qkd/train/grad_utils.h"
#include "qkd/train/lr_schedule.h"
#include "qkd/train/phase_timer.h"
#include "qkd/train/stop_signal.h"
#include "qkd/train/training_session.h"

namespace qkd::train {

namespace {

// The CUDA allocator's peak on a GPU (what decides whether a run fits); the process's peak RSS on CPU.
double peak_memory_mb(const torch::Device& device) {
  return device.is_cuda() ? compat::cuda_peak_allocated_mb(device) : peak_rss_mb();
}

struct StepLosses {
  double loss = 0.0, divergence = 0.0, cross_entropy = 0.0;
  int64_t tokens = 0;
};

// One micro-batch: the frozen teacher and the fake-quantized student see the same tokens; the loss
// gradient flows into the student only.
void distill_micro_batch(TrainingSession& s, StepLosses& totals, double loss_multiplier, PhaseTimer& phases) {
  torch::Tensor batch, student;
  TeacherTargets teacher;
  loss::KdLossResult result;
  {
    const auto timed = phases.measure(Phase::data);
    batch = s.data->next_batch(s.config.train.micro_batch).to(s.device);
  }
  {
    const auto timed = phases.measure(Phase::teacher_forward);  // or the read of the cached top-k
    teacher = teacher_targets(s, batch);
  }
  {
    const auto timed = phases.measure(Phase::student_forward);
    student = student_outputs(s, teacher, batch);
  }
  {
    const auto timed = phases.measure(Phase::loss);
    result = distillation_loss(s, teacher, student, batch);
    teacher = TeacherTargets();  // the teacher's outputs are not needed by backward
  }
  {
    const auto timed = phases.measure(Phase::backward);
    (result.loss * loss_multiplier).backward();
  }
  const double share = 1.0 / static_cast<double>(s.config.train.grad_accum);
  totals.loss += result.loss.item<double>() * share;
  totals.divergence += result.divergence * share;
  totals.cross_entropy += result.cross_entropy * share;
  totals.tokens += batch.numel();
}

void log_events(TrainingSession& s, const std::vector<monitor::InstabilityEvent>& events) {
  for (const auto& e : events) {
    spdlog::warn("step {}: {} in {} (value {:.4g}, baseline {:.4g})", e.step, monitor::event_kind_name(e.kind),
                 e.series.name(), e.value, e.baseline);
    s.logs.events->write(e.to_json());
  }
}

void write_eval(TrainingSession& s, TrainSummary& summary, OnStop on_stop) {
  auto results = evaluate_student(s, on_stop);
  if (results.is_null()) return;
  spdlog::info("step {} eval: {}", s.step, results.dump());
  results["type"] = "eval";
  results["step"] = s.step;
  s.logs.metrics->write(results);
  summary.final_eval = results;
}

// Fresh runs only: what the student is compared with at the end. Kept in baselines.json so a resumed
// run's summary still has them.
void write_baselines(TrainingSession& s) {
  const auto baselines = evaluate_perplexity_baselines(s);
  if (baselines.is_null()) return;
  spdlog::info("baselines: teacher ppl {}, round-to-nearest student ppl {}", baselines.at("teacher").dump(),
               baselines.at("student").dump());
  s.logs.metrics->write({{"type", "baseline"},
                         {"step", 0},
                         {"teacher_ppl", baselines.at("teacher")},
                         {"round_to_nearest_ppl", baselines.at("student")}});
  write_text_atomically(baselines_path(s.config.run_dir), baselines.dump(2) + "\n");
}

nlohmann::json read_baselines(const std::string& run_dir) {
  const auto path = baselines_path(run_dir);
  if (!std::filesystem::is_regular_file(path)) return nullptr;
  const auto baselines = parse_json_or_discarded(read_text_file(path));
  if (baselines.is_object() && baselines.contains("teacher") && baselines.contains("student")) return baselines;
  spdlog::warn("{}: not a baselines record; the summary shows no baselines", path);
  return nullptr;
}

// The gradients of a step that may update: finite, and (fp16) not overflowed. An fp16 overflow is
// the loss scale's fault, not the model's: the monitor and the freeze policy never see that step.
struct GradientCheck {
  double norm = 0.0;
  bool finite = true;
};

GradientCheck check_gradients(TrainingSession& s, const StepLosses& losses) {
  if (s.loss_scaler.enabled()) unscale_gradients(*s.student, s.loss_scaler.scale());
  const double norm = global_grad_norm(*s.student);
  return {norm, std::isfinite(norm) && std::isfinite(losses.loss)};
}

void skip_step(TrainingSession& s, int64_t step, const std::string& reason, double grad_norm) {
  ++s.skipped_steps;
  s.logs.events->write(
      {{"step", step}, {"kind", "skip"}, {"reason", reason}, {"grad_norm", std::to_string(grad_norm)}});
}

// Judges the step's gradients and lets auto freeze react before the update. Returns whether the
// update goes ahead: a rollback skips it, because its gradients were computed at the destabilized point.
bool judge_and_freeze(TrainingSession& s, int64_t step, double lr, const StepLosses& losses, GradientCheck& grads,
                      PhaseTimer& phases) {
  const auto events = [&] {
    const auto timed = phases.measure(Phase::monitor);
    return s.monitor->judge_gradients(step, losses.divergence);
  }();
  log_events(s, events);
  const auto reaction = s.freeze->react(events, step, lr);
  if (!reaction.change) {
    if (grads.finite && s.monitor->judges(step)) s.freeze->keep_calm_weights();
    return true;
  }
  log_freeze_change(s, *reaction.change);
  grads.norm = global_grad_norm(*s.student);  // the frozen projections' gradients are gone
  grads.finite = std::isfinite(grads.norm) && std::isfinite(losses.loss);
  if (!reaction.skip_update) return true;
  ++s.skipped_steps;
  s.logs.events->write({{"step", step},
                        {"kind", "skip"},
                        {"reason", "auto freeze rolled back the destabilized projections"},
                        {"rolled_back", reaction.rolled_back}});
  return false;
}

std::vector<std::string> export_student(TrainingSession& s) {
  const auto out_dir = (std::filesystem::path(s.config.run_dir) / "export").string();
  return exporting::export_student(student_export_source(s), s.config.export_.formats, out_dir,
                                   export_options(s.config));
}

// Baselines and the step-0 evaluation, abandoned on a stop request. Nothing needs saving then: the
// state at step 0 follows from the config, and the same command starts the run again from scratch.
bool evaluate_at_start(TrainingSession& s, TrainSummary& summary) {
  try {
    if (s.config.eval.baselines) write_baselines(s);
    if (s.config.eval.at_start) write_eval(s, summary, OnStop::abandon);
    return true;
  } catch (const StopRequested&) {
    spdlog::warn("stopped by signal during the start-of-run evaluation; the same command starts the run again");
    return false;
  }
}

// The final evaluation, abandoned on a stop request: the end checkpoint is already written, so the
// same command resumes at the last step and evaluates and exports then.
bool evaluate_at_end(TrainingSession& s, TrainSummary& summary) {
  try {
    write_eval(s, summary, OnStop::abandon);
    return true;
  } catch (const StopRequested&) {
    spdlog::warn("stopped by signal during the final evaluation; resume with the same command to evaluate and export");
    return false;
  }
}

}  // namespace

TrainSummary train_session(TrainingSession& s, const TrainHooks& hooks);

std::string baselines_path(const std::string& run_dir) {
  return (std::filesystem::path(run_dir) / "baselines.json").string();
}

nlohmann::json TrainSummary::to_json() const {
  return {{"steps_completed", steps_completed},
          {"interrupted", interrupted},
          {"skipped_steps", skipped_steps},
          {"wall_seconds", wall_seconds},
          {"tokens_per_second", tokens_per_second},
          {"peak_rss_mb", peak_rss_mb},
          {"final_eval", final_eval},
          {"last_checkpoint", last_checkpoint},
          {"exported", exported},
          {"baselines", baselines}};
}

TrainSummary run_training(const RunConfig& config, const TrainHooks& hooks) {
  install_stop_handlers();
  auto session = open_session(config);
  try {
    return train_session(*session, hooks);
  } catch (...) {
    // A fresh run that fails before its first checkpoint (a malformed record under data.strict, say)
    // leaves nothing behind: its directory would hold only a config and partial logs.
    if (session->created_run_dir && session->checkpoints->list().empty()) std::filesystem::remove_all(config.run_dir);
    throw;
  }
}

TrainSummary train_session(TrainingSession& s, const TrainHooks& hooks) {
  const auto& config = s.config;
  const auto& train = config.train;
  TrainSummary summary;
  const auto start = std::chrono::steady_clock::now();
  int64_t tokens_seen = 0;
  const bool started = s.step > 0 || evaluate_at_start(s, summary);
  TrainingProgress progress(train.steps, s.step);
  PhaseTimer phases(s.device, train.phase_timing);
  while (started && s.step < train.steps && !stop_requested()) {
    const int64_t step = s.step + 1;
    if (hooks.before_step) hooks.before_step(step, *s.monitor);
    const auto step_start = std::chrono::steady_clock::now();
    const double lr = learning_rate_at(
        s.step, train.steps,
        {config.optim.lr, config.optim.warmup_steps, config.optim.schedule, config.optim.min_lr_ratio});
    if (const auto release = s.freeze->release_due(step, lr)) {
      s.monitor->forget(release->modules);  // their series start afresh, not against pre-freeze values
      log_freeze_change(s, *release);
    }
    const double multiplier = s.loss_scaler.scale() / static_cast<double>(train.grad_accum);
    StepLosses losses;
    std::map<std::string, double> update_norms;  // what the monitor asked the optimizer to measure
    phases.reset();
    s.monitor->begin_step(step);
    for (int64_t micro = 0; micro < train.grad_accum; ++micro) distill_micro_batch(s, losses, multiplier, phases);
    auto grads = [&] {
      const auto timed = phases.measure(Phase::gradients);
      return check_gradients(s, losses);
    }();
    if (s.loss_scaler.enabled() && !grads.finite) {
      s.monitor->abandon_step();
      skip_step(s, step, fmt::format("fp16 loss scale {} overflowed", s.loss_scaler.scale()), grads.norm);
    } else if (judge_and_freeze(s, step, lr, losses, grads, phases)) {
      if (grads.finite) {
        const auto timed = phases.measure(Phase::optimizer);
        if (config.optim.grad_clip > 0.0) clip_gradients(*s.student, grads.norm, config.optim.grad_clip);
        update_norms = s.optimizer->step(lr, s.monitor->updates_wanted());
      } else {
        skip_step(s, step, "non-finite loss or gradient", grads.norm);
      }
    }
    s.loss_scaler.update(grads.finite);
    {
      const auto timed = phases.measure(Phase::optimizer);
      s.optimizer->zero_grad();
    }
    s.step = step;
    const auto signal_record = [&] {
      const auto timed = phases.measure(Phase::monitor);
      return s.monitor->end_step(step, update_norms);
    }();
    if (!signal_record.is_null()) s.logs.signal->write(signal_record);

    tokens_seen += losses.tokens;
    const double step_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();
    const double tokens_per_s = static_cast<double>(losses.tokens) / std::max(1e-9, step_seconds);
    if (step % train.log_interval == 0 || step == 1 || step == train.steps) {
      s.logs.metrics->write({{"type", "train"},
                             {"step", step},
                             {"loss", losses.loss},
                             {"kd", losses.divergence},
                             {"ce", losses.cross_entropy},
                             {"lr", lr},
                             {"grad_norm", std::isfinite(grads.norm) ? grads.norm : -1.0},
                             {"tokens_per_s", tokens_per_s},
                             {"step_seconds", step_seconds},
                             {"phases", phases.to_json()},
                             {"peak_mem_mb", peak_memory_mb(s.device)},
                             {"trainable_params", freeze::trainable_parameter_count(*s.student)},
                             {"skipped_steps", s.skipped_steps}});
    }
    progress.update(step, losses.loss, tokens_per_s);
    // Mid-run evaluations finish (they are bounded by eval.max_windows): the checkpoint written after a
    // stop must come after its step's records, or the resumed run's records would lack this one.
    if (train.eval_interval > 0 && step % train.eval_interval == 0 && step != train.steps)
      write_eval(s, summary, OnStop::finish);
    if (config.checkpoint.interval > 0 && step % config.checkpoint.interval == 0 && step != train.steps)
      summary.last_checkpoint = save_checkpoint(s);
  }
  progress.finish();
  summary.interrupted = s.step < train.steps;
  if (started) summary.last_checkpoint = save_checkpoint(s);
  if (!summary.interrupted) {
    summary.interrupted = !evaluate_at_end(s, summary);
    if (!summary.interrupted) summary.exported = export_student(s);
  } else if (started) {
    spdlog::warn("stopped by signal after step {}; resume with the same command", s.step);
  }
  summary.baselines = read_baselines(config.run_dir);
  summary.steps_completed = s.step;
  summary.skipped_steps = s.skipped_steps;
  summary.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  summary.tokens_per_second = static_cast<double>(tokens_seen) / std::max(1e-9, summary.wall_seconds);
  summary.peak_rss_mb = peak_rss_mb();
  write_text_atomically((std::filesystem::path(config.run_dir) / "summary.json").string(),
                        summary.to_json().dump(2) + "\n");
  return summary;
}

}  // namespace qkd::train
