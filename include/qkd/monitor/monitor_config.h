#pragma once
// The `monitor` section of a run config.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "qkd/common/config_fields.h"

namespace qkd::monitor {

struct MonitorConfig {
  bool enabled = true;
  int64_t interval = 10;      // steps between measurements (other steps cost nothing)
  double spike_factor = 3.0;  // spike: value > spike_factor x rolling median of the series
  int64_t window = 8;         // rolling median over this many previous measurements
  // Measurements needed before spikes are judged. One is enough: without warm-up the first update is
  // what destabilizes o/v, and the step-2 gradients are the first chance to see it (docs/ablation.md).
  int64_t min_history = 1;
  double loss_factor = 2.0;  // KD-loss rise over its running minimum that counts as instability

  template <class Fields>
  void fields(Fields& f) {
    f.flag("enabled", enabled);
    f.integer("interval", interval, 1, 1'000'000);
    f.number("spike_factor", spike_factor, 1.0, 1e6);
    f.integer("window", window, 1, 10'000);
    f.integer("min_history", min_history, 1, 10'000);
    f.number("loss_factor", loss_factor, 1.0, 1e6);
  }
};

inline MonitorConfig monitor_config_from_json(const nlohmann::json& json, const std::string& where = "monitor") {
  return read_section<MonitorConfig>(json, where);
}
inline nlohmann::json to_json(const MonitorConfig& config) { return write_section(config); }

}  // namespace qkd::monitor
