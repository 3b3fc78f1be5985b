#!/usr/bin/env bash
# Extract the arm64 packages that cannot be co-installed with the host's into a sysroot folder.
#
#   tools/arm64-sysroot.sh DIR
#
# libfdt-dev:arm64 is not Multi-Arch (installing it removes the host's libfdt-dev), so the cross
# build takes its headers and static library from DIR/usr instead. The other :arm64 -dev packages
# (seccomp, cap-ng, libnl) co-install and come from tools/install-deps.sh. The .debs are cached in
# DIR/../debs. Writes DIR/.stamp when done.
set -euo pipefail

PACKAGES="libfdt-dev:arm64"

die() { echo "arm64-sysroot: error: $*" >&2; exit 1; }
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
DIR=$1
mkdir -p "$DIR" || die "cannot create $DIR"
DIR=$(cd "$DIR" && pwd)
DEBS=$(dirname "$DIR")/debs
mkdir -p "$DEBS"

TMP=
cleanup() { [ -z "$TMP" ] || rm -rf --one-file-system "$TMP"; }
trap cleanup EXIT
TMP=$(mktemp -d "$DEBS/.tmp.XXXXXX")

for p in $PACKAGES; do
	name=${p%%:*}
	deb=$(ls "$DEBS/${name}"_*_arm64.deb 2>/dev/null | sort -V | tail -n 1 || true)
	if [ -z "$deb" ]; then
		echo "arm64-sysroot: downloading $p"
		(cd "$TMP" && apt-get download -q -o APT::Sandbox::User=root "$p" >"$TMP/apt.log" 2>&1) ||
			die "apt-get download $p failed ($(tail -n 1 "$TMP/apt.log")); run tools/install-deps.sh (it adds the arm64 architecture)"
		mv "$TMP/${name}"_*_arm64.deb "$DEBS/"
		deb=$(ls "$DEBS/${name}"_*_arm64.deb | sort -V | tail -n 1)
	fi
	dpkg-deb -x "$deb" "$DIR" || die "dpkg-deb -x $deb failed"
done
[ -f "$DIR/usr/include/libfdt.h" ] && [ -f "$DIR/usr/lib/aarch64-linux-gnu/libfdt.a" ] ||
	die "libfdt.h or libfdt.a missing in $DIR after extraction"
touch "$DIR/.stamp"
