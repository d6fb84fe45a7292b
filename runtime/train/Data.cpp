//===- Data.cpp - Token batches for training --------------------------------===//
#include "runtime/train/Data.h"

#include "runtime/Json.h"
#include "runtime/Safetensors.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace qlora {
namespace {

bool endsWith(const std::string &text, const std::string &suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// Reads an integer tensor of shape [N, S] as int64 values.
Expected<std::vector<int64_t>> readIdTensor(const SafetensorsFile &file,
                                            const TensorInfo &info,
                                            int64_t &rows, int64_t &cols) {
  if (info.shape.size() != 2)
    return makeError("{}: tensor '{}': expects shape [rows, seq], got {} dims",
                     file.path(), info.name, info.shape.size());
  if (info.dtype != DType::I64 && info.dtype != DType::I32)
    return makeError("{}: tensor '{}': expects dtype I64 or I32, got {}",
                     file.path(), info.name, dtypeName(info.dtype));
  rows = info.shape[0];
  cols = info.shape[1];
  ByteSpan bytes = file.data(info);
  std::vector<int64_t> values(rows * cols);
  for (int64_t i = 0; i < rows * cols; ++i) {
    if (info.dtype == DType::I64) {
      std::memcpy(&values[i], bytes.data + 8 * i, 8);
    } else {
      int32_t value;
      std::memcpy(&value, bytes.data + 4 * i, 4);
      values[i] = value;
    }
  }
  return values;
}

Expected<std::vector<int64_t>> jsonIds(const json::Value &line,
                                       const char *key) {
  const json::Value *array = line.find(key);
  std::vector<int64_t> ids;
  if (!array)
    return ids;
  if (!array->isArray())
    return makeError("'{}' must be an array of integers", key);
  for (const json::Value &id : array->asArray()) {
    if (!id.isInt())
      return makeError("'{}' must be an array of integers, found a {}", key,
                       json::kindName(id.kind()));
    ids.push_back(id.asInt());
  }
  return ids;
}

} // namespace

Status TokenDataset::addRow(std::vector<int64_t> ids,
                            std::vector<int64_t> labels,
                            const std::string &where) {
  if (ids.empty())
    return makeError("{}: {}: empty input_ids", path_, where);
  if (int64_t(ids.size()) > seq_)
    return makeError("{}: {}: {} tokens is longer than the sequence length "
                     "{} the step was compiled for",
                     path_, where, ids.size(), seq_);
  if (!labels.empty() && labels.size() != ids.size())
    return makeError("{}: {}: labels has {} entries, input_ids {}", path_,
                     where, labels.size(), ids.size());
  Row row;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_)
      return makeError("{}: {}: token id {} at position {} is outside the "
                       "vocabulary [0, {})",
                       path_, where, ids[i], i, vocab_);
    int64_t label = labels.empty() ? ids[i] : labels[i];
    if (label != kIgnoreIndex && (label < 0 || label >= vocab_))
      return makeError("{}: {}: label {} at position {} is outside the "
                       "vocabulary [0, {}) and is not {}",
                       path_, where, label, i, vocab_, kIgnoreIndex);
    row.inputIds.push_back(int32_t(ids[i]));
    row.labels.push_back(int32_t(label));
  }
  row.inputIds.resize(seq_, pad_);
  row.labels.resize(seq_, kIgnoreIndex);
  rows_.push_back(std::move(row));
  return Status::ok();
}

