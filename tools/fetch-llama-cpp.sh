#!/bin/sh
# Fetch llama.cpp's prebuilt CPU libraries (libllama, libggml and its CPU backends) from
# the npm package @node-llama-cpp/linux-x64, and the matching headers (include/llama.h,
# ggml/include/*.h) from the llama.cpp git bundle in the npm package node-llama-cpp of
# the same version, for the optional independent checks against llama.cpp
# (tests/interop_llamacpp_arch, `make interop`). Nothing of ringserve downloads anything
# at build or run time; the checks skip without these files.
#
#   tools/fetch-llama-cpp.sh [DEST]     (default .cache/llama-cpp; ignored by git)
#
# Needs npm (or curl) and tar; git for the headers. NODE_LLAMA_CPP_VERSION picks the
# package version. The libraries without the headers are enough for the test.
set -u
dest=${1:-.cache/llama-cpp}
version=${NODE_LLAMA_CPP_VERSION:-3.22.1}
timeout_s=${FETCH_TIMEOUT:-300}
tmp=$(mktemp -d) || exit 0
trap 'rm -rf "$tmp"' EXIT INT TERM

# npm_package NAME FILE: the registry tarball of NAME@version into FILE (empty on failure).
npm_package() {
	base=${1##*/}
	url="https://registry.npmjs.org/$1/-/$base-$version.tgz"
	if command -v curl >/dev/null 2>&1; then
		curl -fsSL --max-time "$timeout_s" -o "$2" "$url" || rm -f "$2"
	fi
	if [ ! -s "$2" ] && command -v npm >/dev/null 2>&1; then
		mkdir -p "$tmp/pack"
		(cd "$tmp/pack" && timeout "$timeout_s" npm pack --silent "$1@$version" \
			>/dev/null 2>&1 && mv ./*.tgz "$2") || rm -f "$2"
		rm -rf "$tmp/pack"
	fi
}

if [ -f "$dest/VERSION" ] && [ "$(cat "$dest/VERSION")" = "$version" ]; then
	echo "llama-cpp: $dest has @node-llama-cpp/linux-x64 $version"
else
	npm_package @node-llama-cpp/linux-x64 "$tmp/pkg.tgz"
	if [ ! -s "$tmp/pkg.tgz" ] || ! tar -xzf "$tmp/pkg.tgz" -C "$tmp" package/bins/linux-x64; then
		echo "llama-cpp: could not get @node-llama-cpp/linux-x64 $version; the checks will skip"
		exit 0
	fi
	mkdir -p "$dest"
	cp "$tmp"/package/bins/linux-x64/*.so "$tmp"/package/bins/linux-x64/_nlcBuildMetadata.json "$dest"/
	echo "$version" > "$dest/VERSION"
	echo "llama-cpp: $(ls "$dest" | grep -c '\.so$') libraries in $dest"
fi

# The headers that declare those libraries' C API (make interop compiles against them).
if [ -f "$dest/include/VERSION" ] && [ "$(cat "$dest/include/VERSION")" = "$version" ]; then
	echo "llama-cpp: $dest/include has llama.h of node-llama-cpp $version"
	exit 0
fi
if ! command -v git >/dev/null 2>&1; then
	echo "llama-cpp: no git for the llama.cpp bundle; make interop will skip"
	exit 0
fi
rm -rf "$tmp/package"
npm_package node-llama-cpp "$tmp/src.tgz"
if [ ! -s "$tmp/src.tgz" ] || ! tar -xzf "$tmp/src.tgz" -C "$tmp" package/llama/gitRelease.bundle ||
	! git clone -q --bare "$tmp/package/llama/gitRelease.bundle" "$tmp/llama.git" 2>/dev/null; then
	echo "llama-cpp: could not get node-llama-cpp $version's llama.cpp bundle; make interop will skip"
	exit 0
fi
mkdir -p "$tmp/src" "$dest/include"
if ! git --git-dir="$tmp/llama.git" archive HEAD include/llama.h ggml/include | tar -x -C "$tmp/src"; then
	echo "llama-cpp: the bundle has no include/llama.h; make interop will skip"
	exit 0
fi
cp "$tmp"/src/include/llama.h "$tmp"/src/ggml/include/*.h "$dest/include/"
git --git-dir="$tmp/llama.git" log -1 --format='llama.cpp %H' > "$dest/include/SOURCE"
echo "$version" > "$dest/include/VERSION"
echo "llama-cpp: llama.h and ggml's headers in $dest/include ($(cat "$dest/include/SOURCE"))"
