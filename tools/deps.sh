#!/bin/sh
# Install the Debian packages that ringserve builds against, when they are missing.
# As root it runs apt-get; otherwise it prints the exact command and fails.
set -eu
# gnuplot-nox: `make bench` plots with it (gnuplot without X; the "gnuplot" package
# would pull in Qt). groff-base: tests/man_pages renders the man pages (docs/man/).
# python3-dev, python3-setuptools, python3-pytest: the Python package (client-lib/python)
# is built and tested with Debian's interpreter. libmicrohttpd-dev, libjansson-dev:
# ringserve-openai (HTTP, JSON); curl: its tests talk HTTP through it. python3-jinja2:
# tests/client_chat renders the real chat templates to compare ringserve's formatting with.
pkgs="liburing-dev libnuma-dev libopenblas-dev pkg-config gnuplot-nox groff-base
	python3-dev python3-setuptools python3-pytest libmicrohttpd-dev libjansson-dev curl python3-jinja2"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
	echo "deps: installing$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq $missing >/dev/null 2>&1 || {
		apt-get update -qq && apt-get install -y -qq $missing
	}
else
	echo "deps: missing packages:$missing" >&2
	echo "deps: run:  sudo apt-get install -y$missing" >&2
	exit 1
fi
