//===- qlora-train.cpp - Fine-tune with a compiled QLoRA training step ------===//
//
// usage: qlora-train --output_dir DIR [--model_name_or_path DIR] [--data FILE]
//                    [TrainingArguments and LoraConfig flags]
//
// Compiles the step with qlora-compile (or loads one given by --step_dir),
// loads the base model (bf16 weights quantized to NF4 on load, or a
// bitsandbytes 4-bit checkpoint), initializes the adapter (PEFT's init or
// --init_adapter), runs --max_steps optimizer steps and writes a PEFT
// adapter to --output_dir. Without --model_name_or_path it trains the
// built-in tiny Llama, and without --data the built-in text.
//
//===----------------------------------------------------------------------===//
#include "runtime/Safetensors.h"
#include "runtime/TinyLlama.h"
#include "runtime/train/Trainer.h"
#include "tools/common/StepOptionFlags.h"
#include "tools/common/Process.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <unistd.h>

using namespace qlora;
namespace fs = std::filesystem;

namespace {

int fail(const std::string &message) {
  std::fprintf(stderr, "qlora-train: error: %s\n", message.c_str());
  return 1;
}

bool endsWith(const std::string &text, const std::string &suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// The sequence width of a safetensors data file, or 0 for other formats.
Expected<int64_t> dataSequenceLength(const std::string &path) {
  if (!endsWith(path, ".safetensors"))
    return int64_t(0);
  Expected<SafetensorsFile> file = SafetensorsFile::open(path);
  if (!file)
    return file.error();
  Expected<const TensorInfo *> ids = file->get("input_ids");
  if (!ids)
    return ids.error();
  if ((*ids)->shape.size() != 2)
    return makeError("{}: input_ids must be [rows, seq]", path);
  return (*ids)->shape[1];
}

void drawProgress(const StepRecord &record, int64_t total, bool interactive) {
  if (!interactive) {
    std::printf("step %lld/%lld  loss %.4f  lr %.3g  grad_norm %.4f  %.0f "
                "tokens/s\n",
                (long long)record.step, (long long)total, record.loss,
                record.learningRate, record.gradNorm, record.tokensPerSecond);
    std::fflush(stdout);
    return;
  }
  const int width = 30;
  int filled = int(double(width) * double(record.step) / double(total));
  std::string bar(filled, '=');
  if (filled < width)
    bar += '>' + std::string(width - filled - 1, ' ');
  std::fprintf(stderr, "\r[%s] %lld/%lld  loss %.4f  lr %.3g  %.0f tok/s ",
               bar.c_str(), (long long)record.step, (long long)total,
               record.loss, record.learningRate, record.tokensPerSecond);
  if (record.step == total)
    std::fputc('\n', stderr);
  std::fflush(stderr);
}

} // namespace

int main(int argc, char **argv) {
  TrainingArguments args;
  args.learning_rate = 2e-4;
  args.max_steps = 20;
  std::string stepDir;
  StepOptions stepOptions;
  int64_t seqLen = 64, seed = 42, loggingSteps = 10;
  bool quiet = false;

  cli::CommandLine commandLine(
      "qlora-train", "--output_dir DIR [options]",
      "Fine-tunes a LoRA adapter on a 4-bit (NF4) base model with a training\n"
      "step compiled ahead of time, and writes a PEFT adapter. Without\n"
      "--model_name_or_path it trains the built-in tiny Llama, and without\n"
      "--data the built-in text.");
  commandLine.option("model_name_or_path", "DIR",
                     "base checkpoint: bf16 safetensors (quantized on load) "
                     "or a bitsandbytes 4-bit checkpoint",
                     &args.model_name_or_path);
  commandLine.option("data", "FILE",
                     "*.safetensors (input_ids, labels), *.jsonl, or text",
                     &args.data);
  commandLine.option("init_adapter", "DIR", "PEFT adapter to start from",
                     &args.init_adapter);
  commandLine.option("output_dir", "DIR", "where the adapter is written",
                     &args.output_dir);
  commandLine.option("step_dir", "DIR",
                     "a step compiled by qlora-compile (default: compile one "
                     "into OUTPUT_DIR/compiled-step)",
                     &stepDir);
  cli::addStepOptionFlags(commandLine, stepOptions);
  commandLine.option("learning_rate", "X", "peak learning rate",
                     &args.learning_rate);
  commandLine.option("max_steps", "N", "optimizer steps", &args.max_steps);
  commandLine.option("per_device_train_batch_size", "N",
                     "sequences per micro-batch",
                     &args.per_device_train_batch_size);
  commandLine.option("gradient_accumulation_steps", "N",
                     "micro-batches per optimizer step",
                     &args.gradient_accumulation_steps);
  commandLine.option("lr_scheduler_type", "NAME",
                     "constant, constant_with_warmup, linear or cosine",
                     &args.lr_scheduler_type);
  commandLine.option("warmup_steps", "N", "linear warm-up steps",
                     &args.warmup_steps);
  commandLine.option("seed", "N", "seed of the adapter initialization", &seed);
  commandLine.option("max_seq_length", "N",
                     "tokens per sequence for text and JSONL data", &seqLen);
  commandLine.option("logging_file", "FILE",
                     "JSON lines log (default: OUTPUT_DIR/train_log.jsonl)",
                     &args.logging_file);
  commandLine.option("logging_steps", "N",
                     "print a line every N steps when not on a terminal",
                     &loggingSteps);
  commandLine.option("device", "NAME",
                     "cuda or cpu (default: cuda where a GPU is present, "
                     "else cpu; a given --step_dir decides by its target)",
                     &args.device);
  commandLine.flag("quiet", "print only the summary", &quiet);
  if (std::optional<int> code = commandLine.parseOrExit(argc, argv))
    return *code;
  if (!commandLine.positional().empty())
    return fail("unexpected argument '" + commandLine.positional()[0] +
                "' (try --help)");
  if (args.output_dir.empty())
    return fail("--output_dir is required");
  args.seed = uint64_t(seed);
  // The optimizer's constants are compiled into the step; the trainer checks
  // a given step against them.
  args.max_grad_norm = stepOptions.max_grad_norm;
  args.weight_decay = stepOptions.weight_decay;
  args.adam_beta1 = stepOptions.adam_beta1;
  args.adam_beta2 = stepOptions.adam_beta2;
  args.adam_epsilon = stepOptions.adam_epsilon;
  if (Expected<ScheduleKind> kind = parseScheduleKind(args.lr_scheduler_type);
      !kind)
    return fail(kind.message());

  std::error_code error;
  fs::create_directories(args.output_dir, error);
  if (error)
    return fail(args.output_dir + ": " + error.message());
  if (args.model_name_or_path.empty()) {
    args.model_name_or_path = args.output_dir + "/base-model";
    Status written = writeTinyLlama(args.model_name_or_path, 0);
    if (!written)
      return fail(written.message());
    if (!quiet)
      std::printf("Using the built-in tiny Llama (written to %s)\n",
                  args.model_name_or_path.c_str());
  }
  Expected<int64_t> dataSeq = dataSequenceLength(args.data);
  if (!dataSeq)
    return fail(dataSeq.message());
  if (*dataSeq > 0)
    seqLen = *dataSeq;

  if (!args.device.empty() && args.device != "cuda" && args.device != "cpu")
    return fail("--device must be cuda or cpu, got '" + args.device + "'");
  if (stepDir.empty()) {
    // The step this machine can run: cuda where a GPU is present.
    std::string target = !args.device.empty() ? args.device
                         : cudaBackendAvailable() ? "cuda"
                                                  : "cpu";
    stepDir = args.output_dir + "/compiled-step";
    std::vector<std::string> compile = {
        cli::executableDirectory() + "/qlora-compile",
        "--model_name_or_path", args.model_name_or_path,
        "--output_dir", stepDir,
        "--per_device_train_batch_size",
        std::to_string(args.per_device_train_batch_size),
        "--max_seq_length", std::to_string(seqLen),
        "--target", target,
    };
    for (const std::string &argument : stepOptions.arguments())
      compile.push_back(argument);
    if (quiet)
      compile.push_back("--quiet");
    Status compiled = cli::runProcess(compile);
    if (!compiled)
      return fail("compiling the training step: " + compiled.message());
  }

  Expected<StepManifest> manifest = StepManifest::read(stepDir + "/manifest.json");
  if (!manifest)
    return fail(manifest.message());
  int64_t vocab = 0, pad = 0;
  if (const json::Value *value = manifest->model.find("vocab_size"))
    vocab = value->isInt() ? value->asInt() : 0;
  if (const json::Value *value = manifest->model.find("pad_token_id"))
    pad = value->isInt() ? value->asInt() : 0;
  Expected<TokenDataset> data =
      args.data.empty()
          ? TokenDataset::fromText(builtinTrainingText(), "the built-in text",
                                   manifest->seqLen, vocab)
          : TokenDataset::open(args.data, manifest->seqLen, vocab,
                               int32_t(pad));
  if (!data)
    return fail(data.message());

  Expected<std::unique_ptr<Trainer>> trainer =
      Trainer::create(stepDir, args, data.take());
  if (!trainer)
    return fail(trainer.message());

  std::string logPath = args.logging_file.empty()
                            ? args.output_dir + "/train_log.jsonl"
                            : args.logging_file;
  std::ofstream log(logPath, std::ios::trunc);
  if (!log)
    return fail("cannot write the log " + logPath);
  bool interactive = !quiet && ::isatty(STDERR_FILENO);
  if (!quiet)
    std::printf("Training %lld steps of %lld x %lld x %lld tokens "
                "(batch x accumulation x sequence) on %s\n",
                (long long)args.max_steps,
                (long long)args.per_device_train_batch_size,
                (long long)args.gradient_accumulation_steps,
                (long long)manifest->seqLen,
                (*trainer)->deviceDescription().c_str());
  double firstLoss = 0.0, lastLoss = 0.0, seconds = 0.0;
  for (int64_t i = 0; i < args.max_steps; ++i) {
    Expected<StepRecord> record = (*trainer)->step();
    if (!record) {
      if (interactive)
        std::fputc('\n', stderr);
      return fail(record.message() + "; no adapter was written");
    }
    json::Value line = json::Value::object();
    line.set("step", record->step);
    line.set("loss", record->loss);
    line.set("learning_rate", record->learningRate);
    line.set("grad_norm", record->gradNorm);
    line.set("tokens_per_second", record->tokensPerSecond);
    log << json::writeCompact(line) << "\n";
    log.flush();
    if (i == 0)
      firstLoss = record->loss;
    lastLoss = record->loss;
    seconds += record->seconds;
    bool due = record->step == 1 || record->step == args.max_steps ||
               (loggingSteps > 0 && record->step % loggingSteps == 0);
    if (!quiet && (interactive || due))
      drawProgress(*record, args.max_steps, interactive);
  }

  LoraSettings settings = (*trainer)->loraSettings();
  Expected<AdapterWeights> adapter = (*trainer)->adapter();
  if (!adapter)
    return fail(adapter.message() + "; no adapter was written");
  Status saved = writePeftAdapter(args.output_dir, settings, *adapter);
  if (!saved)
    return fail(saved.message());
  std::printf("Trained %lld steps in %.1f s: loss %.4f -> %.4f. Adapter "
              "written to %s (adapter_config.json, adapter_model.safetensors); "
              "log in %s\n",
              (long long)args.max_steps, seconds, firstLoss, lastLoss,
              args.output_dir.c_str(), logPath.c_str());
  return 0;
}
