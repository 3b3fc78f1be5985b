#!/usr/bin/env bash
# Install the Debian packages moat needs to build, test and benchmark.
# Quiet when everything is already installed.
set -euo pipefail

# One list: add packages here.
PACKAGES="build-essential pkg-config libcriterion-dev libfdt-dev libcap-ng-dev libseccomp-dev
libnl-3-dev libnl-route-3-dev acpica-tools qemu-system-x86 busybox-static cpio xz-utils zstd
kmod iproute2 iputils-ping iperf3 e2fsprogs"

die() { echo "install-deps: $*" >&2; exit 1; }

command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: this script supports Debian/Ubuntu (apt) systems only"

missing=()
for p in $PACKAGES; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[ "$status" = installed ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

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
"${SUDO[@]}" apt-get update -q || die "apt-get update failed"
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" ||
	die "apt-get install failed for: ${missing[*]}"

# Verify.
still=()
for p in "${missing[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[ "$status" = installed ] || still+=("$p")
done
[ ${#still[@]} -eq 0 ] || die "still not installed after apt-get: ${still[*]}"
echo "install-deps: done"
