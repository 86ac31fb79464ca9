#include "qkd/optim/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace qkd::optim {

const EnumTable<LrSchedule>& lr_schedules() {
  static const EnumTable<LrSchedule> table{{LrSchedule::cosine, "cosine"}, {LrSchedule::constant, "constant"}};
  return table;
}

double learning_rate_at(int64_t step, int64_t total, const LrScheduleOptions& o) {
  if (o.warmup_steps > 0 && step < o.warmup_steps)
    return o.peak * static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
  if (o.schedule == LrSchedule::constant) return o.peak;
  const double span = std::max<int64_t>(1, total - o.warmup_steps);
  const double progress = std::min(1.0, static_cast<double>(step - o.warmup_steps) / span);
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
  return o.peak * (o.min_ratio + (1.0 - o.min_ratio) * cosine);
}

}  // namespace qkd::optim
