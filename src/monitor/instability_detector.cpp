#include "qkd/monitor/instability_detector.h"

#include <algorithm>
#include <cmath>

namespace qkd::monitor {

const EnumTable<EventKind>& event_kinds() {
  static const EnumTable<EventKind> table{
      {EventKind::spike, "spike"}, {EventKind::nonfinite, "nonfinite"}, {EventKind::loss_rise, "loss_rise"}};
  return table;
}

nlohmann::json InstabilityEvent::to_json() const {
  // JSON has no NaN or Infinity: those are written as the strings "nan", "inf", "-inf" (never "-nan").
  auto finite_or_string = [](double v) {
    if (std::isfinite(v)) return nlohmann::json(v);
    return nlohmann::json(std::isnan(v) ? "nan" : v > 0 ? "inf" : "-inf");
  };
  return {{"step", step},
          {"kind", event_kinds().name(kind)},
          {"series", series.name()},
          {"value", finite_or_string(value)},
          {"baseline", finite_or_string(baseline)}};
}

double median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

void InstabilityDetector::observe(int64_t step, const SeriesKey& series, double value,
                                  std::vector<InstabilityEvent>& events) {
  auto& history = history_[series];
  if (!std::isfinite(value)) {
    events.push_back({step, EventKind::nonfinite, series, value, history.empty() ? 0.0 : history.back()});
    return;  // a NaN must not poison the baseline
  }
  if (static_cast<int64_t>(history.size()) >= config_.min_history) {
    const double baseline = median({history.begin(), history.end()});
    if (baseline > 0.0 && value > config_.spike_factor * baseline)
      events.push_back({step, EventKind::spike, series, value, baseline});
  }
  history.push_back(value);
  while (static_cast<int64_t>(history.size()) > config_.window) history.pop_front();
}

void InstabilityDetector::observe_loss(int64_t step, double loss, std::vector<InstabilityEvent>& events) {
  if (!std::isfinite(loss)) {
    events.push_back({step, EventKind::nonfinite, SeriesKey::kd_loss(), loss, loss_min_});
    return;
  }
  if (!loss_seen_ || loss < loss_min_) loss_min_ = loss;
  loss_seen_ = true;
  const bool high = loss > config_.loss_factor * loss_min_;
  if (high && !loss_high_) events.push_back({step, EventKind::loss_rise, SeriesKey::kd_loss(), loss, loss_min_});
  loss_high_ = high;
}

void InstabilityDetector::forget(int64_t layer, const std::string& projection) {
  for (auto it = history_.begin(); it != history_.end();)
    it = it->first.layer == layer && it->first.projection == projection ? history_.erase(it) : std::next(it);
}

nlohmann::json InstabilityDetector::state() const {
  nlohmann::json series = nlohmann::json::object();
  for (const auto& [key, values] : history_) series[key.name()] = std::vector<double>(values.begin(), values.end());
  return {{"series", series}, {"loss_min", loss_min_}, {"loss_seen", loss_seen_}, {"loss_high", loss_high_}};
}

void InstabilityDetector::load_state(const nlohmann::json& state) {
  history_.clear();
  for (const auto& [name, values] : state.at("series").items()) {
    const auto v = values.get<std::vector<double>>();
    history_[SeriesKey::parse(name)] = std::deque<double>(v.begin(), v.end());
  }
  loss_min_ = state.at("loss_min").get<double>();
  loss_seen_ = state.at("loss_seen").get<bool>();
  loss_high_ = state.at("loss_high").get<bool>();
}

}  // namespace qkd::monitor
