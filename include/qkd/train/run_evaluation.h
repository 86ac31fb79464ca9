#pragma once
// Validation inside a run: the student on the eval section's files (at the start, every
// train.eval_interval steps and at the end), and the baselines a fresh run is compared with (the
// teacher's and the round-to-nearest student's perplexity).
#include <nlohmann/json.hpp>

#include "qkd/train/training_session.h"

namespace qkd::train {

// What an evaluation does when SIGINT/SIGTERM arrives during it: `finish` it, or `abandon` it by
// throwing StopRequested before the next batch.
enum class OnStop { finish, abandon };

// results_to_json of the student's evaluation; null when nothing is configured.
nlohmann::json evaluate_student(TrainingSession& session, OnStop on_stop);
// Perplexity of the teacher and of the student as it is now, on eval.ppl only:
// {"teacher": {"<file>": ppl}, "student": {...}} (teacher null with a cached teacher); null when
// eval.ppl is empty. Abandoned on a stop.
nlohmann::json evaluate_perplexity_baselines(TrainingSession& session);

}  // namespace qkd::train
