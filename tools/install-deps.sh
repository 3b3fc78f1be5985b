#!/usr/bin/env bash
# Install the Debian packages moat needs to build, test and benchmark.
# Quiet when everything is already installed.
set -euo pipefail

# One list: add packages here.
PACKAGES="build-essential pkg-config libcriterion-dev libfdt-dev libcap-ng-dev libseccomp-dev
libnl-3-dev libnl-route-3-dev acpica-tools qemu-system-x86 busybox-static cpio xz-utils zstd
kmod iproute2 iputils-ping iperf3 e2fsprogs device-tree-compiler binutils"
# The arm64 cross build (make ARCH=arm64) and its nested test bed. These :arm64 packages co-install with
# the host's; libfdt-dev:arm64 and busybox-static:arm64 do not (installing them removes the host's), so
# tools/arm64-sysroot.sh and tools/guest-images.sh fetch those with apt-get download instead.
PACKAGES_ARM64="gcc-aarch64-linux-gnu libc6-dev-arm64-cross libseccomp-dev:arm64 libcap-ng-dev:arm64
libnl-3-dev:arm64 libnl-route-3-dev:arm64 qemu-system-arm"

die() { echo "install-deps: $*" >&2; exit 1; }

command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: this script supports Debian/Ubuntu (apt) systems only"

need_arch=0
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
	need_arch=1
fi

NATIVE=$(dpkg --print-architecture)
# installed PKG[:ARCH]: with a foreign architecture added, dpkg-query lists one line per architecture.
installed() {
	local name=${1%%:*} want=${NATIVE}
	[[ $1 != *:* ]] || want=${1#*:}
	dpkg-query -W -f='${db:Status-Status} ${Architecture}\n' "$name" 2>/dev/null |
		grep -qE "^installed ($want|all)\$"
}

missing=()
for p in $PACKAGES $PACKAGES_ARM64; do
	installed "$p" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && [ $need_arch = 0 ] && exit 0

echo "install-deps: installing: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
	SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
	SUDO=(sudo)
	echo "install-deps: not root, using sudo"
else
	die "missing packages (${missing[*]}) and not root; run as root or install them: apt-get install -y --no-install-recommends ${missing[*]}"
fi

export DEBIAN_FRONTEND=noninteractive
if [ $need_arch = 1 ]; then
	echo "install-deps: adding the arm64 architecture to dpkg (for the :arm64 -dev packages of the cross build)"
	"${SUDO[@]}" dpkg --add-architecture arm64 || die "dpkg --add-architecture arm64 failed"
fi
"${SUDO[@]}" apt-get update -q || die "apt-get update failed"
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" ||
	die "apt-get install failed for: ${missing[*]}"

# Verify.
still=()
for p in "${missing[@]}"; do
	installed "$p" || still+=("$p")
done
[ ${#still[@]} -eq 0 ] || die "still not installed after apt-get: ${still[*]}"
echo "install-deps: done"
