#pragma once
// Turns monitored series into instability events: a value above spike_factor x the rolling median of
// its last `window` values, a NaN/Inf value, or a KD loss above loss_factor x its running minimum.
#include <nlohmann/json.hpp>

#include <deque>
#include <map>
#include <string>
#include <vector>

#include "qkd/monitor/monitor_config.h"

namespace qkd::monitor {

struct InstabilityEvent {
  int64_t step = 0;
  std::string kind;    // spike | nonfinite | loss_rise
  std::string series;  // "layer3.v_proj.grad_sq", "kd_loss"
  double value = 0.0;
  double baseline = 0.0;
  nlohmann::json to_json() const;
};

class InstabilityDetector {
 public:
  explicit InstabilityDetector(MonitorConfig config) : config_(config) {}

  // Judges `value` against the series' history, then adds it to the history.
  void observe(int64_t step, const std::string& series, double value, std::vector<InstabilityEvent>& events);
  // KD loss: judged every step (free), reported once per excursion above the threshold.
  void observe_loss(int64_t step, double loss, std::vector<InstabilityEvent>& events);
  // Drops the history of every series starting with `prefix` ("layer3.v_proj."): a released projection
  // is judged against its new regime, not against the values from before its freeze.
  void forget(const std::string& prefix);

  nlohmann::json state() const;
  void load_state(const nlohmann::json& state);

 private:
  MonitorConfig config_;
  std::map<std::string, std::deque<double>> history_;
  double loss_min_ = 0.0;
  bool loss_seen_ = false;
  bool loss_high_ = false;
};

}  // namespace qkd::monitor
