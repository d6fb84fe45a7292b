//===- QuantizeCheckpoint.cpp - HF checkpoint -> bnb 4-bit checkpoint -------===//
#include "runtime/QuantizeCheckpoint.h"
#include "runtime/ShardedCheckpointWriter.h"

#include "runtime/Checkpoint.h"
#include "runtime/Float16.h"
#include "runtime/Json.h"
#include "runtime/Parallel.h"
#include "runtime/TensorData.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace qlora {
namespace fs = std::filesystem;
namespace {

/// Error of the written weight against the input, in fp32.
void measureError(const uint8_t *input, ElementType type,
                  const NF4Weight &weight, QuantizedTensorReport &report) {
  int64_t n = weight.numElements();
  std::vector<float> restored(n);
  dequantizeWeight(weight, ElementType::F32, restored.data());
  std::vector<float> absmax = weight.blockAbsmax();
  double errorSquares = 0.0, valueSquares = 0.0, maxRelative = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    double x = loadFloat(input, type, i);
    double error = std::fabs(x - double(restored[i]));
    errorSquares += error * error;
    valueSquares += x * x;
    double scale = absmax[i / weight.blockSize];
    if (scale > 0.0)
      maxRelative = std::max(maxRelative, error / scale);
  }
  report.maxRelativeError = maxRelative;
  report.relativeRmsError =
      valueSquares > 0.0 ? std::sqrt(errorSquares / valueSquares) : 0.0;
}

bool isWeightsFile(const std::string &name) {
  return name == "config.json" ||
         name.find(".safetensors") != std::string::npos ||
         name.find(".bin") != std::string::npos;
}

/// Copies tokenizer files, generation_config.json and the like.
Status copyAuxiliaryFiles(const std::string &inputDir,
                          const std::string &outputDir) {
  std::error_code error;
  for (const fs::directory_entry &entry :
       fs::directory_iterator(inputDir, error)) {
    if (!entry.is_regular_file(error))
      continue;
    std::string name = entry.path().filename().string();
    if (isWeightsFile(name))
      continue;
    fs::copy_file(entry.path(), fs::path(outputDir) / name,
                  fs::copy_options::overwrite_existing, error);
    if (error)
      return makeError("{}: cannot copy into {}: {}", entry.path().string(),
                       outputDir, error.message());
  }
  if (error)
    return makeError("{}: cannot list: {}", inputDir, error.message());
  return Status::ok();
}

Status checkReadBack(const std::string &outputDir,
                     const std::vector<std::pair<std::string, NF4Weight>>
                         &written) {
  Expected<CheckpointDir> output = CheckpointDir::open(outputDir);
  if (!output)
    return output.error().withContext("verifying the written checkpoint");
  for (const auto &[name, weight] : written) {
    Expected<NF4Weight> readBack = bnb::readWeight(*output, name);
    if (!readBack)
      return readBack.error().withContext("verifying " + outputDir);
    bool same = readBack->packed == weight.packed &&
                readBack->shape == weight.shape &&
                readBack->blockAbsmax() == weight.blockAbsmax();
    if (!same)
      return makeError("verifying {}: tensor '{}' reads back differently "
                       "from what was written",
                       outputDir, name);
  }
  return Status::ok();
}

} // namespace

