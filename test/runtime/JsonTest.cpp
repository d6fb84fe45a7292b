//===- JsonTest.cpp - Tests of the JSON parser and writers ------------------===//
//
// Strict parsing (every rejection names the offset and what was expected),
// the two writers (serde_json's compact form and Python's json.dumps), and a
// small fuzz run that must never crash.
//
//===----------------------------------------------------------------------===//
#include "runtime/Json.h"
#include "runtime/Safetensors.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <sys/stat.h>

using namespace qlora;
using namespace qlora::json;

namespace {

/// Parses `text`, expecting failure, and returns the message.
std::string parseError(std::string_view text) {
  Expected<Value> value = parse(text);
  EXPECT_FALSE(value.isOk()) << "parsed unexpectedly: " << text;
  return value.isOk() ? std::string() : value.message();
}

Value parseOk(std::string_view text) {
  Expected<Value> value = parse(text);
  EXPECT_TRUE(value.isOk()) << text << ": "
                            << (value ? "" : value.message());
  return value ? value.take() : Value();
}

bool oracleExists(const std::string &path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

} // namespace

//===----------------------------------------------------------------------===//
// Parsing valid input
//===----------------------------------------------------------------------===//

TEST(JsonParse, Scalars) {
  EXPECT_TRUE(parseOk("null").isNull());
  EXPECT_EQ(parseOk("true"), Value(true));
  EXPECT_EQ(parseOk("false"), Value(false));
  EXPECT_EQ(parseOk(" \t\r\n 42 \n"), Value(42));
  EXPECT_EQ(parseOk("\"hi\"").asString(), "hi");
}

TEST(JsonParse, IntegersAndFloatsStayDistinct) {
  Value i = parseOk("7");
  EXPECT_TRUE(i.isInt());
  EXPECT_EQ(i.asInt(), 7);
  EXPECT_DOUBLE_EQ(i.asDouble(), 7.0); // asDouble accepts integers
  Value d = parseOk("7.0");
  EXPECT_TRUE(d.isDouble());
  EXPECT_NE(i, d);
  EXPECT_TRUE(parseOk("1e3").isDouble());
  EXPECT_TRUE(parseOk("-0").isInt());
  EXPECT_EQ(parseOk("-9223372036854775808").asInt(),
            std::numeric_limits<int64_t>::min());
  EXPECT_EQ(parseOk("9223372036854775807").asInt(),
            std::numeric_limits<int64_t>::max());
  // Too large for int64: a float, not an error.
  Value big = parseOk("9223372036854775808");
  EXPECT_TRUE(big.isDouble());
  EXPECT_DOUBLE_EQ(big.asDouble(), 9223372036854775808.0);
  EXPECT_DOUBLE_EQ(parseOk("-1.25e-2").asDouble(), -0.0125);
  EXPECT_DOUBLE_EQ(parseOk("0.052152395248413086").asDouble(),
                   0.052152395248413086);
  // Underflow reads as zero, as in Python.
  EXPECT_EQ(parseOk("1e-400").asDouble(), 0.0);
  EXPECT_EQ(parseOk("0.000001e-400").asDouble(), 0.0);
}

TEST(JsonParse, ObjectsKeepInsertionOrder) {
  Value v = parseOk(R"({"z": 1, "a": [true, null], "m": {"x": "y"}})");
  ASSERT_TRUE(v.isObject());
  ASSERT_EQ(v.size(), 3u);
  EXPECT_EQ(v.asObject()[0].first, "z");
  EXPECT_EQ(v.asObject()[1].first, "a");
  EXPECT_EQ(v.asObject()[2].first, "m");
  ASSERT_NE(v.find("a"), nullptr);
  EXPECT_EQ(v.find("a")->size(), 2u);
  EXPECT_TRUE((*v.find("a"))[1].isNull());
  EXPECT_EQ(v.find("missing"), nullptr);
  EXPECT_EQ(writeCompact(v), R"({"z":1,"a":[true,null],"m":{"x":"y"}})");
}

TEST(JsonParse, TypedLookups) {
  Value v = parseOk(R"({"n": 3, "f": 2.5, "s": "x", "b": true})");
  EXPECT_EQ(*v.getInt("n"), 3);
  EXPECT_DOUBLE_EQ(*v.getDouble("n"), 3.0);
  EXPECT_DOUBLE_EQ(*v.getDouble("f"), 2.5);
  EXPECT_EQ(*v.getString("s"), "x");
  EXPECT_EQ(*v.getBool("b"), true);

  Expected<const Value *> missing = v.get("nope");
  ASSERT_FALSE(missing.isOk());
  EXPECT_EQ(missing.message(), "missing key 'nope'");
  Expected<int64_t> wrong = v.getInt("f");
  ASSERT_FALSE(wrong.isOk());
  EXPECT_EQ(wrong.message(), "key 'f': expected integer, got float");
  Expected<std::string> notString = v.getString("n");
  ASSERT_FALSE(notString.isOk());
  EXPECT_EQ(notString.message(), "key 'n': expected string, got integer");
  Expected<const Value *> notObject = Value(1).get("k");
  ASSERT_FALSE(notObject.isOk());
  EXPECT_NE(notObject.message().find("got integer"), std::string::npos);
}

TEST(JsonParse, StringEscapes) {
  Value v = parseOk(R"("q\" b\\ s\/ \b\f\n\r\t \u0041\u00e9\u20ac\ud83d\ude00")");
  EXPECT_EQ(v.asString(), "q\" b\\ s/ \b\f\n\r\t A\xc3\xa9\xe2\x82\xac"
                          "\xf0\x9f\x98\x80");
  // Raw UTF-8 passes through.
  EXPECT_EQ(parseOk("\"caf\xc3\xa9\"").asString(), "caf\xc3\xa9");
  // Escaped NUL is allowed and kept.
  EXPECT_EQ(parseOk(R"("a\u0000b")").asString(), std::string("a\0b", 3));
}

TEST(JsonParse, NestingUpToTheLimit) {
  std::string ok = std::string(kMaxDepth, '[') + std::string(kMaxDepth, ']');
  EXPECT_TRUE(parse(ok).isOk());
  std::string objects;
  for (int i = 0; i < kMaxDepth; ++i)
    objects += "{\"a\":";
  objects += "1" + std::string(kMaxDepth, '}');
  EXPECT_TRUE(parse(objects).isOk());
}

TEST(JsonParse, ConfigFromTheOracle) {
  std::string path = std::string(QLORA_ORACLE_DIR) + "/tiny-llama/config.json";
  if (!oracleExists(path))
    GTEST_SKIP() << "oracle missing: " << path;
  FILE *f = fopen(path.c_str(), "rb");
  ASSERT_NE(f, nullptr);
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0)
    text.append(buf, n);
  fclose(f);
  Value config = parseOk(text);
  EXPECT_EQ(*config.getInt("hidden_size"), 256);
  EXPECT_DOUBLE_EQ(*config.getDouble("rms_norm_eps"), 1e-5);
  EXPECT_TRUE(config.find("pad_token_id")->isNull());
  const Value *rope = config.find("rope_parameters");
  ASSERT_NE(rope, nullptr);
  EXPECT_TRUE(rope->find("rope_theta")->isDouble());
  EXPECT_DOUBLE_EQ(*rope->getDouble("rope_theta"), 10000.0);
}

