//===- qlora-quantize.cpp - HF checkpoint -> bitsandbytes 4-bit checkpoint --===//
//
// usage: qlora-quantize INPUT_DIR OUTPUT_DIR [options]
//        qlora-quantize --demo [OUTPUT_DIR]
//
// Writes what transformers + bitsandbytes save for
// BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
// bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=bfloat16), byte for
// byte. --demo quantizes the built-in tiny Llama.
//
//===----------------------------------------------------------------------===//
#include "runtime/ByteSize.h"
#include "runtime/NF4.h"
#include "runtime/Parallel.h"
#include "runtime/QuantizeCheckpoint.h"
#include "runtime/TinyLlama.h"
#include "tools/common/CommandLine.h"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <unistd.h>

using namespace qlora;

namespace {

std::string shapeText(const std::vector<int64_t> &shape) {
  std::string text;
  for (size_t i = 0; i < shape.size(); ++i)
    text += (i ? "x" : "") + std::to_string(shape[i]);
  return text;
}

std::string megabytes(int64_t bytes) {
  return fmt::format("{:.2f} MB", double(bytes) / 1e6);
}

int fail(const std::string &message) {
  std::fprintf(stderr, "qlora-quantize: error: %s\n", message.c_str());
  return 1;
}

} // namespace

int main(int argc, char **argv) {
  std::string quantType = "nf4";
  bool doubleQuant = true;
  std::string computeDtype = "bfloat16";
  std::string skipModules;
  int64_t blockSize = 64;
  int64_t threads = 0;
  std::string maxShardSize = "5GB";
  bool overwrite = false, verify = true, quiet = false, demo = false;

  cli::CommandLine commandLine(
      "qlora-quantize", "INPUT_DIR OUTPUT_DIR [options]\n"
                        "       qlora-quantize --demo [OUTPUT_DIR]",
      "Quantizes a Hugging Face checkpoint directory (config.json plus\n"
      "model.safetensors or sharded safetensors) into the 4-bit checkpoint that\n"
      "transformers + bitsandbytes save, byte for byte: the linear projections\n"
      "of the decoder layers become NF4 with double-quantized block constants;\n"
      "embeddings, norms and lm_head are copied.");
  commandLine.option("bnb_4bit_quant_type", "TYPE",
                     "4-bit data type; only nf4 is supported", &quantType);
  commandLine.flag("bnb_4bit_use_double_quant",
                   "quantize the block constants to 8 bits", &doubleQuant);
  commandLine.option("bnb_4bit_compute_dtype", "DTYPE",
                     "compute dtype recorded in quantization_config "
                     "(bfloat16, float16, float32)",
                     &computeDtype);
  commandLine.option("llm_int8_skip_modules", "A,B",
                     "modules to keep unquantized, comma-separated",
                     &skipModules);
  commandLine.option("blocksize", "N", "NF4 block size (transformers uses 64)",
                     &blockSize);
  commandLine.option("threads", "N", "worker threads (0: all cores)",
                     &threads);
  commandLine.option("max_shard_size", "SIZE",
                     "largest safetensors file, as save_pretrained's "
                     "(5GB, 500MB, 2GiB, bytes; 0: one file); larger "
                     "checkpoints are sharded with an index",
                     &maxShardSize);
  commandLine.flag("overwrite", "replace a checkpoint in OUTPUT_DIR",
                   &overwrite);
  commandLine.flag("verify",
                   "read every quantized weight back and compare", &verify);
  commandLine.flag("quiet", "print only the summary", &quiet);
  commandLine.flag("demo",
                   "quantize the built-in tiny Llama (2 layers, hidden 256)",
                   &demo);

  if (std::optional<int> code = commandLine.parseOrExit(argc, argv))
    return *code;
  if (threads > 0)
    setNumThreads(int(threads));

  std::vector<std::string> args = commandLine.positional();
  std::string inputDir, outputDir;
  if (demo) {
    if (args.size() > 1)
      return fail("--demo takes at most one argument, OUTPUT_DIR");
    std::string base = args.empty() ? "qlora-demo" : args[0];
    inputDir = base + "/tiny-llama";
    outputDir = base + "/tiny-llama-bnb-nf4";
    Status written = writeTinyLlama(inputDir, /*seed=*/0);
    if (!written)
      return fail(written.message());
    overwrite = true;
    std::printf("Built-in tiny Llama written to %s\n", inputDir.c_str());
  } else {
    if (args.size() != 2)
      return fail("expects INPUT_DIR and OUTPUT_DIR (try --help)");
    inputDir = args[0];
    outputDir = args[1];
  }

  QuantizeOptions options;
  options.config.bnb_4bit_quant_type = quantType;
  options.config.bnb_4bit_use_double_quant = doubleQuant;
  Expected<ElementType> compute = parseTorchDtype(computeDtype);
  if (!compute)
    return fail("--bnb_4bit_compute_dtype: " + compute.message());
  options.config.bnb_4bit_compute_dtype = *compute;
  options.config.llm_int8_skip_modules = cli::splitList(skipModules);
  options.blockSize = blockSize;
  options.overwrite = overwrite;
  options.verify = verify;
  Expected<ByteSize> shardSize = parseByteSize(maxShardSize);
  if (!shardSize)
    return fail("--max_shard_size: " + shardSize.message());
  options.maxShardBytes = shardSize->bytes;

  bool interactive = isatty(fileno(stdout));
  auto progress = [&](const QuantizedTensorReport &tensor, size_t index,
                      size_t count) {
    if (quiet)
      return;
    std::string line = fmt::format(
        "[{:>{}}/{}] {:<48} {:>11} {}", index, std::to_string(count).size(),
        count, tensor.name, shapeText(tensor.shape),
        tensor.quantized
            ? fmt::format("nf4  {:>9} -> {:>9}  rms err {:.4f}",
                          megabytes(tensor.bytesIn),
                          megabytes(tensor.bytesOut), tensor.relativeRmsError)
            : fmt::format("copy {:>9}", megabytes(tensor.bytesIn)));
    std::printf("%s\n", line.c_str());
    if (interactive)
      std::fflush(stdout);
  };

  std::printf("Quantizing %s -> %s (%s, double quant %s, block %lld, %d "
              "threads)\n",
              inputDir.c_str(), outputDir.c_str(), quantType.c_str(),
              doubleQuant ? "on" : "off", (long long)blockSize, numThreads());
  Expected<QuantizeReport> report =
      quantizeCheckpoint(inputDir, outputDir, options, progress);
  if (!report)
    return fail(report.message());

  double maxError = 0.0;
  for (const QuantizedTensorReport &tensor : report->tensors)
    maxError = std::max(maxError, tensor.maxRelativeError);
  std::printf(
      "Done in %.2f s: %lld tensors quantized to NF4, %lld copied; %s -> %s "
      "(%.2fx smaller); %.1f M weights quantized at %.1f M/s\n",
      report->seconds, (long long)report->quantizedTensors,
      (long long)report->copiedTensors, megabytes(report->bytesIn).c_str(),
      megabytes(report->bytesOut).c_str(),
      double(report->bytesIn) / double(std::max<int64_t>(1, report->bytesOut)),
      report->quantizedElements / 1e6,
      report->quantizedElements / 1e6 / std::max(report->seconds, 1e-9));
  std::printf("Largest error of any weight: %.4f of its block's absmax "
              "(NF4 alone: at most 0.152, plus the 8-bit absmax and output rounding)%s\n",
              maxError, verify ? "; read back and verified" : "");
  std::string files;
  for (const std::string &file : report->files)
    files += (files.empty() ? "" : ", ") + file;
  std::printf("Wrote %s/{%s, config.json} "
              "(quantization_config: bitsandbytes 4-bit)\n",
              outputDir.c_str(), files.c_str());
  return 0;
}
