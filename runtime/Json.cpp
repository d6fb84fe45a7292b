//===- Json.cpp - JSON value, strict parser and writers ---------------------===//
//
// A recursive-descent parser bounded by kMaxDepth, and two writers that match
// serde_json (compact) and Python's json.dumps (default arguments).
//
//===----------------------------------------------------------------------===//
#include "runtime/Json.h"

#include <cassert>
#include <charconv>
#include <cmath>
#include <algorithm>
#include <cstring>
#include <limits>
#include <unordered_set>

namespace qlora::json {

//===----------------------------------------------------------------------===//
// Value
//===----------------------------------------------------------------------===//

const char *kindName(Kind kind) {
  switch (kind) {
  case Kind::Null:
    return "null";
  case Kind::Bool:
    return "bool";
  case Kind::Int:
    return "integer";
  case Kind::Double:
    return "float";
  case Kind::String:
    return "string";
  case Kind::Array:
    return "array";
  case Kind::Object:
    return "object";
  }
  return "unknown";
}

Value::Value(unsigned long u) {
  if (u > uint64_t(std::numeric_limits<int64_t>::max()))
    data_ = double(u);
  else
    data_ = int64_t(u);
}

Value::Value(unsigned long long u) {
  if (u > uint64_t(std::numeric_limits<int64_t>::max()))
    data_ = double(u);
  else
    data_ = int64_t(u);
}

bool Value::asBool() const {
  assert(isBool() && "asBool on a non-bool JSON value");
  return isBool() ? std::get<bool>(data_) : false;
}

int64_t Value::asInt() const {
  assert(isInt() && "asInt on a non-integer JSON value");
  return isInt() ? std::get<int64_t>(data_) : 0;
}

double Value::asDouble() const {
  assert(isNumber() && "asDouble on a non-number JSON value");
  if (isInt())
    return double(std::get<int64_t>(data_));
  return isDouble() ? std::get<double>(data_) : 0.0;
}

const std::string &Value::asString() const {
  assert(isString() && "asString on a non-string JSON value");
  static const std::string empty;
  return isString() ? std::get<std::string>(data_) : empty;
}

const Array &Value::asArray() const {
  assert(isArray() && "asArray on a non-array JSON value");
  static const Array empty;
  return isArray() ? std::get<Array>(data_) : empty;
}

Array &Value::asArray() {
  assert(isArray() && "asArray on a non-array JSON value");
  if (!isArray())
    data_ = Array{};
  return std::get<Array>(data_);
}

const Object &Value::asObject() const {
  assert(isObject() && "asObject on a non-object JSON value");
  static const Object empty;
  return isObject() ? std::get<Object>(data_) : empty;
}

Object &Value::asObject() {
  assert(isObject() && "asObject on a non-object JSON value");
  if (!isObject())
    data_ = Object{};
  return std::get<Object>(data_);
}

size_t Value::size() const {
  if (isArray())
    return std::get<Array>(data_).size();
  if (isObject())
    return std::get<Object>(data_).size();
  return 0;
}

const Value &Value::operator[](size_t index) const {
  const Array &array = asArray();
  assert(index < array.size() && "JSON array index out of range");
  return array[index];
}

const Value *Value::find(std::string_view key) const {
  if (!isObject())
    return nullptr;
  for (const Member &member : std::get<Object>(data_))
    if (member.first == key)
      return &member.second;
  return nullptr;
}

Value *Value::find(std::string_view key) {
  return const_cast<Value *>(static_cast<const Value *>(this)->find(key));
}

Expected<const Value *> Value::get(std::string_view key) const {
  if (!isObject())
    return makeError("expected an object with key '{}', got {}", key,
                     kindName(kind()));
  if (const Value *value = find(key))
    return value;
  return makeError("missing key '{}'", key);
}

Expected<int64_t> Value::getInt(std::string_view key) const {
  Expected<const Value *> value = get(key);
  if (!value)
    return value.error();
  if (!(*value)->isInt())
    return makeError("key '{}': expected integer, got {}", key,
                     kindName((*value)->kind()));
  return (*value)->asInt();
}

Expected<double> Value::getDouble(std::string_view key) const {
  Expected<const Value *> value = get(key);
  if (!value)
    return value.error();
  if (!(*value)->isNumber())
    return makeError("key '{}': expected number, got {}", key,
                     kindName((*value)->kind()));
  return (*value)->asDouble();
}

Expected<bool> Value::getBool(std::string_view key) const {
  Expected<const Value *> value = get(key);
  if (!value)
    return value.error();
  if (!(*value)->isBool())
    return makeError("key '{}': expected bool, got {}", key,
                     kindName((*value)->kind()));
  return (*value)->asBool();
}

Expected<std::string> Value::getString(std::string_view key) const {
  Expected<const Value *> value = get(key);
  if (!value)
    return value.error();
  if (!(*value)->isString())
    return makeError("key '{}': expected string, got {}", key,
                     kindName((*value)->kind()));
  return (*value)->asString();
}

void Value::set(std::string key, Value value) {
  if (isNull())
    data_ = Object{};
  assert(isObject() && "set on a non-object JSON value");
  if (!isObject())
    return;
  if (Value *existing = find(key)) {
    *existing = std::move(value);
    return;
  }
  std::get<Object>(data_).emplace_back(std::move(key), std::move(value));
}

void Value::push(Value value) {
  if (isNull())
    data_ = Array{};
  assert(isArray() && "push on a non-array JSON value");
  if (!isArray())
    return;
  std::get<Array>(data_).push_back(std::move(value));
}

//===----------------------------------------------------------------------===//
// Parser
//===----------------------------------------------------------------------===//

namespace {

/// Describes the byte at `pos` for an error message: a printable character
/// quoted, anything else as hex.
std::string describeByte(std::string_view text, size_t pos) {
  if (pos >= text.size())
    return "end of input";
  unsigned char c = static_cast<unsigned char>(text[pos]);
  if (c >= 0x20 && c < 0x7f)
    return fmt::format("'{}'", char(c));
  return fmt::format("byte 0x{:02x}", unsigned(c));
}

void appendUtf8(std::string &out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xc0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xe0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(char(0x80 | (cp & 0x3f)));
  } else {
    out.push_back(char(0xf0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3f)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(char(0x80 | (cp & 0x3f)));
  }
}

/// Decodes one well-formed UTF-8 sequence at `pos` (RFC 3629: no overlong
/// forms, no surrogates, nothing above U+10FFFF). Returns its length, or 0
/// when the bytes there are not valid UTF-8.
size_t decodeUtf8(std::string_view text, size_t pos, uint32_t &cp) {
  auto byte = [&](size_t i) -> unsigned {
    return pos + i < text.size() ? static_cast<unsigned char>(text[pos + i])
                                 : 0u;
  };
  auto cont = [&](size_t i) { return (byte(i) & 0xc0u) == 0x80u; };
  unsigned b0 = byte(0);
  if (pos >= text.size())
    return 0;
  if (b0 < 0x80) {
    cp = b0;
    return 1;
  }
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    if (!cont(1))
      return 0;
    cp = ((b0 & 0x1fu) << 6) | (byte(1) & 0x3fu);
    return 2;
  }
  if (b0 >= 0xe0 && b0 <= 0xef) {
    if (!cont(1) || !cont(2))
      return 0;
    cp = ((b0 & 0x0fu) << 12) | ((byte(1) & 0x3fu) << 6) | (byte(2) & 0x3fu);
    if (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))
      return 0;
    return 3;
  }
  if (b0 >= 0xf0 && b0 <= 0xf4) {
    if (!cont(1) || !cont(2) || !cont(3))
      return 0;
    cp = ((b0 & 0x07u) << 18) | ((byte(1) & 0x3fu) << 12) |
         ((byte(2) & 0x3fu) << 6) | (byte(3) & 0x3fu);
    if (cp < 0x10000 || cp > 0x10ffff)
      return 0;
    return 4;
  }
  return 0;
}

