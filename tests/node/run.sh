#!/bin/sh
# make test-openai-node: the official `openai` npm package against ringserve-openai.
# Installs the package into .cache/openai-node with npm when it is not there; without node,
# npm or the registry it says so and skips (exit 0). Usage: tests/node/run.sh BUILD_DIR
set -u
build=${1:-build}
root=$(cd "$(dirname "$0")/../.." && pwd)
cache="$root/.cache/openai-node"
skip() { echo "SKIP  test-openai-node: $*"; exit 0; }
command -v node >/dev/null 2>&1 || skip "node is not installed (apt-get install nodejs npm)"
if [ ! -d "$cache/node_modules/openai" ]; then
	command -v npm >/dev/null 2>&1 || skip "npm is not installed (apt-get install npm)"
	mkdir -p "$cache"
	echo "test-openai-node: npm install openai into $cache"
	npm install --silent --no-audit --no-fund --prefix "$cache" openai >/dev/null 2>&1 ||
		skip "npm could not install the openai package (no registry?)"
fi
dir=$(mktemp -d /tmp/ringserve-node-XXXXXX)
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null; done; rm -rf "$dir"; }
trap cleanup EXIT
"$build/ringserve-mkmodel" --out-gguf "$dir/model.gguf" --seed 5 >/dev/null || exit 1
# Each program says it is ready on a descriptor (--ready-fd): read it through a FIFO.
mkfifo "$dir/daemon-ready" "$dir/bridge-ready"
"$build/ringserved" --socket "$dir/sock" --model "$dir/model.gguf" --backend cpu --threads 1 \
	--ready-fd 3 3>"$dir/daemon-ready" &
pids="$!"
[ -n "$(head -c 1 "$dir/daemon-ready")" ] || { echo "FAIL  ringserved did not start"; exit 1; }
cat >"$dir/bridge.json" <<JSON
{"listen": "127.0.0.1:0", "model": "tiny", "keys": {"sk-node-test-0000": "node"}}
JSON
"$build/ringserve-openai" --config "$dir/bridge.json" --socket "$dir/sock" --ready-fd 3 \
	3>"$dir/bridge-ready" &
pids="$pids $!"
read -r port <"$dir/bridge-ready" || { echo "FAIL  ringserve-openai did not start"; exit 1; }
if OPENAI_PACKAGE_DIR="$cache/node_modules" node "$root/tests/node/openai_bridge.mjs" \
	"http://127.0.0.1:$port/v1" sk-node-test-0000 tiny; then
	echo "PASS  test-openai-node"
else
	echo "FAIL  test-openai-node"
	exit 1
fi
