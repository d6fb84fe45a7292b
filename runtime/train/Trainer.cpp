//===- Trainer.cpp - Runs a compiled training step --------------------------===//
#include "runtime/train/Trainer.h"

#include "runtime/BnbFormat.h"
#include "runtime/Checkpoint.h"
#include "runtime/Float16.h"
#include "runtime/TensorData.h"
#include "runtime/step/StepStatus.h"

#include <chrono>
#include <cmath>
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

float scalarOf(const std::vector<uint8_t> &bytes) {
  float value = 0.0f;
  std::memcpy(&value, bytes.data(), std::min<size_t>(bytes.size(), 4));
  return value;
}

} // namespace

Trainer::Trainer(std::unique_ptr<StepLibrary> library, TrainingArguments args,
                 TokenDataset data)
    : library_(std::move(library)), args_(std::move(args)),
      data_(std::move(data)) {}

Expected<std::unique_ptr<Trainer>>
Trainer::create(const std::string &stepDir, const TrainingArguments &args,
                TokenDataset data) {
  Expected<StepLibrary> opened = StepLibrary::open(stepDir);
  if (!opened)
    return opened.error();
  auto library = std::make_unique<StepLibrary>(opened.take());
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
  if (!args.device.empty() && args.device != manifest.target)
    return makeError("--device {} was asked for but the step in {} was "
                     "compiled for {} (compile it with --target {})",
                     args.device, stepDir, manifest.target, args.device);
  Expected<ScheduleKind> kind = parseScheduleKind(args.lr_scheduler_type);
  if (!kind)
    return kind.error();

  std::unique_ptr<Trainer> trainer(
      new Trainer(std::move(library), args, std::move(data)));
  trainer->schedule_.kind = *kind;
  trainer->schedule_.learningRate = args.learning_rate;
  trainer->schedule_.warmupSteps = args.warmup_steps;
  trainer->schedule_.totalSteps = args.max_steps;
  QLORA_RETURN_IF_ERROR(trainer->checkOptimizerSettings());

  Expected<std::unique_ptr<StepBackend>> backend =
      manifest.target == "cuda" ? openCudaBackend(*trainer->library_)
                                : openCpuBackend(*trainer->library_);
  if (!backend)
    return backend.error();
  trainer->backend_ = backend.take();
  QLORA_RETURN_IF_ERROR(trainer->loadBaseModel());
  QLORA_RETURN_IF_ERROR(trainer->initializeAdapter());
  QLORA_RETURN_IF_ERROR(trainer->backend_->synchronize());
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

Status Trainer::writeFloats(const BufferPart &part, const float *values,
                            int64_t n) {
  if (n != part.elements)
    return makeError("part '{}' holds {} values, got {}", part.name,
                     part.elements, n);
  if (part.dtype == DType::F32)
    return backend_->write(part.offset, values, size_t(n) * 4);
  if (part.dtype == DType::BF16) {
    std::vector<uint16_t> bits(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
      bits[size_t(i)] = floatToBf16(values[i]);
    return backend_->write(part.offset, bits.data(), bits.size() * 2);
  }
  return makeError("part '{}' of dtype {} cannot hold floats", part.name,
                   dtypeName(part.dtype));
}

Status Trainer::loadNF4(const BufferInfo &buffer, const NF4Weight &weight) {
  auto write = [&](const char *name, const void *data,
                   size_t bytes) -> Status {
    Expected<const BufferPart *> part = buffer.getPart(name);
    if (!part)
      return part.error();
    if ((*part)->bytes() != bytes)
      return makeError("tensor '{}': part '{}' holds {} bytes, got {}",
                       buffer.name, name, (*part)->bytes(), bytes);
    return backend_->write((*part)->offset, data, bytes);
  };
  QLORA_RETURN_IF_ERROR(
      write(part::kCodes, weight.packed.data(), weight.packed.size()));
  // The cpu keeps fp32 block maxima; cuda keeps bitsandbytes' parts.
  if (buffer.part(part::kAbsmax)) {
    std::vector<float> absmax = weight.blockAbsmax();
    return write(part::kAbsmax, absmax.data(), absmax.size() * 4);
  }
  if (!weight.nested)
    return makeError("tensor '{}' is not double-quantized but the step was "
                     "compiled with bnb_4bit_use_double_quant=true; recompile "
                     "it with --bnb_4bit_use_double_quant=false",
                     buffer.name);
  const dq::DoubleQuantized &nested = *weight.nested;
  if (nested.blockSize != buffer.dqBlockSize)
    return makeError("tensor '{}' double-quantizes in blocks of {} but the "
                     "step was compiled for {}",
                     buffer.name, nested.blockSize, buffer.dqBlockSize);
  QLORA_RETURN_IF_ERROR(write(part::kAbsmaxCodes, nested.codes.data(),
                              nested.codes.size()));
  QLORA_RETURN_IF_ERROR(write(part::kAbsmaxScales, nested.scales.data(),
                              nested.scales.size() * 4));
  return write(part::kAbsmaxOffset, &nested.offset, 4);
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
      if (Status loaded = loadNF4(buffer, *weight); !loaded)
        return loaded.error().withContext(args_.model_name_or_path);
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
      std::vector<float> values(size_t(buffer.numElements()));
      QLORA_RETURN_IF_ERROR(copyAsFloats(*tensor->info,
                                         tensor->file->data(*tensor->info),
                                         values.data(), tensor->file->path()));
      Expected<const BufferPart *> data = buffer.getPart(part::kData);
      if (!data)
        return data.error();
      QLORA_RETURN_IF_ERROR(
          writeFloats(**data, values.data(), int64_t(values.size())));
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
    QLORA_RETURN_IF_ERROR(loadNF4(buffer, *weight));
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
    int64_t n = buffer.numElements();
    std::vector<float> values(size_t(n), 0.0f);
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
      values = found->second.values;
    } else if (buffer.name.find(".lora_A.") != std::string::npos) {
      // PEFT: kaiming_uniform_(a=sqrt(5)) on [r, K] is U(-1/sqrt(K), 1/sqrt(K)).
      double bound = 1.0 / std::sqrt(double(buffer.shape.back()));
      std::uniform_real_distribution<double> uniform(-bound, bound);
      for (float &value : values)
        value = float(uniform(random));
    } // lora_B starts at zero
    // Every part: the fp32 master and, on cuda, its bf16 copy.
    for (const BufferPart &part : buffer.parts)
      QLORA_RETURN_IF_ERROR(writeFloats(part, values.data(), n));
  }
  return Status::ok();
}

