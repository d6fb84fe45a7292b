//===- CudnnAttentionUnavailable.cpp - A build without cuDNN's headers ------===//
//
// The built-in kernels serve every attention call; QLORA_ATTENTION=cudnn is
// refused rather than ignored.
//
//===----------------------------------------------------------------------===//
#include "runtime/cuda/CudnnAttention.h"

namespace qlora::cuda {
namespace {

constexpr const char *kWhy = "this build found no cuDNN headers "
                             "(cudnn_graph.h; set CUDNN_INCLUDE_DIR)";

Status builtinOnly(bool *ran) {
  *ran = false;
  Expected<AttentionChoice> choice = attentionChoice();
  if (!choice)
    return choice.error();
  if (*choice == AttentionChoice::Cudnn)
    return makeError("QLORA_ATTENTION=cudnn, but {}", kWhy);
  return Status::ok();
}

} // namespace

Status cudnnAttentionForward(const uint16_t *, const uint16_t *,
                             const uint16_t *, const AttentionShape &,
                             uint16_t *, float *, cudaStream_t, bool *ran) {
  return builtinOnly(ran);
}

Status cudnnAttentionBackward(const uint16_t *, const uint16_t *,
                              const uint16_t *, const uint16_t *,
                              const float *, const uint16_t *,
                              const AttentionShape &, float *, uint16_t *,
                              uint16_t *, uint16_t *, cudaStream_t,
                              bool *ran) {
  return builtinOnly(ran);
}

std::string attentionImplementation(const AttentionShape &) {
  return std::string("built-in kernels (") + kWhy + ")";
}

} // namespace qlora::cuda
