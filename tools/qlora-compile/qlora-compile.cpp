//===- qlora-compile.cpp - Compile a QLoRA training step ahead of time ------===//
//
// usage: qlora-compile --model_name_or_path DIR --output_dir STEP_DIR [options]
//
// Imports a Hugging Face Llama checkpoint, runs the qlora pipeline (LoRA
// injection, NF4 quantization, fusion, backward and optimizer, memory plan,
// EmitC) for the target (cuda or cpu), prints C++, writes the manifest and
// builds the step library that qlora-train loads: nvcc for a cuda step
// (which then runs on any GPU host with the runtime), the host compiler for
// a cpu step. STEP_DIR receives model.mlir (the imported forward graph),
// train_step.mlir (the planned step), step.cu or step.cpp, manifest.json and
// step.so.
//
//===----------------------------------------------------------------------===//
#include "LlamaImporter.h"
#include "ModelConfig.h"
#include "ModelPresets.h"
#include "StepBuildConfig.h"

#include "codegen/BufferPlan.h"
#include "codegen/CostModel.h"
#include "codegen/Passes.h"
#include "dialects/QLoRAOps.h"
#include "passes/Passes.h"
#include "runtime/Checkpoint.h"
#include "tools/common/StepOptionFlags.h"

#include "mlir/Dialect/EmitC/IR/EmitC.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"

#include <fmt/format.h>

#include <cstdio>
#include <set>
#include <fstream>
#include <sstream>

using namespace mlir;
using namespace mlir::qlora;

