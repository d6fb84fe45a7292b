//===- SafetensorsTest.cpp - Tests of the safetensors reader and writer -----===//
//
// Round trips, byte-identical re-writes of the oracle files, and one test per
// malformed-file case asserting that the error names the file and tensor.
//
//===----------------------------------------------------------------------===//
#include "TempDir.h"
#include "runtime/Safetensors.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <stdlib.h>

using namespace qlora;

namespace {

using qlora::testing::TempDir;

std::string readBytes(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in),
                     std::istreambuf_iterator<char>());
}

void writeBytes(const std::string &path, const std::string &bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string lengthPrefix(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i)
    out[size_t(i)] = char(uint8_t(n >> (8 * i)));
  return out;
}

/// A safetensors file with the given header and `dataSize` bytes of data
/// (0, 1, 2, ...).
std::string makeFile(const std::string &header, size_t dataSize) {
  std::string out = lengthPrefix(header.size()) + header;
  for (size_t i = 0; i < dataSize; ++i)
    out.push_back(char(i & 0xff));
  return out;
}

/// Writes `header` + data to a file in `dir` and returns the open error.
std::string openError(const TempDir &dir, const std::string &header,
                      size_t dataSize, std::string *pathOut = nullptr) {
  std::string path = dir.file("bad.safetensors");
  writeBytes(path, makeFile(header, dataSize));
  if (pathOut)
    *pathOut = path;
  Expected<SafetensorsFile> file = SafetensorsFile::open(path);
  EXPECT_FALSE(file.isOk()) << header;
  return file.isOk() ? std::string() : file.message();
}

bool exists(const std::string &path) {
  return std::filesystem::exists(path);
}

/// Only `keep` is left in `dir`: no temporary files behind.
void expectOnlyFiles(const std::string &dir, std::vector<std::string> keep) {
  std::vector<std::string> found;
  for (const auto &entry : std::filesystem::directory_iterator(dir))
    found.push_back(entry.path().filename().string());
  std::sort(found.begin(), found.end());
  std::sort(keep.begin(), keep.end());
  EXPECT_EQ(found, keep);
}

#define EXPECT_CONTAINS(haystack, needle)                                      \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos)             \
      << "'" << (haystack) << "' does not contain '" << (needle) << "'"

} // namespace

//===----------------------------------------------------------------------===//
// DType
//===----------------------------------------------------------------------===//

TEST(SafetensorsDType, NamesSizesAndOrder) {
  const std::pair<const char *, size_t> expected[] = {
      {"BOOL", 1}, {"U8", 1},      {"I8", 1},      {"F8_E5M2", 1},
      {"F8_E4M3", 1}, {"F8_E8M0", 1}, {"I16", 2},  {"U16", 2},
      {"F16", 2},  {"BF16", 2},    {"I32", 4},     {"U32", 4},
      {"F32", 4},  {"F64", 8},     {"I64", 8},     {"U64", 8}};
  int rank = 0;
  for (const auto &[name, size] : expected) {
    std::optional<DType> dtype = parseDType(name);
    ASSERT_TRUE(dtype.has_value()) << name;
    EXPECT_EQ(dtypeName(*dtype), name);
    EXPECT_EQ(dtypeSize(*dtype), size) << name;
    EXPECT_EQ(int(*dtype), rank++) << name; // the Rust crate's order
  }
  EXPECT_FALSE(parseDType("F7").has_value());
  EXPECT_FALSE(parseDType("bf16").has_value());
}

//===----------------------------------------------------------------------===//
// Writing and reading back
//===----------------------------------------------------------------------===//

