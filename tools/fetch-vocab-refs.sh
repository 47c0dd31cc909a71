#!/bin/sh
# Fetch the independent tokenizer references: llama.cpp's vocabulary-only GGUF files
# (models/ggml-vocab-*.gguf) with their .inp (test texts) and .out (the ids the models'
# reference tokenizers, Hugging Face's, give for them), and the real chat templates
# (models/templates/*.jinja, into DEST/templates/) that tests/client_chat renders. The npm package node-llama-cpp
# carries llama.cpp's source as a git bundle (llama/gitRelease.bundle); the files are taken
# out of that. Nothing of ringserve downloads anything at build or run time: this runs from
# .ci/run and `make vocab-refs`, and the tests that need the files skip without them.
#
#   tools/fetch-vocab-refs.sh [DEST]     (default .cache/vocab-refs; ignored by git)
#
# Needs curl (or npm), tar and git. NODE_LLAMA_CPP_VERSION picks the package version;
# FETCH_TIMEOUT (seconds, default 300) bounds the download. Exits 0 with a message when the
# files cannot be had (no network, no tools): the tests then skip.
set -u
dest=${1:-.cache/vocab-refs}
version=${NODE_LLAMA_CPP_VERSION:-3.22.1}
timeout_s=${FETCH_TIMEOUT:-300}

if [ -f "$dest/ggml-vocab-llama-bpe.gguf.out" ] && [ -f "$dest/VERSION" ] &&
	[ -n "$(ls "$dest"/templates/*.jinja 2>/dev/null)" ] &&
	[ "$(cat "$dest/VERSION")" = "$version" ]; then
	echo "vocab-refs: $dest has node-llama-cpp $version's vocabularies"
	exit 0
fi
for tool in tar git; do
	command -v $tool >/dev/null 2>&1 || { echo "vocab-refs: no $tool; the reference tests will skip"; exit 0; }
done
tmp=$(mktemp -d) || exit 0
trap 'rm -rf "$tmp"' EXIT INT TERM
url="https://registry.npmjs.org/node-llama-cpp/-/node-llama-cpp-$version.tgz"
if command -v curl >/dev/null 2>&1; then
	curl -fsSL --max-time "$timeout_s" -o "$tmp/pkg.tgz" "$url" || rm -f "$tmp/pkg.tgz"
fi
if [ ! -s "$tmp/pkg.tgz" ] && command -v npm >/dev/null 2>&1; then
	(cd "$tmp" && timeout "$timeout_s" npm pack --silent "node-llama-cpp@$version" >/dev/null 2>&1 &&
		mv node-llama-cpp-*.tgz pkg.tgz) || rm -f "$tmp/pkg.tgz"
fi
if [ ! -s "$tmp/pkg.tgz" ]; then
	echo "vocab-refs: could not download node-llama-cpp $version; the reference tests will skip"
	exit 0
fi
if ! tar -xzf "$tmp/pkg.tgz" -C "$tmp" package/llama/gitRelease.bundle ||
	! git clone -q --bare "$tmp/package/llama/gitRelease.bundle" "$tmp/llama.git" 2>/dev/null; then
	echo "vocab-refs: the package has no usable llama.cpp bundle; the reference tests will skip"
	exit 0
fi
mkdir -p "$tmp/out"
# Only the vocabulary files: the GGUF files and their test texts and ids.
if ! git --git-dir="$tmp/llama.git" archive HEAD models | tar -x -C "$tmp/out" --wildcards \
	'models/ggml-vocab-*'; then
	echo "vocab-refs: the bundle has no models/ folder; the reference tests will skip"
	exit 0
fi
# The chat templates (issue 11 section 5); an older bundle without them still gives the vocabularies.
git --git-dir="$tmp/llama.git" archive HEAD models/templates | tar -x -C "$tmp/out" --wildcards \
	'models/templates/*.jinja' 2>/dev/null || echo "vocab-refs: the bundle has no chat templates"
mkdir -p "$dest/templates"
cp "$tmp"/out/models/ggml-vocab-* "$dest"/
cp "$tmp"/out/models/templates/*.jinja "$dest"/templates/ 2>/dev/null
git --git-dir="$tmp/llama.git" log -1 --format='llama.cpp %H' > "$dest/SOURCE"
echo "$version" > "$dest/VERSION"
echo "vocab-refs: $(ls "$dest" | grep -c '\.gguf$') vocabularies, $(ls "$dest/templates" | grep -c '\.jinja$') chat templates in $dest (node-llama-cpp $version, $(cat "$dest/SOURCE"))"
