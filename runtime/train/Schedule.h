//===- Schedule.h - Learning-rate schedules as transformers defines them ----===//
//
// lr(step) = learning_rate * factor(step), with `step` the number of optimizer
// updates already taken (0 for the first update), as the LambdaLR schedulers
// of transformers.get_scheduler compute it.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"

#include <cstdint>
#include <string>

namespace qlora {

enum class ScheduleKind { Constant, ConstantWithWarmup, Linear, Cosine };

/// Parses TrainingArguments' lr_scheduler_type names.
Expected<ScheduleKind> parseScheduleKind(const std::string &name);

struct LearningRateSchedule {
  ScheduleKind kind = ScheduleKind::Linear;
  double learningRate = 5e-5;
  int64_t warmupSteps = 0;
  int64_t totalSteps = 1;

  /// The learning rate of update number `step` (0-based).
  double at(int64_t step) const;
};

} // namespace qlora
