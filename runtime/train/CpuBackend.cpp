//===- CpuBackend.cpp - A cpu step's arena in host memory -------------------===//
#include "runtime/train/StepBackend.h"

#include <cmath>
#include <cstdlib>
#include <cstring>

namespace qlora {
namespace {

class CpuBackend : public StepBackend {
public:
  CpuBackend(const StepLibrary &library, uint8_t *arena, uint64_t bytes)
      : library_(library), arena_(arena), bytes_(bytes),
        hostArena_(library.manifest().hostArenaBytes) {}
  ~CpuBackend() override { std::free(arena_); }

  std::string device() const override { return "cpu"; }
  std::string description() const override { return "the cpu"; }

  Status write(uint64_t offset, const void *data, size_t bytes) override {
    QLORA_RETURN_IF_ERROR(check(offset, bytes));
    std::memcpy(arena_ + offset, data, bytes);
    return Status::ok();
  }
  Status fill(uint64_t offset, int byte, size_t bytes) override {
    QLORA_RETURN_IF_ERROR(check(offset, bytes));
    std::memset(arena_ + offset, byte, bytes);
    return Status::ok();
  }
  Status read(uint64_t offset, void *data, size_t bytes) override {
    QLORA_RETURN_IF_ERROR(check(offset, bytes));
    std::memcpy(data, arena_ + offset, bytes);
    return Status::ok();
  }
  Status readLater(uint64_t offset, size_t bytes,
                   std::vector<uint8_t> *out) override {
    out->resize(bytes);
    return read(offset, out->data(), bytes);
  }
  Status call(const std::string &role) override {
    QLoRAStepContext context = stepContext(arena_, bytes_);
    context.host_arena = hostArena_.data();
    context.host_arena_bytes = hostArena_.size();
    return library_.call(role, context);
  }
  Status synchronize() override { return Status::ok(); }
  Status snapshot(uint64_t offset, size_t bytes) override {
    QLORA_RETURN_IF_ERROR(check(offset, bytes));
    snapshotOffset_ = offset;
    snapshot_.assign(arena_ + offset, arena_ + offset + bytes);
    return Status::ok();
  }
  Status restore() override {
    std::memcpy(arena_ + snapshotOffset_, snapshot_.data(), snapshot_.size());
    return Status::ok();
  }
  Status countNonFinite(const std::vector<FloatRange> &ranges,
                        int64_t *result) override {
    int64_t bad = 0;
    for (const FloatRange &range : ranges) {
      QLORA_RETURN_IF_ERROR(check(range.offset, size_t(range.count) * 4));
      const float *values =
          reinterpret_cast<const float *>(arena_ + range.offset);
      for (int64_t i = 0; i < range.count; ++i)
        bad += !std::isfinite(values[i]);
    }
    *result = bad;
    return Status::ok();
  }

private:
  Status check(uint64_t offset, size_t bytes) const {
    return checkArenaRange(offset, bytes, bytes_);
  }

  const StepLibrary &library_;
  uint8_t *arena_;
  uint64_t bytes_;
  uint64_t snapshotOffset_ = 0;
  std::vector<uint8_t> snapshot_;
  std::vector<uint8_t> hostArena_; ///< offloaded activations
};

} // namespace

Expected<std::unique_ptr<StepBackend>>
openCpuBackend(const StepLibrary &library) {
  const StepManifest &manifest = library.manifest();
  if (manifest.target != "cpu")
    return makeError("the step in {} targets {}, not the cpu",
                     library.directory(), manifest.target);
  uint64_t bytes = (manifest.arenaBytes + 255) / 256 * 256;
  auto *arena = static_cast<uint8_t *>(std::aligned_alloc(256, bytes));
  if (!arena)
    return makeError("cannot allocate the {} byte arena", bytes);
  std::memset(arena, 0, bytes);
  return std::unique_ptr<StepBackend>(
      new CpuBackend(library, arena, manifest.arenaBytes));
}

} // namespace qlora
