#pragma once
// The `monitor` and `freeze` sections of a run config.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace qkd::monitor {

struct MonitorConfig {
  bool enabled = true;
  int64_t interval = 10;       // steps between measurements (other steps cost nothing)
  double spike_factor = 3.0;   // spike: value > spike_factor x rolling median of the series
  int64_t window = 8;          // rolling median over this many previous measurements
  int64_t min_history = 3;     // measurements needed before spikes are judged
  double loss_factor = 2.0;    // KD-loss rise over its running minimum that counts as instability
};

struct FreezeConfig {
  // none | ov (o_proj+v_proj from step 0) | auto (monitor-triggered) | modules (the list below)
  std::string policy = "none";
  std::vector<std::string> modules;      // policy "modules": substrings of module names, e.g. "v_proj"
  std::string scope = "all";             // auto: freeze o/v in the spiking "layer" or in "all" layers
  std::vector<std::string> auto_watch = {"o_proj", "v_proj"};  // auto: projections whose spikes trigger
};

MonitorConfig monitor_config_from_json(const nlohmann::json& json, const std::string& where = "monitor");
FreezeConfig freeze_config_from_json(const nlohmann::json& json, const std::string& where = "freeze");
nlohmann::json to_json(const MonitorConfig& config);
nlohmann::json to_json(const FreezeConfig& config);

}  // namespace qkd::monitor
