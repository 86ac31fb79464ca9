#include "qkd/train/training_step.h"

#include <spdlog/spdlog.h>

#include <cmath>

#include "qkd/distributed/replicas.h"
#include "qkd/optim/lr_schedule.h"
#include "qkd/train/grad_utils.h"
#include "qkd/train/row_shards.h"
#include "qkd/train/stop_signal.h"

namespace qkd::train {

namespace {

MicroBatch draw_micro_batch(TrainingSession& s, PhaseTimer& phases) {
  const auto timed = phases.measure(Phase::data);
  return s.local_micro_batch(s.data());
}

// One micro-batch through teacher, student, loss and backward: in one pass, or as row shards on
// several cores at once.
void distill_micro_batch(TrainingSession& s, int64_t step, StepLosses& totals, double loss_multiplier,
                         PhaseTimer& phases) {
  const auto batch = draw_micro_batch(s, phases);
  const int64_t shards =
      row_shard_count(s.config().compute(), s.device(), batch.input_ids.size(0), s.monitor().measures(step));
  const auto result = s.distiller().distill(batch, shards, loss_multiplier, phases);
  const double share = 1.0 / static_cast<double>(s.config().train().grad_accum);
  totals.loss += result.loss.item<double>() * share;
  totals.divergence += result.divergence * share;
  totals.cross_entropy += result.cross_entropy * share;
  totals.tokens += batch.input_ids.numel();
}

// The step's gradients and totals as the whole run sees them: gradients reduced over the ranks,
// losses averaged, tokens summed, and a stop requested on any rank becomes a stop on all of them.
// Returns whether any rank asked to stop (single process: this one).
bool combine_ranks(TrainingSession& s, StepLosses& losses) {
  auto& ranks = s.ranks();
  if (!ranks.distributed()) return stop_requested();
  s.optimizer().reduce_gradients(trainable_parameters(*s.student()));
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

// The gradients of a step that may update: finite, and (fp16) not overflowed. An fp16 overflow is
// the loss scale's fault, not the model's: the monitor and the freeze policy never see that step.
struct GradientCheck {
  double norm = 0.0;
  bool finite = true;
};

GradientCheck check_gradients(TrainingSession& s, const StepLosses& losses) {
  if (s.loss_scaler().enabled()) unscale_gradients(*s.student(), s.loss_scaler().scale());
  const double norm = global_grad_norm(*s.student());
  return {norm, std::isfinite(norm) && std::isfinite(losses.loss)};
}

void skip_step(TrainingSession& s, int64_t step, const std::string& reason, double grad_norm) {
  s.count_skipped_step();
  s.run_dir().events().write({{"step", step},
                              {"kind", "skip"},
                              {"reason", reason},
                              {"grad_norm", std::isfinite(grad_norm) ? nlohmann::json(grad_norm) : nlohmann::json()}});
}

void log_events(TrainingSession& s, const std::vector<monitor::InstabilityEvent>& events) {
  for (const auto& e : events) {
    spdlog::warn("step {}: {} in {} (value {:.4g}, baseline {:.4g})", e.step, monitor::event_kinds().name(e.kind),
                 e.series.name(), e.value, e.baseline);
    s.run_dir().events().write(e.to_json());
  }
}

// Judges the step's gradients and lets auto freeze react before the update. Returns whether the
// update goes ahead: a rollback skips it, because its gradients were computed at the destabilized point.
bool judge_and_freeze(TrainingSession& s, int64_t step, double lr, const StepLosses& losses, GradientCheck& grads,
                      PhaseTimer& phases) {
  const auto events = [&] {
    const auto timed = phases.measure(Phase::monitor);
    return s.monitor().judge_gradients(step, losses.divergence);
  }();
  log_events(s, events);
  const auto reaction = s.freeze().react(events, step, lr);
  if (!reaction.change) {
    if (grads.finite && s.monitor().judges(step)) s.freeze().keep_calm_weights();
    return true;
  }
  s.log_freeze_change(*reaction.change);
  grads.norm = global_grad_norm(*s.student());  // the frozen projections' gradients are gone
  grads.finite = std::isfinite(grads.norm) && std::isfinite(losses.loss);
  if (!reaction.skip_update) return true;
  s.count_skipped_step();
  s.run_dir().events().write({{"step", step},
                              {"kind", "skip"},
                              {"reason", "auto freeze rolled back the destabilized projections"},
                              {"rolled_back", reaction.rolled_back}});
  return false;
}

// Clip and update; the update norms the monitor asked for (measured by each parameter's owner).
std::map<std::string, double> update(TrainingSession& s, double lr, double grad_norm, PhaseTimer& phases) {
  const auto measure = s.monitor().updates_wanted();
  std::map<std::string, double> update_norms;
  {
    const auto timed = phases.measure(Phase::optimizer);
    const double clip = s.config().optim().grad_clip;
    if (clip > 0.0) clip_gradients(*s.student(), grad_norm, clip);
    update_norms = s.optimizer().step(lr, measure);
  }
  const auto timed = phases.measure(Phase::communication);
  s.optimizer().share_updates(update_norms, measure);
  return update_norms;
}

}  // namespace

StepResult train_step(TrainingSession& s, int64_t step, PhaseTimer& phases) {
  const auto& train = s.config().train();
  StepResult out;
  out.lr = optim::learning_rate_at(s.step(), train.steps, s.config().optim().lr_schedule());
  if (const auto release = s.freeze().release_due(step, out.lr)) {
    s.monitor().forget(release->modules);  // their series start afresh, not against pre-freeze values
    s.log_freeze_change(*release);
  }
  const double multiplier = s.loss_scaler().scale() / static_cast<double>(train.grad_accum);
  std::map<std::string, double> update_norms;  // what the monitor asked the optimizer to measure
  phases.reset();
  s.monitor().begin_step(step);
  for (int64_t micro = 0; micro < train.grad_accum; ++micro) distill_micro_batch(s, step, out.losses, multiplier, phases);
  {
    const auto timed = phases.measure(Phase::communication);
    out.stop_agreed = combine_ranks(s, out.losses);
  }
  auto grads = [&] {
    const auto timed = phases.measure(Phase::gradients);
    return check_gradients(s, out.losses);
  }();
  if (s.loss_scaler().enabled() && !grads.finite) {
    s.monitor().abandon_step();
    skip_step(s, step, fmt::format("fp16 loss scale {} overflowed", s.loss_scaler().scale()), grads.norm);
    out.outcome = StepOutcome::skipped_overflow;
  } else if (!judge_and_freeze(s, step, out.lr, out.losses, grads, phases)) {
    out.outcome = StepOutcome::skipped_rollback;
  } else if (grads.finite) {
    update_norms = update(s, out.lr, grads.norm, phases);
  } else {
    skip_step(s, step, "non-finite loss or gradient", grads.norm);
    out.outcome = StepOutcome::skipped_nonfinite;
  }
  s.loss_scaler().update(grads.finite);
  {
    const auto timed = phases.measure(Phase::optimizer);
    s.optimizer().zero_grad();
  }
  s.complete_step();
  const auto signal_record = [&] {
    const auto timed = phases.measure(Phase::monitor);
    return s.monitor().end_step(step, update_norms);
  }();
  if (!signal_record.is_null()) s.run_dir().signal().write(signal_record);
  out.grad_norm = grads.norm;
  return out;
}

}  // namespace qkd::train