Expected<TokenDataset> TokenDataset::open(const std::string &path, int64_t seq,
                                          int64_t vocabSize,
                                          int32_t padTokenId) {
  TokenDataset data;
  data.path_ = path;
  data.seq_ = seq;
  data.vocab_ = vocabSize;
  data.pad_ = padTokenId;
  if (seq <= 0)
    return makeError("sequence length must be positive, got {}", seq);

  if (endsWith(path, ".safetensors")) {
    data.format_ = "safetensors";
    Expected<SafetensorsFile> file = SafetensorsFile::open(path);
    if (!file)
      return file.error();
    Expected<const TensorInfo *> ids = file->get("input_ids");
    if (!ids)
      return ids.error();
    int64_t rows = 0, cols = 0, labelRows = 0, labelCols = 0;
    Expected<std::vector<int64_t>> idValues =
        readIdTensor(*file, **ids, rows, cols);
    if (!idValues)
      return idValues.error();
    std::vector<int64_t> labelValues;
    if (const TensorInfo *labels = file->find("labels")) {
      Expected<std::vector<int64_t>> read =
          readIdTensor(*file, *labels, labelRows, labelCols);
      if (!read)
        return read.error();
      if (labelRows != rows || labelCols != cols)
        return makeError("{}: labels is [{}, {}] but input_ids is [{}, {}]",
                         path, labelRows, labelCols, rows, cols);
      labelValues = read.take();
    }
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<int64_t> rowIds(idValues->begin() + r * cols,
                                  idValues->begin() + (r + 1) * cols);
      std::vector<int64_t> rowLabels;
      if (!labelValues.empty())
        rowLabels.assign(labelValues.begin() + r * cols,
                         labelValues.begin() + (r + 1) * cols);
      QLORA_RETURN_IF_ERROR(data.addRow(std::move(rowIds),
                                        std::move(rowLabels),
                                        "row " + std::to_string(r)));
    }
  } else if (endsWith(path, ".jsonl")) {
    data.format_ = "jsonl";
    std::ifstream in(path);
    if (!in)
      return makeError("{}: cannot open: {}", path, std::strerror(errno));
    std::string line;
    int64_t number = 0;
    while (std::getline(in, line)) {
      ++number;
      if (line.find_first_not_of(" \t\r") == std::string::npos)
        continue;
      std::string where = "line " + std::to_string(number);
      Expected<json::Value> value = json::parse(line);
      if (!value)
        return makeError("{}: {}: {}", path, where, value.message());
      if (!value->isObject())
        return makeError("{}: {}: expects a JSON object", path, where);
      Expected<std::vector<int64_t>> ids = jsonIds(*value, "input_ids");
      Expected<std::vector<int64_t>> labels = jsonIds(*value, "labels");
      if (!ids || !labels)
        return makeError("{}: {}: {}", path, where,
                         ids ? labels.message() : ids.message());
      if (ids->empty())
        return makeError("{}: {}: missing or empty 'input_ids'", path, where);
      QLORA_RETURN_IF_ERROR(data.addRow(ids.take(), labels.take(), where));
    }
  } else {
    data.format_ = "text";
    std::ifstream in(path, std::ios::binary);
    if (!in)
      return makeError("{}: cannot open: {}", path, std::strerror(errno));
    std::stringstream buffer;
    buffer << in.rdbuf();
    QLORA_RETURN_IF_ERROR(data.addText(buffer.str()));
  }
  if (data.rows_.empty())
    return makeError("{}: no training examples", path);
  return data;
}

Status TokenDataset::addText(const std::string &text) {
  if (vocab_ < 256)
    return makeError("{}: the byte-level tokenizer needs a vocabulary of at "
                     "least 256, the model has {}",
                     path_, vocab_);
  for (size_t start = 0; start < text.size(); start += size_t(seq_)) {
    std::vector<int64_t> ids;
    for (size_t i = start; i < std::min(text.size(), start + size_t(seq_)); ++i)
      ids.push_back(static_cast<unsigned char>(text[i]));
    QLORA_RETURN_IF_ERROR(addRow(std::move(ids), {},
                                 "chunk " + std::to_string(start / size_t(seq_))));
  }
  return Status::ok();
}

Expected<TokenDataset> TokenDataset::fromText(const std::string &text,
                                              const std::string &name,
                                              int64_t seq, int64_t vocabSize) {
  TokenDataset data;
  data.path_ = name;
  data.seq_ = seq;
  data.vocab_ = vocabSize;
  data.format_ = "text";
  if (seq <= 0)
    return makeError("sequence length must be positive, got {}", seq);
  QLORA_RETURN_IF_ERROR(data.addText(text));
  if (data.rows_.empty())
    return makeError("{}: no training examples", name);
  return data;
}

TokenBatch TokenDataset::next(int64_t batch) {
  TokenBatch out;
  out.batch = batch;
  out.seq = seq_;
  for (int64_t b = 0; b < batch; ++b) {
    const Row &row = rows_[size_t(cursor_)];
    cursor_ = (cursor_ + 1) % int64_t(rows_.size());
    out.inputIds.insert(out.inputIds.end(), row.inputIds.begin(),
                        row.inputIds.end());
    out.labels.insert(out.labels.end(), row.labels.begin(), row.labels.end());
  }
  return out;
}

const std::string &builtinTrainingText() {
  static const std::string text =
      "The compiler reads a checkpoint, builds the forward graph of the "
      "model, injects low-rank adapters into its linear layers, quantizes "
      "the frozen weights to four-bit normal floats, derives the backward "
      "pass, and plans every buffer of the training step ahead of time. "
      "Each step then runs without an allocator, without a graph "
      "interpreter and without surprises.\n"
      "A small model learns quickly when the text repeats itself. It sees "
      "the same sentences again and again, and the loss goes down as it "
      "remembers which letter tends to follow which. That is all this "
      "demonstration asks of it: to show that the gradients flow, that the "
      "optimizer moves the adapters, and that the adapter it writes can be "
      "loaded again.\n"
      "Quantized weights keep the memory small. Adapters keep the training "
      "cheap. Ahead-of-time compilation keeps the step fast.\n";
  return text;
}

} // namespace qlora
