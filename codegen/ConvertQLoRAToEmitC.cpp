//===- ConvertQLoRAToEmitC.cpp - convert-qlora-to-emitc ---------------------===//
//
// Rewrites each planned entry function into an emitc.func that makes the
// calls the target's kernel lowerings build (KernelLowering.h), exports it
// as a C symbol, and records each op's kernel choice on the module for the
// manifest. See Passes.td.
//
//===----------------------------------------------------------------------===//
#include "codegen/BufferPlan.h"
#include "codegen/ElementwiseKernels.h"
#include "codegen/KernelLowering.h"
#include "codegen/Passes.h"
#include "codegen/Target.h"

#include "mlir/Dialect/EmitC/IR/EmitC.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/Target/Cpp/CppEmitter.h"

namespace mlir::qlora {
#define GEN_PASS_DEF_CONVERTQLORATOEMITCPASS
#include "codegen/Passes.h.inc"

namespace {

/// What a generated step of each target includes, the context type its
/// functions take, and the macro that exports an entry.
struct Emission {
  StringRef header, context, entryMacro;
};
Emission emissionFor(TargetKind kind) {
  if (kind == TargetKind::Cuda)
    return {"runtime/step/CudaStep.h", "qlora::cuda_step::StepContext",
            "QLORA_CUDA_STEP_ENTRY"};
  return {"runtime/step/CpuStepSupport.h", "qlora::step::StepContext",
          "QLORA_STEP_ENTRY"};
}

class ConvertQLoRAToEmitCPass
    : public impl::ConvertQLoRAToEmitCPassBase<ConvertQLoRAToEmitCPass> {
public:
  using impl::ConvertQLoRAToEmitCPassBase<
      ConvertQLoRAToEmitCPass>::ConvertQLoRAToEmitCPassBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    FailureOr<BufferPlan> plan = BufferPlan::read(module);
    if (failed(plan))
      return signalPassFailure();
    FailureOr<TargetDescription> target = TargetDescription::get(
        plan->target(),
        [&] { return module.emitError() << "convert-qlora-to-emitc: "; });
    if (failed(target))
      return signalPassFailure();
    KernelLoweringSet lowerings = kernelLowerings(*target);
    Emission emission = emissionFor(target->kind());

    MLIRContext *context = module.getContext();
    OpBuilder builder(context);
    builder.setInsertionPointToStart(module.getBody());
    emitc::IncludeOp::create(builder, module.getLoc(), emission.header,
                             /*is_standard_include=*/false);
    Operation *libraryInfo = emitc::VerbatimOp::create(
        builder, module.getLoc(),
        ("QLORA_STEP_LIBRARY_INFO(\"" + target->name() + "\")").str());

    // Generated kernels go before the entry points that launch them.
    ElementwiseKernelEmitter kernels(libraryInfo);

    Type contextType = emitc::PointerType::get(
        emitc::OpaqueType::get(context, emission.context));
    SmallVector<Attribute> choices;
    SmallVector<func::FuncOp> functions(module.getOps<func::FuncOp>());
    for (func::FuncOp func : functions) {
      StringRef name = func.getSymName();
      if (name != kTrainStepFunction && name != kApplyGradientsFunction)
        continue;
      if (!func.getBody().hasOneBlock()) {
        func.emitError() << "convert-qlora-to-emitc: expects a single block";
        return signalPassFailure();
      }
      std::string implName = ("qlora_" + name + "_impl").str();
      builder.setInsertionPoint(func);
      auto impl = emitc::FuncOp::create(
          builder, func.getLoc(), implName,
          builder.getFunctionType({contextType}, {}));
      impl.setSpecifiersAttr(builder.getStrArrayAttr({"static"}));
      Block *body = impl.addEntryBlock();
      OpBuilder bodyBuilder = OpBuilder::atBlockEnd(body);
      Value stepContext = body->getArgument(0);
      for (Operation &op : func.getBody().front()) {
        SmallVector<KernelCall> calls;
        LoweringContext lowering{builder, *target, *plan, calls, &kernels};
        if (failed(lowerings.lower(&op, lowering)))
          return signalPassFailure();
        for (KernelCall &call : calls) {
          SmallVector<Attribute> args = {builder.getIndexAttr(0)};
          args.append(call.args.begin(), call.args.end());
          emitc::CallOpaqueOp::create(bodyBuilder, op.getLoc(), TypeRange(),
                                      call.callee, ValueRange{stepContext},
                                      builder.getArrayAttr(args));
          SmallVector<NamedAttribute> fields = {
              builder.getNamedAttr("entry", builder.getStringAttr(name)),
              builder.getNamedAttr(
                  "op", builder.getStringAttr(op.getName().getStringRef())),
              builder.getNamedAttr("kernel",
                                   builder.getStringAttr(call.kernel))};
          if (!call.variant.empty())
            fields.push_back(builder.getNamedAttr(
                "variant", builder.getStringAttr(call.variant)));
          choices.push_back(builder.getDictionaryAttr(fields));
        }
      }
      emitc::ReturnOp::create(bodyBuilder, func.getLoc(), Value());
      builder.setInsertionPointAfter(impl);
      emitc::VerbatimOp::create(builder, func.getLoc(),
                                (emission.entryMacro + "(qlora_" + name +
                                 ", " + implName + ")")
                                    .str());
    }
    module->setAttr(kKernelsAttr, builder.getArrayAttr(choices));
    // Only the exported steps remain; @forward and helpers are dropped.
    for (func::FuncOp func : functions)
      func.erase();
  }
};

} // namespace

LogicalResult emitCpp(ModuleOp module, llvm::raw_ostream &os) {
  os << "// Generated by qlora-compile: one training step, its kernels called\n"
        "// with constant arena offsets. Do not edit.\n";
  return emitc::translateToCpp(module, os);
}

} // namespace mlir::qlora
