//===- Json.h - A small JSON value, parser and writers ----------------------===//
//
// Enough JSON for checkpoints: safetensors headers, config.json,
// model.safetensors.index.json and the quant_state blobs of bitsandbytes.
//
// The parser is strict RFC 8259 and reports errors as values with a byte
// offset. Objects keep insertion order, so a header can be re-written byte for
// byte. Three writers: `writeCompact` prints what serde_json prints (the form
// of safetensors headers), `writePython` prints what Python's `json.dumps(obj)`
// prints with default arguments (the form of bitsandbytes' quant_state blobs),
// and `writeIndented` prints the indented, key-sorted form of config.json.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "runtime/Error.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace qlora::json {

class Value;

/// The kinds a Value can hold. Integers and floats are distinct so that
/// `1` and `1.0` survive a round trip (Python prints them differently).
enum class Kind { Null, Bool, Int, Double, String, Array, Object };

/// An array: a plain vector of values.
using Array = std::vector<Value>;
/// One key/value member of an object.
using Member = std::pair<std::string, Value>;
/// An object: members in insertion order, because headers are re-written in
/// the order they were read and Python dicts print in insertion order.
using Object = std::vector<Member>;

/// Returns "null", "bool", "integer", "float", "string", "array" or "object",
/// for error messages.
const char *kindName(Kind kind);

/// A JSON value.
class Value {
public:
  Value() = default;
  Value(std::nullptr_t) {}
  Value(bool b) : data_(b) {}
  Value(int i) : data_(int64_t(i)) {}
  Value(long i) : data_(int64_t(i)) {}
  Value(long long i) : data_(int64_t(i)) {}
  Value(unsigned u) : data_(int64_t(u)) {}
  /// Values above INT64_MAX become floats, as they would after a parse.
  Value(unsigned long u);
  Value(unsigned long long u);
  Value(double d) : data_(d) {}
  Value(std::string s) : data_(std::move(s)) {}
  Value(std::string_view s) : data_(std::string(s)) {}
  Value(const char *s) : data_(std::string(s)) {}
  Value(Array a) : data_(std::move(a)) {}
  Value(Object o) : data_(std::move(o)) {}

  /// An empty array / object, since `Value{}` is null.
  static Value array() { return Value(Array{}); }
  static Value object() { return Value(Object{}); }

  Kind kind() const { return Kind(data_.index()); }
  bool isNull() const { return kind() == Kind::Null; }
  bool isBool() const { return kind() == Kind::Bool; }
  bool isInt() const { return kind() == Kind::Int; }
  bool isDouble() const { return kind() == Kind::Double; }
  /// An integer or a float.
  bool isNumber() const { return isInt() || isDouble(); }
  bool isString() const { return kind() == Kind::String; }
  bool isArray() const { return kind() == Kind::Array; }
  bool isObject() const { return kind() == Kind::Object; }

  /// Typed accessors. Calling one on the wrong kind is a programming error:
  /// it asserts in debug builds and returns false / 0 / an empty value in
  /// release builds (the runtime never throws). Check the kind first, or use
  /// the `get*` member lookups below, which return errors.
  bool asBool() const;
  int64_t asInt() const;
  /// Accepts integers too: `"rope_theta": 10000` is a float in Python.
  double asDouble() const;
  const std::string &asString() const;
  const Array &asArray() const;
  Array &asArray();
  const Object &asObject() const;
  Object &asObject();

  /// Number of elements of an array or members of an object; 0 otherwise.
  size_t size() const;
  /// Array element; asserts the index is in range.
  const Value &operator[](size_t index) const;

  /// Object lookup: null when this is not an object or has no such key.
  const Value *find(std::string_view key) const;
  Value *find(std::string_view key);
  /// Object lookup with an error ("missing key 'x'") for callers that need
  /// the key.
  Expected<const Value *> get(std::string_view key) const;
  /// Typed member lookups: the error names the key and the kind found.
  Expected<int64_t> getInt(std::string_view key) const;
  Expected<double> getDouble(std::string_view key) const;
  Expected<bool> getBool(std::string_view key) const;
  Expected<std::string> getString(std::string_view key) const;

  /// Sets an object member, replacing an existing key in place (so the order
  /// does not change) or appending a new one. Turns null into an object.
  void set(std::string key, Value value);
  /// Appends to an array. Turns null into an array.
  void push(Value value);

  /// Deep equality; an integer never equals a float.
  bool operator==(const Value &other) const { return data_ == other.data_; }
  bool operator!=(const Value &other) const { return !(*this == other); }

private:
  // The order of alternatives matches `Kind`.
  std::variant<std::monostate, bool, int64_t, double, std::string, Array,
               Object>
      data_;
};

/// The deepest nesting of arrays and objects that `parse` accepts; deeper
/// input is an error rather than a stack overflow.
constexpr int kMaxDepth = 512;

/// Parses one JSON text (RFC 8259, no extensions): no NaN/Infinity, no
/// comments, no trailing commas, no duplicate object keys, UTF-8 only.
/// Numbers without fraction or exponent that fit int64 become integers, other
/// numbers floats; a number too large for a double is an error. The error
/// names the byte offset and what was expected, e.g.
/// "expected ':' after object key at offset 17".
Expected<Value> parse(std::string_view text);

/// Compact JSON as serde_json prints it, the form safetensors headers use:
/// `{"a":1,"b":[1,2]}`, non-ASCII as raw UTF-8. Floats print as Python's
/// repr; NaN and infinities, which JSON cannot express, print as null.
std::string writeCompact(const Value &value);

/// Exactly what Python's `json.dumps(obj)` prints with default arguments:
/// `{"a": 1, "b": [1, 2]}`, ASCII only (\uXXXX escapes), floats as
/// `repr(float)`, and NaN / Infinity / -Infinity for non-finite floats.
std::string writePython(const Value &value);

/// Layout of writeIndented, after json.dumps' keyword arguments.
struct IndentOptions {
  /// Spaces per level (json.dumps' `indent`).
  int indent = 2;
  /// `sort_keys=True`, as transformers and PEFT write their configs.
  bool sortKeys = true;
  /// transformers ends config.json and generation_config.json with "\n";
  /// PEFT's adapter_config.json has none.
  bool trailingNewline = true;
};

/// Python's `json.dumps(obj, indent=2, sort_keys=True) + "\n"` by default:
/// what transformers' `to_json_string` writes to config.json, so that config
/// files we write match the reference stack's byte for byte. Otherwise as
/// writePython: ASCII only, floats as repr, "[]" / "{}" for empty containers.
std::string writeIndented(const Value &value, const IndentOptions &options = {});

/// Python's `repr(float)`: the shortest digits that round-trip, fixed
/// notation for decimal exponents in [-4, 16) with a trailing ".0" when
/// integral, otherwise scientific with a signed two-digit-minimum exponent
/// (`1e-05`, `1.5e+16`).
std::string formatPythonFloat(double value);

} // namespace qlora::json
