#pragma once
// Axis ranges and tick positions for the SVG charts.
#include <string>
#include <vector>

namespace qkd::report {

struct Tick {
  double value = 0;
  std::string label;
};

// A linear axis: "nice" steps (1, 2 or 5 x 10^k), about `target` ticks; the range is widened to
// the outer ticks. lo == hi is widened around the value.
struct AxisRange {
  double lo = 0, hi = 1;
  std::vector<Tick> ticks;
};
// Tick spacing is at least min_step when that is positive.
AxisRange linear_axis(double lo, double hi, int target = 5, double min_step = 0);

// A log10 axis over positive [lo, hi]: ticks at powers of ten, with 2x and 5x multiples added when
// less than two decades are spanned; the range is widened to the nearest ticks outside it. Long
// axes keep every k-th decade so that at most about 8 ticks remain.
AxisRange log_axis(double lo, double hi);

}  // namespace qkd::report
