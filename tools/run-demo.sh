#!/bin/sh
# `make run`: start ringserved with a model and run the demo client against it, then stop
# the daemon cleanly. Usage: tools/run-demo.sh BUILD_DIR [MODEL]
# Without MODEL (or $MODEL), a small random Llama is made by ringserve-mkmodel: its text
# is noise, but every part of the path is real. Point MODEL at a Llama GGUF file (F32,
# F16 or BF16) to serve a real model.
set -eu
build=$1
model=${2:-${MODEL:-}}
if [ -z "$model" ]; then
	model=$build/models/demo.gguf
	if [ ! -f "$model" ]; then
		mkdir -p "$build/models"
		"$build/ringserve-mkmodel" --out-gguf "$model" --dim 128 --hidden 344 --layers 4 \
			--heads 8 --kv-heads 4 --vocab 1024 --seq-len 512
	fi
	echo "run: serving a random demo model ($model): its text is noise."
	echo "run: to serve a real model: make run MODEL=/path/to/llama.gguf"
fi
dir=$(mktemp -d /tmp/ringserve-run-XXXXXX)
socket=$dir/ringserve.sock
mkfifo "$dir/ready"
"$build/ringserved" --socket "$socket" --model "$model" --ready-fd 3 3>"$dir/ready" &
daemon=$!
trap 'kill $daemon 2>/dev/null; rm -rf "$dir"' EXIT
# The daemon writes one byte to the fifo once it listens (EOF without it: it failed).
if [ "$(head -c 1 "$dir/ready")" != "1" ]; then
	echo "run: ringserved did not start" >&2
	exit 1
fi
echo "run: one request, streamed:"
"$build/ringserve-client" --socket "$socket" --prompt "Once upon a time" -n 48
echo "run: text in, text out, as tenant 'demo' (ringserve-cli):"
"$build/ringserve-cli" --socket "$socket" --tenant demo -n 24 "Once upon a time"
echo
echo "run: 16 concurrent requests (temperature 0.8, seeds 1..16), batched by the daemon:"
"$build/ringserve-client" --socket "$socket" --prompt "The little robot" -n 32 --requests 16 \
	--temperature 0.8 --seed 1 >/dev/null
kill -TERM $daemon
wait $daemon
status=$?
trap 'rm -rf "$dir"' EXIT
echo "run: ringserved stopped (exit status $status)"
exit $status