TEST(SafetensorsRoundTrip, MixedDTypes) {
  TempDir dir;
  std::vector<float> f32 = {1.f, 2.f, 3.f, 4.f, 5.f, 6.f};
  std::vector<uint16_t> bf16 = {0x3f80, 0x4000, 0x4040};
  std::vector<uint8_t> u8 = {7, 8, 9, 10, 11};
  int64_t scalar = -42;
  bool flags[2] = {true, false};

  SafetensorsWriter writer;
  ASSERT_TRUE(writer.add("b.weight", DType::BF16, {3}, bf16.data(), 6));
  ASSERT_TRUE(writer.add("a.f32", DType::F32, {2, 3}, f32.data(), 24));
  ASSERT_TRUE(writer.add("z.f32", DType::F32, {6}, f32.data(), 24));
  ASSERT_TRUE(writer.add("codes", DType::U8, {5}, u8.data(), 5));
  ASSERT_TRUE(writer.add("step", DType::I64, {}, &scalar, 8));
  ASSERT_TRUE(writer.add("mask", DType::BOOL, {2}, flags, 2));
  ASSERT_TRUE(writer.add("empty", DType::F32, {0, 3}, nullptr, 0));
  writer.setMetadata("format", "pt");
  writer.setMetadata("note", "first");
  writer.setMetadata("note", "caf\xc3\xa9 \"quoted\"");
  std::string path = dir.file("m.safetensors");
  ASSERT_TRUE(writer.write(path));
  expectOnlyFiles(dir.path(), {"m.safetensors"});

  Expected<SafetensorsFile> file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.isOk()) << file.message();
  EXPECT_EQ(file->headerSize() % 8, 0u);
  EXPECT_EQ(file->dataSize(), 24u + 24 + 6 + 5 + 8 + 2);

  // Data order: dtype descending (I64 > F32 > BF16 > U8 > BOOL), then name.
  std::vector<std::string> names;
  for (const TensorInfo &info : file->tensors())
    names.push_back(info.name);
  EXPECT_EQ(names, (std::vector<std::string>{"step", "a.f32", "empty", "z.f32",
                                             "b.weight", "codes", "mask"}));

  const TensorInfo *a = file->find("a.f32");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, DType::F32);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a->numElements(), 6);
  ByteSpan bytes = file->data(*a);
  ASSERT_EQ(bytes.size, 24u);
  EXPECT_EQ(std::memcmp(bytes.data, f32.data(), 24), 0);
  // Every tensor's data is aligned to its element size within the file.
  for (const TensorInfo &info : file->tensors())
    EXPECT_EQ((8 + file->headerSize() + info.begin) % dtypeSize(info.dtype),
              0u)
        << info.name;

  Expected<const TensorInfo *> step = file->get("step");
  ASSERT_TRUE(step.isOk());
  EXPECT_EQ((*step)->numElements(), 1);
  int64_t readScalar;
  std::memcpy(&readScalar, file->data(**step).data, 8);
  EXPECT_EQ(readScalar, -42);
  EXPECT_EQ(file->find("empty")->numElements(), 0);
  EXPECT_EQ(file->data(*file->find("empty")).size, 0u);

  EXPECT_EQ(file->metadata().at("format"), "pt");
  EXPECT_EQ(file->metadata().at("note"), "caf\xc3\xa9 \"quoted\"");
  ASSERT_EQ(file->metadataInOrder().size(), 2u);
  EXPECT_EQ(file->metadataInOrder()[0].first, "format");

  // Moving keeps the mapping alive and valid.
  const uint8_t *before = file->data(*file->find("codes")).data;
  SafetensorsFile moved = file.take();
  EXPECT_EQ(moved.data(*moved.find("codes")).data, before);
  EXPECT_EQ(before[4], 11);
}

/// The byte layouts of the Rust crate's own serialization tests.
TEST(SafetensorsRoundTrip, MatchesRustCrateLayout) {
  TempDir dir;
  std::vector<float> values = {0.f, 1.f, 2.f, 3.f, 4.f, 5.f};
  std::string data(reinterpret_cast<const char *>(values.data()), 24);

  SafetensorsWriter writer;
  ASSERT_TRUE(writer.add("attn.0", DType::F32, {1, 2, 3}, values.data(), 24));
  ASSERT_TRUE(writer.write(dir.file("a.safetensors")));
  std::string header =
      R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
  EXPECT_EQ(readBytes(dir.file("a.safetensors")),
            lengthPrefix(64) + header + data);

  SafetensorsWriter padded;
  ASSERT_TRUE(padded.add("attn0", DType::F32, {1, 1, 2, 3}, values.data(), 24));
  EXPECT_EQ(padded.headerJson(),
            R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})"
            "       ");

  SafetensorsWriter empty;
  EXPECT_EQ(empty.headerJson(), "{}      ");
  empty.setMetadata("framework", "pt");
  ASSERT_TRUE(empty.write(dir.file("e.safetensors")));
  EXPECT_EQ(readBytes(dir.file("e.safetensors")),
            lengthPrefix(40) + R"({"__metadata__":{"framework":"pt"}})" +
                "     ");
  Expected<SafetensorsFile> file =
      SafetensorsFile::open(dir.file("e.safetensors"));
  ASSERT_TRUE(file.isOk()) << file.message();
  EXPECT_TRUE(file->tensors().empty());
  EXPECT_EQ(file->metadata().at("framework"), "pt");
}

