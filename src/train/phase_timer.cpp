#include "qkd/train/phase_timer.h"

#include "qkd/common/torch_compat.h"

namespace qkd::train {

const char* phase_name(Phase phase) {
  switch (phase) {
    case Phase::data: return "data";
    case Phase::teacher_forward: return "teacher_forward";
    case Phase::student_forward: return "student_forward";
    case Phase::loss: return "loss";
    case Phase::backward: return "backward";
    case Phase::communication: return "communication";
    case Phase::gradients: return "gradients";
    case Phase::monitor: return "monitor";
    case Phase::optimizer: return "optimizer";
  }
  return "?";
}

PhaseTimer::Scope::Scope(PhaseTimer& timer, Phase phase) : timer_(timer), phase_(phase) {
  timer_.synchronize();
  start_ = std::chrono::steady_clock::now();
}

PhaseTimer::Scope::~Scope() {
  timer_.synchronize();
  timer_.seconds_[static_cast<size_t>(phase_)] +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void PhaseTimer::synchronize() const {
  if (synchronize_) compat::synchronize(device_);
}

nlohmann::json PhaseTimer::to_json() const {
  nlohmann::json out = nlohmann::json::object();
  for (size_t i = 0; i < kPhaseCount; ++i) out[phase_name(static_cast<Phase>(i))] = seconds_[i];
  return out;
}

}  // namespace qkd::train
