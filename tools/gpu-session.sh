#!/bin/sh
# Everything a session with a GPU machine should run, in one go (see the device tool's
# README): build with nvcc, the GPU test first, then the whole suite without the
# sanitizer passes (the device machine has no package registry, so `make deps` cannot
# run there: carry the packages with ../shared/tools/device-debs.sh), then the benchmarks.
# Results and logs go to $OUT (default ./gpu-results).
#   on the device:  . .devdeps/env.sh && tools/gpu-session.sh
set -u
out=${OUT:-gpu-results}
mkdir -p "$out"
jobs=$(nproc)
{
	nvidia-smi || true
	nvcc --version || true
} > "$out/device.txt" 2>&1
make -j"$jobs" all > "$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
echo "== engine_cuda"
RS_BUILD_DIR=build timeout 600 build/tests/engine_cuda > "$out/engine_cuda.log" 2>&1
echo "engine_cuda exit $?"; tail -15 "$out/engine_cuda.log"
echo "== all tests"
tests/run.sh build 300 $(cd tests && ls *.c | sed 's/\.c$//') > "$out/tests.log" 2>&1
tail -3 "$out/tests.log"
echo "== benchmarks"
build/ringserve-bench engine --json "$out/bench-engine.json" > "$out/bench-engine.txt" 2>&1
cat "$out/bench-engine.txt"
build/ringserve-bench ipc --json "$out/bench-ipc.json" > "$out/bench-ipc.txt" 2>&1
cat "$out/bench-ipc.txt"
