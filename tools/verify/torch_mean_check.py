#!/usr/bin/env python3
"""Checks runtime/TorchMean.cpp against torch.mean on a CUDA GPU.

bitsandbytes stores absmax.mean() (computed by torch on the GPU) in every
double-quantized checkpoint, so qlora-quantize replays torch's summation order.
Run on a GPU host with torch:
    g++ -O2 -std=c++17 -I. tools/verify/torch_mean_driver.cpp runtime/TorchMean.cpp -o /tmp/tmd
    python3 tools/verify/torch_mean_check.py /tmp/tmd
It prints the number of mismatching sizes and exits non-zero on any.
"""
import struct
import subprocess
import sys
import tempfile

import torch


def sizes():
    fixed = [1, 2, 3, 4, 5, 7, 31, 32, 33, 37, 63, 64, 65, 100, 127, 128, 129,
             130, 131, 255, 256, 257, 511, 512, 513, 1024, 2047, 2048, 2049,
             2752, 4096, 8192, 16384, 32768, 65536, 65537, 65539, 131072,
             262144, 704512, 1048576, 2883584, 4096 * 14336 // 64,
             8192 * 28672 // 64, 3_000_001]
    gen = torch.Generator().manual_seed(0)
    rand = torch.randint(1, 6000, (300,), generator=gen).tolist()
    rand += torch.randint(6000, 3_000_000, (60,), generator=gen).tolist()
    return fixed + rand


def main():
    driver = sys.argv[1]
    gen = torch.Generator().manual_seed(1)
    arrays = []
    for i, n in enumerate(sizes()):
        kind = i % 3
        if kind == 0:  # like NF4 absmax of N(0, 0.02) weights
            x = torch.randn(n, generator=gen).abs() * 0.05 + 0.01
        elif kind == 1:
            x = torch.rand(n, generator=gen) * 3.0
        else:
            x = torch.randn(n, generator=gen)
        arrays.append(x.float())
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(struct.pack("<Q", len(arrays)))
        for x in arrays:
            f.write(struct.pack("<Q", x.numel()))
            f.write(x.numpy().tobytes())
        f.flush()
        out = subprocess.run([driver, f.name], capture_output=True, text=True,
                             check=True).stdout.split()
    bad = 0
    for x, bits in zip(arrays, out):
        want = torch.mean(x.cuda()).cpu()
        want_bits = struct.unpack("<I", struct.pack("<f", want.item()))[0]
        if want_bits != int(bits, 16):
            bad += 1
            got = struct.unpack("<f", struct.pack("<I", int(bits, 16)))[0]
            print(f"n={x.numel()}: torch {want.item()!r} replay {got!r}")
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}: "
          f"{len(arrays) - bad} of {len(arrays)} sizes match bit for bit")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
