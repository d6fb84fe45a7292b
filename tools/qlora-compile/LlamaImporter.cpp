//===- LlamaImporter.cpp - HF Llama checkpoint -> qlora forward graph -------===//
#include "LlamaImporter.h"

#include "dialects/QLoRAOps.h"
#include "runtime/BnbFormat.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"

#include <cmath>

namespace mlir::qlora {
namespace {

using ::qlora::CheckpointDir;
using ::qlora::DType;
using ::qlora::Error;
using ::qlora::Expected;
using ::qlora::makeError;
using ::qlora::ModelConfig;

std::string shapeText(ArrayRef<int64_t> shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

class Importer {
public:
  Importer(MLIRContext &context, const ModelConfig &config,
           const CheckpointDir *checkpoint, const ImportOptions &options,
           std::string source)
      : context_(context), config_(config), checkpoint_(checkpoint),
        options_(options), source_(std::move(source)), builder_(&context) {}

  Expected<OwningOpRef<ModuleOp>> run() {
    if (options_.batchSize <= 0 || options_.seqLen <= 0)
      return makeError("batch size and sequence length must be positive, "
                       "got {} and {}",
                       options_.batchSize, options_.seqLen);
    if (options_.seqLen > config_.maxPositionEmbeddings)
      return makeError("a sequence of {} tokens is longer than the model "
                       "allows (max_position_embeddings = {})",
                       options_.seqLen, config_.maxPositionEmbeddings);
    if (config_.slidingWindow > 0 && options_.seqLen > config_.slidingWindow)
      return makeError("a sequence of {} tokens exceeds sliding_window = {}, "
                       "which this compiler does not model",
                       options_.seqLen, config_.slidingWindow);

    Location loc = FileLineColLoc::get(&context_, source_, 1, 1);
    OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
    builder_.setInsertionPointToEnd(module->getBody());
    Type scalar = RankedTensorType::get({}, builder_.getF32Type());
    auto forward = func::FuncOp::create(
        builder_, loc, "forward", builder_.getFunctionType({}, {scalar}));
    builder_.setInsertionPointToStart(forward.addEntryBlock());

    int64_t B = options_.batchSize, S = options_.seqLen;
    int64_t H = config_.hiddenSize, D = config_.headDim;
    Type ids = RankedTensorType::get({B, S}, builder_.getI32Type());
    Value inputIds = InputOp::create(builder_, loc, ids, "input_ids");
    Value labels = InputOp::create(builder_, loc, ids, "labels");

    Expected<Value> embedTable =
        param("model.embed_tokens.weight", {config_.vocabSize, H});
    if (!embedTable)
      return embedTable.error();
    Value hidden = EmbeddingOp::create(builder_, loc, inputIds, *embedTable);

    for (int64_t layer = 0; layer < config_.numLayers; ++layer) {
      std::string prefix = "model.layers." + std::to_string(layer) + ".";
      Expected<Value> attnNorm = param(prefix + "input_layernorm.weight", {H});
      Expected<Value> q = projection(prefix + "self_attn.q_proj",
                                     config_.numHeads * D, H);
      Expected<Value> k = projection(prefix + "self_attn.k_proj",
                                     config_.numKvHeads * D, H);
      Expected<Value> v = projection(prefix + "self_attn.v_proj",
                                     config_.numKvHeads * D, H);
      Expected<Value> o = projection(prefix + "self_attn.o_proj", H,
                                     config_.numHeads * D);
      Expected<Value> mlpNorm =
          param(prefix + "post_attention_layernorm.weight", {H});
      Expected<Value> gate = projection(prefix + "mlp.gate_proj",
                                        config_.intermediateSize, H);
      Expected<Value> up = projection(prefix + "mlp.up_proj",
                                      config_.intermediateSize, H);
      Expected<Value> down = projection(prefix + "mlp.down_proj", H,
                                        config_.intermediateSize);
      for (const Expected<Value> *value :
           {&attnNorm, &q, &k, &v, &o, &mlpNorm, &gate, &up, &down})
        if (!*value)
          return value->error();

      float eps = float(config_.rmsNormEps);
      float theta = float(config_.ropeTheta);
      RopeLlama3Attr ropeScaling;
      if (const ::qlora::RopeScaling &r = config_.ropeScaling; r.enabled())
        ropeScaling = RopeLlama3Attr::get(
            builder_.getContext(), r.factor, r.lowFreqFactor,
            r.highFreqFactor, r.originalMaxPositionEmbeddings);
      Value x =
          RmsNormOp::create(builder_, loc, hidden, *attnNorm, eps).getResult();
      Value query = LinearOp::create(builder_, loc, x, *q);
      Value key = LinearOp::create(builder_, loc, x, *k);
      Value value = LinearOp::create(builder_, loc, x, *v);
      Value queryRot =
          RopeOp::create(builder_, loc, query, D, theta, ropeScaling);
      Value keyRot = RopeOp::create(builder_, loc, key, D, theta, ropeScaling);
      Value attention =
          AttentionOp::create(builder_, loc, queryRot, keyRot, value,
                              config_.numHeads, config_.numKvHeads, D,
                              float(1.0 / std::sqrt(double(D))))
              .getResult();
      Value attnOut = LinearOp::create(builder_, loc, attention, *o);
      hidden = AddOp::create(builder_, loc, hidden, attnOut);

      Value y =
          RmsNormOp::create(builder_, loc, hidden, *mlpNorm, eps).getResult();
      Value gated = LinearOp::create(builder_, loc, y, *gate);
      Value upped = LinearOp::create(builder_, loc, y, *up);
      Value act = SwigluOp::create(builder_, loc, gated, upped);
      Value mlpOut = LinearOp::create(builder_, loc, act, *down);
      hidden = AddOp::create(builder_, loc, hidden, mlpOut);
    }

    Expected<Value> finalNorm = param("model.norm.weight", {H});
    if (!finalNorm)
      return finalNorm.error();
    std::string headName = config_.tieWordEmbeddings
                               ? "model.embed_tokens.weight"
                               : "lm_head.weight";
    Expected<Value> head = param(headName, {config_.vocabSize, H});
    if (!head)
      return head.error();
    Value normed = RmsNormOp::create(builder_, loc, hidden, *finalNorm,
                                     float(config_.rmsNormEps))
                       .getResult();
    Value logits = LinearOp::create(builder_, loc, normed, *head);
    Value loss = CrossEntropyOp::create(builder_, loc, logits, labels);
    func::ReturnOp::create(builder_, loc, loss);
    return module;
  }

private:
  /// A frozen parameter of the expected shape, typed as the checkpoint
  /// stores it (a bitsandbytes 4-bit weight by its logical shape and dtype).
  Expected<Value> param(const std::string &name,
                        SmallVector<int64_t> expectedShape) {
    if (auto cached = params_.find(name); cached != params_.end())
      return cached->second;
    Type element;
    std::vector<int64_t> shape;
    if (!checkpoint_) {
      // A bare config: every tensor bf16, of the shape the config implies.
      shape.assign(expectedShape.begin(), expectedShape.end());
      element = builder_.getBF16Type();
    } else if (::qlora::bnb::isQuantizedWeight(*checkpoint_, name)) {
      Expected<::qlora::NF4Weight> weight =
          ::qlora::bnb::readWeight(*checkpoint_, name);
      if (!weight)
        return weight.error().withContext(checkpoint_->dir());
      shape = weight->shape;
      element = elementType(weight->dtype);
    } else {
      Expected<::qlora::CheckpointTensor> tensor = checkpoint_->get(name);
      if (!tensor)
        return tensor.error().withContext(checkpoint_->dir());
      shape = tensor->info->shape;
      switch (tensor->info->dtype) {
      case DType::BF16:
        element = builder_.getBF16Type();
        break;
      case DType::F16:
        element = builder_.getF16Type();
        break;
      case DType::F32:
        element = builder_.getF32Type();
        break;
      default:
        return makeError("{}: tensor '{}' has dtype {}, expected a float type",
                         checkpoint_->dir(), name,
                         ::qlora::dtypeName(tensor->info->dtype));
      }
    }
    if (ArrayRef<int64_t>(shape) != ArrayRef<int64_t>(expectedShape))
      return makeError("{}: tensor '{}' has shape {}, but config.json implies "
                       "{}",
                       source_, name, shapeText(shape),
                       shapeText(expectedShape));
    Value value = ParamOp::create(
        builder_, builder_.getUnknownLoc(),
        RankedTensorType::get(expectedShape, element), name);
    params_[name] = value;
    return value;
  }

  Expected<Value> projection(const std::string &module, int64_t out,
                             int64_t in) {
    if (checkpoint_ && checkpoint_->find(module + ".bias"))
      return makeError("{}: '{}.bias' exists, but biased projections are not "
                       "supported",
                       checkpoint_->dir(), module);
    return param(module + ".weight", {out, in});
  }

  Type elementType(::qlora::ElementType type) {
    switch (type) {
    case ::qlora::ElementType::BF16:
      return builder_.getBF16Type();
    case ::qlora::ElementType::F16:
      return builder_.getF16Type();
    case ::qlora::ElementType::F32:
      return builder_.getF32Type();
    }
    return builder_.getF32Type();
  }

  MLIRContext &context_;
  const ModelConfig &config_;
  const CheckpointDir *checkpoint_; ///< null: a bare config
  std::string source_;              ///< what locations name
  const ImportOptions &options_;
  OpBuilder builder_;
  std::map<std::string, Value> params_;
};

} // namespace

Expected<OwningOpRef<ModuleOp>> importLlama(MLIRContext &context,
                                            const ModelConfig &config,
                                            const CheckpointDir &checkpoint,
                                            const ImportOptions &options) {
  return Importer(context, config, &checkpoint, options,
                  checkpoint.dir() + "/config.json")
      .run();
}

Expected<OwningOpRef<ModuleOp>>
importLlamaConfig(MLIRContext &context, const ModelConfig &config,
                  const ImportOptions &options, const std::string &source) {
  return Importer(context, config, nullptr, options, source).run();
}

} // namespace mlir::qlora
