#!/bin/sh
# Everything a session with a GPU machine should run, in one go (see the device tool's
# README: few, full calls). The device machine has no package registry, so `make deps`
# cannot run there: carry the packages with ../shared/tools/device-debs.sh.
#   on the device:  . .devdeps/env.sh && tools/gpu-session.sh [STAGE...]
# Stages (default: all, in this order):
#   build     make all with nvcc
#   cuda      tests/engine_cuda: every kernel and the whole forward pass against the CPU
#   sanitize  the same under compute-sanitizer (memcheck, then racecheck on attention)
#   generate  ringserve-generate on the CUDA backend, ids compared with the CPU backend's
#   bench     ringserve-bench engine (CPU and GPU tables, JSON)
#   tests     the whole suite (plain build; the sanitizer builds run in CI)
#   profile   (not in the default list) Nsight Compute's device time of every kernel of
#             two decode steps at batch 1, summed per kernel by tools/ncu-summary.py
#             (ncu serializes kernels: the overlap of programmatic launches is not seen)
# Logs go to $OUT (default ./gpu-results), at most 8 files (the tool's limit on what
# comes back).
set -u
out=${OUT:-gpu-results}
mkdir -p "$out"
jobs=$(nproc)
stages=${*:-build cuda sanitize generate bench tests}
status=0
stage_failed() { echo "!! $1 failed"; status=1; }

for stage in $stages; do
	echo "== $stage ($(date +%T))"
	case $stage in
	build)
		{ nvidia-smi; nvcc --version; } > "$out/device.txt" 2>&1
		make -j"$jobs" all > "$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
		grep -m1 'ringserve:' "$out/build.log"
		;;
	cuda)
		RS_BUILD_DIR=build timeout 300 build/tests/engine_cuda > "$out/engine_cuda.log" 2>&1 ||
			stage_failed "engine_cuda (exit $?)"
		tail -25 "$out/engine_cuda.log"
		;;
	sanitize)
		cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
		{
			timeout 240 "$cs" --tool memcheck --leak-check full --error-exitcode 9 \
				build/tests/engine_cuda attention sampling forward zero_copy ||
				echo "memcheck exit $?"
			timeout 120 "$cs" --tool racecheck --error-exitcode 9 \
				build/tests/engine_cuda attention sampling || echo "racecheck exit $?"
		} > "$out/sanitizer.log" 2>&1
		grep -E 'ERROR SUMMARY|exit [0-9]+|check failed' "$out/sanitizer.log" | head -20
		grep -q 'exit [0-9]' "$out/sanitizer.log" && stage_failed sanitize
		;;
	generate)
		m=/tmp/gpu-model.gguf
		build/ringserve-mkmodel --out-gguf "$m" --dim 256 --hidden 688 --layers 4 --heads 8 \
			--kv-heads 2 --vocab 2000 --dtype f16 > /dev/null || stage_failed mkmodel
		{
			for b in cpu cuda; do
				echo "-- $b"
				timeout 60 build/ringserve-generate "$m" --prompt-ids "1 2 3 4" -n 48 --ids \
					--ignore-eos --backend $b
			done
		} > "$out/generate.log" 2>&1
		cat "$out/generate.log"
		;;
	bench)
		timeout 200 build/ringserve-bench engine --json "$out/bench-engine.json" \
			> "$out/bench-engine.txt" 2>&1 || stage_failed "bench (exit $?)"
		cat "$out/bench-engine.txt"
		;;
	tests)
		tests/run.sh build 300 $(cd tests && ls *.c | sed 's/\.c$//') > "$out/tests.log" 2>&1 ||
			stage_failed tests
		grep -E '^(FAIL|SKIP)' "$out/tests.log"
		tail -1 "$out/tests.log"
		;;
	profile)
		timeout 300 ncu --csv --metrics gpu__time_duration.sum --launch-skip 1200 \
			--launch-count 400 build/ringserve-bench engine --gpu-only --json /dev/null \
			> "$out/ncu.csv" 2> "$out/ncu.err" || stage_failed "ncu (exit $?)"
		python3 tools/ncu-summary.py "$out/ncu.csv"
		;;
	*) echo "unknown stage $stage"; status=1 ;;
	esac
done
exit $status
