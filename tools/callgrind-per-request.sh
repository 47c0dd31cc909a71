#!/usr/bin/env bash
# Instructions the daemon's loop spends per request, counted by callgrind (repeatable where
# wall-clock time on a shared machine is not).
#
#   tools/callgrind-per-request.sh [-r RUNS] [-n REQUESTS] [-t TRIALS] [-o DIR] [-v] [-d] [-s]
#                                  [-c CLIENT] BUILD_DIR [DAEMON_ARG...]
#
# Starts BUILD_DIR/ringserved on the null engine (--spin-us 0: it sleeps when idle, so the
# idle loop costs little) under callgrind, twice: once with RUNS client runs of REQUESTS
# requests each, once with RUNS runs of 2 x REQUESTS (BUILD_DIR/ringserve-client, prompt
# ids 1..16, one output token, as ringserve-bench ipc). Only what runs inside
# rs_daemon_run is counted (callgrind's --toggle-collect: not start-up, not tear-down),
# minus rs_stats_publish (a 100 ms timer: it scales with valgrind's run time, not with
# requests). The second count minus the first, divided by RUNS x REQUESTS, is the cost of
# one request; connecting and disconnecting, the same number of times in both, cancel.
# Prints that figure, then the per-function inclusive/self costs of the larger run
# (callgrind_annotate) when -v is given. DAEMON_ARG: extra daemon options (--policy fcfs
# --no-prefix-cache). Each count is taken TRIALS times (default 3) and the smallest kept:
# what varies between trials is how many loop turns and sleeps the requests were spread
# over (the client runs at full speed, the daemon under valgrind), which only adds.
# Defaults: 10 runs of 100. Out files stay in DIR (default: a temp
# folder, removed).
#
# -d: a new prompt for every request (ringserve-client --distinct-prompts, seeds distinct
# across runs too), as ringserve-bench ipc's round trips send: each request misses the
# prefix cache, its end inserts a new node and, once the KV pool is full, an admission
# evicts one (-d starts the daemon with --kv-blocks 512 so that the pool is full early).
# Without -d every request repeats prompt 1..16 (a cache hit after the first).
# -s: one request in flight at a time (ringserve-client --one-at-a-time), as in the round
# trips: each loop turn takes one request from submission to completion (without -s a run
# submits all its requests at once, and a turn admits many).
# -c CLIENT: the ringserve-client binary to use (default BUILD_DIR/ringserve-client); it
# must speak BUILD_DIR's ABI (for 2cd556d: that tree's client with --distinct-prompts
# added, see docs/perf.md).
set -euo pipefail

runs=10
requests=100
trials=3
out_dir=
verbose=0
distinct=0
sequential=0
client=
while getopts "r:n:t:o:vdsc:" opt; do
	case $opt in
	r) runs=$OPTARG ;;
	n) requests=$OPTARG ;;
	t) trials=$OPTARG ;;
	o) out_dir=$OPTARG ;;
	v) verbose=1 ;;
	d) distinct=1 ;;
	s) sequential=1 ;;
	c) client=$OPTARG ;;
	*) exit 2 ;;
	esac
