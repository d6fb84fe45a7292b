//===- QuantizeCheckpoint.h - HF checkpoint -> bitsandbytes 4-bit checkpoint ===//
//
// What `qlora-quantize` does, as a library call: read a Hugging Face
// checkpoint directory, quantize the linear projections of the decoder layers
// to NF4 (double-quantized by default), copy everything else, and write the
// directory that transformers + bitsandbytes would save for
// BitsAndBytesConfig(load_in_4bit=True, ...): same tensor names, dtypes,
// shapes and bytes, and config.json with quantization_config.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/BnbFormat.h"
#include "runtime/Error.h"

#include <functional>
#include <string>

namespace qlora {

struct QuantizeOptions {
  bnb::QuantizationConfig config;
  int64_t blockSize = 64;
  /// Replace an existing checkpoint in the output directory.
  bool overwrite = false;
  /// Read every quantized weight back from the written file and check it
  /// against the input (exact codes, and the NF4 error bound).
  bool verify = true;
  /// save_pretrained's max_shard_size in bytes; 0 writes one file.
  int64_t maxShardBytes = 0;
};

/// One tensor's outcome, for progress lines and the summary.
struct QuantizedTensorReport {
  std::string name;
  std::vector<int64_t> shape;
  bool quantized = false;
  int64_t bytesIn = 0, bytesOut = 0;
  /// max |x - dequant(quant(x))| / block absmax (quantized tensors only);
  /// NF4's largest gap between codes bounds it by about 0.16.
  double maxRelativeError = 0.0;
  /// sqrt(mean((x - dequant)^2)) / sqrt(mean(x^2)).
  double relativeRmsError = 0.0;
};

struct QuantizeReport {
  std::vector<QuantizedTensorReport> tensors;
  int64_t bytesIn = 0, bytesOut = 0;
  int64_t quantizedTensors = 0, copiedTensors = 0;
  int64_t quantizedElements = 0;
  double seconds = 0.0;
  /// The safetensors files written (and the shard index, last).
  std::vector<std::string> files;
};

/// Called once per tensor, after it is processed, with its index and count.
using QuantizeProgress =
    std::function<void(const QuantizedTensorReport &, size_t, size_t)>;

/// Quantizes `inputDir` into `outputDir` (created if missing).
Expected<QuantizeReport> quantizeCheckpoint(const std::string &inputDir,
                                            const std::string &outputDir,
                                            const QuantizeOptions &options,
                                            const QuantizeProgress &progress);

} // namespace qlora