class Parser {
public:
  explicit Parser(std::string_view text) : text_(text) {}

  Expected<Value> parseDocument() {
    Value value;
    skipWhitespace();
    QLORA_RETURN_IF_ERROR(parseValue(value, 0));
    skipWhitespace();
    if (pos_ != text_.size())
      return makeError("unexpected {} after the JSON value at offset {}",
                       describeByte(text_, pos_), pos_);
    return value;
  }

private:
  bool atEnd() const { return pos_ >= text_.size(); }
  char peek() const { return atEnd() ? '\0' : text_[pos_]; }

  void skipWhitespace() {
    while (!atEnd()) {
      char c = text_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
        break;
      ++pos_;
    }
  }

  Status parseValue(Value &out, int depth) {
    if (atEnd())
      return makeError("unexpected end of input, expected a value at offset {}",
                       pos_);
    char c = text_[pos_];
    switch (c) {
    case '{':
      return parseObject(out, depth + 1);
    case '[':
      return parseArray(out, depth + 1);
    case '"': {
      std::string s;
      QLORA_RETURN_IF_ERROR(parseString(s));
      out = Value(std::move(s));
      return Status::ok();
    }
    case 't':
      return parseLiteral("true", Value(true), out);
    case 'f':
      return parseLiteral("false", Value(false), out);
    case 'n':
      return parseLiteral("null", Value(), out);
    default:
      if (c == '-' || (c >= '0' && c <= '9'))
        return parseNumber(out);
      return makeError("unexpected {}, expected a value at offset {}",
                       describeByte(text_, pos_), pos_);
    }
  }

