#!/bin/sh
# Multi-bin batching on the CPU engine at several batch sizes (docs/perf.md, "Multi-bin
# batching on the CPU engine"): ringserve-bench batching per batch size (its rounds
# alternate the configurations), the simulator's cost model fitted to the steps of each
# batch size and of all of them together (ringserve-sim calibrate --step-log), and the
# plot (tools/plot-batching.gp).
#
#   tools/bench-batching.sh [OUTDIR (build/batching)] [ROUNDS (3)] [BATCH SIZES ("4 8 16 32")]
#
# Requests per run: 128, or 8 x B when larger (so that k = 8 bins of B can fill).
set -eu
out=${1:-build/batching}
rounds=${2:-3}
sizes=${3:-"4 8 16 32"}
mkdir -p "$out"
rm -f "$out/batching.dat" "$out/steps-all.log"
for b in $sizes; do
	n=$((8 * b > 128 ? 8 * b : 128))
	build/ringserve-bench batching --batch "$b" --requests "$n" --rounds "$rounds" \
		--data "$out/batching.dat" --step-log "$out/steps-b$b.log" | tee "$out/batching-b$b.txt"
	grep -v '^#' "$out/steps-b$b.log" >>"$out/steps-all.log"
done
for b in $sizes; do
	echo "batch $b:"
	build/ringserve-sim calibrate --step-log "$out/steps-b$b.log" --out "$out/b$b.cost" | tail -1
done
echo "all batch sizes:"
build/ringserve-sim calibrate --step-log "$out/steps-all.log" --out "$out/all.cost" | tail -1
gnuplot -e "datafile='$out/batching.dat'; outfile='$out/batching.png'" tools/plot-batching.gp