namespace {

int fail(const std::string &message) {
  std::fprintf(stderr, "qlora-compile: error: %s\n", message.c_str());
  return 1;
}

bool writeText(const std::string &path, const std::string &text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  return bool(out);
}

std::string printModule(ModuleOp module) {
  std::string text;
  llvm::raw_string_ostream os(text);
  module.print(os);
  return text;
}

/// PEFT's print_trainable_parameters: 4-bit weights count at their packed
/// size (half the logical elements), as PEFT counts Params4bit.
std::string trainableParameters(ModuleOp module) {
  int64_t trainable = 0, all = 0;
  std::set<std::string> seen;
  module.walk([&](ParamOp param) {
    if (!seen.insert(param.getName().str()).second)
      return;
    int64_t n = 1;
    ArrayRef<int64_t> shape =
        isa<NF4Type>(param.getType())
            ? cast<NF4Type>(param.getType()).getShape()
            : cast<RankedTensorType>(param.getType()).getShape();
    for (int64_t dim : shape)
      n *= dim;
    if (param.getTrainable())
      trainable += n;
    all += isa<NF4Type>(param.getType()) ? n / 2 : n;
  });
  auto grouped = [](int64_t value) {
    std::string digits = std::to_string(value), text;
    for (size_t i = 0; i < digits.size(); ++i) {
      if (i && (digits.size() - i) % 3 == 0)
        text += ',';
      text += digits[i];
    }
    return text;
  };
  char percent[32];
  std::snprintf(percent, sizeof percent, "%.4f",
                all ? 100.0 * double(trainable) / double(all) : 0.0);
  return "trainable params: " + grouped(trainable) +
         " || all params: " + grouped(all) + " || trainable%: " + percent;
}

/// Runs a compiler with `args`, its output going to `dir`/build.log; the
/// log's tail is in the error.
::qlora::Status runCompiler(const std::string &dir,
                            const std::vector<std::string> &args,
                            const char *hint) {
  llvm::ErrorOr<std::string> program = llvm::sys::findProgramByName(args[0]);
  if (!program)
    return ::qlora::makeError("cannot find the compiler '{}' ({})", args[0],
                              hint);
  std::vector<llvm::StringRef> argv(args.begin(), args.end());
  std::string log = dir + "/build.log";
  std::optional<llvm::StringRef> redirects[] = {
      std::nullopt, llvm::StringRef(log), llvm::StringRef(log)};
  std::string message;
  int code = llvm::sys::ExecuteAndWait(*program, argv, std::nullopt,
                                       redirects, 0, 0, &message);
  if (code == 0)
    return ::qlora::Status::ok();
  std::ifstream in(log);
  std::stringstream text;
  text << in.rdbuf();
  std::string output = text.str();
  if (output.size() > 4000)
    output = "..." + output.substr(output.size() - 4000);
  return ::qlora::makeError("building {}/step.so failed ({}):\n{}", dir,
                            message.empty() ? "exit " + std::to_string(code)
                                            : message,
                            output);
}

/// What qlora-rematerialize decided, for the user; empty without a budget.
std::string memoryPlan(ModuleOp module) {
  auto plan = module->getAttrOfType<DictionaryAttr>(kRematerializationAttr);
  if (!plan)
    return "";
  auto bytes = [&](StringRef key) {
    return ::qlora::formatByteSize(plan.getAs<IntegerAttr>(key).getInt());
  };
  auto counts = [&](StringRef key) {
    std::string text;
    for (NamedAttribute entry : plan.getAs<DictionaryAttr>(key))
      text += (text.empty() ? "" : ", ") + entry.getName().str() + " x" +
              std::to_string(cast<IntegerAttr>(entry.getValue()).getInt());
    return text.empty() ? std::string("none") : text;
  };
  double flops = plan.getAs<FloatAttr>("recomputed_flops").getValueAsDouble();
  double stepFlops = plan.getAs<FloatAttr>("step_flops").getValueAsDouble();
  return fmt::format(
      "Memory plan under --max_memory {}: arena {} -> {} (named slots {}; "
      "the runtime holds {} beside it)\n"
      "  recomputed in the backward: {}\n"
      "  offloaded to host memory ({}): {}\n"
      "  kept from the forward: {}\n"
      "  recomputed work: {} per micro-batch ({:.1f}% of the step's matrix "
      "work)\n",
      bytes("budget"), bytes("arena_before"), bytes("arena_after"),
      bytes("named_slots"), bytes("runtime_reserve"), counts("recomputed"),
      bytes("host_bytes"), counts("offloaded"), counts("kept"),
      formatFlops(flops), stepFlops > 0 ? 100.0 * flops / stepFlops : 0.0);
}

std::vector<std::string> includeFlags() {
  std::vector<std::string> flags;
  for (const std::string &include : ::qlora::cli::splitList(
           std::string(QLORA_STEP_INCLUDE_DIRS), ';'))
    flags.push_back("-I" + include);
  return flags;
}

/// A cpu step: step.cpp built by the host compiler into step.so with the
/// cpu kernels and the runtime linked in.
::qlora::Status buildCpuLibrary(const std::string &dir, const std::string &cxx) {
  std::vector<std::string> args = {cxx, "-O2", "-std=c++17", "-shared",
                                   "-fPIC", "-w"};
  for (const std::string &flag : includeFlags())
    args.push_back(flag);
  args.push_back(dir + "/step.cpp");
  args.push_back("-o");
  args.push_back(dir + "/step.so");
  for (const std::string &library :
       ::qlora::cli::splitList(std::string(QLORA_STEP_LIBRARIES), ';'))
    args.push_back(library);
  args.push_back("-lfmt");
  args.push_back("-lpthread");
  return runCompiler(dir, args, "set CXX or --cxx");
}

/// A cuda step: step.cu built by nvcc into step.so for every architecture
/// of the target, linked by soname against the cuda step runtime that the
/// GPU host provides.
::qlora::Status buildCudaLibrary(const std::string &dir,
                                 const std::string &nvcc,
                                 const std::vector<std::string> &archs) {
  std::string runtime = QLORA_STEP_CUDA_LIBRARY;
  if (nvcc.empty() || runtime.empty())
    return ::qlora::makeError(
        "this qlora-compile was built without CUDA (no nvcc was found), so "
        "it cannot build a cuda step; compile with --target cpu, or rebuild "
        "where nvcc is");
  std::vector<std::string> args = {nvcc, "-O2", "-std=c++17", "-shared",
                                   "-Xcompiler", "-fPIC", "-cudart", "shared",
                                   "-w"};
  for (const std::string &arch : archs) {
    // sm_90a -> compute_90a / sm_90a: machine code for each, no PTX.
    args.push_back("-gencode=arch=compute_" + arch.substr(3) + ",code=" + arch);
  }
  for (const std::string &flag : includeFlags())
    args.push_back(flag);
  args.push_back(dir + "/step.cu");
  args.push_back("-o");
  args.push_back(dir + "/step.so");
  size_t slash = runtime.rfind('/');
  args.push_back("-L" + runtime.substr(0, slash));
  args.push_back("-lQLoRAStepCuda");
  return runCompiler(dir, args, "set --nvcc");
}

} // namespace

