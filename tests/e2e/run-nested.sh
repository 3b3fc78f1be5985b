#!/usr/bin/env bash
# Run the end-to-end scenarios (tests/e2e/run.sh) where a Linux guest can boot:
# directly on this host if its KVM uses hardware virtualization (or MOAT_E2E_HOST=1), otherwise inside
# the nested test bed's L1 (tools/testbed/run-l1.sh). Exits with run.sh's status.
#
#   tests/e2e/run-nested.sh [--arch x86_64|arm64] [run.sh options...]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ARCH=x86_64
PASS=()
while [ $# -gt 0 ]; do
	case $1 in
	--arch) [ $# -ge 2 ] || { echo "run-nested: --arch needs a value" >&2; exit 2; }; ARCH=$2; shift 2 ;;
	--arch=*) ARCH=${1#*=}; shift ;;
	*) PASS+=("$1"); shift ;;
	esac
done

case $ARCH in
x86_64) hw_flags='vmx|svm'; DEFAULT_BUILD=build; MACHINE=x86_64 ;;
arm64) hw_flags='no-such-flag'; DEFAULT_BUILD=build/arm64; MACHINE=aarch64 ;;
*) echo "run-nested: unsupported --arch '$ARCH' (supported: x86_64, arm64)" >&2; exit 2 ;;
esac

if [ "${MOAT_E2E_HOST:-}" = 1 ]; then
	mode=host
	why="MOAT_E2E_HOST=1"
elif [ "$(uname -m)" != "$MACHINE" ]; then
	mode=nested
	why="this host is $(uname -m), the guests are $ARCH"
elif [ "$ARCH" = arm64 ] && [ -e /dev/kvm ]; then
	mode=host
	why="this host is arm64 and has /dev/kvm"
elif grep -qwE "$hw_flags" /proc/cpuinfo && [ -e /dev/kvm ]; then
	mode=host
	why="this host's CPU has hardware virtualization ($(grep -owE "$hw_flags" /proc/cpuinfo | head -n 1)) and /dev/kvm exists"
elif [ ! -e /dev/kvm ]; then
	mode=nested
	why="this host has no /dev/kvm"
else
	mode=nested
	why="this host's /dev/kvm is not hardware virtualization (no vmx/svm in /proc/cpuinfo), so it cannot boot Linux"
fi

# The moat binary: $MOAT, else $BUILD/moat (as the Makefile builds it); passed on to L1 as MOAT.
BUILD_DIR=${BUILD:-$DEFAULT_BUILD}
[[ $BUILD_DIR == /* ]] || BUILD_DIR=$REPO/$BUILD_DIR
export MOAT=${MOAT:-$BUILD_DIR/moat}
[ -x "$MOAT" ] || echo "run-nested: warning: $MOAT does not exist (run make); every scenario will fail" >&2
"$REPO/tools/guest-images.sh" --arch "$ARCH" || { echo "run-nested: tools/guest-images.sh failed" >&2; exit 1; }

if [ $mode = host ]; then
	echo "run-nested: running the e2e scenarios on this host: $why"
	exec "$REPO/tests/e2e/run.sh" --arch "$ARCH" ${PASS[@]+"${PASS[@]}"}
fi
echo "run-nested: running the e2e scenarios inside the nested test bed (L1 under QEMU): $why"
# The emulated L1 kernel itself oopses now and then, mostly while it boots (see tools/testbed/kvm-hold.c);
# such a crash (run-l1 status 123) says nothing about moat, so the session is run again, up to twice,
# saying so loudly.
for attempt in 1 2 3; do
	rc=0
	"$REPO/tools/testbed/run-l1.sh" --arch "$ARCH" -- tests/e2e/run.sh --arch "$ARCH" ${PASS[@]+"${PASS[@]}"} || rc=$?
	[ $rc = 123 ] && [ $attempt -lt 3 ] || break
	echo "run-nested: RETRY: the test bed's L1 kernel crashed, or L1 reset itself or froze (see above; not a moat failure); running the whole e2e session again (attempt $((attempt + 1)) of 3)"
done
exit $rc