  Status parseLiteral(std::string_view word, Value value, Value &out) {
    if (text_.substr(pos_, word.size()) != word)
      return makeError("invalid literal at offset {}, expected '{}'", pos_,
                       word);
    pos_ += word.size();
    out = std::move(value);
    return Status::ok();
  }

  Status checkDepth(int depth) const {
    if (depth > kMaxDepth)
      return makeError("nesting deeper than {} at offset {}", kMaxDepth, pos_);
    return Status::ok();
  }

  Status parseArray(Value &out, int depth) {
    QLORA_RETURN_IF_ERROR(checkDepth(depth));
    ++pos_; // '['
    Array array;
    skipWhitespace();
    if (peek() == ']') {
      ++pos_;
      out = Value(std::move(array));
      return Status::ok();
    }
    while (true) {
      skipWhitespace();
      Value element;
      QLORA_RETURN_IF_ERROR(parseValue(element, depth));
      array.push_back(std::move(element));
      skipWhitespace();
      if (atEnd())
        return makeError(
            "unexpected end of input, expected ',' or ']' in array at offset {}",
            pos_);
      char c = text_[pos_];
      if (c == ',') {
        ++pos_;
        continue;
      }
      if (c == ']') {
        ++pos_;
        break;
      }
      return makeError("expected ',' or ']' after array element at offset {}, "
                       "got {}",
                       pos_, describeByte(text_, pos_));
    }
    out = Value(std::move(array));
    return Status::ok();
  }

  Status parseObject(Value &out, int depth) {
    QLORA_RETURN_IF_ERROR(checkDepth(depth));
    ++pos_; // '{'
    Object object;
    // Small objects check duplicates by a linear scan; big ones (a
    // weight_map, a safetensors header) through a hash set.
    std::unordered_set<std::string> seen;
    constexpr size_t kLinearLimit = 16;
    skipWhitespace();
    if (peek() == '}') {
      ++pos_;
      out = Value(std::move(object));
      return Status::ok();
    }
    while (true) {
      skipWhitespace();
      if (peek() != '"')
        return makeError("expected '\"' to start an object key at offset {}, "
                         "got {}",
                         pos_, describeByte(text_, pos_));
      size_t keyOffset = pos_;
      std::string key;
      QLORA_RETURN_IF_ERROR(parseString(key));
      bool duplicate = false;
      if (object.size() < kLinearLimit) {
        for (const Member &member : object)
          duplicate |= member.first == key;
      } else {
        if (seen.empty())
          for (const Member &member : object)
            seen.insert(member.first);
        duplicate = !seen.insert(key).second;
      }
      if (duplicate)
        return makeError("duplicate object key '{}' at offset {}", key,
                         keyOffset);
      skipWhitespace();
      if (peek() != ':')
        return makeError("expected ':' after object key at offset {}, got {}",
                         pos_, describeByte(text_, pos_));
      ++pos_;
      skipWhitespace();
      Value value;
      QLORA_RETURN_IF_ERROR(parseValue(value, depth));
      object.emplace_back(std::move(key), std::move(value));
      skipWhitespace();
      if (atEnd())
        return makeError("unexpected end of input, expected ',' or '}}' in "
                         "object at offset {}",
                         pos_);
      char c = text_[pos_];
      if (c == ',') {
        ++pos_;
        continue;
      }
      if (c == '}') {
        ++pos_;
        break;
      }
      return makeError("expected ',' or '}}' after object member at offset "
                       "{}, got {}",
                       pos_, describeByte(text_, pos_));
    }
    out = Value(std::move(object));
    return Status::ok();
  }

