#pragma once
// auto's signal-propagation analysis, run once by a fresh run before its first update: the first
// freeze.analysis_batches micro-batches of the training stream through teacher, student, loss and
// backward, the monitor's statistics of each (freeze/signal_analysis.h says what is measured and the
// rule), and the freeze controller's decision from them, logged (events.jsonl "analysis", the console)
// and applied. A resumed run does not run it again: the checkpoint holds what it froze.
#include "qkd/train/training_session.h"

namespace qkd::train {

// Nothing unless the freeze policy asks for an analysis. Draws from a fresh copy of the training stream
// (the run's own stream and cursor are untouched, so step 1 trains on the same data as without it),
// leaves no gradient behind and moves no weight.
void run_freeze_analysis(TrainingSession& s);

}  // namespace qkd::train