done
shift $((OPTIND - 1))
if [ $# -lt 1 ]; then
	sed -n '2,/^set /p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
	exit 2
fi
build=$1
shift
if [ $((2 * requests)) -gt 256 ]; then
	echo "callgrind-per-request: 2 x REQUESTS must be <= 256 (ringserve-client's limit)" >&2
	exit 2
fi
client=${client:-$build/ringserve-client}
for bin in "$build/ringserved" "$client"; do
	[ -x "$bin" ] || { echo "callgrind-per-request: no $bin" >&2; exit 1; }
done
prompt_args=()
if [ $distinct = 1 ]; then prompt_args=(--distinct-prompts); fi
if [ $sequential = 1 ]; then prompt_args+=(--one-at-a-time); fi
# With -d, a pool of 512 KV blocks (before the caller's DAEMON_ARGs, which may change
# it): full of cached nodes well within the first count's RUNS x REQUESTS, so that the
# difference between the counts is all steady state, an eviction per admission (the
# null engine's default pool, 8,192 blocks, would take 8,192 requests to fill).
daemon_args=()
if [ $distinct = 1 ]; then daemon_args=(--kv-blocks 512); fi
command -v valgrind >/dev/null || { echo "callgrind-per-request: valgrind not found" >&2; exit 1; }

keep=1
if [ -z "$out_dir" ]; then
	out_dir=$(mktemp -d /tmp/callgrind-per-request.XXXXXX)
	keep=0
fi
mkdir -p "$out_dir"
daemon_pid=
cleanup() {
	if [ -n "$daemon_pid" ]; then kill -KILL "$daemon_pid" 2>/dev/null || true; fi
	if [ $keep = 0 ]; then rm -rf "$out_dir"; fi
}
trap cleanup EXIT

# One daemon under callgrind serving `runs` client runs of $1 requests; prints the count.
count_instructions() {
	local per_run=$1
	shift
	local sock=$out_dir/sock.$per_run ready=$out_dir/ready.$per_run
	local cg=$out_dir/callgrind.$per_run
	rm -f "$sock" "$ready" "$cg"
	mkfifo "$ready"
	# The daemon's write end of the fifo: it writes a byte once listening (--ready-fd).
	valgrind --tool=callgrind --collect-atstart=no --toggle-collect=rs_daemon_run \
		--toggle-collect=rs_stats_publish --callgrind-out-file="$cg" \
		"$build/ringserved" --socket "$sock" --engine null --spin-us 0 --grace-ms 0 \
		--ready-fd 3 "$@" 3>"$ready" 2>"$out_dir/daemon.$per_run.log" &
	daemon_pid=$!
	local byte=
	read -r -n 1 byte <"$ready" || true
	[ -S "$sock" ] || { echo "callgrind-per-request: the daemon did not start" >&2
		cat "$out_dir/daemon.$per_run.log" >&2; exit 1; }
	for ((r = 0; r < runs; r++)); do
		# Seeds 256 apart: with -d no prompt repeats across runs either.
		"$client" --socket "$sock" --prompt-ids "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16" \
			-n 1 --requests "$per_run" --seed $((1 + 256 * r)) --ids "${prompt_args[@]}" \
			>/dev/null 2>>"$out_dir/client.$per_run.log"
	done
	kill -TERM "$daemon_pid"
	# A daemon that does not stop (2cd556d under valgrind keeps running with SIGTERM
	# pending) writes no counts at exit: after 10 s, ask callgrind for a dump of what
	# it counted so far (the requests are all done by then), then kill it.
	local waited
	for ((waited = 0; waited < 100; waited++)); do
		kill -0 "$daemon_pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$daemon_pid" 2>/dev/null; then
		rm -f "$cg".*
		timeout 60 callgrind_control -d "$daemon_pid" >/dev/null 2>&1 || true
		kill -KILL "$daemon_pid" 2>/dev/null || true
		wait "$daemon_pid" || true
		daemon_pid=
		local dump
		dump=$(ls "$cg".* 2>/dev/null | head -1)
		if [ -n "$dump" ]; then
			mv "$dump" "$cg"
		elif [ ! -s "$cg" ]; then
			# (A daemon that stopped just after the 10 s wrote $cg at its exit.)
			echo "callgrind-per-request: the daemon did not stop on SIGTERM, no dump" >&2
			return 1
		fi
	else
		wait "$daemon_pid" || true
		daemon_pid=
	fi
	# "totals: N" (or "summary: N"): instructions while collection was on.
	awk '/^(totals|summary):/ { print $2; exit }' "$cg"
}

# The smallest of `trials` counts of $1 requests per run.
smallest_count() {
	local best= count t
	for ((t = 0; t < trials; t++)); do
		count=$(count_instructions "$@") || continue
		if [ -z "$best" ] || [ "$count" -lt "$best" ]; then best=$count; fi
	done
	[ -n "$best" ] || { echo "callgrind-per-request: no trial counted" >&2; return 1; }
	echo "$best"
}

shift_args=("${daemon_args[@]}" "$@")
small=$(smallest_count "$requests" "${shift_args[@]}")
large=$(smallest_count $((2 * requests)) "${shift_args[@]}")
per_request=$(awk -v a="$small" -v b="$large" -v n=$((runs * requests)) \
	'BEGIN { printf "%.0f", (b - a) / n }')
echo "instructions per request: $per_request ($runs runs of $requests: $small; of $((2 * requests)): $large; build $build${shift_args[*]:+; daemon args ${shift_args[*]}}$([ $distinct = 1 ] && echo "; distinct prompts")$([ $sequential = 1 ] && echo "; one at a time"))"
if [ $verbose = 1 ]; then
	callgrind_annotate --inclusive=yes "$out_dir/callgrind.$((2 * requests))" | head -60
fi
