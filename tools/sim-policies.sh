#!/usr/bin/env bash
# The fairness paper's comparison (DLPM, Cao et al. 2025) through ringserve-sim: fcfs,
# lpm, vtc and dlpm on one multi-tenant prefix-sharing workload, offered well above
# capacity so that every tenant stays backlogged: 4 tenants, t0 sending 4 times as much as
# each other, 4 shared prefixes of 512 tokens per tenant (16 x 32 blocks: the 512-block
# KV cache cannot hold them all with the running requests), suffixes uniform on [8, 64],
# outputs on [16, 128], batch 16, the built-in CPU cost model.
#
#   tools/sim-policies.sh [OUT_DIR (build/sim-policies)] [SIM (build/ringserve-sim)]
#
# Writes OUT_DIR/compare.txt (ringserve-sim's tables: per policy, then per tenant),
# OUT_DIR/service.log (--service-log) and OUT_DIR/service.png (tools/plot-service.gp with
# docs/scheduling.md's bounds for these parameters).
set -euo pipefail
out=${1:-build/sim-policies}
sim=${2:-build/ringserve-sim}
mkdir -p "$out"
"$sim" compare --requests 20000 --tenants 4 --skew 4 --prefixes 4 --prefix-len fixed:512 \
	--suffix-len uniform:8:64 --output-len uniform:16:128 --rate 60 --max-batch 16 \
	--kv-blocks 512 --quantum 2048 --service-log "$out/service.log" --json "$out/compare.json" |
	tee "$out/compare.txt"
# docs/scheduling.md: D = w_p L + S w_q M with L = 576 (the longest prompt), S = 16 seats,
# M = 128, w_p = 1, w_q = 2: vtc 2D, dlpm 2Q + 2D.
d=$((576 + 16 * 2 * 128))
gnuplot -e "datafile='$out/service.log'; outfile='$out/service.png'; tmax=800; \
	vtc_bound=$((2 * d)); dlpm_bound=$((2 * 2048 + 2 * d))" tools/plot-service.gp
echo "plot: $out/service.png"