  /// Reads 4 hex digits at pos_.
  Status parseHex4(uint32_t &out) {
    if (pos_ + 4 > text_.size())
      return makeError("truncated \\u escape at offset {}", pos_);
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      char c = text_[pos_ + i];
      uint32_t d;
      if (c >= '0' && c <= '9')
        d = uint32_t(c - '0');
      else if (c >= 'a' && c <= 'f')
        d = uint32_t(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        d = uint32_t(c - 'A' + 10);
      else
        return makeError("expected a hex digit in \\u escape at offset {}, "
                         "got {}",
                         pos_ + i, describeByte(text_, pos_ + i));
      v = v * 16 + d;
    }
    pos_ += 4;
    out = v;
    return Status::ok();
  }

  Status parseString(std::string &out) {
    size_t start = pos_;
    ++pos_; // opening quote
    while (true) {
      // Copy a run of plain bytes in one go.
      size_t runStart = pos_;
      while (!atEnd()) {
        unsigned char c = static_cast<unsigned char>(text_[pos_]);
        if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80)
          break;
        ++pos_;
      }
      out.append(text_.data() + runStart, pos_ - runStart);
      if (atEnd())
        return makeError("unterminated string starting at offset {}", start);
      unsigned char c = static_cast<unsigned char>(text_[pos_]);
      if (c == '"') {
        ++pos_;
        return Status::ok();
      }
      if (c < 0x20)
        return makeError("unescaped control character 0x{:02x} in string at "
                         "offset {}",
                         unsigned(c), pos_);
      if (c >= 0x80) {
        uint32_t cp;
        size_t len = decodeUtf8(text_, pos_, cp);
        if (len == 0)
          return makeError("invalid UTF-8 in string at offset {}", pos_);
        out.append(text_.data() + pos_, len);
        pos_ += len;
        continue;
      }
      // A backslash escape.
      size_t escapeOffset = pos_;
      ++pos_;
      if (atEnd())
        return makeError("unterminated string starting at offset {}", start);
      char e = text_[pos_++];
      switch (e) {
      case '"':
        out.push_back('"');
        break;
      case '\\':
        out.push_back('\\');
        break;
      case '/':
        out.push_back('/');
        break;
      case 'b':
        out.push_back('\b');
        break;
      case 'f':
        out.push_back('\f');
        break;
      case 'n':
        out.push_back('\n');
        break;
      case 'r':
        out.push_back('\r');
        break;
      case 't':
        out.push_back('\t');
        break;
      case 'u': {
        uint32_t cp;
        QLORA_RETURN_IF_ERROR(parseHex4(cp));
        if (cp >= 0xdc00 && cp <= 0xdfff)
          return makeError("unpaired low surrogate \\u{:04x} at offset {}",
                           cp, escapeOffset);
        if (cp >= 0xd800 && cp <= 0xdbff) {
          if (text_.substr(pos_, 2) != "\\u")
            return makeError("unpaired high surrogate \\u{:04x} at offset {}, "
                             "expected a \\u escape of a low surrogate",
                             cp, escapeOffset);
          pos_ += 2;
          uint32_t low;
          QLORA_RETURN_IF_ERROR(parseHex4(low));
          if (low < 0xdc00 || low > 0xdfff)
            return makeError("unpaired high surrogate \\u{:04x} at offset {}, "
                             "followed by \\u{:04x}",
                             cp, escapeOffset, low);
          cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
        }
        appendUtf8(out, cp);
        break;
      }
      default:
        return makeError("invalid escape {} in string at offset {}",
                         describeByte(text_, pos_ - 1), pos_ - 1);
      }
    }
  }

  Status parseNumber(Value &out) {
    size_t start = pos_;
    bool negative = false;
    if (peek() == '-') {
      negative = true;
      ++pos_;
    }
    auto isDigit = [&] { return !atEnd() && peek() >= '0' && peek() <= '9'; };
    if (!isDigit())
      return makeError("expected a digit after '-' at offset {}, got {}", pos_,
                       describeByte(text_, pos_));
    // Decimal magnitude bookkeeping decides underflow vs overflow when
    // from_chars reports a value out of range.
    size_t intStart = pos_;
    if (peek() == '0') {
      ++pos_;
      if (isDigit())
        return makeError("leading zeros are not allowed in numbers at offset "
                         "{}",
                         start);
    } else {
      while (isDigit())
        ++pos_;
    }
    bool integral = true;
    bool intIsZero = text_[intStart] == '0';
    int64_t intDigits = int64_t(pos_ - intStart);
    int64_t fractionLeadingZeros = 0;
    bool fractionAllZero = true;
    if (peek() == '.') {
      integral = false;
      ++pos_;
      if (!isDigit())
        return makeError("expected a digit after '.' at offset {}, got {}",
                         pos_, describeByte(text_, pos_));
      while (isDigit()) {
        if (fractionAllZero && peek() == '0')
          ++fractionLeadingZeros;
        else
          fractionAllZero = false;
        ++pos_;
      }
    }
    int64_t exponent = 0;
    if (peek() == 'e' || peek() == 'E') {
      integral = false;
      ++pos_;
      bool negativeExponent = false;
      if (peek() == '+' || peek() == '-') {
        negativeExponent = peek() == '-';
        ++pos_;
      }
      if (!isDigit())
        return makeError("expected a digit in the exponent at offset {}, got "
                         "{}",
                         pos_, describeByte(text_, pos_));
      while (isDigit()) {
        if (exponent < 1000000000)
          exponent = exponent * 10 + (peek() - '0');
        ++pos_;
      }
      if (negativeExponent)
        exponent = -exponent;
    }
    const char *first = text_.data() + start;
    const char *last = text_.data() + pos_;
    if (integral) {
      int64_t i = 0;
      auto [ptr, ec] = std::from_chars(first, last, i);
      if (ec == std::errc() && ptr == last) {
        out = Value(i);
        return Status::ok();
      }
      // Too large for int64: fall through to a float, as the brief of
      // "integer when it fits" asks.
    }
    double d = 0.0;
    auto [ptr, ec] = std::from_chars(first, last, d);
    if (ec == std::errc::result_out_of_range) {
      // Position of the leading significant digit relative to the point.
      int64_t magnitude;
      if (!intIsZero)
        magnitude = intDigits + exponent;
      else if (fractionAllZero)
        magnitude = std::numeric_limits<int64_t>::min();
      else
        magnitude = exponent - fractionLeadingZeros;
      if (magnitude <= 0) { // underflow: Python reads it as (signed) zero
        out = Value(negative ? -0.0 : 0.0);
        return Status::ok();
      }
      return makeError("number out of range at offset {}", start);
    }
    if (ec != std::errc() || ptr != last)
      return makeError("invalid number at offset {}", start);
    out = Value(d);
    return Status::ok();
  }

  std::string_view text_;
  size_t pos_ = 0;
};

} // namespace

