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
#include "qkd/dist/replicas.h"
#include "qkd/freeze/freeze_controller.h"
#include "qkd/kernels/parallel_tasks.h"
#include "qkd/train/grad_utils.h"
#include "qkd/train/lr_schedule.h"
#include "qkd/train/phase_timer.h"
#include "qkd/train/row_shards.h"
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

// Every rank draws the global micro-batch (micro_batch windows per rank) and keeps its own rows, so
// the stream's cursor is the run's, whatever the number of ranks that resumes it.
MicroBatch draw_micro_batch(TrainingSession& s, PhaseTimer& phases) {
  const auto timed = phases.measure(Phase::data);
  const auto& ranks = *s.ranks;
  const auto global = s.data->next_marked_batch(s.config.train.micro_batch * ranks.world_size());
  return prepare_micro_batch(s, {dist::local_share(global.input_ids, ranks.rank(), ranks.world_size()),
                                 dist::local_share(global.marks, ranks.rank(), ranks.world_size())});
}

// Where backward leaves the gradients: accumulated into the parameters' .grad, or (a row shard)
// returned per parameter, so that shards computed at once are added in a fixed order.
struct GradientSink {
  const std::vector<torch::Tensor>* parameters = nullptr;  // null: into .grad
  std::vector<torch::Tensor> captured;
};

