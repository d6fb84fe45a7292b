"""Reads a bench-peers.sh log (qlora-bench step's lines and the peers' RESULT lines) and prints one
table: each configuration's tokens/s, peak GiB and model TFLOP/s, and our tokens/s over each peer's.

  python3 tools/peers/summarize.py LOG
"""
import json, re, sys

ours, peers = [], []
for line in open(sys.argv[1], errors="replace"):
    if line.startswith("RESULT "):
        r = json.loads(line[len("RESULT "):])
        if r.get("kind") == "train":
            peers.append((r["config"], r["tokens_per_s"], r["peak_GiB"], r["model_TFLOPs"]))
        elif r.get("kind") in ("error", "skipped"):
            peers.append((r.get("config", "?") + " (" + r["kind"] + ")", 0.0, 0.0, 0.0))
        continue
    m = re.match(r"(\S+): \d+ x \d+ tokens", line)
    if m:
        name = m.group(1).rstrip("/").split("/")[-1]
        ours.append([name, 0.0, 0.0, 0.0])
    m = re.search(r"tokens/s: (\d+)\s+model TFLOP/s: (\d+)", line)
    if m and ours:
        ours[-1][1], ours[-1][3] = float(m.group(1)), float(m.group(2))
    m = re.search(r"device memory held: ([\d.]+) GiB", line)
    if m and ours:
        ours[-1][2] = float(m.group(1))

print(f"{'configuration':36s} {'tokens/s':>9s} {'peak GiB':>9s} {'TFLOP/s':>8s}")
for name, tps, gib, tf in ours + peers:
    print(f"{name:36s} {tps:9.0f} {gib:9.2f} {tf:8.0f}")
if ours:
    base = ours[0]
    print(f"\n{base[0]} over each peer (tokens/s):")
    for name, tps, _, _ in peers:
        if tps > 0:
            print(f"  {name:34s} {base[1] / tps:5.2f}x")