Status Trainer::writeInput(const std::string &name,
                           const std::vector<int32_t> &values) {
  Expected<const BufferInfo *> buffer = manifest().get(name);
  if (!buffer)
    return buffer.error();
  Expected<const BufferPart *> data = (*buffer)->getPart(part::kData);
  if (!data)
    return data.error();
  if ((*data)->bytes() != values.size() * sizeof(int32_t))
    return makeError("input '{}' holds {} bytes, got {} ids", name,
                     (*data)->bytes(), values.size());
  return backend_->write((*data)->offset, values.data(),
                         values.size() * sizeof(int32_t));
}

Status Trainer::writeScalar(const std::string &name, float value) {
  const BufferInfo *buffer = manifest().find(name);
  if (!buffer)
    return Status::ok(); // a step without this input (no dropout)
  return backend_->write(buffer->parts.front().offset, &value, sizeof value);
}

std::pair<uint64_t, uint64_t> Trainer::trainingStateRange() const {
  // The planner lays adapters and then state out in one run of the arena.
  uint64_t begin = UINT64_MAX, end = 0;
  for (const BufferInfo &buffer : manifest().buffers) {
    if (buffer.role != BufferRole::Trainable &&
        buffer.role != BufferRole::State)
      continue;
    for (const BufferPart &part : buffer.parts) {
      begin = std::min(begin, part.offset);
      end = std::max(end, part.offset + part.bytes());
    }
  }
  return begin < end ? std::make_pair(begin, end) : std::make_pair(0ul, 0ul);
}