TEST(SafetensorsRoundTrip, WriteReplacesAtomically) {
  TempDir dir;
  std::string path = dir.file("w.safetensors");
  writeBytes(path, "old contents");
  uint8_t byte = 1;
  SafetensorsWriter writer;
  ASSERT_TRUE(writer.add("x", DType::U8, {1}, &byte, 1));
  ASSERT_TRUE(writer.write(path));
  expectOnlyFiles(dir.path(), {"w.safetensors"});
  Expected<SafetensorsFile> file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.isOk()) << file.message();
  EXPECT_EQ(file->tensors().size(), 1u);
}

TEST(SafetensorsRoundTrip, WriteFailureLeavesNothingBehind) {
  TempDir dir;
  uint8_t byte = 1;
  SafetensorsWriter writer;
  ASSERT_TRUE(writer.add("x", DType::U8, {1}, &byte, 1));
  std::string path = dir.file("missing-subdir/w.safetensors");
  Status status = writer.write(path);
  ASSERT_FALSE(status.isOk());
  EXPECT_CONTAINS(status.message(), path);
  EXPECT_CONTAINS(status.message(), "cannot create temporary file");
  // A directory in the way of the rename: the temp file is removed again.
  std::filesystem::create_directory(dir.file("taken"));
  std::filesystem::create_directory(dir.file("taken/child"));
  Status renameStatus = writer.write(dir.file("taken"));
  ASSERT_FALSE(renameStatus.isOk());
  EXPECT_CONTAINS(renameStatus.message(), "renaming");
  expectOnlyFiles(dir.path(), {"taken"});
}

TEST(SafetensorsWriterErrors, RejectsBadTensors) {
  SafetensorsWriter writer;
  float values[6] = {};
  Status wrongSize = writer.add("w", DType::F32, {2, 3}, values, 20);
  ASSERT_FALSE(wrongSize.isOk());
  EXPECT_EQ(wrongSize.message(),
            "tensor 'w': shape [2, 3] × F32 needs 24 bytes, got 20");
  Status negative = writer.add("n", DType::F32, {-1, 3}, values, 12);
  ASSERT_FALSE(negative.isOk());
  EXPECT_CONTAINS(negative.message(), "tensor 'n': negative dimension");
  Status overflow =
      writer.add("o", DType::F32, {int64_t(1) << 62, 4}, values, 24);
  ASSERT_FALSE(overflow.isOk());
  EXPECT_CONTAINS(overflow.message(), "tensor 'o': shape");
  EXPECT_CONTAINS(overflow.message(), "overflows");
  Status reserved = writer.add("__metadata__", DType::U8, {0}, values, 0);
  ASSERT_FALSE(reserved.isOk());
  EXPECT_CONTAINS(reserved.message(), "reserved");
  Status empty = writer.add("", DType::U8, {0}, values, 0);
  ASSERT_FALSE(empty.isOk());
  ASSERT_TRUE(writer.add("w", DType::F32, {2, 3}, values, 24));
  Status twice = writer.add("w", DType::F32, {6}, values, 24);
  ASSERT_FALSE(twice.isOk());
  EXPECT_EQ(twice.message(), "tensor 'w' added twice");
  EXPECT_EQ(writer.numTensors(), 1u);
}

//===----------------------------------------------------------------------===//
// The oracle files re-write byte for byte
//===----------------------------------------------------------------------===//

namespace {

void expectByteIdenticalRewrite(const std::string &relativePath) {
  std::string path = std::string(QLORA_ORACLE_DIR) + "/" + relativePath;
  if (!exists(path))
    GTEST_SKIP() << "oracle missing: " << path;
  Expected<SafetensorsFile> file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.isOk()) << file.message();
  ASSERT_FALSE(file->tensors().empty());

