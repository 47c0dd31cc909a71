#!/bin/sh
# Fetch llama.cpp's prebuilt CPU libraries (libllama, libggml and its CPU backends) from
# the npm package @node-llama-cpp/linux-x64, for the optional independent checks against
# llama.cpp (tests/interop_llamacpp_arch). Nothing of ringserve downloads anything at
# build or run time; the test skips without these files.
#
#   tools/fetch-llama-cpp.sh [DEST]     (default .cache/llama-cpp; ignored by git)
#
# Needs npm (or curl) and tar. NODE_LLAMA_CPP_VERSION picks the package version.
set -u
dest=${1:-.cache/llama-cpp}
version=${NODE_LLAMA_CPP_VERSION:-3.22.1}
timeout_s=${FETCH_TIMEOUT:-300}
if [ -f "$dest/VERSION" ] && [ "$(cat "$dest/VERSION")" = "$version" ]; then
	echo "llama-cpp: $dest has @node-llama-cpp/linux-x64 $version"
	exit 0
fi
tmp=$(mktemp -d) || exit 0
trap 'rm -rf "$tmp"' EXIT INT TERM
url="https://registry.npmjs.org/@node-llama-cpp/linux-x64/-/linux-x64-$version.tgz"
if command -v curl >/dev/null 2>&1; then
	curl -fsSL --max-time "$timeout_s" -o "$tmp/pkg.tgz" "$url" || rm -f "$tmp/pkg.tgz"
fi
if [ ! -s "$tmp/pkg.tgz" ] && command -v npm >/dev/null 2>&1; then
	(cd "$tmp" && timeout "$timeout_s" npm pack --silent "@node-llama-cpp/linux-x64@$version" \
		>/dev/null 2>&1 && mv node-llama-cpp-linux-x64-*.tgz pkg.tgz) || rm -f "$tmp/pkg.tgz"
fi
if [ ! -s "$tmp/pkg.tgz" ] || ! tar -xzf "$tmp/pkg.tgz" -C "$tmp" package/bins/linux-x64; then
	echo "llama-cpp: could not get @node-llama-cpp/linux-x64 $version; the checks will skip"
	exit 0
fi
mkdir -p "$dest"
cp "$tmp"/package/bins/linux-x64/*.so "$tmp"/package/bins/linux-x64/_nlcBuildMetadata.json "$dest"/
echo "$version" > "$dest/VERSION"
echo "llama-cpp: $(ls "$dest" | grep -c '\.so$') libraries in $dest"
