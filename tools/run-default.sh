#!/usr/bin/env bash
# Boot the default guest with moat and show its console; exits with moat's exit status.
#
#   tools/run-default.sh [--arch x86_64] [-- EXTRA_MOAT_ARGS...]
#
# Runs on this host if its KVM is hardware virtualization, otherwise inside the nested test bed's L1
# (tools/testbed/run-l1.sh; slow, and the console is output only).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARCH=x86_64
EXTRA=()
while [ $# -gt 0 ]; do
	case $1 in
	--arch) [ $# -ge 2 ] || { echo "run-default: --arch needs a value" >&2; exit 2; }; ARCH=$2; shift 2 ;;
	--arch=*) ARCH=${1#*=}; shift ;;
	--) shift; EXTRA=("$@"); break ;;
	*) echo "usage: $0 [--arch x86_64] [-- EXTRA_MOAT_ARGS...]" >&2; exit 2 ;;
	esac
done
case $ARCH in
x86_64) hw_flags='vmx|svm' ;;
*) echo "run-default: unsupported --arch '$ARCH' (supported: x86_64)" >&2; exit 2 ;;
esac

"$REPO/tools/guest-images.sh" --arch "$ARCH" || { echo "run-default: tools/guest-images.sh failed" >&2; exit 1; }
BUILD_DIR=${BUILD:-build}
[[ $BUILD_DIR == /* ]] || BUILD_DIR=$REPO/$BUILD_DIR
MOAT_BIN=${MOAT:-$BUILD_DIR/moat}
[ -x "$MOAT_BIN" ] || { echo "run-default: $MOAT_BIN not found; run make" >&2; exit 1; }

IMG=build/guest/$ARCH
ARGS=("$MOAT_BIN" --kernel "$IMG/vmlinuz" --initrd "$IMG/initramfs.cpio.gz" --cmdline "console=ttyS0 panic=-1"
	${EXTRA[@]+"${EXTRA[@]}"})
cd "$REPO"
if grep -qwE "$hw_flags" /proc/cpuinfo && [ -e /dev/kvm ]; then
	exec "${ARGS[@]}"
fi
echo "run-default: this host's /dev/kvm cannot boot Linux (no vmx/svm); booting the guest inside the nested test bed (L1 under QEMU)"
exec tools/testbed/run-l1.sh --arch "$ARCH" -- "${ARGS[@]}"