Expected<QuantizeReport> quantizeCheckpoint(const std::string &inputDir,
                                            const std::string &outputDir,
                                            const QuantizeOptions &options,
                                            const QuantizeProgress &progress) {
  auto start = std::chrono::steady_clock::now();
  if (options.config.bnb_4bit_quant_type != "nf4")
    return makeError("bnb_4bit_quant_type '{}' is not supported; only nf4 is",
                     options.config.bnb_4bit_quant_type);
  if (!nf4::isSupportedBlockSize(options.blockSize))
    return makeError("expects a block size of 32, 64, ..., 4096, got {}",
                     options.blockSize);

  std::error_code error;
  if (fs::exists(outputDir, error) &&
      fs::equivalent(inputDir, outputDir, error))
    return makeError("the output directory is the input directory ({}); "
                     "choose another one",
                     outputDir);
  if (!options.overwrite &&
      (fs::exists(fs::path(outputDir) / "model.safetensors", error) ||
       fs::exists(fs::path(outputDir) / "model.safetensors.index.json",
                  error) ||
       fs::exists(fs::path(outputDir) / "config.json", error)))
    return makeError("{} already holds a checkpoint; pass --overwrite to "
                     "replace it",
                     outputDir);

  Expected<json::Value> config = readJsonFile(inputDir + "/config.json");
  if (!config)
    return config.error();
  if (!config->isObject())
    return makeError("{}/config.json: expects a JSON object", inputDir);
  if (config->find("quantization_config"))
    return makeError("{}/config.json already has a quantization_config: the "
                     "checkpoint is quantized",
                     inputDir);
  Expected<CheckpointDir> input = CheckpointDir::open(inputDir);
  if (!input)
    return input.error();

  fs::create_directories(outputDir, error);
  if (error)
    return makeError("{}: cannot create directory: {}", outputDir,
                     error.message());

  QuantizeReport report;
  ShardedCheckpointWriter writer(options.maxShardBytes);
  std::vector<std::pair<std::string, NF4Weight>> written;
  std::vector<std::string> names = input->tensorNames();
  for (size_t index = 0; index < names.size(); ++index) {
    const std::string &name = names[index];
    Expected<CheckpointTensor> tensor = input->get(name);
    if (!tensor)
      return tensor.error();
    const TensorInfo &info = *tensor->info;
    ByteSpan bytes = tensor->file->data(info);
    QuantizedTensorReport tensorReport;
    tensorReport.name = name;
    tensorReport.shape = info.shape;
    tensorReport.bytesIn = int64_t(bytes.size);
    if (bnb::shouldQuantize(name, info.shape, options.config)) {
      Expected<ElementType> type = floatElementType(info);
      if (!type)
        return type.error().withContext(tensor->file->path());
      Expected<NF4Weight> weight =
          quantizeWeight(bytes.data, *type, info.shape, options.blockSize,
                         options.config.bnb_4bit_use_double_quant);
      if (!weight)
        return weight.error().withContext("tensor '" + name + "'");
      QLORA_RETURN_IF_ERROR(bnb::addWeightTensors(
          writer.shardFor(weight->storageBytes()), name, *weight));
      measureError(bytes.data, *type, *weight, tensorReport);
      tensorReport.quantized = true;
      tensorReport.bytesOut = weight->storageBytes();
      report.quantizedTensors += 1;
      report.quantizedElements += weight->numElements();
      if (options.verify)
        written.emplace_back(name, weight.take());
    } else {
      QLORA_RETURN_IF_ERROR(writer.shardFor(int64_t(bytes.size))
                                .addView(name, info.dtype, info.shape,
                                         bytes.data, bytes.size));
      tensorReport.bytesOut = int64_t(bytes.size);
      report.copiedTensors += 1;
    }
    report.bytesIn += tensorReport.bytesIn;
    report.bytesOut += tensorReport.bytesOut;
    if (progress)
      progress(tensorReport, index + 1, names.size());
    report.tensors.push_back(std::move(tensorReport));
  }

  // Files an earlier save of the other layout left are removed.
  Expected<std::vector<std::string>> files = writer.write(outputDir);
  if (!files)
    return files.error();
  report.files = files.take();

  config->set("quantization_config",
              bnb::quantizationConfigJson(options.config));
  QLORA_RETURN_IF_ERROR(writeFileAtomically(outputDir + "/config.json",
                                            json::writeIndented(*config)));
  QLORA_RETURN_IF_ERROR(copyAuxiliaryFiles(inputDir, outputDir));
  if (options.verify)
    QLORA_RETURN_IF_ERROR(checkReadBack(outputDir, written));

  report.seconds = std::chrono::duration<double>(
                       std::chrono::steady_clock::now() - start)
                       .count();
  return report;
}

} // namespace qlora
