//===- Trainer.cpp - Runs a compiled training step --------------------------===//
#include "runtime/train/Trainer.h"

#include "runtime/BnbFormat.h"
#include "runtime/Checkpoint.h"
#include "runtime/TensorData.h"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <set>

namespace qlora {
namespace {

std::string shapeText(const std::vector<int64_t> &shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

bool startsWith(const std::string &text, const std::string &prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

} // namespace

Trainer::Trainer(StepLibrary library, TrainingArguments args,
                 TokenDataset data)
    : library_(std::move(library)), args_(std::move(args)),
      data_(std::move(data)) {}

Trainer::~Trainer() { std::free(arena_); }

Expected<std::unique_ptr<Trainer>>
Trainer::create(const std::string &stepDir, const TrainingArguments &args,
                TokenDataset data) {
  Expected<StepLibrary> library = StepLibrary::open(stepDir);
  if (!library)
    return library.error();
  const StepManifest &manifest = library->manifest();
  if (args.per_device_train_batch_size != manifest.batchSize)
    return makeError("per_device_train_batch_size is {} but the step in {} "
                     "was compiled for {}",
                     args.per_device_train_batch_size, stepDir,
                     manifest.batchSize);
  if (data.seq() != manifest.seqLen)
    return makeError("the data has sequences of {} tokens but the step was "
                     "compiled for {}",
                     data.seq(), manifest.seqLen);
  if (args.max_steps <= 0 || args.gradient_accumulation_steps <= 0)
    return makeError("max_steps and gradient_accumulation_steps must be "
                     "positive");
  Expected<ScheduleKind> kind = parseScheduleKind(args.lr_scheduler_type);
  if (!kind)
    return kind.error();

  std::unique_ptr<Trainer> trainer(
      new Trainer(library.take(), args, std::move(data)));
  trainer->schedule_.kind = *kind;
  trainer->schedule_.learningRate = args.learning_rate;
  trainer->schedule_.warmupSteps = args.warmup_steps;
  trainer->schedule_.totalSteps = args.max_steps;
  QLORA_RETURN_IF_ERROR(trainer->checkOptimizerSettings());

  uint64_t bytes = (trainer->manifest().arenaBytes + 63) / 64 * 64;
  trainer->arena_ = static_cast<uint8_t *>(std::aligned_alloc(64, bytes));
  if (!trainer->arena_)
    return makeError("cannot allocate the {} byte arena", bytes);
  std::memset(trainer->arena_, 0, bytes);
  QLORA_RETURN_IF_ERROR(trainer->loadBaseModel());
  QLORA_RETURN_IF_ERROR(trainer->initializeAdapter());
  return trainer;
}

Status Trainer::checkOptimizerSettings() const {
  // The optimizer's constants are compiled into the step; the learning rate
  // and the step count are inputs.
  const StepOptions &compiled = manifest().options;
  struct Setting {
    const char *name;
    double given, compiled;
  } settings[] = {{"adam_beta1", args_.adam_beta1, compiled.adam_beta1},
                  {"adam_beta2", args_.adam_beta2, compiled.adam_beta2},
                  {"adam_epsilon", args_.adam_epsilon, compiled.adam_epsilon},
                  {"weight_decay", args_.weight_decay, compiled.weight_decay},
                  {"max_grad_norm", args_.max_grad_norm,
                   compiled.max_grad_norm}};
  for (const Setting &setting : settings)
    if (!(std::fabs(setting.compiled - setting.given) <=
          1e-12 * std::fabs(setting.compiled)))
      return makeError("--{} is {} but the step was compiled with {}; "
                       "recompile it",
                       setting.name, setting.given, setting.compiled);
  return Status::ok();
}

float *Trainer::floats(const BufferInfo &buffer) const {
  return reinterpret_cast<float *>(arena_ + buffer.offset);
}

Status Trainer::loadBaseModel() {
  Expected<CheckpointDir> checkpoint =
      CheckpointDir::open(args_.model_name_or_path);
  if (!checkpoint)
    return checkpoint.error();
  for (const BufferInfo &buffer : manifest().buffers) {
    if (buffer.role != BufferRole::Frozen && buffer.role != BufferRole::NF4)
      continue;
    if (buffer.role == BufferRole::NF4 &&
        bnb::isQuantizedWeight(*checkpoint, buffer.name)) {
      Expected<NF4Weight> weight = bnb::readWeight(*checkpoint, buffer.name);
      if (!weight)
        return weight.error();
      if (weight->shape != buffer.shape)
        return makeError("{}: tensor '{}' has shape {} but the step was "
                         "compiled for {}",
                         args_.model_name_or_path, buffer.name,
                         shapeText(weight->shape), shapeText(buffer.shape));
      if (weight->blockSize != buffer.blockSize)
        return makeError("{}: tensor '{}' uses block size {} but the step "
                         "was compiled for {}",
                         args_.model_name_or_path, buffer.name,
                         weight->blockSize, buffer.blockSize);
      std::memcpy(arena_ + buffer.offset, weight->packed.data(),
                  weight->packed.size());
      std::vector<float> absmax = weight->blockAbsmax();
      std::memcpy(arena_ + buffer.absmaxOffset, absmax.data(),
                  absmax.size() * sizeof(float));
      continue;
    }
    Expected<CheckpointTensor> tensor = checkpoint->get(buffer.name);
    if (!tensor)
      return tensor.error().withContext(args_.model_name_or_path);
    if (tensor->info->shape != buffer.shape)
      return makeError("{}: tensor '{}' has shape {} but the step was "
                       "compiled for {}",
                       tensor->file->path(), buffer.name,
                       shapeText(tensor->info->shape),
                       shapeText(buffer.shape));
    if (buffer.role == BufferRole::Frozen) {
      if (buffer.dtype != DType::F32)
        return makeError("buffer '{}': frozen buffers of dtype {} are not "
                         "supported by this runtime",
                         buffer.name, dtypeName(buffer.dtype));
      QLORA_RETURN_IF_ERROR(copyAsFloats(*tensor->info,
                                         tensor->file->data(*tensor->info),
                                         floats(buffer), tensor->file->path()));
      continue;
    }
    // Quantize a bf16/fp16/fp32 weight on load, as bitsandbytes does.
    Expected<ElementType> type = floatElementType(*tensor->info);
    if (!type)
      return type.error().withContext(tensor->file->path());
    ByteSpan bytes = tensor->file->data(*tensor->info);
    Expected<NF4Weight> weight =
        quantizeWeight(bytes.data, *type, buffer.shape, buffer.blockSize,
                       buffer.doubleQuant);
    if (!weight)
      return weight.error().withContext("tensor '" + buffer.name + "'");
    std::memcpy(arena_ + buffer.offset, weight->packed.data(),
                weight->packed.size());
    std::vector<float> absmax = weight->blockAbsmax();
    std::memcpy(arena_ + buffer.absmaxOffset, absmax.data(),
                absmax.size() * sizeof(float));
  }
  return Status::ok();
}

Status Trainer::initializeAdapter() {
  std::optional<AdapterWeights> initial;
  if (!args_.init_adapter.empty()) {
    Expected<AdapterWeights> read = readPeftAdapter(args_.init_adapter);
    if (!read)
      return read.error();
    initial = read.take();
  }
  std::mt19937_64 random(args_.seed);
  for (const BufferInfo &buffer : manifest().buffers) {
    if (buffer.role != BufferRole::Trainable)
      continue;
    float *values = floats(buffer);
    int64_t n = buffer.numElements();
    if (initial) {
      auto found = initial->find(buffer.name);
      if (found == initial->end())
        return makeError("{}: the adapter has no tensor '{}'",
                         args_.init_adapter, buffer.name);
      if (found->second.shape != buffer.shape)
        return makeError("{}: tensor '{}' has shape {} but the step trains "
                         "{}",
                         args_.init_adapter, buffer.name,
                         shapeText(found->second.shape),
                         shapeText(buffer.shape));
      std::memcpy(values, found->second.values.data(), n * sizeof(float));
    } else if (buffer.name.find(".lora_A.") != std::string::npos) {
      // PEFT: kaiming_uniform_(a=sqrt(5)) on [r, K] is U(-1/sqrt(K), 1/sqrt(K)).
      double bound = 1.0 / std::sqrt(double(buffer.shape.back()));
      std::uniform_real_distribution<double> uniform(-bound, bound);
      for (int64_t i = 0; i < n; ++i)
        values[i] = float(uniform(random));
    } else {
      std::fill(values, values + n, 0.0f); // lora_B starts at zero
    }
  }
  return Status::ok();
}

void Trainer::writeInput(const std::string &name,
                         const std::vector<int32_t> &values) {
  const BufferInfo *buffer = manifest().find(name);
  std::memcpy(arena_ + buffer->offset, values.data(),
              values.size() * sizeof(int32_t));
}

void Trainer::writeScalar(const std::string &name, float value) {
  if (const BufferInfo *buffer = manifest().find(name))
    std::memcpy(arena_ + buffer->offset, &value, sizeof value);
}

Expected<StepRecord> Trainer::step(const GradientObserver &observer) {
  auto start = std::chrono::steady_clock::now();
  Expected<const BufferInfo *> loss = manifest().get("loss");
  if (!loss)
    return loss.error();
  // Keep the adapter so that a failed step leaves it as it was.
  AdapterWeights before = adapter();

  StepRecord record;
  record.step = stepsTaken_ + 1;
  double lossSum = 0.0;
  int64_t micro = args_.gradient_accumulation_steps;
  for (int64_t i = 0; i < micro; ++i) {
    TokenBatch batch = data_.next(manifest().batchSize);
    writeInput("input_ids", batch.inputIds);
    writeInput("labels", batch.labels);
    // The backward is seeded with 1/micro, so the accumulated gradients are
    // those of the mean loss, as the Trainer's loss scaling makes them.
    writeScalar("grad_scale", 1.0f / float(micro));
    if (const BufferInfo *seed = manifest().find("dropout_seed")) {
      // A fresh dropout mask per micro-batch, reproducible from --seed.
      uint64_t mixed = (args_.seed + 1) * 0x9e3779b97f4a7c15ull ^
                       uint64_t(stepsTaken_ * micro + i + 1) * 0xbf58476d1ce4e5b9ull;
      int32_t value = int32_t(uint32_t(mixed >> 32));
      std::memcpy(arena_ + seed->offset, &value, sizeof value);
    }
    QLORA_RETURN_IF_ERROR(library_.call("train_step", arena_));
    float value = *floats(**loss);
    if (!std::isfinite(value))
      return makeError("the loss is {} at step {} (micro-batch {}); the "
                       "adapter is left as it was after step {}",
                       value, record.step, i + 1, stepsTaken_);
    lossSum += value;
  }
  // The global norm of the accumulated gradients, before any clipping.
  double squares = 0.0;
  for (const BufferInfo &buffer : manifest().buffers) {
    if (buffer.role != BufferRole::State || !startsWith(buffer.name, "grad:"))
      continue;
    const float *grad = floats(buffer);
    for (int64_t j = 0; j < buffer.numElements(); ++j)
      squares += double(grad[j]) * double(grad[j]);
  }
  record.gradNorm = std::sqrt(squares);
  if (!std::isfinite(record.gradNorm))
    return makeError("the gradient norm is not finite at step {}; the "
                     "adapter is left as it was after step {}",
                     record.step, stepsTaken_);
  record.loss = lossSum / double(micro);
  if (observer)
    observer(*this);
  record.learningRate = schedule_.at(stepsTaken_);
  writeScalar("learning_rate", float(record.learningRate));
  writeScalar("step", float(record.step));
  QLORA_RETURN_IF_ERROR(library_.call("apply_gradients", arena_));
  for (const BufferInfo &buffer : manifest().buffers) {
    if (buffer.role != BufferRole::Trainable)
      continue;
    const float *values = floats(buffer);
    for (int64_t j = 0; j < buffer.numElements(); ++j)
      if (!std::isfinite(values[j])) {
        for (const BufferInfo &restore : manifest().buffers)
          if (restore.role == BufferRole::Trainable)
            std::memcpy(floats(restore), before[restore.name].values.data(),
                        restore.bytes);
        return makeError("adapter tensor '{}' became non-finite at step {}; "
                         "it is restored to step {}",
                         buffer.name, record.step, stepsTaken_);
      }
  }
  ++stepsTaken_;
  record.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  record.tokensPerSecond = double(micro * manifest().batchSize *
                                  manifest().seqLen) /
                           std::max(record.seconds, 1e-9);
  return record;
}

AdapterWeights Trainer::adapter() const {
  AdapterWeights weights;
  for (const BufferInfo &buffer : manifest().buffers) {
    if (buffer.role != BufferRole::Trainable)
      continue;
    AdapterTensor tensor;
    tensor.shape = buffer.shape;
    const float *values = floats(buffer);
    tensor.values.assign(values, values + buffer.numElements());
    weights[buffer.name] = std::move(tensor);
  }
  return weights;
}

Expected<std::vector<float>> Trainer::readFloats(const std::string &name) const {
  Expected<const BufferInfo *> buffer = manifest().get(name);
  if (!buffer)
    return buffer.error();
  if ((*buffer)->dtype != DType::F32 || (*buffer)->role == BufferRole::NF4)
    return makeError("buffer '{}' is not fp32", name);
  const float *values = floats(**buffer);
  return std::vector<float>(values, values + (*buffer)->numElements());
}

LoraSettings Trainer::loraSettings() const {
  const StepOptions &options = manifest().options;
  LoraSettings settings;
  settings.r = options.r;
  settings.lora_alpha = options.lora_alpha;
  settings.lora_dropout = options.lora_dropout;
  settings.use_rslora = options.use_rslora;
  // PEFT records the module names it adapted (not "all-linear"), so the
  // names come from the adapter tensors: <path>.<module>.lora_A.weight.
  std::set<std::string> modules;
  for (const BufferInfo &buffer : manifest().buffers) {
    size_t at = buffer.name.find(".lora_A.");
    if (buffer.role != BufferRole::Trainable || at == std::string::npos)
      continue;
    size_t dot = buffer.name.rfind('.', at - 1);
    modules.insert(buffer.name.substr(dot + 1, at - dot - 1));
  }
  settings.target_modules.assign(modules.begin(), modules.end());
  settings.base_model_name_or_path = args_.model_name_or_path;
  return settings;
}

} // namespace qlora
