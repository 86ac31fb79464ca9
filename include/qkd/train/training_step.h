#pragma once
// One optimizer step of KD-QAT, in the order of the algorithm: release the auto-frozen projections
// whose learning rate has decayed; for each micro-batch teacher forward, student forward, loss and
// backward (distiller.h); gradients combined over the ranks; the gradient check (an fp16 overflow skips
// the step unjudged); the monitor's judgement; the freeze of what destabilized (before the update);
// clip and the optimizer's update; and the monitor's record of the step.
#include <cstdint>

#include "qkd/train/phase_timer.h"
#include "qkd/train/training_session.h"

namespace qkd::train {

// The step's totals as the whole run sees them (averaged over micro-batches and ranks).
struct StepLosses {
  double loss = 0.0, divergence = 0.0, cross_entropy = 0.0;
  int64_t tokens = 0;  // summed over the ranks
};

// What became of the step's update.
enum class StepOutcome { updated, skipped_overflow, skipped_nonfinite, skipped_rollback };

struct StepResult {
  StepLosses losses;
  StepOutcome outcome = StepOutcome::updated;
  double lr = 0.0;
  double grad_norm = 0.0;    // after any freeze this step; NaN/Inf when the gradients were not finite
  bool stop_agreed = false;  // a stop was requested on some rank: every rank stops after this step
};

// Step `step` (1-based); the session's step counter becomes `step`.
StepResult train_step(TrainingSession& session, int64_t step, PhaseTimer& phases);

}  // namespace qkd::train
