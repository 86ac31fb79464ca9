#pragma once
// SIGINT/SIGTERM ask the trainer to finish the current step, checkpoint and exit 0.
#include <stdexcept>

namespace qkd::train {

void install_stop_handlers();  // idempotent
bool stop_requested();
void request_stop();  // what the handlers do; also used by tests
void clear_stop_request();

// Thrown by work that a stop request abandons rather than finishes (the evaluations around training,
// which can take minutes on a large eval set).
struct StopRequested : std::runtime_error {
  StopRequested() : std::runtime_error("stopped by signal") {}
};
void throw_if_stop_requested();

}  // namespace qkd::train
