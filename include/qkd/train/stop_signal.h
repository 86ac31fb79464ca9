#pragma once
// SIGINT/SIGTERM ask the trainer to finish the current step, checkpoint and exit 0.
namespace qkd::train {

void install_stop_handlers();   // idempotent
bool stop_requested();
void request_stop();            // what the handlers do; also used by tests
void clear_stop_request();

}  // namespace qkd::train
