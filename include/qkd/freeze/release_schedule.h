#pragma once
// auto: when an auto-frozen projection trains again. It remembers the learning rate at its freeze and
// hands it back once the rate has decayed to release_lr_factor of that.
#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

namespace qkd::freeze {

class ReleaseSchedule {
 public:
  explicit ReleaseSchedule(double release_lr_factor = 0.0) : factor_(release_lr_factor) {}

  // Nothing is scheduled when the factor is 0 (auto freezes are then for good).
  void note_freeze(const std::vector<std::string>& modules, double lr);
  // The modules due at `lr`, each handed back once.
  std::vector<std::string> take_due(double lr);

  nlohmann::json state() const { return lr_at_freeze_; }
  void load_state(const nlohmann::json& state);

 private:
  double factor_;
  std::map<std::string, double> lr_at_freeze_;
};

}  // namespace qkd::freeze
