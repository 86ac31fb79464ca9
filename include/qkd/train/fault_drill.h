#pragma once
// Fault drills through the real binary, set by environment variable so that one rank of several can
// get one alone. QKD_DRILL_GRADIENT_SPIKE="STEP:SERIES:FACTOR" (SERIES as signal.jsonl names it,
// e.g. "layer0.o_proj.grad_sq") multiplies that gradient statistic by FACTOR when step STEP is
// judged, in this process only: what TrainHooks do for in-process tests.
#include <string>

#include "qkd/train/trainer.h"

namespace qkd::train {

inline constexpr const char* kGradientSpikeDrill = "QKD_DRILL_GRADIENT_SPIKE";

// Throws qkd::Error naming the variable for a malformed spec.
TrainHooks gradient_spike_drill(const std::string& spec);
// The drills the environment asks for (none: empty hooks).
TrainHooks drill_hooks_from_environment();

}  // namespace qkd::train
