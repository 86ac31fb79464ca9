// The KD-QAT run: open the session, evaluate the start, then step after step (training_step.h) with
// its logging, validation and checkpoints; at the end the replicas' agreement, the final evaluation,
// the export and the summary.
#include "qkd/train/trainer.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <filesystem>

#include "qkd/common/system.h"
#include "qkd/common/torch_compat.h"
#include "qkd/distributed/replicas.h"
#include "qkd/freeze/freeze_controller.h"
#include "qkd/train/run_evaluation.h"
#include "qkd/train/stop_signal.h"
#include "qkd/train/training_session.h"
#include "qkd/train/training_step.h"

namespace qkd::train {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The CUDA allocator's peak on a GPU (what decides whether a run fits); the process's peak RSS on CPU.
double peak_memory_mb(const torch::Device& device) {
  return device.is_cuda() ? compat::cuda_peak_allocated_mb(device) : peak_rss_mb();
}

void write_eval(TrainingSession& s, TrainSummary& summary, OnStop on_stop) {
  auto results = evaluate_student(s, on_stop);
  if (results.is_null()) return;
  spdlog::info("step {} eval: {}", s.step(), results.dump());
  results["type"] = "eval";
  results["step"] = s.step();
  s.run_dir().metrics().write(results);
  summary.outputs.final_eval = results;
}

// Fresh runs only: what the student is compared with at the end. Kept in baselines.json so a resumed
// run's summary still has them.
void write_baselines(TrainingSession& s) {
  const auto baselines = evaluate_perplexity_baselines(s);
  if (baselines.is_null()) return;
  spdlog::info("baselines: teacher ppl {}, round-to-nearest student ppl {}", baselines.at("teacher").dump(),
               baselines.at("student").dump());
  s.run_dir().metrics().write({{"type", "baseline"},
                               {"step", 0},
                               {"teacher_ppl", baselines.at("teacher")},
                               {"round_to_nearest_ppl", baselines.at("student")}});
  s.run_dir().write_baselines(baselines);
}

// Baselines and the step-0 evaluation, abandoned on a stop request. Nothing needs saving then: the
// state at step 0 follows from the config, and the same command starts the run again from scratch.
bool evaluate_at_start(TrainingSession& s, TrainSummary& summary) {
  try {
    if (s.config().eval().baselines && s.ranks().is_root()) write_baselines(s);
    if (s.config().eval().at_start) write_eval(s, summary, OnStop::abandon);
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

void log_step(TrainingSession& s, int64_t step, const StepResult& r, double step_seconds, const PhaseTimer& phases) {
  s.run_dir().metrics().write({{"type", "train"},
                               {"step", step},
                               {"loss", r.losses.loss},
                               {"kd", r.losses.divergence},
                               {"ce", r.losses.cross_entropy},
                               {"lr", r.lr},
                               {"grad_norm", std::isfinite(r.grad_norm) ? r.grad_norm : -1.0},
                               {"tokens_per_s", static_cast<double>(r.losses.tokens) / std::max(1e-9, step_seconds)},
                               {"step_seconds", step_seconds},
                               {"phases", phases.to_json()},
                               {"peak_mem_mb", peak_memory_mb(s.device())},
                               {"trainable_params", freeze::trainable_parameter_count(*s.student())},
                               {"skipped_steps", s.skipped_steps()}});
}

// Every rank must end with the same student (same gradients, same updates): a 64-bit fingerprint of
// each replica's weights, compared across ranks, catches any that drifted before it is saved.
void check_replicas_agree(TrainingSession& s, TrainSummary& summary) {
  if (!s.ranks().distributed()) return;
  auto& prints = summary.ranks.replica_fingerprints;
  prints = distributed::replica_fingerprints(s.ranks(), s.replicated_state());
  for (size_t r = 1; r < prints.size(); ++r)
    if (prints[r] != prints[0])
      fail("distributed", "rank " + std::to_string(r) + "'s student differs from rank 0's after step " +
                              std::to_string(s.step()) + " (weight fingerprints " + fingerprint_hex(prints[r]) + " and " +
                              fingerprint_hex(prints[0]) + "); the last checkpoint holds rank 0's");
  spdlog::info("the {} replicas agree bitwise (weight fingerprint {})", prints.size(), fingerprint_hex(prints[0]));
}

std::vector<std::string> export_student(TrainingSession& s) {
  const auto out_dir = (std::filesystem::path(s.config().run_dir()) / "export").string();
  const auto& e = s.config().export_config();
  return exporting::export_student(s.export_source(), e.formats, out_dir, e.options());
}

// A run that cannot recover stops with an error instead of skipping to the end and reporting success:
// so many steps in a row with a non-finite loss or gradient that the weights or the data are the cause
// (not a passing spike), or fp16 overflows that halving the loss scale never ends.
class SkipStreaks {
 public:
  static constexpr int64_t kMaxNonfinite = 8, kMaxOverflows = 64;

  void record(TrainingSession& s, int64_t step, const StepResult& r) {
    nonfinite_ = r.outcome == StepOutcome::skipped_nonfinite ? nonfinite_ + 1 : 0;
    overflows_ = r.outcome == StepOutcome::skipped_overflow ? overflows_ + 1 : 0;
    if (nonfinite_ >= kMaxNonfinite)
      fail("train", fmt::format("{} steps in a row ({}-{}) had a non-finite loss or gradient (loss {}, gradient norm "
                                "{}){}; the run cannot recover (lower optim.lr, or check the teacher and the data)",
                                nonfinite_, step - nonfinite_ + 1, step, r.losses.loss, r.grad_norm,
                                nonfinite_weight_note(s)));
    if (overflows_ >= kMaxOverflows)
      fail("train.loss_scale", fmt::format("{} fp16 overflows in a row (steps {}-{}): halving the loss scale to {:.3g} "
                                           "did not bring the gradients back into fp16's range{}",
                                           overflows_, step - overflows_ + 1, step, s.loss_scaler().scale(),
                                           nonfinite_weight_note(s)));
  }

 private:
  static std::string nonfinite_weight_note(TrainingSession& s) {
    torch::NoGradGuard no_grad;
    for (const auto& item : s.student()->named_parameters())
      if (!torch::isfinite(item.value()).all().item<bool>()) return "; the student's " + item.key() + " holds NaN or Inf";
    return "";
  }
  int64_t nonfinite_ = 0, overflows_ = 0;
};

// The steps from the session's step to train.steps, or until a stop. Returns the tokens trained on.
int64_t train_steps(TrainingSession& s, const TrainHooks& hooks, TrainSummary& summary) {
  const auto& train = s.config().train();
  TrainingProgress progress(train.steps, s.step());
  PhaseTimer phases(s.device(), s.config().compute().phase_timing);
  int64_t tokens = 0;
  // With several ranks a stop is only taken where they agree on it (after a step's combine of the
  // ranks), so that no rank waits in a collective for one that has left.
  bool stop_agreed = false;
  const auto stopping = [&] { return s.ranks().distributed() ? stop_agreed : stop_requested(); };
  SkipStreaks streaks;
  while (s.step() < train.steps && !stopping()) {
    const int64_t step = s.step() + 1;
    if (hooks.before_step) hooks.before_step(step, s.monitor());
    const auto start = std::chrono::steady_clock::now();
    const auto result = train_step(s, step, phases);
    stop_agreed = result.stop_agreed;
    streaks.record(s, step, result);
    tokens += result.losses.tokens;
    const double step_seconds = seconds_since(start);
    if (step % train.log_interval == 0 || step == 1 || step == train.steps) log_step(s, step, result, step_seconds, phases);
    if (s.ranks().is_root())
      progress.update(step, result.losses.loss, static_cast<double>(result.losses.tokens) / std::max(1e-9, step_seconds));
    // Mid-run evaluations finish (they are bounded by eval.max_windows): the checkpoint written after a
    // stop must come after its step's records, or the resumed run's records would lack this one.
    if (train.eval_interval > 0 && step % train.eval_interval == 0 && step != train.steps)
      write_eval(s, summary, OnStop::finish);
    const auto interval = s.config().checkpoint().interval;
    if (interval > 0 && step % interval == 0 && step != train.steps) summary.outputs.last_checkpoint = s.save_checkpoint();
  }
  if (s.ranks().is_root()) progress.finish();
  return tokens;
}

TrainSummary train_session(TrainingSession& s, const TrainHooks& hooks) {
  const auto& config = s.config();
  TrainSummary summary;
  const auto start = std::chrono::steady_clock::now();
  const bool started = s.step() > 0 || evaluate_at_start(s, summary);
  const int64_t tokens = started ? train_steps(s, hooks, summary) : 0;
  summary.interrupted = s.step() < config.train().steps;
  if (started) {
    check_replicas_agree(s, summary);
    summary.outputs.last_checkpoint = s.save_checkpoint();
  }
  if (!summary.interrupted) {
    summary.interrupted = !evaluate_at_end(s, summary);
    if (!summary.interrupted && s.ranks().is_root()) summary.outputs.exported = export_student(s);
  } else if (started) {
    spdlog::warn("stopped by signal after step {}; resume with the same command", s.step());
  }
  summary.outputs.baselines = s.run_dir().read_baselines();
  summary.totals = {s.step(), s.skipped_steps(), seconds_since(start), 0.0, peak_rss_mb()};
  summary.totals.tokens_per_second = static_cast<double>(tokens) / std::max(1e-9, summary.totals.wall_seconds);
  summary.ranks.rank = s.ranks().rank();
  summary.ranks.world_size = s.ranks().world_size();
  s.run_dir().write_summary(summary.to_json());
  return summary;
}

}  // namespace

std::string fingerprint_hex(uint64_t fingerprint) { return fmt::format("{:016x}", fingerprint); }

nlohmann::json TrainSummary::to_json() const {
  std::vector<std::string> fingerprints;
  for (const auto f : ranks.replica_fingerprints) fingerprints.push_back(fingerprint_hex(f));
  return {{"world_size", ranks.world_size},
          {"replica_fingerprints", fingerprints},
          {"steps_completed", totals.steps_completed},
          {"interrupted", interrupted},
          {"skipped_steps", totals.skipped_steps},
          {"wall_seconds", totals.wall_seconds},
          {"tokens_per_second", totals.tokens_per_second},
          {"peak_rss_mb", totals.peak_rss_mb},
          {"final_eval", outputs.final_eval},
          {"last_checkpoint", outputs.last_checkpoint},
          {"exported", outputs.exported},
          {"baselines", outputs.baselines}};
}

TrainSummary run_training(const RunConfig& config, const TrainHooks& hooks) {
  install_stop_handlers();
  auto session = TrainingSession::open(config);
  try {
    return train_session(*session, hooks);
  } catch (...) {
    // A fresh run that fails before its first checkpoint (a malformed record under data.strict, say)
    // leaves nothing behind: its directory would hold only a config and partial logs.
    session->run_dir().remove_if_unfinished_fresh_start();
    throw;
  }
}

}  // namespace qkd::train
