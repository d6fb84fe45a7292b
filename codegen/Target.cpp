//===- Target.cpp - What a backend decides about a training step ------------===//
#include "codegen/Target.h"

#include "dialects/QLoRATypes.h"
#include "runtime/NF4.h"
#include "runtime/step/StepStatus.h"

#include "mlir/IR/BuiltinTypes.h"

namespace mlir::qlora {

FailureOr<TargetDescription>
TargetDescription::get(StringRef name,
                       function_ref<InFlightDiagnostic()> emitError) {
  if (name == "cpu")
    return TargetDescription(TargetKind::Cpu);
  if (name == "cuda")
    return TargetDescription(TargetKind::Cuda);
  return emitError() << "expects target cpu or cuda, got '" << name << "'";
}

StringRef TargetDescription::name() const {
  return kind_ == TargetKind::Cuda ? "cuda" : "cpu";
}

SmallVector<std::string> TargetDescription::architectures() const {
  // Hopper's own instructions (wgmma, TMA) need sm_90a; sm_80 covers Ampere
  // and runs on later GPUs through its machine code's compatibility.
  if (kind_ == TargetKind::Cuda)
    return {"sm_90a", "sm_80"};
  return {};
}

double TargetDescription::peakFlopsPerSecond() const {
  return kind_ == TargetKind::Cuda ? 760e12 : 100e9;
}

double TargetDescription::hostLinkBytesPerSecond() const {
  // cuda: what the H200's link moves beside the step's kernels, as the
  // plans that use it run fastest. Alone it measures 55.1 GB/s each way
  // (`qlora-bench kernels`); budgeting 2, 4 or 8 GB of offloads per 7B
  // step by 20, 40 or 55 GB/s gave 12,001, 12,162 and 11,291 tokens/s
  // under 6.1 GiB (docs/measurements/h200-host-link.txt).
  return kind_ == TargetKind::Cuda ? 40e9 : 10e9;
}

double TargetDescription::memoryBytesPerSecond() const {
  return kind_ == TargetKind::Cuda ? 4.8e12 : 20e9;
}

uint64_t TargetDescription::runtimeReserveBytes() const {
  return kind_ == TargetKind::Cuda ? uint64_t(256) << 20 : 0;
}

SmallVector<TargetDescription::RequiredSlot>
TargetDescription::requiredSlots(MLIRContext *context) const {
  if (kind_ != TargetKind::Cuda)
    return {};
  // cuBLAS asks for 32 MiB on Hopper to pick its fastest kernels; without a
  // workspace of its own it would allocate during graph capture.
  constexpr int64_t kBlasWorkspaceBytes = 32 << 20;
  return {{::qlora::slot::kStatus, BufferRole::Output,
           RankedTensorType::get({::qlora::step_status::kStatusWords},
                                 IntegerType::get(context, 32))},
          {::qlora::slot::kBlasWorkspace, BufferRole::Workspace,
           RankedTensorType::get(
               {kBlasWorkspaceBytes},
               IntegerType::get(context, 8, IntegerType::Unsigned))}};
}

FailureOr<SmallVector<StoragePart>>
TargetDescription::storage(Type type, std::optional<BufferRole> role) const {
  MLIRContext *context = type.getContext();
  Type u8 = IntegerType::get(context, 8, IntegerType::Unsigned);
  Type f32 = Float32Type::get(context);
  Type bf16 = BFloat16Type::get(context);
  if (auto nf4 = dyn_cast<NF4Type>(type)) {
    int64_t n = 1;
    for (int64_t dim : nf4.getShape())
      n *= dim;
    int64_t blocks = ::qlora::nf4::numBlocks(n, nf4.getBlockSize());
    SmallVector<StoragePart> parts = {
        {::qlora::part::kCodes, u8, ::qlora::nf4::packedBytes(n)}};
    // The cpu undoes double quantization on load; cuda keeps bitsandbytes'
    // layout and decodes the block maxima in its kernels.
    DoubleQuantAttr dq = nf4.getDoubleQuant();
    if (kind_ == TargetKind::Cpu || !dq) {
      parts.push_back({::qlora::part::kAbsmax, f32, blocks});
      return parts;
    }
    int64_t groups = (blocks + dq.getBlock() - 1) / dq.getBlock();
    parts.push_back({::qlora::part::kAbsmaxCodes, u8, blocks});
    parts.push_back({::qlora::part::kAbsmaxScales, f32, groups});
    parts.push_back({::qlora::part::kAbsmaxOffset, f32, 1});
    return parts;
  }
  auto tensor = dyn_cast<RankedTensorType>(type);
  if (!tensor || !tensor.hasStaticShape())
    return failure();
  Type element = tensor.getElementType();
  int64_t n = tensor.getNumElements();
  if (element.isInteger(32) || element.isInteger(64) || element.isInteger(8))
    return SmallVector<StoragePart>{{::qlora::part::kData, element, n}};
  if (!isa<FloatType>(element))
    return failure();
  // The cpu reference computes in fp32 whatever the checkpoint's dtype.
  if (kind_ == TargetKind::Cpu)
    return SmallVector<StoragePart>{{::qlora::part::kData, f32, n}};
  if (!element.isF32() && !element.isBF16())
    return failure();
  SmallVector<StoragePart> parts = {{::qlora::part::kData, element, n}};
  if (role == BufferRole::Trainable)
    parts.push_back({::qlora::part::kCompute, bf16, n});
  return parts;
}

} // namespace mlir::qlora