  SafetensorsWriter writer;
  // Add in reverse name order: the writer must find the layout itself.
  std::vector<const TensorInfo *> infos;
  for (const TensorInfo &info : file->tensors())
    infos.push_back(&info);
  std::sort(infos.begin(), infos.end(),
            [](const TensorInfo *a, const TensorInfo *b) {
              return a->name > b->name;
            });
  for (const TensorInfo *info : infos) {
    ByteSpan bytes = file->data(*info);
    ASSERT_TRUE(writer.addView(info->name, info->dtype, info->shape,
                               bytes.data, bytes.size));
  }
  for (const auto &[key, value] : file->metadataInOrder())
    writer.setMetadata(key, value);

  TempDir dir;
  std::string out = dir.file("rewritten.safetensors");
  Status status = writer.write(out);
  ASSERT_TRUE(status.isOk()) << status.message();
  std::string original = readBytes(path);
  std::string rewritten = readBytes(out);
  ASSERT_EQ(original.size(), rewritten.size());
  EXPECT_TRUE(original == rewritten) << relativePath << " differs";
}

} // namespace

TEST(SafetensorsOracle, BnbNf4CheckpointRewritesByteIdentical) {
  expectByteIdenticalRewrite("tiny-llama-bnb-nf4/model.safetensors");
}

TEST(SafetensorsOracle, Bf16CheckpointRewritesByteIdentical) {
  expectByteIdenticalRewrite("tiny-llama/model.safetensors");
}

TEST(SafetensorsOracle, OtherOracleFilesRewriteByteIdentical) {
  expectByteIdenticalRewrite("tiny-llama-adapter-init/adapter_model.safetensors");
  expectByteIdenticalRewrite("tiny-llama-grads-step1.safetensors");
  expectByteIdenticalRewrite("tiny-llama-batch.safetensors");
  expectByteIdenticalRewrite("nf4_vectors.safetensors");
}

/// The layout rule, seen in the oracle: F32 first, then BF16, then U8, each
/// group sorted by name, with no gaps.
TEST(SafetensorsOracle, BnbNf4Layout) {
  std::string path =
      std::string(QLORA_ORACLE_DIR) + "/tiny-llama-bnb-nf4/model.safetensors";
  if (!exists(path))
    GTEST_SKIP() << "oracle missing: " << path;
  Expected<SafetensorsFile> file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.isOk()) << file.message();
  const std::vector<TensorInfo> &tensors = file->tensors();
  ASSERT_FALSE(tensors.empty());
  EXPECT_EQ(tensors.front().dtype, DType::F32);
  EXPECT_EQ(tensors.back().dtype, DType::U8);
  uint64_t expectedBegin = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ(tensors[i].begin, expectedBegin);
    expectedBegin = tensors[i].end;
    if (i == 0)
      continue;
    const TensorInfo &prev = tensors[i - 1];
    EXPECT_TRUE(prev.dtype > tensors[i].dtype ||
                (prev.dtype == tensors[i].dtype && prev.name < tensors[i].name))
        << prev.name << " before " << tensors[i].name;
  }
  EXPECT_EQ(expectedBegin, file->dataSize());
  EXPECT_EQ(file->metadata().at("format"), "pt");
  bool sawBf16 = false;
  for (const TensorInfo &info : tensors)
    sawBf16 |= info.dtype == DType::BF16;
  EXPECT_TRUE(sawBf16);
}

//===----------------------------------------------------------------------===//
// Malformed files: one test per case
//===----------------------------------------------------------------------===//

TEST(SafetensorsErrors, MissingFile) {
  TempDir dir;
  std::string path = dir.file("nope.safetensors");
  Expected<SafetensorsFile> file = SafetensorsFile::open(path);
  ASSERT_FALSE(file.isOk());
  EXPECT_EQ(file.message(), path + ": cannot open: No such file or directory");
}

TEST(SafetensorsErrors, ShorterThanTheLengthPrefix) {
  TempDir dir;
  std::string path = dir.file("short.safetensors");
  writeBytes(path, std::string("\x10\x00\x00", 3));
  Expected<SafetensorsFile> file = SafetensorsFile::open(path);
  ASSERT_FALSE(file.isOk());
  EXPECT_EQ(file.message(), path + ": file is 3 bytes, too short for the "
                                   "8-byte header length of a safetensors "
                                   "file");
  writeBytes(path, "");
  EXPECT_FALSE(SafetensorsFile::open(path).isOk());
}

