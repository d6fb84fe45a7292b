//===- BnbFormat.cpp - bitsandbytes' serialized 4-bit weights ---------------===//
#include "runtime/BnbFormat.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace qlora {
namespace {

int64_t product(const std::vector<int64_t> &shape) {
  int64_t n = 1;
  for (int64_t dim : shape)
    n *= dim;
  return n;
}

std::string shapeString(const std::vector<int64_t> &shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

template <typename T>
Status addVector(SafetensorsWriter &writer, const std::string &name,
                 DType dtype, const std::vector<T> &values,
                 std::vector<int64_t> shape) {
  return writer.add(name, dtype, std::move(shape), values.data(),
                    values.size() * sizeof(T));
}

/// Copies a checkpoint tensor into a vector after checking dtype and size.
template <typename T>
Expected<std::vector<T>> readVector(const CheckpointDir &checkpoint,
                                    const std::string &name, DType dtype,
                                    int64_t expectedCount) {
  Expected<CheckpointTensor> tensor = checkpoint.get(name);
  if (!tensor)
    return tensor.error();
  const TensorInfo &info = *tensor->info;
  if (info.dtype != dtype)
    return makeError("{}: tensor '{}': expects dtype {}, got {}",
                     tensor->file->path(), name, dtypeName(dtype),
                     dtypeName(info.dtype));
  if (info.numElements() != expectedCount)
    return makeError("{}: tensor '{}': expects {} elements, got {}",
                     tensor->file->path(), name, expectedCount,
                     info.numElements());
  ByteSpan bytes = tensor->file->data(info);
  std::vector<T> values(expectedCount);
  std::memcpy(values.data(), bytes.data, bytes.size);
  return values;
}

template <size_t N>
bool sameFloats(const std::vector<float> &values, const float (&table)[N]) {
  return values.size() == N &&
         std::memcmp(values.data(), table, sizeof(table)) == 0;
}

} // namespace

int64_t NF4Weight::numElements() const { return product(shape); }

std::vector<float> NF4Weight::blockAbsmax() const {
  return nested ? dq::dequantizeAbsmax(*nested) : absmax;
}

int64_t NF4Weight::storageBytes() const {
  int64_t bytes = int64_t(packed.size());
  if (nested)
    bytes += int64_t(nested->codes.size()) +
             int64_t(nested->scales.size() * sizeof(float)) + sizeof(float);
  else
    bytes += int64_t(absmax.size() * sizeof(float));
  return bytes;
}

Expected<NF4Weight> quantizeWeight(const void *data, ElementType dtype,
                                   std::vector<int64_t> shape,
                                   int64_t blockSize, bool doubleQuant) {
  if (!nf4::isSupportedBlockSize(blockSize))
    return makeError("expects a block size of 32, 64, ..., 4096, got {}",
                     blockSize);
  NF4Weight weight;
  weight.shape = std::move(shape);
  weight.dtype = dtype;
  weight.blockSize = blockSize;
  int64_t n = weight.numElements();
  if (n <= 0)
    return makeError("cannot quantize an empty tensor of shape {}",
                     shapeString(weight.shape));
  weight.packed.resize(nf4::packedBytes(n));
  std::vector<float> absmax(nf4::numBlocks(n, blockSize));
  nf4::quantize(data, dtype, n, blockSize, weight.packed.data(),
                absmax.data());
  for (size_t block = 0; block < absmax.size(); ++block)
    if (!std::isfinite(absmax[block]))
      return makeError("cannot quantize: block {} (elements {}..{}) holds a "
                       "NaN or an infinity",
                       block, int64_t(block) * blockSize,
                       std::min(n, int64_t(block + 1) * blockSize) - 1);
  if (doubleQuant)
    weight.nested = dq::quantizeAbsmax(absmax.data(), int64_t(absmax.size()));
  else
    weight.absmax = std::move(absmax);
  return weight;
}

void dequantizeWeight(const NF4Weight &weight, ElementType outType,
                      void *output) {
  std::vector<float> absmax = weight.blockAbsmax();
  nf4::dequantize(weight.packed.data(), absmax.data(), weight.numElements(),
                  weight.blockSize, outType, output);
}

namespace bnb {

std::string quantStateJson(const NF4Weight &weight) {
  json::Value state = json::Value::object();
  state.set("quant_type", "nf4");
  state.set("blocksize", weight.blockSize);
  state.set("dtype", torchDtypeName(weight.dtype));
  json::Value shape = json::Value::array();
  for (int64_t dim : weight.shape)
    shape.push(dim);
  state.set("shape", std::move(shape));
  if (weight.nested) {
    state.set("nested_blocksize", weight.nested->blockSize);
    state.set("nested_dtype", "float32");
    state.set("nested_offset", double(weight.nested->offset));
  }
  return json::writePython(state);
}

Status addWeightTensors(SafetensorsWriter &writer, const std::string &name,
                        const NF4Weight &weight) {
  int64_t packedBytes = int64_t(weight.packed.size());
  QLORA_RETURN_IF_ERROR(
      addVector(writer, name, DType::U8, weight.packed, {packedBytes, 1}));
  std::vector<float> code(std::begin(nf4::kCode), std::end(nf4::kCode));
  QLORA_RETURN_IF_ERROR(
      addVector(writer, name + ".quant_map", DType::F32, code, {16}));
  if (weight.nested) {
    const dq::DoubleQuantized &nested = *weight.nested;
    QLORA_RETURN_IF_ERROR(addVector(writer, name + ".absmax", DType::U8,
                                    nested.codes,
                                    {int64_t(nested.codes.size())}));
    QLORA_RETURN_IF_ERROR(addVector(writer, name + ".nested_absmax",
                                    DType::F32, nested.scales,
                                    {int64_t(nested.scales.size())}));
    std::vector<float> map(std::begin(dq::kDynamicMap),
                           std::end(dq::kDynamicMap));
    QLORA_RETURN_IF_ERROR(addVector(writer, name + ".nested_quant_map",
                                    DType::F32, map, {256}));
  } else {
    QLORA_RETURN_IF_ERROR(addVector(writer, name + ".absmax", DType::F32,
                                    weight.absmax,
                                    {int64_t(weight.absmax.size())}));
  }
  std::string state = quantStateJson(weight);
  return writer.add(name + kQuantStateSuffix, DType::U8,
                    {int64_t(state.size())}, state.data(), state.size());
}

bool isQuantizedWeight(const CheckpointDir &checkpoint,
                       const std::string &name) {
  return checkpoint.find(name + kQuantStateSuffix) != nullptr;
}

Expected<NF4Weight> readWeight(const CheckpointDir &checkpoint,
                               const std::string &name) {
  std::string stateName = name + kQuantStateSuffix;
  Expected<ByteSpan> stateBytes = checkpoint.data(stateName);
  if (!stateBytes)
    return stateBytes.error();
  auto fail = [&](const std::string &message) {
    return makeError("tensor '{}': {}", name, message);
  };
  Expected<json::Value> state = json::parse(std::string_view(
      reinterpret_cast<const char *>(stateBytes->data), stateBytes->size));
  if (!state)
    return fail("quant state is not valid JSON: " + state.message());
  if (!state->isObject())
    return fail("quant state is not a JSON object");

  Expected<std::string> quantType = state->getString("quant_type");
  if (!quantType)
    return fail("quant state: " + quantType.message());
  if (*quantType != "nf4")
    return fail("expects quant_type nf4, got " + *quantType);
  Expected<int64_t> blockSize = state->getInt("blocksize");
  if (!blockSize)
    return fail("quant state: " + blockSize.message());
  if (!nf4::isSupportedBlockSize(*blockSize))
    return fail("unsupported blocksize " + std::to_string(*blockSize));
  Expected<std::string> dtypeName = state->getString("dtype");
  if (!dtypeName)
    return fail("quant state: " + dtypeName.message());
  Expected<ElementType> dtype = parseTorchDtype(*dtypeName);
  if (!dtype)
    return fail(dtype.message());
  Expected<const json::Value *> shapeValue = state->get("shape");
  if (!shapeValue || !(*shapeValue)->isArray() || (*shapeValue)->size() == 0)
    return fail("quant state: expects a non-empty 'shape' array");

  NF4Weight weight;
  weight.dtype = *dtype;
  weight.blockSize = *blockSize;
  for (const json::Value &dim : (*shapeValue)->asArray()) {
    if (!dim.isInt() || dim.asInt() <= 0)
      return fail("quant state: shape dims must be positive integers");
    weight.shape.push_back(dim.asInt());
  }
  int64_t n = weight.numElements();
  int64_t blocks = weight.numBlocks();

  Expected<std::vector<uint8_t>> packed =
      readVector<uint8_t>(checkpoint, name, DType::U8, nf4::packedBytes(n));
  if (!packed)
    return packed.error();
  weight.packed = packed.take();
  Expected<std::vector<float>> quantMap =
      readVector<float>(checkpoint, name + ".quant_map", DType::F32, 16);
  if (!quantMap)
    return quantMap.error();
  if (!sameFloats(*quantMap, nf4::kCode))
    return fail("quant_map is not the NF4 table");

  if (state->find("nested_offset")) {
    Expected<int64_t> nestedBlock = state->getInt("nested_blocksize");
    Expected<double> offset = state->getDouble("nested_offset");
    if (!nestedBlock || !offset)
      return fail("quant state: " + (nestedBlock ? offset.message()
                                                 : nestedBlock.message()));
    if (*nestedBlock <= 0)
      return fail("nested_blocksize must be positive");
    dq::DoubleQuantized nested;
    nested.blockSize = *nestedBlock;
    nested.offset = float(*offset);
    if (double(nested.offset) != *offset)
      return fail("nested_offset is not an fp32 value");
    Expected<std::vector<uint8_t>> codes =
        readVector<uint8_t>(checkpoint, name + ".absmax", DType::U8, blocks);
    if (!codes)
      return codes.error();
    nested.codes = codes.take();
    Expected<std::vector<float>> scales = readVector<float>(
        checkpoint, name + ".nested_absmax", DType::F32,
        (blocks + nested.blockSize - 1) / nested.blockSize);
    if (!scales)
      return scales.error();
    nested.scales = scales.take();
    Expected<std::vector<float>> map = readVector<float>(
        checkpoint, name + ".nested_quant_map", DType::F32, 256);
    if (!map)
      return map.error();
    if (!sameFloats(*map, dq::kDynamicMap))
      return fail("nested_quant_map is not bitsandbytes' dynamic map");
    weight.nested = std::move(nested);
  } else {
    Expected<std::vector<float>> absmax =
        readVector<float>(checkpoint, name + ".absmax", DType::F32, blocks);
    if (!absmax)
      return absmax.error();
    weight.absmax = absmax.take();
  }
  return weight;
}

json::Value quantizationConfigJson(const QuantizationConfig &config) {
  json::Value skip;
  if (!config.llm_int8_skip_modules.empty()) {
    skip = json::Value::array();
    for (const std::string &module : config.llm_int8_skip_modules)
      skip.push(module);
  }
  // Keys in the order transformers writes them (sorted).
  json::Value value = json::Value::object();
  value.set("_load_in_4bit", true);
  value.set("_load_in_8bit", false);
  value.set("bnb_4bit_compute_dtype",
            torchDtypeName(config.bnb_4bit_compute_dtype));
  value.set("bnb_4bit_quant_storage", "uint8");
  value.set("bnb_4bit_quant_type", config.bnb_4bit_quant_type);
  value.set("bnb_4bit_use_double_quant", config.bnb_4bit_use_double_quant);
  value.set("llm_int8_enable_fp32_cpu_offload", false);
  value.set("llm_int8_has_fp16_weight", false);
  value.set("llm_int8_skip_modules", std::move(skip));
  value.set("llm_int8_threshold", 6.0);
  value.set("load_in_4bit", true);
  value.set("load_in_8bit", false);
  value.set("quant_method", "bitsandbytes");
  return value;
}

bool shouldQuantize(const std::string &tensorName,
                    const std::vector<int64_t> &shape,
                    const QuantizationConfig &config) {
  const std::string suffix = ".weight";
  if (shape.size() != 2 || tensorName.size() <= suffix.size() ||
      tensorName.compare(tensorName.size() - suffix.size(), suffix.size(),
                         suffix) != 0)
    return false;
  if (tensorName.find(".layers.") == std::string::npos ||
      tensorName.find("embed") != std::string::npos ||
      tensorName.find("norm") != std::string::npos)
    return false;
  // Skipped modules match a whole dotted component, as transformers does.
  std::string moduleName =
      tensorName.substr(0, tensorName.size() - suffix.size());
  for (const std::string &skip : config.llm_int8_skip_modules) {
    std::string dotted = "." + moduleName + ".";
    if (dotted.find("." + skip + ".") != std::string::npos)
      return false;
  }
  return true;
}

} // namespace bnb
} // namespace qlora