Expected<Value> parse(std::string_view text) {
  return Parser(text).parseDocument();
}

//===----------------------------------------------------------------------===//
// Writers
//===----------------------------------------------------------------------===//

std::string formatPythonFloat(double value) {
  if (std::isnan(value))
    return "NaN";
  if (std::isinf(value))
    return value < 0 ? "-Infinity" : "Infinity";
  std::string out;
  if (std::signbit(value)) {
    out.push_back('-');
    value = -value;
  }
  if (value == 0.0) {
    out += "0.0";
    return out;
  }
  // Shortest round-trip digits, in the form d[.ddd]e[+-]XX.
  char buf[64];
  auto result = std::to_chars(buf, buf + sizeof buf, value,
                              std::chars_format::scientific);
  std::string_view sci(buf, size_t(result.ptr - buf));
  size_t ePos = sci.find('e');
  std::string digits;
  for (char c : sci.substr(0, ePos))
    if (c != '.')
      digits.push_back(c);
  int exponent = 0;
  std::string_view expText = sci.substr(ePos + 1);
  bool negativeExponent = !expText.empty() && expText[0] == '-';
  if (!expText.empty() && (expText[0] == '-' || expText[0] == '+'))
    expText.remove_prefix(1);
  std::from_chars(expText.data(), expText.data() + expText.size(), exponent);
  if (negativeExponent)
    exponent = -exponent;

  int n = int(digits.size());
  if (exponent >= -4 && exponent < 16) {
    if (exponent >= 0) {
      if (n <= exponent + 1) {
        out += digits;
        out.append(size_t(exponent + 1 - n), '0');
        out += ".0";
      } else {
        out.append(digits, 0, size_t(exponent + 1));
        out.push_back('.');
        out.append(digits, size_t(exponent + 1), std::string::npos);
      }
    } else {
      out += "0.";
      out.append(size_t(-exponent - 1), '0');
      out += digits;
    }
    return out;
  }
  out.push_back(digits[0]);
  if (n > 1) {
    out.push_back('.');
    out.append(digits, 1, std::string::npos);
  }
  out += fmt::format("e{}{:02d}", exponent < 0 ? '-' : '+',
                     exponent < 0 ? -exponent : exponent);
  return out;
}

