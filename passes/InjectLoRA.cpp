//===- InjectLoRA.cpp - qlora-inject-lora ---------------------------------===//
//
// Adds PEFT-style LoRA adapters (trainable lora_A / lora_B parameters and a
// qlora.lora branch) to the projections whose module is targeted.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "dialects/QLoRAOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringSet.h"

#include <cmath>
#include <cstdio>

namespace mlir::qlora {
#define GEN_PASS_DEF_INJECTLORAPASS
#include "passes/Passes.h.inc"

namespace {

/// Formats an option value for a diagnostic: 1e-08, 0.9, -1.
std::string formatDouble(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%g", value);
  return buffer;
}

/// The target-modules value that selects every linear layer but the output.
constexpr llvm::StringLiteral kAllLinear = "all-linear";

/// A projection whose weight is a named frozen parameter.
struct Site {
  Operation *projection; ///< qlora.linear or qlora.nf4_matmul
  ParamOp weight;
  StringRef modulePath; ///< the weight's name without ".weight"
};

/// The frozen `qlora.param` a projection weight comes from, looking through
/// one `qlora.dequantize`.
ParamOp getWeightParam(Value weight) {
  if (auto dequant = weight.getDefiningOp<DequantizeOp>())
    weight = dequant.getInput();
  auto param = weight.getDefiningOp<ParamOp>();
  if (!param || param.getTrainable())
    return {};
  return param;
}

/// The last dotted component of a module path: "q_proj".
StringRef lastComponent(StringRef path) {
  auto [head, tail] = path.rsplit('.');
  return tail.empty() ? head : tail;
}

/// PEFT's suffix match: a target names a module by its trailing components.
bool matchesTarget(StringRef path, StringRef target) {
  return path == target ||
         (path.ends_with(target) &&
          path.drop_back(target.size()).ends_with("."));
}

/// The output layer, which all-linear leaves alone as PEFT does: lm_head, or
/// a projection by the (tied) embedding table.
bool isOutputLayer(const Site &site) {
  if (lastComponent(site.modulePath) == "lm_head")
    return true;
  return llvm::any_of(site.weight->getUsers(),
                      [](Operation *user) { return isa<EmbeddingOp>(user); });
}

struct InjectLoRAPass : public impl::InjectLoRAPassBase<InjectLoRAPass> {
  using Base::Base;

