//===- AttentionChoice.cpp - QLORA_ATTENTION --------------------------------===//
#include "runtime/cuda/CudnnAttention.h"

#include <cstdlib>
#include <cstring>

namespace qlora::cuda {

Expected<AttentionChoice> attentionChoice() {
  const char *value = std::getenv("QLORA_ATTENTION");
  if (!value || !*value || std::strcmp(value, "auto") == 0)
    return AttentionChoice::Auto;
  if (std::strcmp(value, "cudnn") == 0)
    return AttentionChoice::Cudnn;
  if (std::strcmp(value, "builtin") == 0)
    return AttentionChoice::Builtin;
  return makeError("QLORA_ATTENTION is '{}'; expected auto, cudnn or builtin",
                   value);
}

} // namespace qlora::cuda
