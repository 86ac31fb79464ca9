#include "qkd/train/fault_drill.h"

#include <spdlog/spdlog.h>

#include <cstdlib>

#include "qkd/common/error.h"
#include "qkd/monitor/series_key.h"

namespace qkd::train {

TrainHooks gradient_spike_drill(const std::string& spec) {
  const auto first = spec.find(':'), last = spec.rfind(':');
  if (first == std::string::npos || first == last)
    fail(kGradientSpikeDrill, "expected STEP:SERIES:FACTOR (e.g. 4:layer0.o_proj.grad_sq:1e6), got \"" + spec + "\"");
  int64_t step = 0;
  double factor = 0.0;
  try {
    size_t used = 0;
    step = std::stoll(spec.substr(0, first), &used);
    if (used != first || step < 1) throw std::invalid_argument("step");
    factor = std::stod(spec.substr(last + 1), &used);
    if (used != spec.size() - last - 1 || !(factor > 0.0)) throw std::invalid_argument("factor");
  } catch (const std::exception&) {
    fail(kGradientSpikeDrill, "STEP must be a step >= 1 and FACTOR a positive number, got \"" + spec + "\"");
  }
  monitor::SeriesKey series;
  try {
    series = monitor::SeriesKey::parse(spec.substr(first + 1, last - first - 1));
  } catch (const Error& e) {
    fail(kGradientSpikeDrill, e.what());
  }
  TrainHooks hooks;
  hooks.before_step = [step, series, factor](int64_t now, monitor::SignalMonitor& monitor) {
    if (now != step) return;
    spdlog::warn("drill: {} x{} at step {} in this process", series.name(), factor, step);
    monitor.scale_next_gradient(series, factor);
  };
  return hooks;
}

TrainHooks drill_hooks_from_environment() {
  const char* spec = std::getenv(kGradientSpikeDrill);
  return spec && *spec ? gradient_spike_drill(spec) : TrainHooks{};
}

}  // namespace qkd::train