  void runOnOperation() override;

private:
  /// Checks the options; reports the first bad one on `module`.
  LogicalResult verifyOptions(ModuleOp module,
                              SmallVectorImpl<std::string> &targets);
};

LogicalResult
InjectLoRAPass::verifyOptions(ModuleOp module,
                              SmallVectorImpl<std::string> &targets) {
  int64_t rank = r;
  double alpha = loraAlpha, dropout = loraDropout;
  if (rank <= 0)
    return module.emitError("qlora-inject-lora: expects r > 0, got ") << rank;
  if (!(alpha > 0.0) || !std::isfinite(alpha))
    return module.emitError("qlora-inject-lora: expects lora-alpha > 0, got ")
           << formatDouble(alpha);
  if (!(dropout >= 0.0 && dropout < 1.0))
    return module.emitError(
               "qlora-inject-lora: expects lora-dropout in [0, 1), got ")
           << formatDouble(dropout);
  targets.assign(targetModules.begin(), targetModules.end());
  if (targets.empty())
    for (const std::string &name : ::qlora::StepOptions::names(
             ::qlora::step_option_defaults::target_modules))
      targets.push_back(name);
  for (const std::string &target : targets) {
    if (target.empty())
      return module.emitError("qlora-inject-lora: expects non-empty "
                              "target-modules names, got an empty one");
    if (target == kAllLinear && targets.size() != 1)
      return module.emitError("qlora-inject-lora: expects 'all-linear' "
                              "alone in target-modules, got ")
             << targets.size() << " names";
  }
  return success();
}

void InjectLoRAPass::runOnOperation() {
  ModuleOp module = getOperation();
  SmallVector<std::string> targets;
  if (failed(verifyOptions(module, targets)))
    return signalPassFailure();
  bool allLinear = targets.size() == 1 && targets.front() == kAllLinear;

  // Every projection by a named frozen weight, in program order.
  SmallVector<Site> sites;
  llvm::StringSet<> existingParams;
  module.walk([&](Operation *op) {
    if (auto param = dyn_cast<ParamOp>(op)) {
      existingParams.insert(param.getName());
      return;
    }
    if (!isa<LinearOp, NF4MatmulOp>(op))
      return;
    ParamOp param = getWeightParam(op->getOperand(1));
    if (!param || !param.getName().ends_with(".weight"))
      return;
    sites.push_back({op, param, param.getName().drop_back(strlen(".weight"))});
  });

  // Which sites each target selects.
  llvm::MapVector<StringRef, bool> matched;
  for (const std::string &target : targets)
    matched[target] = false;
  SmallVector<Site *> selected;
  for (Site &site : sites) {
    bool isSelected = false;
    if (allLinear) {
      isSelected = !isOutputLayer(site);
      matched[kAllLinear] |= isSelected;
    } else {
      for (auto &[target, found] : matched)
        if (matchesTarget(site.modulePath, target))
          isSelected = found = true;
    }
    if (isSelected)
      selected.push_back(&site);
  }
  bool failedMatch = false;
  for (auto &[target, found] : matched)
    if (!found) {
      module.emitError("qlora-inject-lora: target module '")
          << target << "' matches no linear layer of the model";
      failedMatch = true;
    }
  if (failedMatch)
    return signalPassFailure();

  double scale = loraAlpha / (useRslora ? std::sqrt(static_cast<double>(r))
                                        : static_cast<double>(r));
  MLIRContext *context = &getContext();
  Type f32 = Float32Type::get(context);
  OpBuilder builder(context);
  // Adapters by (weight parameter, module path): a projection applied twice
  // shares one adapter, as a PEFT module would.
  DenseMap<Operation *, std::pair<Value, Value>> adapters;
  for (Site *site : selected) {
    auto &[a, b] = adapters[site->weight];
    if (!a) {
      std::string prefix = ("base_model.model." + site->modulePath).str();
      std::string nameA = prefix + ".lora_A.weight";
      std::string nameB = prefix + ".lora_B.weight";
      if (existingParams.contains(nameA) || existingParams.contains(nameB)) {
        site->projection->emitError("qlora-inject-lora: '")
            << site->modulePath << "' already has a LoRA adapter ('"
            << nameA << "')";
        return signalPassFailure();
      }
      ArrayRef<int64_t> shape;
      if (auto nf4 = dyn_cast<NF4Type>(site->weight.getType()))
        shape = nf4.getShape();
      else
        shape = cast<RankedTensorType>(site->weight.getType()).getShape();
      int64_t n = shape[0], k = shape[1];
      builder.setInsertionPointAfter(site->weight);
      Location loc = site->weight.getLoc();
      a = ParamOp::create(builder, loc, RankedTensorType::get({r, k}, f32),
                          nameA, /*trainable=*/true);
      b = ParamOp::create(builder, loc, RankedTensorType::get({n, r}, f32),
                          nameB, /*trainable=*/true);
    }
    // The adapters follow the weight, which dominates the projection.
    Operation *projection = site->projection;
    Value input = projection->getOperand(0);
    Value y = projection->getResult(0);
    builder.setInsertionPointAfter(projection);
    Location loc = projection->getLoc();
    Value branch = LoraOp::create(builder, loc, input, a, b,
                                  static_cast<float>(scale),
                                  static_cast<float>(loraDropout));
    auto sum = AddOp::create(builder, loc, y, branch);
    y.replaceAllUsesExcept(sum, sum.getOperation());
  }

  module->setAttr("qlora.lora_config",
                  LoraConfigAttr::get(context, r, loraAlpha, loraDropout,
                                      useRslora));
}

} // namespace
} // namespace mlir::qlora