namespace {

const char kHexDigits[] = "0123456789abcdef";

void appendU4(std::string &out, uint32_t unit) {
  out += "\\u";
  out.push_back(kHexDigits[(unit >> 12) & 0xf]);
  out.push_back(kHexDigits[(unit >> 8) & 0xf]);
  out.push_back(kHexDigits[(unit >> 4) & 0xf]);
  out.push_back(kHexDigits[unit & 0xf]);
}

/// Appends the escape of one ASCII byte that both writers escape, or returns
/// false when the byte is printed as is.
bool appendCommonEscape(std::string &out, unsigned char c) {
  switch (c) {
  case '"':
    out += "\\\"";
    return true;
  case '\\':
    out += "\\\\";
    return true;
  case '\b':
    out += "\\b";
    return true;
  case '\f':
    out += "\\f";
    return true;
  case '\n':
    out += "\\n";
    return true;
  case '\r':
    out += "\\r";
    return true;
  case '\t':
    out += "\\t";
    return true;
  default:
    if (c < 0x20) {
      appendU4(out, c);
      return true;
    }
    return false;
  }
}

class Writer {
public:
  /// `python` selects json.dumps' spacing and ASCII escaping over serde_json's;
  /// `indent` >= 0 selects json.dumps(indent=...) layout.
  Writer(bool python, int indent = -1, bool sortKeys = false)
      : python_(python), indent_(indent), sortKeys_(sortKeys) {}

