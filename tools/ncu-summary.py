#!/usr/bin/env python3
"""Summarize an Nsight Compute CSV (ncu --csv --metrics gpu__time_duration.sum) by kernel:
the launches of one decode step (from one embedding kernel to the next) grouped by name,
with their total and mean device time. Usage: tools/ncu-summary.py NCU.csv"""
import collections
import csv
import io
import sys

lines = open(sys.argv[1]).read().splitlines()
first = next(i for i, line in enumerate(lines) if line.startswith('"ID"'))
rows = list(csv.reader(io.StringIO("\n".join(l for l in lines[first:] if l.startswith('"')))))
header = rows[0]
name, value = header.index("Kernel Name"), header.index("Metric Value")
grid = header.index("Grid Size")
launches = [(r[name], float(r[value].replace(",", "")), r[grid]) for r in rows[1:] if len(r) == len(header)]
starts = [i for i, l in enumerate(launches) if "embedding_kernel" in l[0]]
if len(starts) < 2:
    sys.exit("ncu-summary: fewer than two steps (embedding kernels) in the capture")
step = launches[starts[0]:starts[1]]
print(f"one step: {len(step)} kernels, {sum(v for _, v, _ in step) / 1e3:.1f} us of device time")
by_kernel = collections.defaultdict(lambda: [0, 0.0, set()])
for kernel, ns, g in step:
    k = kernel.split("(")[0]
    by_kernel[k][0] += 1
    by_kernel[k][1] += ns
    by_kernel[k][2].add(g)
for k, (count, ns, grids) in sorted(by_kernel.items(), key=lambda x: -x[1][1]):
    print(f"{ns / 1e3:9.1f} us {count:4d} x {ns / count / 1e3:6.2f} us  {k}  grids {' '.join(sorted(grids))}")