Status Trainer::checkStatus(const std::vector<uint8_t> &bytes,
                            const std::vector<TokenBatch> &batches) const {
  using namespace step_status;
  if (bytes.size() < size_t(kStatusWords) * 4)
    return Status::ok();
  int32_t words[kStatusWords];
  std::memcpy(words, bytes.data(), sizeof words);
  int64_t vocab = 0;
  if (const json::Value *value = manifest().model.find("vocab_size"))
    vocab = value->isInt() ? value->asInt() : 0;
  // The kernels keep the smallest position over the step's micro-batches;
  // the host's copies of the batches name the value.
  auto describe = [&](int word, bool labels) -> std::string {
    int64_t position = words[word];
    for (size_t micro = 0; micro < batches.size(); ++micro) {
      const std::vector<int32_t> &ids =
          labels ? batches[micro].labels : batches[micro].inputIds;
      int64_t row = position / manifest().seqLen;
      int64_t column = position % manifest().seqLen;
      // Labels are checked after the shift: position t holds label t + 1.
      int64_t index = labels ? position + 1 : position;
      if (labels && column + 1 >= manifest().seqLen)
        continue;
      if (index < int64_t(ids.size())) {
        int32_t value = ids[size_t(index)];
        bool bad = labels ? (value != kIgnoreIndex &&
                             (value < 0 || value >= vocab))
                          : (value < 0 || value >= vocab);
        if (bad)
          return fmt::format("{} {} at row {}, position {} of micro-batch {}",
                             labels ? "label" : "token id", value, row,
                             labels ? column + 1 : column, micro + 1);
      }
    }
    return fmt::format("at flat position {}", position);
  };
  if (words[kBadTokenPosition] != kStatusNone)
    return makeError("input_ids: {} is outside the vocabulary [0, {})",
                     describe(kBadTokenPosition, false), vocab);
  if (words[kBadLabelPosition] != kStatusNone)
    return makeError("labels: {} is outside the vocabulary [0, {}) and is "
                     "not the ignore index {}",
                     describe(kBadLabelPosition, true), vocab, kIgnoreIndex);
  return Status::ok();
}

