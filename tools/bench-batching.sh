#!/bin/sh
# Multi-bin batching on the CPU engine at several batch sizes (docs/perf.md, "Multi-bin
# batching on the CPU engine"): ringserve-bench batching per batch size (its rounds
# alternate the configurations), the simulator's cost model fitted to the steps of each
# batch size and of all of them together (ringserve-sim calibrate --step-log), and the
# plot (tools/plot-batching.gp). Then a decode step's cost against its rows, robust to other
# work on the machine (tools/fit-decode-cost.py: 5th percentiles), and the same workload in
# the simulator on that cost, per batch size and configuration (requests/s).
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
tools/fit-decode-cost.py "$out/decode-p5.cost" "$out"/steps-b*.log
for b in $sizes; do
	n=$((8 * b > 128 ? 8 * b : 128))
	printf 'modelled, B = %s:' "$b"
	for planner in "multibin --bins 1" "multibin --bins 2" "multibin --bins 4" \
		"multibin --bins 8" "multibin --bins 4 --bin-mode continuous" continuous; do
		# shellcheck disable=SC2086 # the planner's words are separate options
		build/ringserve-sim run --requests "$n" --rate 0 --tenants 1 --prefixes 0 \
			--suffix-len uniform:9:16 --output-len uniform:8:200 --hint --policy fcfs \
			--max-batch "$b" --max-batch-tokens 1024 --kv-blocks 8192 \
			--bin-deadline-ms 60000 --planner $planner --cost "$out/decode-p5.cost" |
			awk -F'|' '/^\| policy/ { getline; getline; printf " %s", $3 }'
	done
	echo
done
gnuplot -e "datafile='$out/batching.dat'; outfile='$out/batching.png'" tools/plot-batching.gp
