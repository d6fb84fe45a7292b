//===- DeviceNF4.h - An NF4Weight uploaded to the GPU -----------------------===//
#pragma once

#include "runtime/BnbFormat.h"
#include "runtime/cuda/DeviceBuffer.h"
#include "runtime/cuda/NF4Kernels.h"

namespace qlora::cuda {

/// Owns the device copies of a weight's buffers and views them.
struct DeviceNF4 {
  DeviceBuffer<uint8_t> packed, absmaxCodes;
  DeviceBuffer<float> absmax, absmaxScales;
  NF4DeviceWeight view;

  static Expected<DeviceNF4> upload(const NF4Weight &weight) {
    DeviceNF4 device;
    Expected<DeviceBuffer<uint8_t>> packed = DeviceBuffer<uint8_t>::upload(weight.packed);
    if (!packed)
      return packed.error();
    device.packed = packed.take();
    NF4DeviceWeight &view = device.view;
    view.packed = device.packed.data();
    view.rows = weight.shape.size() == 2 ? weight.shape[0] : 1;
    view.cols = weight.shape.back();
    view.blockSize = weight.blockSize;
    if (weight.nested) {
      Expected<DeviceBuffer<uint8_t>> codes =
          DeviceBuffer<uint8_t>::upload(weight.nested->codes);
      Expected<DeviceBuffer<float>> scales =
          DeviceBuffer<float>::upload(weight.nested->scales);
      if (!codes || !scales)
        return codes ? scales.error() : codes.error();
      device.absmaxCodes = codes.take();
      device.absmaxScales = scales.take();
      view.absmaxCodes = device.absmaxCodes.data();
      view.absmaxScales = device.absmaxScales.data();
      view.offset = weight.nested->offset;
      view.dqBlockSize = weight.nested->blockSize;
    } else {
      Expected<DeviceBuffer<float>> absmax =
          DeviceBuffer<float>::upload(weight.absmax);
      if (!absmax)
        return absmax.error();
      device.absmax = absmax.take();
      view.absmax = device.absmax.data();
    }
    return device;
  }
};

} // namespace qlora::cuda
