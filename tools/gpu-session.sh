#!/bin/sh
# Everything a session with a GPU machine should run, in one go (see the device tool's
# README: few, full calls). The device machine has no package registry, so `make deps`
# cannot run there: carry the packages with ../shared/tools/device-debs.sh.
#   on the device:  . .devdeps/env.sh && tools/gpu-session.sh [STAGE...]
# Stages (default: all but profile, in this order):
#   build     make all (the tests too) with nvcc
#   cuda      tests/engine_cuda: every kernel and the whole forward pass against the CPU,
#             greedy decoding with and without CUDA graphs
#   generate  ringserve-generate on the CUDA backend, ids compared with the CPU backend's
#   bench     ringserve-bench engine (CPU and GPU tables, JSON)
#   serve     ringserve-bench serve on the CUDA backend: through ringserved against the
#             engine driven directly, at batch 32 and 1 ($SERVE_BATCHES) (JSON)
#   sim       ringserve-sim calibrate --backend cuda: the simulator's GPU step cost model
#             (TinyLlama shape, f16), saved as $OUT/gpu.cost for docs/simulator.md
#   sanitize  engine_cuda under compute-sanitizer (memcheck, then racecheck on attention)
#   tests     the whole suite (plain build; the sanitizer builds run in CI)
#   profile   (not in the default list) Nsight Compute's device time, DRAM throughput and
#             occupancy of every kernel of one decode step at batch 1, summed per kernel
#             by tools/ncu-summary.py (ncu serializes kernels: the overlap of
#             programmatic launches is not seen)
# Each stage writes $OUT/STAGE.log (default folder ./gpu-results), plus the benches' JSON
# and ncu.csv; at most 8 files come back from the device tool, so the device command
# packs them: OUT=/tmp/r tools/gpu-session.sh ...; tar czf "$DEVICE_OUT/r.tgz" -C /tmp/r .
set -u
out=${OUT:-gpu-results}
mkdir -p "$out"
jobs=$(nproc)
stages=${*:-build cuda generate bench serve sim sanitize tests}
status=0
stage_failed() { echo "!! $1 failed"; status=1; }

for stage in $stages; do
	echo "== $stage ($(date +%T))"
	log="$out/$stage.log"
	case $stage in
	build)
		{ nvidia-smi; nvcc --version; } > "$log" 2>&1
		make -j"$jobs" all >> "$log" 2>&1 || { tail -30 "$log"; exit 1; }
		grep -m1 'ringserve:' "$log"
		;;
	cuda)
		RS_BUILD_DIR=build timeout 300 build/tests/engine_cuda > "$log" 2>&1 ||
			stage_failed "engine_cuda (exit $?)"
		tail -30 "$log"
		;;
	generate)
		# f16 must give the CPU's ids; a Q4_K_M and a Qwen2 model are reported (the CPU
		# rounds a quantized model's activations to 8 bits, the GPU to f16: a near-tie may
		# part them; engine_cuda checks their logits against a bound).
		for variant in "f16:--dtype f16" "q4_k_m:--dtype q4_k_m" "qwen2:--arch qwen2 --dtype f16"; do
			name=${variant%%:*}
			m=/tmp/gpu-model-$name.gguf
			build/ringserve-mkmodel --out-gguf "$m" --dim 256 --hidden 768 --layers 4 \
				--heads 8 --kv-heads 2 --vocab 2000 ${variant#*:} > /dev/null ||
				stage_failed "mkmodel $name"
			for b in cpu cuda; do
				echo "-- $name $b" >> "$log"
				timeout 60 build/ringserve-generate "$m" --prompt-ids "1 2 3 4" -n 48 \
					--ids --ignore-eos --backend $b > "$out/ids-$b" 2>> "$log"
				cat "$out/ids-$b" >> "$log"
			done
			if cmp -s "$out/ids-cpu" "$out/ids-cuda" && [ -s "$out/ids-cpu" ]; then
				echo "$name: same 48 ids on cpu and cuda" >> "$log"
			elif [ "$name" = f16 ]; then
				stage_failed "generate: cpu and cuda ids differ"
			else
				echo "$name: cpu and cuda ids differ (see above)" >> "$log"
			fi
			rm -f "$out/ids-cpu" "$out/ids-cuda"
		done
		cat "$log"
		;;
	bench)
		timeout 300 build/ringserve-bench engine --json "$out/bench-engine.json" \
			> "$log" 2>&1 || stage_failed "bench (exit $?)"
		cat "$log"
		;;
	serve)
		for batch in ${SERVE_BATCHES:-32 1}; do
			timeout 240 build/ringserve-bench serve --backend cuda --batch $batch \
				--json "$out/bench-serve-$batch.json" >> "$log" 2>&1 ||
				stage_failed "serve batch $batch (exit $?)"
		done
		grep -v '^ringserved' "$log"
		;;
	sim)
		timeout 300 build/ringserve-sim calibrate --backend cuda --out "$out/gpu.cost" \
			> "$log" 2>&1 || stage_failed "sim calibrate (exit $?)"
		tail -1 "$log"
		;;
	sanitize)
		cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
		{
			timeout 300 "$cs" --tool memcheck --leak-check full --error-exitcode 9 \
				build/tests/engine_cuda attention sampling forward greedy zero_copy ||
				echo "memcheck exit $?"
			timeout 120 "$cs" --tool racecheck --error-exitcode 9 \
				build/tests/engine_cuda attention sampling || echo "racecheck exit $?"
			timeout 120 "$cs" --tool synccheck --error-exitcode 9 \
				build/tests/engine_cuda attention matmul || echo "synccheck exit $?"
		} > "$log" 2>&1
		grep -E 'ERROR SUMMARY|exit [0-9]+|check failed' "$log" | head -20
		grep -q 'exit [0-9]' "$log" && stage_failed sanitize
		;;
	tests)
		tests/run.sh build 300 $(cd tests && ls *.c | sed 's/\.c$//') > "$log" 2>&1 ||
			stage_failed tests
		grep -E '^(FAIL|SKIP)' "$log"
		tail -1 "$log"
		;;
	profile)
		timeout 300 ncu --csv --launch-skip 1200 --launch-count 400 --metrics \
			gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active \
			build/ringserve-bench engine --gpu-profile --json /dev/null \
			> "$out/ncu.csv" 2> "$log" || stage_failed "ncu (exit $?)"
		python3 tools/ncu-summary.py "$out/ncu.csv" | tee -a "$log"
		;;
	*) echo "unknown stage $stage"; status=1 ;;
	esac
done
exit $status