Expected<StepRecord> Trainer::step(const GradientObserver &observer) {
  auto start = std::chrono::steady_clock::now();
  const StepManifest &steps = manifest();
  const BufferInfo *loss = steps.find(slot::kLoss);
  if (!loss)
    return makeError("the compiled step has no loss output");
  const BufferInfo *status = steps.find(slot::kStatus);
  if (status)
    QLORA_RETURN_IF_ERROR(backend_->fill(status->parts.front().offset,
                                         step_status::kResetByte,
                                         status->parts.front().bytes()));

  StepRecord record;
  record.step = stepsTaken_ + 1;
  int64_t micro = args_.gradient_accumulation_steps;
  std::vector<std::vector<uint8_t>> losses(static_cast<size_t>(micro));
  std::vector<TokenBatch> batches;
  for (int64_t i = 0; i < micro; ++i) {
    batches.push_back(data_.next(steps.batchSize));
    QLORA_RETURN_IF_ERROR(writeInput(slot::kInputIds, batches.back().inputIds));
    QLORA_RETURN_IF_ERROR(writeInput(slot::kLabels, batches.back().labels));
    // The backward is seeded with 1/micro, so the accumulated gradients are
    // those of the mean loss, as the Trainer's loss scaling makes them.
    QLORA_RETURN_IF_ERROR(
        writeScalar(slot::kGradScale, 1.0f / float(micro)));
    if (const BufferInfo *seed = steps.find(slot::kDropoutSeed)) {
      // A fresh dropout mask per micro-batch, reproducible from --seed.
      uint64_t mixed = (args_.seed + 1) * 0x9e3779b97f4a7c15ull ^
                       uint64_t(stepsTaken_ * micro + i + 1) *
                           0xbf58476d1ce4e5b9ull;
      int32_t value = int32_t(uint32_t(mixed >> 32));
      QLORA_RETURN_IF_ERROR(
          backend_->write(seed->parts.front().offset, &value, sizeof value));
    }
    QLORA_RETURN_IF_ERROR(backend_->call("train_step"));
    QLORA_RETURN_IF_ERROR(backend_->readLater(loss->parts.front().offset, 4,
                                              &losses[size_t(i)]));
  }
  if (observer) {
    QLORA_RETURN_IF_ERROR(backend_->synchronize());
    observer(*this);
  }

  // The update, from a snapshot of the adapters and the optimizer's state
  // that a failed step puts back.
  auto [stateBegin, stateEnd] = trainingStateRange();
  QLORA_RETURN_IF_ERROR(backend_->snapshot(stateBegin, stateEnd - stateBegin));
  record.learningRate = schedule_.at(stepsTaken_);
  QLORA_RETURN_IF_ERROR(
      writeScalar(slot::kLearningRate, float(record.learningRate)));
  QLORA_RETURN_IF_ERROR(writeScalar(slot::kStep, float(record.step)));
  QLORA_RETURN_IF_ERROR(backend_->call("apply_gradients"));
  std::vector<uint8_t> normSquares, statusWords;
  if (const BufferInfo *norm = steps.find(slot::kGradNormSquares))
    QLORA_RETURN_IF_ERROR(
        backend_->readLater(norm->parts.front().offset, 4, &normSquares));
  if (status)
    QLORA_RETURN_IF_ERROR(backend_->readLater(
        status->parts.front().offset, status->parts.front().bytes(),
        &statusWords));
  QLORA_RETURN_IF_ERROR(backend_->synchronize());

  auto fail = [&](Error error) -> Expected<StepRecord> {
    QLORA_RETURN_IF_ERROR(backend_->restore());
    return error;
  };
  if (Status checked = checkStatus(statusWords, batches); !checked)
    return fail(Error(checked.message() + "; no update was made at step " +
                      std::to_string(record.step)));
  double lossSum = 0.0;
  for (int64_t i = 0; i < micro; ++i) {
    float value = scalarOf(losses[size_t(i)]);
    if (!std::isfinite(value))
      return fail(makeError("the loss is {} at step {} (micro-batch {}); the "
                            "adapter is left as it was after step {}",
                            value, record.step, i + 1, stepsTaken_));
    lossSum += value;
  }
  record.loss = lossSum / double(micro);
  record.gradNorm = std::sqrt(double(scalarOf(normSquares)));
  if (!std::isfinite(record.gradNorm))
    return fail(makeError("the gradient norm is not finite at step {}; the "
                          "adapter is left as it was after step {}",
                          record.step, stepsTaken_));
  std::vector<StepBackend::FloatRange> adapters;
  for (const BufferInfo &buffer : steps.buffers)
    if (buffer.role == BufferRole::Trainable)
      adapters.push_back({buffer.parts.front().offset,
                          buffer.parts.front().elements});
  int64_t nonFinite = 0;
  QLORA_RETURN_IF_ERROR(backend_->countNonFinite(adapters, &nonFinite));
  if (nonFinite > 0)
    return fail(makeError("{} adapter values became non-finite at step {}; "
                          "the adapter is restored to step {}",
                          nonFinite, record.step, stepsTaken_));
  ++stepsTaken_;
  record.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  record.tokensPerSecond = double(micro * steps.batchSize * steps.seqLen) /
                           std::max(record.seconds, 1e-9);
  return record;
}

Expected<AdapterWeights> Trainer::adapter() const {
  AdapterWeights weights;
  for (const BufferInfo &buffer : manifest().buffers) {
    if (buffer.role != BufferRole::Trainable)
      continue;
    Expected<std::vector<float>> values = readFloats(buffer.name);
    if (!values)
      return values.error();
    AdapterTensor tensor;
    tensor.shape = buffer.shape;
    tensor.values = values.take();
    weights[buffer.name] = std::move(tensor);
  }
  return weights;
}

Expected<std::vector<float>> Trainer::readFloats(const std::string &name) const {
  Expected<const BufferInfo *> buffer = manifest().get(name);
  if (!buffer)
    return buffer.error();
  const BufferPart *data = (*buffer)->part(part::kData);
  if (!data || (data->dtype != DType::F32 && data->dtype != DType::BF16))
    return makeError("buffer '{}' holds no floats", name);
  std::vector<float> values(size_t(data->elements));
  if (data->dtype == DType::F32) {
    QLORA_RETURN_IF_ERROR(
        backend_->read(data->offset, values.data(), values.size() * 4));
    return values;
  }
  std::vector<uint16_t> bits(values.size());
  QLORA_RETURN_IF_ERROR(
      backend_->read(data->offset, bits.data(), bits.size() * 2));
  for (size_t i = 0; i < bits.size(); ++i)
    values[i] = bf16ToFloat(bits[i]);
  return values;
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
