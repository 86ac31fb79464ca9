#include "qkd/report/chart_ticks.h"

#include <algorithm>
#include <cmath>

#include "qkd/report/svg_text.h"

namespace qkd::report {

namespace {

double nice_step(double span, int target) {
  const double raw = span / std::max(1, target);
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  for (const double factor : {1.0, 2.0, 5.0}) {
    if (factor * power >= raw) return factor * power;
  }
  return 10.0 * power;
}

void widen_degenerate(double& lo, double& hi) {
  if (hi > lo) return;
  const double pad = lo == 0 ? 1.0 : std::fabs(lo) * 0.1;
  lo -= pad;
  hi += pad;
}

// Candidate tick values in [lo, hi]: powers of ten, optionally with their 2x and 5x multiples.
std::vector<double> log_candidates(double lo, double hi, bool with_multiples) {
  std::vector<double> values;
  const int first = static_cast<int>(std::floor(std::log10(lo))) - 1;
  const int last = static_cast<int>(std::ceil(std::log10(hi))) + 1;
  for (int exponent = first; exponent <= last; ++exponent) {
    const double decade = std::pow(10.0, exponent);
    for (const double factor : {1.0, 2.0, 5.0}) {
      if (factor != 1.0 && !with_multiples) continue;
      values.push_back(factor * decade);
    }
  }
  return values;
}

// Keeps every k-th tick (always the first) so that at most about `max_ticks` remain.
void thin_out(std::vector<Tick>& ticks, size_t max_ticks) {
  if (ticks.size() <= max_ticks) return;
  const size_t stride = (ticks.size() + max_ticks - 1) / max_ticks;
  std::vector<Tick> kept;
  for (size_t i = 0; i < ticks.size(); i += stride) kept.push_back(ticks[i]);
  ticks = kept;
}

}  // namespace

AxisRange linear_axis(double lo, double hi, int target, double min_step) {
  AxisRange axis;
  if (!std::isfinite(lo) || !std::isfinite(hi)) lo = 0, hi = 1;
  widen_degenerate(lo, hi);
  const double step = std::max(nice_step(hi - lo, target), min_step);
  axis.lo = std::floor(lo / step + 1e-9) * step;
  axis.hi = std::ceil(hi / step - 1e-9) * step;
  for (double value = axis.lo; value <= axis.hi + step * 1e-6; value += step) {
    const double clean = std::fabs(value) < step * 1e-6 ? 0.0 : value;
    axis.ticks.push_back({clean, format_number(clean)});
  }
  return axis;
}

AxisRange log_axis(double lo, double hi) {
  AxisRange axis;
  if (!(lo > 0) || !std::isfinite(lo)) lo = 1e-12;
  if (!(hi >= lo) || !std::isfinite(hi)) hi = lo * 10;
  if (hi == lo) lo /= 2, hi *= 2;
  const bool few_decades = std::log10(hi / lo) < 2.0;
  const std::vector<double> candidates = log_candidates(lo, hi, few_decades);
  // Widen to the nearest candidates outside [lo, hi].
  axis.lo = lo, axis.hi = hi;
  for (const double value : candidates) {
    if (value <= lo * (1 + 1e-9)) axis.lo = value;
  }
  for (auto it = candidates.rbegin(); it != candidates.rend(); ++it) {
    if (*it >= hi * (1 - 1e-9)) axis.hi = *it;
  }
  for (const double value : candidates) {
    if (value >= axis.lo * (1 - 1e-9) && value <= axis.hi * (1 + 1e-9))
      axis.ticks.push_back({value, format_log_tick(value)});
  }
  thin_out(axis.ticks, 8);
  return axis;
}

}  // namespace qkd::report
