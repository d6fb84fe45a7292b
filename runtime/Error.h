//===- Error.h - Errors as values for the runtime ---------------------------===//
//
// The runtime never throws and never exits: it is linked into tools built with
// -fno-exceptions (everything that links MLIR) and into user programs. Every
// fallible call returns `Status` or `Expected<T>`, and the message names what
// failed (the file, the tensor) so that a tool can print it as is.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace qlora {

/// A failure with a human-readable message.
class Error {
public:
  explicit Error(std::string message) : message_(std::move(message)) {}
  const std::string &message() const { return message_; }

  /// Returns a copy of this error with `context: ` prepended.
  Error withContext(const std::string &context) const {
    return Error(context + ": " + message_);
  }

private:
  std::string message_;
};

/// Builds an Error from a fmt format string.
template <typename... Args>
Error makeError(fmt::format_string<Args...> format, Args &&...args) {
  return Error(fmt::format(format, std::forward<Args>(args)...));
}

/// Success, or an Error.
class [[nodiscard]] Status {
public:
  Status() = default;
  Status(Error error) : error_(std::move(error)) {}
  static Status ok() { return Status(); }

  bool isOk() const { return !error_.has_value(); }
  explicit operator bool() const { return isOk(); }
  const Error &error() const {
    assert(error_ && "no error in an ok Status");
    return *error_;
  }
  const std::string &message() const { return error().message(); }

private:
  std::optional<Error> error_;
};

/// A value of type T, or an Error.
template <typename T> class [[nodiscard]] Expected {
public:
  Expected(T value) : value_(std::move(value)) {}
  Expected(Error error) : error_(std::move(error)) {}
  Expected(Status status) : error_(status.error()) {
    assert(!status.isOk() && "an Expected needs a value or a failed Status");
  }

  bool isOk() const { return value_.has_value(); }
  explicit operator bool() const { return isOk(); }

  T &operator*() { return *value_; }
  const T &operator*() const { return *value_; }
  T *operator->() { return &*value_; }
  const T *operator->() const { return &*value_; }
  T take() { return std::move(*value_); }

  const Error &error() const {
    assert(error_ && "no error in an Expected holding a value");
    return *error_;
  }
  const std::string &message() const { return error().message(); }
  Status status() const { return isOk() ? Status() : Status(*error_); }

private:
  std::optional<T> value_;
  std::optional<Error> error_;
};

} // namespace qlora

/// Returns early from the enclosing function when `expr` (a Status) failed.
#define QLORA_RETURN_IF_ERROR(expr)                                            \
  do {                                                                         \
    ::qlora::Status qloraStatus_ = (expr);                                     \
    if (!qloraStatus_.isOk())                                                  \
      return qloraStatus_.error();                                             \
  } while (false)