TEST(SafetensorsErrors, HeaderLengthLargerThanTheFile) {
  TempDir dir;
  std::string path = dir.file("lying.safetensors");
  writeBytes(path, lengthPrefix(1000) + "{}      ");
  Expected<SafetensorsFile> file = SafetensorsFile::open(path);
  ASSERT_FALSE(file.isOk());
  EXPECT_EQ(file.message(), path + ": header length 1000 runs past the end of "
                                   "the file (16 bytes); is the file "
                                   "truncated?");
}

TEST(SafetensorsErrors, AbsurdHeaderLength) {
  TempDir dir;
  std::string path = dir.file("absurd.safetensors");
  writeBytes(path, lengthPrefix(uint64_t(1) << 40) + "{}      ");
  Expected<SafetensorsFile> file = SafetensorsFile::open(path);
  ASSERT_FALSE(file.isOk());
  EXPECT_CONTAINS(file.message(), path + ": header length 1099511627776 "
                                         "exceeds the limit of 100000000");
  // Even a length that overflows when 8 is added.
  writeBytes(path, lengthPrefix(~uint64_t(0)) + "{}      ");
  EXPECT_FALSE(SafetensorsFile::open(path).isOk());
}

TEST(SafetensorsErrors, TruncatedInTheHeader) {
  TempDir dir;
  uint8_t bytes[16] = {};
  SafetensorsWriter writer;
  ASSERT_TRUE(writer.add("w", DType::U8, {16}, bytes, 16));
  std::string path = dir.file("cut.safetensors");
  ASSERT_TRUE(writer.write(path));
  std::string whole = readBytes(path);
  writeBytes(path, whole.substr(0, 30)); // cut inside the JSON
  Expected<SafetensorsFile> file = SafetensorsFile::open(path);
  ASSERT_FALSE(file.isOk());
  EXPECT_CONTAINS(file.message(), path + ": header length");
  EXPECT_CONTAINS(file.message(), "runs past the end of the file (30 bytes)");
}

TEST(SafetensorsErrors, TruncatedInTheData) {
  TempDir dir;
  std::vector<uint8_t> bytes(64, 3);
  SafetensorsWriter writer;
  ASSERT_TRUE(writer.add("first", DType::F32, {4}, bytes.data(), 16));
  ASSERT_TRUE(writer.add("second", DType::F32, {12}, bytes.data(), 48));
  std::string path = dir.file("cut.safetensors");
  ASSERT_TRUE(writer.write(path));
  std::string whole = readBytes(path);
  writeBytes(path, whole.substr(0, whole.size() - 10));
  Expected<SafetensorsFile> file = SafetensorsFile::open(path);
  ASSERT_FALSE(file.isOk());
  EXPECT_EQ(file.message(), path + ": tensor 'second': data_offsets [16, 64] "
                                   "run past the end of the data buffer (54 "
                                   "bytes); is the file truncated?");
}

TEST(SafetensorsErrors, InvalidJson) {
  TempDir dir;
  std::string path = dir.file("bad.safetensors");
  std::string message =
      openError(dir, R"({"w": {"dtype": "U8", "shape" [1]}})", 1, &path);
  EXPECT_EQ(message, path + ": invalid JSON header: expected ':' after object "
                            "key at offset 30, got '['");
  EXPECT_CONTAINS(openError(dir, "{\"w\": \xff}", 0), "invalid JSON header");
  // Duplicate tensor names are a JSON error too.
  EXPECT_CONTAINS(
      openError(dir,
                R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                R"("w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                2),
      "duplicate object key 'w'");
}

TEST(SafetensorsErrors, HeaderNotAnObject) {
  TempDir dir;
  std::string path = dir.file("bad.safetensors");
  EXPECT_EQ(openError(dir, "[1, 2]", 0, &path),
            path + ": header is a JSON array, expected an object");
}

TEST(SafetensorsErrors, UnknownDType) {
  TempDir dir;
  std::string path = dir.file("bad.safetensors");
  EXPECT_EQ(
      openError(dir, R"({"w":{"dtype":"F7","shape":[2],"data_offsets":[0,2]}})",
                2, &path),
      path + ": tensor 'w': unknown dtype 'F7'");
}

