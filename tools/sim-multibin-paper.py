#!/usr/bin/env python3
"""The multi-bin paper's setting (Guldogan et al., 2024) through ringserve-sim: all
requests at once, B = 128, output lengths uniform on [100, 2000] steps (the paper's [1, 20]
in units of 100: 20 discrete lengths cannot make 32 equal-probability bins), a batch's
service time its longest member's (a cost model of one unit per step), static bins at
the true equal-probability quantiles, k = 1, 2, 4, 8, 16, 32. Prints the throughput
against the paper's closed form

    2B / ((lmax + lmin) + (lmax - lmin)(B - 1) / (k(B + 1)))

and the latency side of the trade-off: the same requests arriving as a Poisson process
at 90% of k = 1's capacity, where a bin waits to fill (up to its deadline) while the lane
is busy. Writes a markdown table to stdout and a data file for tools/plot-multibin-paper.gp.

    tools/sim-multibin-paper.py [--sim build/ringserve-sim] [--requests N] [--out DIR]
"""
import argparse
import json
import os
import subprocess

B, LMIN, LMAX = 128, 100, 2000
KS = [1, 2, 4, 8, 16, 32]


def closed_form(k):
    return 2 * B / ((LMAX + LMIN) + (LMAX - LMIN) * (B - 1) / (k * (B + 1)))


def boundaries(k):
    """Upper lengths of bins 0 .. k-2: equal shares of the 1901 lengths."""
    n = LMAX - LMIN + 1
    return ",".join(str(LMIN + round(i * n / k) - 1) for i in range(1, k))


def run(sim, out, k, requests, rate, deadline_steps):
    path = os.path.join(out, "k%d-rate%g.json" % (k, rate))
    cmd = [sim, "run", "--cost", os.path.join(out, "unit.cost"), "--requests", str(requests),
           "--rate", str(rate), "--tenants", "1", "--prefixes", "0", "--suffix-len",
           "fixed:8", "--output-len", "uniform:%d:%d" % (LMIN, LMAX), "--hint",
           "--policy", "fcfs", "--max-batch", str(B), "--max-batch-tokens", "4096",
           "--kv-blocks", "10000000", "--planner", "multibin", "--bins", str(k),
           "--bin-mode", "static", "--bin-deadline-ms", str(deadline_steps * 1000),
           "--json", path]
    if k > 1:
        cmd += ["--bin-boundaries", boundaries(k)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(path) as f:
        return json.load(f)[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sim", default="build/ringserve-sim")
    ap.add_argument("--requests", type=int, default=102400)
    ap.add_argument("--deadline", type=int, default=4000,
                    help="a bin's deadline, in steps (Poisson runs)")
    ap.add_argument("--out", default="build/multibin-paper")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "unit.cost"), "w") as f:
        f.write("base_s 1\nper_token_s 0\nper_row_s 0\nper_pair_s 0\nsource unit step\n")
    rate = 0.9 * closed_form(1)
    print("ringserve-sim, the multi-bin paper's setting: %d requests, B = %d, outputs "
          "uniform on [%d, %d] steps, one unit per step; Poisson at %.4f requests/step "
          "(90%% of k = 1's capacity), bin deadline %d steps\n"
          % (a.requests, B, LMIN, LMAX, rate, a.deadline))
    print("| k | requests/step | closed form | difference | vs k = 1 | mean latency, "
          "all at once | mean latency, Poisson | p99, Poisson |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for k in KS:
        burst = run(a.sim, a.out, k, a.requests, 0, a.deadline)
        poisson = run(a.sim, a.out, k, a.requests, rate, a.deadline)
        thr = burst["requests"] / burst["seconds"]
        rows.append((k, thr, closed_form(k), burst["latency_mean_s"],
                     poisson["latency_mean_s"], poisson["tenants"][0]["latency_p99_s"]))
    for k, thr, cf, lat, plat, p99 in rows:
        print("| %d | %.4f | %.4f | %+.1f%% | %.2fx | %.0f | %.0f | %.0f |"
              % (k, thr, cf, 100 * (thr / cf - 1), thr / rows[0][1], lat, plat, p99))
    with open(os.path.join(a.out, "multibin-paper.dat"), "w") as f:
        f.write("# k simulated closed_form latency_burst latency_poisson p99_poisson\n")
        for r in rows:
            f.write("%d %.6f %.6f %.1f %.1f %.1f\n" % r)


if __name__ == "__main__":
    main()
