#pragma once
// The learning rate at each step (optim.schedule, optim.warmup_steps, optim.min_lr_ratio).
#include <cstdint>
#include <string>

#include "qkd/common/enum_table.h"

namespace qkd::optim {

enum class LrSchedule { cosine, constant };
const EnumTable<LrSchedule>& lr_schedules();  // "cosine" | "constant"

struct LrScheduleOptions {
  double peak = 1e-4;
  int64_t warmup_steps = 0;
  LrSchedule schedule = LrSchedule::cosine;
  double min_ratio = 0.0;
};

// Linear warm-up to `peak` over `warmup_steps` steps, then cosine decay to peak * min_ratio at `total`
// steps, or constant. `step` counts completed steps (0 for the first update).
double learning_rate_at(int64_t step, int64_t total, const LrScheduleOptions& options);

}  // namespace qkd::optim