TEST(SafetensorsErrors, ShapeDoesNotMatchBytes) {
  TempDir dir;
  std::string path = dir.file("bad.safetensors");
  EXPECT_EQ(openError(dir,
                      R"({"lm_head.weight":{"dtype":"BF16","shape":[1024,256],)"
                      R"("data_offsets":[0,524280]}})",
                      524280, &path),
            path + ": tensor 'lm_head.weight': shape [1024, 256] × BF16 "
                   "needs 524288 bytes, data_offsets span 524280");
}

TEST(SafetensorsErrors, ShapeOverflows) {
  TempDir dir;
  std::string path = dir.file("bad.safetensors");
  std::string message = openError(
      dir,
      R"({"huge":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}})",
      16, &path);
  EXPECT_EQ(message, path + ": tensor 'huge': shape [4611686018427387904, 4] "
                            "× F32 overflows 64 bits");
}

TEST(SafetensorsErrors, NegativeDimension) {
  TempDir dir;
  std::string path = dir.file("bad.safetensors");
  EXPECT_EQ(
      openError(dir, R"({"w":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}})",
                0, &path),
      path + ": tensor 'w': negative dimension -1 in shape");
}

TEST(SafetensorsErrors, MalformedEntries) {
  TempDir dir;
  std::string path = dir.file("bad.safetensors");
  EXPECT_EQ(openError(dir, R"({"w":{"dtype":"U8","shape":[1]}})", 1, &path),
            path + ": tensor 'w': missing 'data_offsets'");
  EXPECT_EQ(openError(dir, R"({"w":{"shape":[1],"data_offsets":[0,1]}})", 1),
            path + ": tensor 'w': missing 'dtype'");
  EXPECT_EQ(
      openError(dir,
                R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":1}})",
                1),
      path + ": tensor 'w': unexpected key 'x' (expected only dtype, shape "
             "and data_offsets)");
  EXPECT_EQ(openError(dir, R"({"w":[1]})", 1),
            path + ": tensor 'w': expected an object with dtype, shape and "
                   "data_offsets, got array");
  EXPECT_EQ(
      openError(dir, R"({"w":{"dtype":8,"shape":[1],"data_offsets":[0,1]}})", 1),
      path + ": tensor 'w': 'dtype' must be a string, got integer");
  EXPECT_EQ(
      openError(dir, R"({"w":{"dtype":"U8","shape":1,"data_offsets":[0,1]}})",
                1),
      path + ": tensor 'w': 'shape' must be an array, got integer");
  EXPECT_EQ(
      openError(dir,
                R"({"w":{"dtype":"U8","shape":[1.0],"data_offsets":[0,1]}})", 1),
      path + ": tensor 'w': 'shape' must hold integers, got float");
  EXPECT_EQ(
      openError(dir, R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0]}})",
                1),
      path + ": tensor 'w': 'data_offsets' must be an array of two integers, "
             "got [0]");
  EXPECT_EQ(
      openError(dir,
                R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}})", 1),
      path + ": tensor 'w': negative data_offsets [-1, 0]");
  EXPECT_EQ(
      openError(dir, R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[1,0]}})",
                1),
      path + ": tensor 'w': data_offsets [1, 0] end before they begin");
}

TEST(SafetensorsErrors, BadMetadata) {
  TempDir dir;
  std::string path = dir.file("bad.safetensors");
  EXPECT_EQ(openError(dir, R"({"__metadata__":{"format":1}})", 0, &path),
            path + ": __metadata__ key 'format' must be a string, got integer");
  EXPECT_EQ(openError(dir, R"({"__metadata__":"pt"})", 0),
            path + ": __metadata__ must be an object of strings, got string");
}

TEST(SafetensorsErrors, OffsetsOutOfRange) {
  TempDir dir;
  std::string path = dir.file("bad.safetensors");
  EXPECT_EQ(
      openError(dir,
                R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                R"("b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}})",
                10, &path),
      path + ": tensor 'b': data_offsets [8, 12] run past the end of the data "
             "buffer (10 bytes); is the file truncated?");
}

