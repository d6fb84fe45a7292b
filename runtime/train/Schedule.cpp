//===- Schedule.cpp - Learning-rate schedules -------------------------------===//
#include "runtime/train/Schedule.h"

#include <algorithm>
#include <cmath>

namespace qlora {

Expected<ScheduleKind> parseScheduleKind(const std::string &name) {
  if (name == "constant")
    return ScheduleKind::Constant;
  if (name == "constant_with_warmup")
    return ScheduleKind::ConstantWithWarmup;
  if (name == "linear")
    return ScheduleKind::Linear;
  if (name == "cosine")
    return ScheduleKind::Cosine;
  return makeError("unknown lr_scheduler_type '{}', expected constant, "
                   "constant_with_warmup, linear or cosine",
                   name);
}

double LearningRateSchedule::at(int64_t step) const {
  double factor = 1.0;
  double warmup = double(warmupSteps);
  switch (kind) {
  case ScheduleKind::Constant:
    break;
  case ScheduleKind::ConstantWithWarmup:
    if (step < warmupSteps)
      factor = double(step) / std::max(1.0, warmup);
    break;
  case ScheduleKind::Linear:
    if (step < warmupSteps)
      factor = double(step) / std::max(1.0, warmup);
    else
      factor = std::max(0.0, double(totalSteps - step) /
                                 std::max(1.0, double(totalSteps) - warmup));
    break;
  case ScheduleKind::Cosine:
    if (step < warmupSteps) {
      factor = double(step) / std::max(1.0, warmup);
    } else {
      double progress = double(step - warmupSteps) /
                        std::max(1.0, double(totalSteps) - warmup);
      factor = std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
    }
    break;
  }
  return learningRate * factor;
}

} // namespace qlora