//===----------------------------------------------------------------------===//
// Parsing invalid input: each error names the offset and what was expected
//===----------------------------------------------------------------------===//

TEST(JsonErrors, MissingColon) {
  EXPECT_EQ(parseError(R"({"a" 1})"),
            "expected ':' after object key at offset 5, got '1'");
  EXPECT_EQ(parseError(R"({"model.layers.0.x"  true})"),
            "expected ':' after object key at offset 21, got 't'");
}

TEST(JsonErrors, TrailingCommas) {
  EXPECT_EQ(parseError(R"({"a":1,})"),
            "expected '\"' to start an object key at offset 7, got '}'");
  EXPECT_EQ(parseError("[1,]"), "unexpected ']', expected a value at offset 3");
}

TEST(JsonErrors, MissingSeparators) {
  EXPECT_EQ(parseError("[1 2]"),
            "expected ',' or ']' after array element at offset 3, got '2'");
  EXPECT_EQ(parseError(R"({"a":1 "b":2})"),
            "expected ',' or '}' after object member at offset 7, got '\"'");
  EXPECT_EQ(parseError("{1:2}"),
            "expected '\"' to start an object key at offset 1, got '1'");
}

TEST(JsonErrors, Truncated) {
  EXPECT_EQ(parseError(""), "unexpected end of input, expected a value at "
                            "offset 0");
  EXPECT_EQ(parseError("   "), "unexpected end of input, expected a value at "
                               "offset 3");
  EXPECT_EQ(parseError("[1,"), "unexpected end of input, expected a value at "
                               "offset 3");
  EXPECT_EQ(parseError("[1"), "unexpected end of input, expected ',' or ']' "
                              "in array at offset 2");
  EXPECT_EQ(parseError(R"({"a":1)"), "unexpected end of input, expected ',' "
                                     "or '}' in object at offset 6");
  EXPECT_EQ(parseError(R"({"a)"), "unterminated string starting at offset 1");
  EXPECT_EQ(parseError(R"("ab\)"), "unterminated string starting at offset 0");
  EXPECT_EQ(parseError(R"("\u12)"), "truncated \\u escape at offset 3");
}

TEST(JsonErrors, TrailingGarbage) {
  EXPECT_EQ(parseError("1 2"),
            "unexpected '2' after the JSON value at offset 2");
  EXPECT_EQ(parseError("{}x"),
            "unexpected 'x' after the JSON value at offset 2");
  EXPECT_EQ(parseError(std::string("{}\0", 3)),
            "unexpected byte 0x00 after the JSON value at offset 2");
}

TEST(JsonErrors, DuplicateKeys) {
  EXPECT_EQ(parseError(R"({"a":1,"a":2})"),
            "duplicate object key 'a' at offset 7");
  // Large objects take the hash-set path.
  std::string big = "{";
  for (int i = 0; i < 100; ++i)
    big += fmt::format("\"k{}\":{},", i, i);
  big += "\"k42\":0}";
  EXPECT_NE(parseError(big).find("duplicate object key 'k42'"),
            std::string::npos);
  // Keys that are equal after unescaping are duplicates.
  EXPECT_NE(parseError(R"({"a":1,"\u0061":2})").find("duplicate object key"),
            std::string::npos);
}

TEST(JsonErrors, NestingTooDeep) {
  std::string deep =
      std::string(kMaxDepth + 1, '[') + std::string(kMaxDepth + 1, ']');
  EXPECT_EQ(parseError(deep), "nesting deeper than 512 at offset 512");
  // Far deeper input must not overflow the stack either.
  EXPECT_NE(parseError(std::string(1000000, '[')).find("nesting deeper"),
            std::string::npos);
  std::string objects;
  for (int i = 0; i < 100000; ++i)
    objects += "{\"a\":";
  EXPECT_NE(parseError(objects).find("nesting deeper"), std::string::npos);
}

TEST(JsonErrors, ControlCharactersInStrings) {
  EXPECT_EQ(parseError("\"a\nb\""),
            "unescaped control character 0x0a in string at offset 2");
  EXPECT_EQ(parseError(std::string("\"a\0b\"", 5)),
            "unescaped control character 0x00 in string at offset 2");
  EXPECT_EQ(parseError("\"\t\""),
            "unescaped control character 0x09 in string at offset 1");
}

TEST(JsonErrors, BadEscapes) {
  EXPECT_EQ(parseError(R"("\x")"), "invalid escape 'x' in string at offset 2");
  EXPECT_EQ(parseError(R"("\u12g4")"),
            "expected a hex digit in \\u escape at offset 5, got 'g'");
  EXPECT_EQ(parseError(R"("\ud800")"),
            "unpaired high surrogate \\ud800 at offset 1, expected a \\u "
            "escape of a low surrogate");
  EXPECT_EQ(parseError(R"("\ud800\u0041")"),
            "unpaired high surrogate \\ud800 at offset 1, followed by \\u0041");
  EXPECT_EQ(parseError(R"("\udc00")"),
            "unpaired low surrogate \\udc00 at offset 1");
}

TEST(JsonErrors, InvalidUtf8) {
  EXPECT_EQ(parseError("\"\xff\""), "invalid UTF-8 in string at offset 1");
  EXPECT_EQ(parseError("\"\xc0\xaf\""), "invalid UTF-8 in string at offset 1");
  EXPECT_EQ(parseError("\"\xe0\x80\xaf\""),
            "invalid UTF-8 in string at offset 1"); // overlong
  EXPECT_EQ(parseError("\"\xed\xa0\x80\""),
            "invalid UTF-8 in string at offset 1"); // a surrogate
  EXPECT_EQ(parseError("\"ab\xc3\""),
            "invalid UTF-8 in string at offset 3"); // truncated sequence
  EXPECT_EQ(parseError("\"\xf4\x90\x80\x80\""),
            "invalid UTF-8 in string at offset 1"); // above U+10FFFF
}

TEST(JsonErrors, BadNumbers) {
  EXPECT_EQ(parseError("01"),
            "leading zeros are not allowed in numbers at offset 0");
  EXPECT_EQ(parseError("-01"),
            "leading zeros are not allowed in numbers at offset 0");
  EXPECT_EQ(parseError("-"), "expected a digit after '-' at offset 1, got "
                             "end of input");
  EXPECT_EQ(parseError("-a"), "expected a digit after '-' at offset 1, got "
                              "'a'");
  EXPECT_EQ(parseError("1."), "expected a digit after '.' at offset 2, got "
                              "end of input");
  EXPECT_EQ(parseError("1.e5"), "expected a digit after '.' at offset 2, got "
                                "'e'");
  EXPECT_EQ(parseError("1e"), "expected a digit in the exponent at offset 2, "
                              "got end of input");
  EXPECT_EQ(parseError("1e+"), "expected a digit in the exponent at offset 3, "
                               "got end of input");
  EXPECT_EQ(parseError(".5"), "unexpected '.', expected a value at offset 0");
  EXPECT_EQ(parseError("+1"), "unexpected '+', expected a value at offset 0");
  EXPECT_EQ(parseError("[1e400]"), "number out of range at offset 1");
  EXPECT_EQ(parseError("-1e309"), "number out of range at offset 0");
  EXPECT_EQ(parseError("NaN"), "unexpected 'N', expected a value at offset 0");
  EXPECT_EQ(parseError("Infinity"),
            "unexpected 'I', expected a value at offset 0");
  EXPECT_EQ(parseError("-Infinity"),
            "expected a digit after '-' at offset 1, got 'I'");
}

TEST(JsonErrors, BadLiterals) {
  EXPECT_EQ(parseError("tru"), "invalid literal at offset 0, expected 'true'");
  EXPECT_EQ(parseError("[nul]"),
            "invalid literal at offset 1, expected 'null'");
  EXPECT_EQ(parseError("True"), "unexpected 'T', expected a value at offset 0");
  EXPECT_EQ(parseError("// c\n1"),
            "unexpected '/', expected a value at offset 0");
}

//===----------------------------------------------------------------------===//
// Writers
//===----------------------------------------------------------------------===//

TEST(JsonWrite, CompactAndPythonForms) {
  Value v = parseOk(R"({"a": 1, "b": [1, 2], "c": {}, "d": [], "e": null,
                       "f": false, "g": 0.5, "h": "s"})");
  EXPECT_EQ(writeCompact(v),
            R"({"a":1,"b":[1,2],"c":{},"d":[],"e":null,"f":false,"g":0.5,"h":"s"})");
  EXPECT_EQ(writePython(v),
            R"({"a": 1, "b": [1, 2], "c": {}, "d": [], "e": null, "f": false, "g": 0.5, "h": "s"})");
}

TEST(JsonWrite, BuildingValues) {
  Value v;
  v.set("x", Value(1));
  v.set("y", Value::array());
  v.find("y")->push(Value("s"));
  v.find("y")->push(Value(2.0));
  v.set("x", Value(3)); // replaces in place
  EXPECT_EQ(writePython(v), R"({"x": 3, "y": ["s", 2.0]})");
  EXPECT_EQ(writeCompact(Value(uint64_t(1) << 63)), "9.223372036854776e+18");
  EXPECT_EQ(writeCompact(Value(uint64_t(5))), "5");
}

TEST(JsonWrite, PythonStringEscaping) {
  Value s(std::string("q\" b\\ \n\r\t\b\f \x01\x1f \x7f caf\xc3\xa9 "
                      "\xe2\x82\xac \xf0\x9f\x98\x80 /"));
  EXPECT_EQ(writePython(s),
            R"("q\" b\\ \n\r\t\b\f \u0001\u001f \u007f caf\u00e9 \u20ac )"
            R"(\ud83d\ude00 /")");
  // The compact form keeps non-ASCII as UTF-8 and DEL as is, like serde_json.
  EXPECT_EQ(writeCompact(s),
            "\"q\\\" b\\\\ \\n\\r\\t\\b\\f \\u0001\\u001f \x7f caf\xc3\xa9 "
            "\xe2\x82\xac \xf0\x9f\x98\x80 /\"");
  // Keys are escaped the same way.
  Value o;
  o.set("\xc3\xa9", Value(1));
  EXPECT_EQ(writePython(o), R"({"\u00e9": 1})");
}

TEST(JsonWrite, PythonFloatRepr) {
  struct Case {
    double value;
    const char *repr;
  };
  const Case cases[] = {
      {0.052152395248413086, "0.052152395248413086"},
      {0.05185295641422272, "0.05185295641422272"},
      {1e-05, "1e-05"},
      {1.5e-05, "1.5e-05"},
      {0.0001, "0.0001"},
      {0.00012, "0.00012"},
      {0.1, "0.1"},
      {0.5, "0.5"},
      {2.5, "2.5"},
      {6.0, "6.0"},
      {10000.0, "10000.0"},
      {100.25, "100.25"},
      {1e15, "1000000000000000.0"},
      {9999999999999998.0, "9999999999999998.0"},
      {1e16, "1e+16"},
      {1.5e16, "1.5e+16"},
      {123456789012345680.0, "1.2345678901234568e+17"},
      {1e100, "1e+100"},
      {1.7976931348623157e308, "1.7976931348623157e+308"},
      {5e-324, "5e-324"},
      {2.2250738585072014e-308, "2.2250738585072014e-308"},
      {-3.25, "-3.25"},
      {-1e-07, "-1e-07"},
      {0.0, "0.0"},
      {-0.0, "-0.0"},
      {1.0 / 3.0, "0.3333333333333333"},
      {std::numeric_limits<double>::quiet_NaN(), "NaN"},
      {std::numeric_limits<double>::infinity(), "Infinity"},
      {-std::numeric_limits<double>::infinity(), "-Infinity"},
  };
  for (const Case &c : cases) {
    EXPECT_EQ(formatPythonFloat(c.value), c.repr);
    EXPECT_EQ(writePython(Value(c.value)), c.repr);
  }
  // JSON cannot express non-finite numbers; the compact writer prints null.
  EXPECT_EQ(writeCompact(Value(std::numeric_limits<double>::infinity())),
            "null");
  EXPECT_EQ(writeCompact(Value(1e-05)), "1e-05");
}

TEST(JsonWrite, FloatsRoundTrip) {
  std::mt19937_64 rng(1234);
  for (int i = 0; i < 20000; ++i) {
    uint64_t bits = rng();
    double d;
    std::memcpy(&d, &bits, sizeof d);
    if (!std::isfinite(d))
      continue;
    std::string text = formatPythonFloat(d);
    Expected<Value> back = parse(text);
    ASSERT_TRUE(back.isOk()) << text;
    ASSERT_TRUE(back->isDouble()) << text;
    ASSERT_EQ(back->asDouble(), d) << text;
  }
}

TEST(JsonWrite, IndentedLikeJsonDumps) {
  Value v = parseOk(R"({"b": [1, 2.5, "\u00e9"], "a": {}, "c": [], "d": {"y": null, "x": true}})");
  // json.dumps(v, indent=2, sort_keys=True) + "\n"
  EXPECT_EQ(writeIndented(v), "{\n"
                              "  \"a\": {},\n"
                              "  \"b\": [\n"
                              "    1,\n"
                              "    2.5,\n"
                              "    \"\\u00e9\"\n"
                              "  ],\n"
                              "  \"c\": [],\n"
                              "  \"d\": {\n"
                              "    \"x\": true,\n"
                              "    \"y\": null\n"
                              "  }\n"
                              "}\n");
  IndentOptions options;
  options.indent = 4;
  options.sortKeys = false;
  options.trailingNewline = false;
  EXPECT_EQ(writeIndented(parseOk(R"({"z": [1], "a": 2})"), options),
            "{\n    \"z\": [\n        1\n    ],\n    \"a\": 2\n}");
  EXPECT_EQ(writeIndented(Value(3)), "3\n");
  EXPECT_EQ(writeIndented(Value::array()), "[]\n");
}

/// The oracle's JSON files, parsed and re-written, give back their bytes:
/// transformers' configs (sorted, trailing newline), PEFT's adapter config
/// (sorted, no newline) and the trajectory (indent=1, insertion order).
TEST(JsonWrite, IndentedOracleFilesRoundTrip) {
  struct File {
    const char *name;
    int indent;
    bool sortKeys;
    bool trailingNewline;
  };
  const File files[] = {
      {"tiny-llama/config.json", 2, true, true},
      {"tiny-llama/generation_config.json", 2, true, true},
      {"tiny-llama-bnb-nf4/config.json", 2, true, true},
      {"tiny-llama-adapter-init/adapter_config.json", 2, true, false},
      {"tiny-llama-trajectory.json", 1, false, false},
  };
  for (const File &file : files) {
    std::string path = std::string(QLORA_ORACLE_DIR) + "/" + file.name;
    if (!oracleExists(path))
      GTEST_SKIP() << "oracle missing: " << path;
    FILE *f = fopen(path.c_str(), "rb");
    ASSERT_NE(f, nullptr) << path;
    std::string text;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
      text.append(buf, n);
    fclose(f);
    IndentOptions options;
    options.indent = file.indent;
    options.sortKeys = file.sortKeys;
    options.trailingNewline = file.trailingNewline;
    EXPECT_EQ(writeIndented(parseOk(text), options), text) << file.name;
  }
}

/// Every bitsandbytes quant_state blob of the oracle, parsed and printed with
/// writePython, gives back the stored bytes.
TEST(JsonWrite, QuantStateBlobsRoundTrip) {
  std::string path =
      std::string(QLORA_ORACLE_DIR) + "/tiny-llama-bnb-nf4/model.safetensors";
  if (!oracleExists(path))
    GTEST_SKIP() << "oracle missing: " << path;
  Expected<SafetensorsFile> file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.isOk()) << file.message();
  int blobs = 0;
  for (const TensorInfo &info : file->tensors()) {
    if (info.name.find(".quant_state.") == std::string::npos)
      continue;
    ByteSpan bytes = file->data(info);
    std::string text(reinterpret_cast<const char *>(bytes.data), bytes.size);
    Value value = parseOk(text);
    EXPECT_EQ(writePython(value), text) << info.name;
    ++blobs;
  }
  EXPECT_EQ(blobs, 14);
}

//===----------------------------------------------------------------------===//
// Fuzzing: never crash; whatever parses re-parses to the same value
//===----------------------------------------------------------------------===//

TEST(JsonFuzz, RandomAndMutatedInputs) {
  const std::string seeds[] = {
      R"({"__metadata__":{"format":"pt"},"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]}})",
      R"([1, -2.5e-3, "a\u00e9\ud83d\ude00", true, false, null, {"k": [[], {}]}])",
      R"({"quant_type": "nf4", "blocksize": 64, "nested_offset": 0.05185295641422272})",
      "\"caf\xc3\xa9 \\n\"",
  };
  const char alphabet[] = "{}[]\":,.-+eE0123456789tfnulrase\\/u \t\n\x7f\xc3\xa9"
                          "\xff\x00";
  std::mt19937 rng(42);
  auto check = [](const std::string &text) {
    Expected<Value> value = parse(text);
    if (!value)
      return;
    std::string compact = writeCompact(*value);
    Expected<Value> again = parse(compact);
    ASSERT_TRUE(again.isOk()) << compact << ": " << again.message();
    // NaN cannot come out of parse, so equality is exact.
    ASSERT_TRUE(*again == *value) << compact;
    std::string python = writePython(*value);
    Expected<Value> fromPython = parse(python);
    ASSERT_TRUE(fromPython.isOk()) << python;
    ASSERT_TRUE(*fromPython == *value) << python;
    IndentOptions unsorted;
    unsorted.sortKeys = false;
    Expected<Value> fromIndented = parse(writeIndented(*value, unsorted));
    ASSERT_TRUE(fromIndented.isOk());
    ASSERT_TRUE(*fromIndented == *value);
  };
  for (const std::string &seed : seeds) {
    // Every truncation.
    for (size_t n = 0; n <= seed.size(); ++n)
      check(seed.substr(0, n));
    // Random mutations.
    for (int round = 0; round < 3000; ++round) {
      std::string text = seed;
      int edits = 1 + int(rng() % 4);
      for (int e = 0; e < edits && !text.empty(); ++e) {
        size_t pos = rng() % text.size();
        char c = alphabet[rng() % (sizeof alphabet - 1)];
        switch (rng() % 3) {
        case 0:
          text[pos] = c;
          break;
        case 1:
          text.insert(text.begin() + long(pos), c);
          break;
        default:
          text.erase(pos, 1 + rng() % 3);
          break;
        }
      }
      check(text);
    }
  }
  // Pure noise, from the alphabet and from all bytes.
  for (int round = 0; round < 5000; ++round) {
    std::string text;
    size_t length = rng() % 64;
    for (size_t i = 0; i < length; ++i)
      text.push_back(round % 2 ? char(rng() % 256)
                               : alphabet[rng() % (sizeof alphabet - 1)]);
    check(text);
  }
}
