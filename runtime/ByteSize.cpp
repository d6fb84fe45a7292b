#include "runtime/ByteSize.h"

#include <fmt/format.h>

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <utility>

namespace qlora {
namespace {

std::string lower(std::string text) {
  for (char &c : text)
    c = char(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

} // namespace

Expected<ByteSize> parseByteSize(const std::string &text) {
  auto bad = [&](const char *why) {
    return makeError("expected a size such as 6.1GiB, 48GB or 4096 (bytes), "
                     "got '{}' ({})",
                     text, why);
  };
  const char *begin = text.c_str();
  char *end = nullptr;
  errno = 0;
  double number = std::strtod(begin, &end);
  if (end == begin || errno == ERANGE || !std::isfinite(number))
    return bad("no number");
  if (number < 0)
    return bad("negative");
  std::string unit = lower(std::string(end));
  while (!unit.empty() && unit.front() == ' ')
    unit.erase(unit.begin());
  static const std::pair<const char *, double> kUnits[] = {
      {"", 1.0},           {"b", 1.0},
      {"kb", 1e3},         {"mb", 1e6},
      {"gb", 1e9},         {"tb", 1e12},
      {"kib", 1024.0},     {"mib", 1048576.0},
      {"gib", 1073741824.0}, {"tib", 1099511627776.0}};
  for (const auto &[name, scale] : kUnits) {
    if (unit != name)
      continue;
    double bytes = std::round(number * scale);
    if (bytes > double(int64_t(1) << 62))
      return bad("too large");
    return ByteSize(int64_t(bytes));
  }
  return bad("unknown unit; use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB");
}

std::string formatByteSize(int64_t bytes) {
  static const char *kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024)
    return fmt::format("{} B", bytes);
  double value = double(bytes) / 1024.0;
  int unit = 0;
  while (value >= 1024.0 && unit < 3) {
    value /= 1024.0;
    ++unit;
  }
  return fmt::format("{:.2f} {}", value, kUnits[unit]);
}

} // namespace qlora