TEST(SafetensorsErrors, OverlappingTensors) {
  TempDir dir;
  std::string path = dir.file("bad.safetensors");
  EXPECT_EQ(
      openError(dir,
                R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                12, &path),
      path + ": tensor 'b' (data_offsets [4, 12]) overlaps tensor 'a' "
             "(data_offsets [0, 8])");
  // A tensor nested inside a larger one, listed first in the header.
  EXPECT_EQ(
      openError(dir,
                R"({"inner":{"dtype":"U8","shape":[2],"data_offsets":[4,6]},)"
                R"("outer":{"dtype":"U8","shape":[16],"data_offsets":[0,16]}})",
                16),
      path + ": tensor 'inner' (data_offsets [4, 6]) overlaps tensor 'outer' "
             "(data_offsets [0, 16])");
  // Identical ranges.
  EXPECT_CONTAINS(
      openError(dir,
                R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                R"("b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})",
                2),
      "overlaps");
}

TEST(SafetensorsErrors, GapsAndEmptyTensorsAreTolerated) {
  TempDir dir;
  std::string path = dir.file("gap.safetensors");
  writeBytes(path,
             makeFile(R"({"b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]},)"
                      R"("a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                      R"("e":{"dtype":"F32","shape":[0],"data_offsets":[2,2]}})",
                      16));
  Expected<SafetensorsFile> file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.isOk()) << file.message();
  ASSERT_EQ(file->tensors().size(), 3u);
  EXPECT_EQ(file->tensors()[0].name, "a"); // data order, not header order
  EXPECT_EQ(file->tensors()[1].name, "e");
  EXPECT_EQ(file->tensors()[2].name, "b");
  EXPECT_EQ(file->data(*file->find("b")).data[0], 8);
}

TEST(SafetensorsErrors, MissingTensorLookup) {
  TempDir dir;
  uint8_t byte = 0;
  SafetensorsWriter writer;
  ASSERT_TRUE(writer.add("present", DType::U8, {1}, &byte, 1));
  std::string path = dir.file("m.safetensors");
  ASSERT_TRUE(writer.write(path));
  Expected<SafetensorsFile> file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.isOk()) << file.message();
  EXPECT_EQ(file->find("absent"), nullptr);
  Expected<const TensorInfo *> info = file->get("absent");
  ASSERT_FALSE(info.isOk());
  EXPECT_EQ(info.message(), "tensor 'absent' not found in " + path);
}

/// Random damage to a valid file never crashes the reader, and whatever it
/// accepts stays inside the file.
TEST(SafetensorsFuzz, MutatedFilesNeverCrash) {
  TempDir dir;
  std::vector<uint8_t> bytes(96);
  for (size_t i = 0; i < bytes.size(); ++i)
    bytes[i] = uint8_t(i);
  SafetensorsWriter writer;
  ASSERT_TRUE(writer.add("a", DType::F32, {2, 4}, bytes.data(), 32));
  ASSERT_TRUE(writer.add("b", DType::BF16, {16}, bytes.data(), 32));
  ASSERT_TRUE(writer.add("c", DType::U8, {32}, bytes.data(), 32));
  writer.setMetadata("format", "pt");
  std::string path = dir.file("fuzz.safetensors");
  ASSERT_TRUE(writer.write(path));
  const std::string original = readBytes(path);

  std::mt19937 rng(7);
  const char alphabet[] = "{}[]\":,-0123456789eE.FUIB_ \\\x00\xff";
  for (int round = 0; round < 3000; ++round) {
    std::string text = original;
    switch (round % 4) {
    case 0: // truncate anywhere
      text.resize(rng() % (text.size() + 1));
      break;
    case 1: { // damage the length prefix
      text[rng() % 8] = char(rng() % 256);
      break;
    }
    default: { // damage the header
      int edits = 1 + int(rng() % 3);
      for (int e = 0; e < edits; ++e) {
        size_t pos = 8 + rng() % (original.size() - 8 - 96);
        text[pos] = alphabet[rng() % (sizeof alphabet - 1)];
      }
      break;
    }
    }
    writeBytes(path, text);
    Expected<SafetensorsFile> file = SafetensorsFile::open(path);
    if (!file) {
      EXPECT_CONTAINS(file.message(), path);
      continue;
    }
    for (const TensorInfo &info : file->tensors()) {
      ASSERT_LE(info.end, file->dataSize());
      ByteSpan span = file->data(info);
      ASSERT_EQ(span.size, info.end - info.begin);
      uint64_t sum = 0;
      for (size_t i = 0; i < span.size; ++i)
        sum += span.data[i]; // touches every byte: ASan would catch overruns
      (void)sum;
    }
  }
}
