#!/usr/bin/env python3
"""Fit a decode step's cost against its rows from step logs (ROWS TOKENS PAIRS SECONDS:
ringserved --step-log, ringserve-bench batching --step-log), robustly on a shared
machine: per row count, the 5th percentile of the decode-only steps' times (other work
only adds time), then base + slope x rows by least squares. Prints the fit and its error
per row count; writes a ringserve-sim cost file (--cost) when given one.

    tools/fit-decode-cost.py OUT.cost LOG...
"""
import collections
import sys


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    times = collections.defaultdict(list)
    for path in sys.argv[2:]:
        with open(path) as f:
            for line in f:
                fields = line.split()
                if line.startswith("#") or len(fields) != 4:
                    continue
                rows, tokens, seconds = int(fields[0]), int(fields[1]), float(fields[3])
                if rows == tokens:  # decode only: one token per row
                    times[rows].append(seconds)
    xs = sorted(r for r in times if len(times[r]) >= 20)
    if len(xs) < 2:
        sys.exit("fit-decode-cost: fewer than two row counts with 20 decode steps")
    ys = [sorted(times[r])[len(times[r]) // 20] for r in xs]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    base = my - slope * mx
    errors = [abs(base + slope * x - y) / y for x, y in zip(xs, ys)]
    print("rows  p5 ms  fit ms")
    for x, y in zip(xs, ys):
        print("%4d %6.2f %7.2f" % (x, y * 1e3, (base + slope * x) * 1e3))
    print("fit: %.3f ms + %.1f us/row; mean |error| %.1f%%, worst %.1f%%"
          % (base * 1e3, slope * 1e6, 100 * sum(errors) / len(errors), 100 * max(errors)))
    with open(sys.argv[1], "w") as out:
        out.write("base_s %.9f\nper_token_s %.9f\nper_row_s 0\nper_pair_s 0\n" % (base, slope))
        out.write("source decode steps, 5th percentile per row count, of %s\n"
                  % " ".join(sys.argv[2:]))


main()
