#pragma once
// Turns monitored series into instability events: a value above spike_factor x the rolling median of
// its last `window` values, a NaN/Inf value, or a KD loss above loss_factor x its running minimum.
#include <nlohmann/json.hpp>

#include <deque>
#include <map>
#include <string>
#include <vector>

#include "qkd/common/enum_table.h"
#include "qkd/monitor/monitor_config.h"
#include "qkd/monitor/series_key.h"

namespace qkd::monitor {

enum class EventKind { spike, nonfinite, loss_rise };
const EnumTable<EventKind>& event_kinds();  // "spike" | "nonfinite" | "loss_rise"

struct InstabilityEvent {
  int64_t step = 0;
  EventKind kind = EventKind::spike;
  SeriesKey series;
  double value = 0.0;
  double baseline = 0.0;
  nlohmann::json to_json() const;  // {"step", "kind", "series": name, "value", "baseline"}
};

// The median of `values` (the mean of the middle two for an even count; 0 for none): the baseline a
// spike is judged against, and what the freeze analysis compares projections with.
double median(std::vector<double> values);

class InstabilityDetector {
 public:
  explicit InstabilityDetector(MonitorConfig config) : config_(config) {}

  // Judges `value` against the series' history, then adds it to the history.
  void observe(int64_t step, const SeriesKey& series, double value, std::vector<InstabilityEvent>& events);
  // KD loss: judged every step (free), reported once per excursion above the threshold.
  void observe_loss(int64_t step, double loss, std::vector<InstabilityEvent>& events);
  // Drops the history of every series of one projection: a released projection is judged against its
  // new regime, not against the values from before its freeze.
  void forget(int64_t layer, const std::string& projection);

  nlohmann::json state() const;
  void load_state(const nlohmann::json& state);

 private:
  MonitorConfig config_;
  std::map<SeriesKey, std::deque<double>> history_;
  double loss_min_ = 0.0;
  bool loss_seen_ = false;
  bool loss_high_ = false;
};

}  // namespace qkd::monitor
