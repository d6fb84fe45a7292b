//===- Data.h - Token batches for training ----------------------------------===//
//
// Three sources, chosen by the file name:
//   *.safetensors  `input_ids` [N, S] (I64 or I32), optional `labels` [N, S];
//   *.jsonl        one {"input_ids": [...], "labels": [...]} object a line;
//   anything else  plain UTF-8 text, tokenized byte by byte (id = byte value)
//                  and cut into rows of the compiled sequence length.
// Rows are served in order and wrap around, so a file of exactly one batch
// gives the same batch at every step. Labels default to the input ids (the
// model shifts them); a shorter row is padded with `padTokenId` and label
// -100 (ignored by the loss); a longer one is an error.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace qlora {

/// The label the loss ignores, as in transformers.
constexpr int32_t kIgnoreIndex = -100;

/// One batch of `batch` rows of `seq` tokens, row-major.
struct TokenBatch {
  int64_t batch = 0, seq = 0;
  std::vector<int32_t> inputIds;
  std::vector<int32_t> labels;
};

class TokenDataset {
public:
  /// Opens `path`; every row must fit `seq` tokens and use ids below
  /// `vocabSize`. Errors name the file, the row and the offending value.
  static Expected<TokenDataset> open(const std::string &path, int64_t seq,
                                     int64_t vocabSize,
                                     int32_t padTokenId = 0);

  /// Tokenizes `text` byte by byte into rows of `seq` tokens; `name` is
  /// what errors call it.
  static Expected<TokenDataset> fromText(const std::string &text,
                                         const std::string &name, int64_t seq,
                                         int64_t vocabSize);

  /// The next `batch` rows, wrapping around at the end of the data.
  TokenBatch next(int64_t batch);

  int64_t numRows() const { return int64_t(rows_.size()); }
  int64_t seq() const { return seq_; }
  /// "safetensors", "jsonl" or "text".
  const std::string &format() const { return format_; }

private:
  struct Row {
    std::vector<int32_t> inputIds, labels;
  };
  Status addRow(std::vector<int64_t> ids, std::vector<int64_t> labels,
                const std::string &where);
  Status addText(const std::string &text);

  std::vector<Row> rows_;
  int64_t seq_ = 0, vocab_ = 0, cursor_ = 0;
  int32_t pad_ = 0;
  std::string path_, format_;
};

/// A few paragraphs of English built into the binary: the default training
/// text of the demo, tokenized byte by byte.
const std::string &builtinTrainingText();

} // namespace qlora
