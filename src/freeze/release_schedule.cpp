#include "qkd/freeze/release_schedule.h"

namespace qkd::freeze {

void ReleaseSchedule::note_freeze(const std::vector<std::string>& modules, double lr) {
  if (factor_ <= 0.0) return;
  for (const auto& m : modules) lr_at_freeze_[m] = lr;
}

std::vector<std::string> ReleaseSchedule::take_due(double lr, int64_t calm_steps) {
  std::vector<std::string> out;
  if (calm_steps < calm_needed_) return out;
  for (auto it = lr_at_freeze_.begin(); it != lr_at_freeze_.end();) {
    if (lr <= factor_ * it->second) {
      out.push_back(it->first);
      it = lr_at_freeze_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

void ReleaseSchedule::load_state(const nlohmann::json& state) {
  lr_at_freeze_ = state.is_null() ? std::map<std::string, double>{} : state.get<std::map<std::string, double>>();
}

}  // namespace qkd::freeze
