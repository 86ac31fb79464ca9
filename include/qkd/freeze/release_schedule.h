#pragma once
// auto: when an auto-frozen projection trains again. It remembers the learning rate at its freeze and
// hands it back once the rate has decayed to release_lr_factor of that and the run has been calm for
// release_calm_steps steps in a row.
#include <nlohmann/json.hpp>

#include <limits>
#include <map>
#include <string>
#include <vector>

namespace qkd::freeze {

class ReleaseSchedule {
 public:
  explicit ReleaseSchedule(double release_lr_factor = 0.0, int64_t calm_steps_needed = 0)
      : factor_(release_lr_factor), calm_needed_(calm_steps_needed) {}

  // Nothing is scheduled when the factor is 0 (auto freezes are then for good).
  void note_freeze(const std::vector<std::string>& modules, double lr);
  // The modules due at `lr` after `calm_steps` steps in a row without an instability event, each
  // handed back once.
  std::vector<std::string> take_due(double lr, int64_t calm_steps = std::numeric_limits<int64_t>::max());

  nlohmann::json state() const { return lr_at_freeze_; }
  void load_state(const nlohmann::json& state);

 private:
  double factor_;
  int64_t calm_needed_;
  std::map<std::string, double> lr_at_freeze_;
};

}  // namespace qkd::freeze