// The frozen teacher and the fake-quantized student see the same tokens; the loss gradient flows into
// the student only. `cached`: the teacher's targets for these rows, read beforehand (a cache's top-k
// is read in stream order, once per micro-batch); otherwise the teacher runs here.
loss::KdLossResult distill(TrainingSession& s, const MicroBatch& batch, std::optional<TeacherTargets> cached,
                           double loss_multiplier, PhaseTimer& phases, GradientSink& sink) {
  torch::Tensor student;
  TeacherTargets teacher;
  loss::KdLossResult result;
  if (cached) {
    teacher = std::move(*cached);
  } else {
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

std::vector<torch::Tensor> trainable_parameters(TrainingSession& s) {
  std::vector<torch::Tensor> trainable;
  for (const auto& p : s.student->parameters())
    if (p.requires_grad()) trainable.push_back(p);
  return trainable;
}

// The micro-batch as `shards` row shards computed at once, one per core (train/row_shards.h). The
// phases logged are those of shard 0, which run beside the others.
loss::KdLossResult distill_in_row_shards(TrainingSession& s, const MicroBatch& batch, int64_t shards,
                                         double loss_multiplier, PhaseTimer& phases) {
  const auto whole = loss::loss_denominators(batch.labels, s.config.kd);
  const auto ranges = row_ranges(batch.input_ids.size(0), shards);
  std::optional<TeacherTargets> cached;
  if (s.teacher_cache) {
    const auto timed = phases.measure(Phase::teacher_forward);
    cached = teacher_targets(s, batch);
  }
  const auto parameters = trainable_parameters(s);
  std::vector<loss::KdLossResult> results(ranges.size());
  std::vector<GradientSink> sinks(ranges.size(), GradientSink{&parameters, {}});
  std::vector<PhaseTimer> shard_phases(ranges.size(), PhaseTimer(s.device, false));
  kernels::run_on_cores(shards, [&](int64_t i) {
    const auto range = ranges[static_cast<size_t>(i)];
    std::optional<TeacherTargets> rows;
    if (cached) rows = teacher_target_rows(*cached, range.begin, range.count);
    results[i] = distill(s, micro_batch_rows(batch, range, whole), std::move(rows), loss_multiplier,
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

// One micro-batch through teacher, student, loss and backward: in one pass, or as row shards on
// several cores at once.
void distill_micro_batch(TrainingSession& s, int64_t step, StepLosses& totals, double loss_multiplier,
                         PhaseTimer& phases) {
  const auto batch = draw_micro_batch(s, phases);
  const int64_t shards = row_shard_count(s, batch, step);
  GradientSink into_grad;
  const auto result = shards > 1 ? distill_in_row_shards(s, batch, shards, loss_multiplier, phases)
                                 : distill(s, batch, std::nullopt, loss_multiplier, phases, into_grad);
  const double share = 1.0 / static_cast<double>(s.config.train.grad_accum);
  totals.loss += result.loss.item<double>() * share;
  totals.divergence += result.divergence * share;
  totals.cross_entropy += result.cross_entropy * share;
  totals.tokens += batch.input_ids.numel();
}

// The step's gradients and totals as the whole run sees them: gradients averaged over the ranks (every
// rank's loss is a mean over the same number of tokens, so the average is the global-batch gradient),
// losses averaged, tokens summed, and a stop requested on any rank becomes a stop on all of them.
// Returns whether any rank asked to stop (single process: this one).
bool combine_ranks(TrainingSession& s, StepLosses& losses) {
  auto& ranks = *s.ranks;
  if (!ranks.distributed()) return stop_requested();
  auto trainable = trainable_parameters(s);
  dist::average_gradients(ranks, trainable, static_cast<int64_t>(s.config.dist.bucket_mb * 1024 * 1024));
  std::vector<torch::Tensor> totals{torch::tensor({losses.loss, losses.divergence, losses.cross_entropy,
                                                   static_cast<double>(losses.tokens), stop_requested() ? 1.0 : 0.0},
                                                  torch::kFloat64)};
  ranks.all_reduce_sum(totals);
  const auto t = totals[0].accessor<double, 1>();
  const double share = 1.0 / ranks.world_size();
  losses = {t[0] * share, t[1] * share, t[2] * share, static_cast<int64_t>(t[3])};
  if (t[4] > 0.0) request_stop();
  return t[4] > 0.0;
}

// A sharded optimizer updated this rank's share: the owners send the new weights to every rank, and the
// update norms the monitor asked for (each measured by its parameter's owner) are summed over the ranks.
void share_updates(TrainingSession& s, std::map<std::string, double>& update_norms) {
  if (s.optimizer_owners.empty()) return;
  share_updated_parameters(s);
  const auto wanted = s.monitor->updates_wanted();
  if (wanted.empty()) return;
  // Per name: its norm and 1 on the rank that updated it, 0 and 0 elsewhere; summed over the ranks.
  auto sums = torch::zeros({static_cast<int64_t>(wanted.size()), 2}, torch::kFloat64);
  for (size_t i = 0; i < wanted.size(); ++i)
    if (const auto it = update_norms.find(wanted[i]); it != update_norms.end()) {
      sums[static_cast<int64_t>(i)][0] = it->second;
      sums[static_cast<int64_t>(i)][1] = 1.0;
    }
  std::vector<torch::Tensor> buffer{sums};
  s.ranks->all_reduce_sum(buffer);
  update_norms.clear();
  for (size_t i = 0; i < wanted.size(); ++i)
    if (sums[static_cast<int64_t>(i)][1].item<double>() > 0.0)
      update_norms[wanted[i]] = sums[static_cast<int64_t>(i)][0].item<double>();
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

// Every rank must end with the same student (same gradients, same updates): a 64-bit fingerprint of
// each replica's weights, compared across ranks, catches any that drifted before it is saved.
void check_replicas_agree(TrainingSession& s, TrainSummary& summary) {
  if (!s.ranks->distributed()) return;
  summary.replica_fingerprints = dist::replica_fingerprints(*s.ranks, replicated_state(s));
  const auto& prints = summary.replica_fingerprints;
  for (size_t r = 1; r < prints.size(); ++r)
    if (prints[r] != prints[0])
      fail("distributed", "rank " + std::to_string(r) + "'s student differs from rank 0's after step " +
                              std::to_string(s.step) + " (weight fingerprints " + fingerprint_hex(prints[r]) + " and " +
                              fingerprint_hex(prints[0]) + "); the last checkpoint holds rank 0's");
  spdlog::info("the {} replicas agree bitwise (weight fingerprint {})", prints.size(), fingerprint_hex(prints[0]));
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
    if (s.config.eval.baselines && s.ranks->is_root()) write_baselines(s);
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

std::string fingerprint_hex(uint64_t fingerprint) { return fmt::format("{:016x}", fingerprint); }

nlohmann::json TrainSummary::to_json() const {
  std::vector<std::string> fingerprints;
  for (const auto f : replica_fingerprints) fingerprints.push_back(fingerprint_hex(f));
  return {{"world_size", world_size},
          {"replica_fingerprints", fingerprints},
          {"steps_completed", steps_completed},
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
  // With several ranks a stop is only taken where they agree on it (after a step's combine_ranks), so
  // that no rank waits in a collective for one that has left.
  bool stop_agreed = false;
  const auto stopping = [&] { return s.ranks->distributed() ? stop_agreed : stop_requested(); };
  while (started && s.step < train.steps && !stopping()) {
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
    for (int64_t micro = 0; micro < train.grad_accum; ++micro) distill_micro_batch(s, step, losses, multiplier, phases);
    {
      const auto timed = phases.measure(Phase::communication);
      stop_agreed = combine_ranks(s, losses);
    }
    auto grads = [&] {
      const auto timed = phases.measure(Phase::gradients);
      return check_gradients(s, losses);
    }();
    if (s.loss_scaler.enabled() && !grads.finite) {
      s.monitor->abandon_step();
      skip_step(s, step, fmt::format("fp16 loss scale {} overflowed", s.loss_scaler.scale()), grads.norm);
    } else if (judge_and_freeze(s, step, lr, losses, grads, phases)) {
      if (grads.finite) {
        {
          const auto timed = phases.measure(Phase::optimizer);
          if (config.optim.grad_clip > 0.0) clip_gradients(*s.student, grads.norm, config.optim.grad_clip);
          update_norms = s.optimizer->step(lr, s.monitor->updates_wanted());
        }
        const auto timed = phases.measure(Phase::communication);
        share_updates(s, update_norms);
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
    if (s.ranks->is_root()) progress.update(step, losses.loss, tokens_per_s);
    // Mid-run evaluations finish (they are bounded by eval.max_windows): the checkpoint written after a
    // stop must come after its step's records, or the resumed run's records would lack this one.
    if (train.eval_interval > 0 && step % train.eval_interval == 0 && step != train.steps)
      write_eval(s, summary, OnStop::finish);
    if (config.checkpoint.interval > 0 && step % config.checkpoint.interval == 0 && step != train.steps)
      summary.last_checkpoint = save_checkpoint(s);
  }
  if (s.ranks->is_root()) progress.finish();
  summary.interrupted = s.step < train.steps;
  if (started) check_replicas_agree(s, summary);
  if (started) summary.last_checkpoint = save_checkpoint(s);
  if (!summary.interrupted) {
    summary.interrupted = !evaluate_at_end(s, summary);
    if (!summary.interrupted && s.ranks->is_root()) summary.exported = export_student(s);
  } else if (started) {
    spdlog::warn("stopped by signal after step {}; resume with the same command", s.step);
  }
  summary.baselines = read_baselines(config.run_dir);
  summary.steps_completed = s.step;
  summary.skipped_steps = s.skipped_steps;
  summary.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  summary.tokens_per_second = static_cast<double>(tokens_seen) / std::max(1e-9, summary.wall_seconds);
  summary.peak_rss_mb = peak_rss_mb();
  summary.rank = s.ranks->rank();
  summary.world_size = s.ranks->world_size();
  if (s.ranks->is_root())
    write_text_atomically((std::filesystem::path(config.run_dir) / "summary.json").string(),
                          summary.to_json().dump(2) + "\n");
  return summary;
}

}  // namespace qkd::train