  void write(const Value &value, int depth = 0) {
    switch (value.kind()) {
    case Kind::Null:
      out_ += "null";
      return;
    case Kind::Bool:
      out_ += value.asBool() ? "true" : "false";
      return;
    case Kind::Int: {
      char buf[32];
      auto result = std::to_chars(buf, buf + sizeof buf, value.asInt());
      out_.append(buf, result.ptr);
      return;
    }
    case Kind::Double: {
      double d = value.asDouble();
      if (!python_ && !std::isfinite(d))
        out_ += "null";
      else
        out_ += formatPythonFloat(d);
      return;
    }
    case Kind::String:
      writeString(value.asString());
      return;
    case Kind::Array: {
      const Array &array = value.asArray();
      out_.push_back('[');
      for (size_t i = 0; i < array.size(); ++i) {
        separator(i == 0, depth + 1);
        write(array[i], depth + 1);
      }
      closing(array.empty(), depth);
      out_.push_back(']');
      return;
    }
    case Kind::Object: {
      const Object &object = value.asObject();
      std::vector<const Member *> members;
      members.reserve(object.size());
      for (const Member &member : object)
        members.push_back(&member);
      if (sortKeys_)
        std::stable_sort(members.begin(), members.end(),
                         [](const Member *a, const Member *b) {
                           return a->first < b->first;
                         });
      out_.push_back('{');
      for (size_t i = 0; i < members.size(); ++i) {
        separator(i == 0, depth + 1);
        writeString(members[i]->first);
        out_ += python_ ? ": " : ":";
        write(members[i]->second, depth + 1);
      }
      closing(members.empty(), depth);
      out_.push_back('}');
      return;
    }
    }
  }

  std::string take() { return std::move(out_); }

private:
  void writeString(const std::string &s) {
    out_.push_back('"');
    if (python_)
      writeAsciiString(s);
    else
      writeUtf8String(s);
    out_.push_back('"');
  }

  /// serde_json: escape quotes, backslashes and control characters only.
  void writeUtf8String(const std::string &s) {
    for (char ch : s) {
      unsigned char c = static_cast<unsigned char>(ch);
      if (!appendCommonEscape(out_, c))
        out_.push_back(ch);
    }
  }

  /// json.dumps(ensure_ascii=True): everything outside ' '..'~' is escaped,
  /// astral characters as surrogate pairs. Bytes that are not UTF-8 (which
  /// `parse` never produces) print as U+FFFD.
  void writeAsciiString(const std::string &s) {
    size_t pos = 0;
    while (pos < s.size()) {
      unsigned char c = static_cast<unsigned char>(s[pos]);
      if (c < 0x80) {
        if (!appendCommonEscape(out_, c)) {
          if (c == 0x7f)
            appendU4(out_, c);
          else
            out_.push_back(char(c));
        }
        ++pos;
        continue;
      }
      uint32_t cp;
      size_t len = decodeUtf8(s, pos, cp);
      if (len == 0) {
        appendU4(out_, 0xfffd);
        ++pos;
        continue;
      }
      pos += len;
      if (cp >= 0x10000) {
        uint32_t v = cp - 0x10000;
        appendU4(out_, 0xd800 + (v >> 10));
        appendU4(out_, 0xdc00 + (v & 0x3ff));
      } else {
        appendU4(out_, cp);
      }
    }
  }

  /// Before an element at `depth`: json.dumps puts ", " between elements,
  /// or with an indent ",\n" and the element's indentation.
  void separator(bool first, int depth) {
    if (indent_ < 0) {
      if (!first)
        out_ += python_ ? ", " : ",";
      return;
    }
    if (!first)
      out_.push_back(',');
    newline(depth);
  }

  /// Before the closing bracket of a container at `depth`; empty containers
  /// print as [] and {} even when indenting.
  void closing(bool empty, int depth) {
    if (indent_ >= 0 && !empty)
      newline(depth);
  }

  void newline(int depth) {
    out_.push_back('\n');
    out_.append(size_t(indent_) * size_t(depth), ' ');
  }

  bool python_;
  int indent_;
  bool sortKeys_;
  std::string out_;
};

} // namespace

std::string writeCompact(const Value &value) {
  Writer writer(/*python=*/false);
  writer.write(value);
  return writer.take();
}

std::string writePython(const Value &value) {
  Writer writer(/*python=*/true);
  writer.write(value);
  return writer.take();
}

std::string writeIndented(const Value &value, const IndentOptions &options) {
  Writer writer(/*python=*/true, options.indent < 0 ? 0 : options.indent,
                options.sortKeys);
  writer.write(value);
  std::string text = writer.take();
  if (options.trailingNewline)
    text.push_back('\n');
  return text;
}

} // namespace qlora::json
