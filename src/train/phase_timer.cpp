#include "qkd/train/phase_timer.h"

#include "qkd/common/torch_compat.h"

namespace qkd::train {

const EnumTable<Phase>& phases() {
  static const EnumTable<Phase> table{{Phase::data, "data"},
                                      {Phase::teacher_forward, "teacher_forward"},
                                      {Phase::student_forward, "student_forward"},
                                      {Phase::loss, "loss"},
                                      {Phase::backward, "backward"},
                                      {Phase::communication, "communication"},
                                      {Phase::gradients, "gradients"},
                                      {Phase::monitor, "monitor"},
                                      {Phase::optimizer, "optimizer"}};
  return table;
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
  for (size_t i = 0; i < kPhaseCount; ++i) out[phases().name(static_cast<Phase>(i))] = seconds_[i];
  return out;
}

}  // namespace qkd::train
