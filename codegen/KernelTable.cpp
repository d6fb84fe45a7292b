//===- KernelTable.cpp - The runtime functions a step may call --------------===//
#include "codegen/KernelTable.h"

namespace mlir::qlora {
namespace {

#define BUF(n) KernelArg{KernelArgKind::Buffer, #n}
#define I64(n) KernelArg{KernelArgKind::I64, #n}
#define F32(n) KernelArg{KernelArgKind::F32, #n}
#define NF4(n) KernelArg{KernelArgKind::NF4, #n}

// One static array of arguments per kernel, then the table.
namespace cpu_args {
#define QLORA_KERNEL(Name, ...) constexpr KernelArg Name[] = {__VA_ARGS__};
#include "runtime/step/CpuKernels.def"
} // namespace cpu_args
constexpr KernelSignature kCpu[] = {
#define QLORA_KERNEL(Name, ...) {#Name, cpu_args::Name},
#include "runtime/step/CpuKernels.def"
};

namespace cuda_args {
#define QLORA_KERNEL(Name, ...) constexpr KernelArg Name[] = {__VA_ARGS__};
#include "runtime/step/CudaKernels.def"
} // namespace cuda_args
constexpr KernelSignature kCuda[] = {
#define QLORA_KERNEL(Name, ...) {#Name, cuda_args::Name},
#include "runtime/step/CudaKernels.def"
};

#undef BUF
#undef I64
#undef F32
#undef NF4

} // namespace

ArrayRef<KernelSignature> kernelTable(TargetKind target) {
  if (target == TargetKind::Cuda)
    return kCuda;
  return kCpu;
}

StringRef kernelNamespace(TargetKind target) {
  return target == TargetKind::Cuda ? "qlora::cuda_step" : "qlora::step";
}

const KernelSignature *findKernel(TargetKind target, StringRef name) {
  for (const KernelSignature &kernel : kernelTable(target))
    if (name == kernel.name)
      return &kernel;
  return nullptr;
}

} // namespace mlir::qlora