int main(int argc, char **argv) {
  // The product is the cuda step; a build without nvcc cannot make one.
  std::string model, configName, outputDir, cxx, nvcc = QLORA_NVCC,
      target = nvcc.empty() ? "cpu" : "cuda";
  int64_t batchSize = 2, seqLen = 0;
  ::qlora::StepOptions stepOptions;
  bool quiet = false;

  ::qlora::cli::CommandLine commandLine(
      "qlora-compile", "--model_name_or_path DIR --output_dir STEP_DIR [options]",
      "Compiles the QLoRA training step of a Hugging Face Llama-family\n"
      "checkpoint ahead of time for its exact shapes, and builds the library\n"
      "that qlora-train runs. Flags use PEFT LoraConfig and HF\n"
      "TrainingArguments names.");
  commandLine.option("model_name_or_path", "DIR",
                     "checkpoint directory (config.json + safetensors, bf16 "
                     "or bitsandbytes 4-bit)",
                     &model);
  commandLine.option("config", "NAME|PATH",
                     "compile from a bare config instead of a checkpoint "
                     "(for benchmarks on random weights): a preset (" +
                         ::qlora::cli::joinList(::qlora::modelPresetNames()) +
                         ") or a config.json",
                     &configName);
  commandLine.option("output_dir", "DIR", "where the compiled step goes",
                     &outputDir);
  commandLine.option("per_device_train_batch_size", "N",
                     "sequences per micro-batch", &batchSize);
  commandLine.option("max_seq_length", "N",
                     "tokens per sequence (default: min(512, "
                     "max_position_embeddings))",
                     &seqLen);
  ::qlora::cli::addStepOptionFlags(commandLine, stepOptions);
  commandLine.option("target", "NAME",
                     "the backend the step runs on: cuda (built here with "
                     "nvcc, run on a GPU host; the default where this build "
                     "has nvcc) or cpu",
                     &target);
  commandLine.option("cxx", "PATH", "C++ compiler for a cpu step library "
                                    "(default: $CXX or c++)",
                     &cxx);
  commandLine.option("nvcc", "PATH", "nvcc for a cuda step library", &nvcc);
  commandLine.flag("quiet", "print only errors", &quiet);
  if (std::optional<int> code = commandLine.parseOrExit(argc, argv))
    return *code;
  if (!commandLine.positional().empty())
    return fail("unexpected argument '" + commandLine.positional()[0] +
                "' (try --help)");
  if ((model.empty() == configName.empty()) || outputDir.empty())
    return fail("--output_dir and one of --model_name_or_path and --config "
                "are required");
  if (target != "cpu" && target != "cuda")
    return fail("--target must be cpu or cuda, got '" + target + "'");
  if (cxx.empty())
    cxx = std::getenv("CXX") ? std::getenv("CXX") : "c++";

  ::qlora::Expected<::qlora::ModelConfig> config =
      configName.empty() ? ::qlora::ModelConfig::read(model)
                         : ::qlora::readModelConfig(configName);
  if (!config)
    return fail(config.message());
  if (seqLen == 0)
    seqLen = std::min<int64_t>(512, config->maxPositionEmbeddings);

  MLIRContext context;
  context.loadDialect<QLoRADialect, func::FuncDialect, emitc::EmitCDialect>();
  ImportOptions importOptions{batchSize, seqLen};
  ::qlora::Expected<OwningOpRef<ModuleOp>> imported = [&] {
    if (!configName.empty())
      return importLlamaConfig(context, *config, importOptions, configName);
    ::qlora::Expected<::qlora::CheckpointDir> checkpoint =
        ::qlora::CheckpointDir::open(model);
    if (!checkpoint)
      return ::qlora::Expected<OwningOpRef<ModuleOp>>(checkpoint.error());
    return importLlama(context, *config, *checkpoint, importOptions);
  }();
  if (!imported)
    return fail(imported.message());
  OwningOpRef<ModuleOp> module = imported.take();

  std::error_code error;
  llvm::sys::fs::create_directories(outputDir);
  if (!writeText(outputDir + "/model.mlir", printModule(*module)))
    return fail("cannot write " + outputDir + "/model.mlir");

  // The shared pipeline, then the lowering; diagnostics go to stderr.
  QLoRAPipelineOptions options;
  setStepOptions(options, stepOptions);
  options.target = target;
  options.planMemory = true;
  PassManager pm(&context);
  buildQLoRAPipeline(pm, options);
  if (failed(pm.run(*module)))
    return fail("the qlora pipeline failed (see the diagnostics above)");
  std::string summary = trainableParameters(*module);
  std::string plan = memoryPlan(*module);
  if (!writeText(outputDir + "/train_step.mlir", printModule(*module)))
    return fail("cannot write " + outputDir + "/train_step.mlir");

  PassManager lower(&context);
  lower.addPass(createConvertQLoRAToEmitCPass());
  if (failed(lower.run(*module)))
    return fail("lowering to EmitC failed (see the diagnostics above)");
  FailureOr<::qlora::StepManifest> manifest = buildManifest(*module);
  if (failed(manifest))
    return fail("cannot build the manifest");
  manifest->library = "step.so";
  manifest->batchSize = batchSize;
  manifest->seqLen = seqLen;
  ::qlora::json::Value facts = ::qlora::json::Value::object();
  facts.set("model_type", config->modelType);
  facts.set("vocab_size", config->vocabSize);
  facts.set("hidden_size", config->hiddenSize);
  facts.set("num_hidden_layers", config->numLayers);
  facts.set("num_attention_heads", config->numHeads);
  facts.set("num_key_value_heads", config->numKvHeads);
  facts.set("head_dim", config->headDim);
  facts.set("max_position_embeddings", config->maxPositionEmbeddings);
  facts.set("pad_token_id", config->padTokenId);
  facts.set("model_name_or_path", model.empty() ? configName : model);
  manifest->model = facts;
  manifest->options = stepOptions;

  std::string cpp;
  llvm::raw_string_ostream cppStream(cpp);
  if (failed(emitCpp(*module, cppStream)))
    return fail("printing C++ failed");
  std::string source = target == "cuda" ? "step.cu" : "step.cpp";
  if (!writeText(outputDir + "/" + source, cpp))
    return fail("cannot write " + outputDir + "/" + source);
  if (!writeText(outputDir + "/manifest.json",
                 ::qlora::json::writeIndented(manifest->toJson())))
    return fail("cannot write " + outputDir + "/manifest.json");
  ::qlora::Status built =
      target == "cuda"
          ? buildCudaLibrary(outputDir, nvcc, manifest->architectures)
          : buildCpuLibrary(outputDir, cxx);
  if (!built)
    return fail(built.message());

  if (!quiet) {
    std::printf("%s\n%s", summary.c_str(), plan.c_str());
    std::printf("Compiled %s (%s, %lld layers) for batch %lld x %lld tokens: "
                "arena %.2f MB, %zu buffers\n",
                (model.empty() ? configName : model).c_str(),
                config->modelType.c_str(),
                (long long)config->numLayers, (long long)batchSize,
                (long long)seqLen, double(manifest->arenaBytes) / 1e6,
                manifest->buffers.size());
    std::printf("Wrote %s/{model.mlir, train_step.mlir, %s, manifest.json, "
                "step.so} for %s\n",
                outputDir.c_str(), source.c_str(), target.c_str());
  }
  return 0;
}
