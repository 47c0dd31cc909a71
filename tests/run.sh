#!/bin/sh
# Test runner in the liburing manner: every test is one program; exit 0 passes, 77 skips,
# anything else fails. Each runs under a timeout. Usage: tests/run.sh BUILD_DIR TIMEOUT TEST...
build=$1; limit=$2; shift 2
passed=0; failed=0; skipped=0; failures=""
export RS_BUILD_DIR="$build"
for t in "$@"; do
	start=$(date +%s.%N)
	out=$(timeout -k 5 "$limit" "$build/tests/$t" 2>&1)
	rc=$?
	secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
	case $rc in
	0) passed=$((passed + 1)); echo "PASS  $t (${secs}s)" ;;
	77) skipped=$((skipped + 1)); echo "SKIP  $t: $(echo "$out" | tail -n 1)" ;;
	*)
		failed=$((failed + 1)); failures="$failures $t"
		[ $rc -eq 124 ] && why="timed out after ${limit}s" || why="exit $rc"
		echo "FAIL  $t ($why)"
		echo "$out" | tail -n 40 | sed 's/^/      /'
		;;
	esac
done
echo "$passed passed, $failed failed, $skipped skipped${failures:+ (failed:$failures)}"
[ $failed -eq 0 ]
