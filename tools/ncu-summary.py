#!/usr/bin/env python3
"""Summarize an Nsight Compute CSV (ncu --csv --metrics gpu__time_duration.sum[,...]) by
kernel: the launches of one decode step (from one embedding kernel to the next) grouped
by name, with their total and mean device time, and the mean of each other metric asked
for (DRAM throughput and achieved occupancy, in % of peak, for example).
Usage: tools/ncu-summary.py NCU.csv"""
import collections
import csv
import io
import sys

TIME = "gpu__time_duration.sum"
lines = open(sys.argv[1]).read().splitlines()
first = next(i for i, line in enumerate(lines) if line.startswith('"ID"'))
rows = list(csv.reader(io.StringIO("\n".join(l for l in lines[first:] if l.startswith('"')))))
header = rows[0]
col = {k: header.index(k) for k in ("ID", "Kernel Name", "Grid Size", "Metric Name", "Metric Value")}
launches = collections.OrderedDict()  # ID -> (name, grid, {metric: value})
for r in rows[1:]:
    if len(r) != len(header):
        continue
    entry = launches.setdefault(r[col["ID"]], (r[col["Kernel Name"]], r[col["Grid Size"]], {}))
    entry[2][r[col["Metric Name"]]] = float(r[col["Metric Value"]].replace(",", ""))
launches = list(launches.values())
starts = [i for i, l in enumerate(launches) if "embedding_kernel" in l[0]]
if len(starts) < 2:
    sys.exit("ncu-summary: fewer than two steps (embedding kernels) in the capture")
step = launches[starts[0]:starts[1]]
others = sorted({m for _, _, ms in step for m in ms if m != TIME})
print(f"one step: {len(step)} kernels, {sum(ms[TIME] for _, _, ms in step) / 1e3:.1f} us of device time")
if others:
    print("  (then the mean of: " + ", ".join(others) + ")")
by_kernel = collections.defaultdict(lambda: [0, collections.Counter(), set()])
for kernel, grid, ms in step:
    k = kernel.split("(")[0]
    by_kernel[k][0] += 1
    by_kernel[k][1].update(ms)
    by_kernel[k][2].add(grid)
for k, (count, sums, grids) in sorted(by_kernel.items(), key=lambda x: -x[1][1][TIME]):
    extra = "".join(f" {sums[m] / count:6.1f}" for m in others)
    print(f"{sums[TIME] / 1e3:9.1f} us {count:4d} x {sums[TIME] / count / 1e3:6.2f} us{extra}  {k}  grids {' '.join(sorted(grids))}")
