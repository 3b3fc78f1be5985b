#!/usr/bin/env bash
# Run the host-KVM tests (built as BIN: tests/kvm, or tests/kvm-arm64 with --arch arm64): on this host when it
# has a usable /dev/kvm for that arch, otherwise inside the nested test bed's L1 of that arch, which has a real
# KVM (tools/testbed/run-l1.sh). Exits with the tests' status.
#
#   tools/run-kvm-tests.sh [--arch x86_64|arm64] BIN [test options...]
#
# x86_64 options are Criterion's; arm64 takes test names.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARCH=x86_64
case ${1:-} in
--arch) [ $# -ge 2 ] || { echo "run-kvm-tests: --arch needs a value" >&2; exit 2; }; ARCH=$2; shift 2 ;;
--arch=*) ARCH=${1#*=}; shift ;;
esac
[ $# -ge 1 ] || { echo "usage: $0 [--arch x86_64|arm64] BIN [test options...]" >&2; exit 2; }
BIN=$1
shift
[ -x "$BIN" ] || { echo "run-kvm-tests: $BIN does not exist (run make)" >&2; exit 1; }
case $ARCH in
x86_64) HOST_MACHINE=x86_64 ;;
arm64) HOST_MACHINE=aarch64 ;;
*) echo "run-kvm-tests: unsupported --arch '$ARCH' (supported: x86_64, arm64)" >&2; exit 2 ;;
esac
if [ "$(uname -m)" = "$HOST_MACHINE" ] && [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
	exec "$BIN" "$@"
fi
echo "run-kvm-tests: this host has no usable /dev/kvm for $ARCH; running the host-KVM tests inside the nested test bed's $ARCH L1"
"$REPO/tools/guest-images.sh" --arch "$ARCH" >/dev/null || { echo "run-kvm-tests: tools/guest-images.sh failed" >&2; exit 1; }
# One test at a time: L1's kernel has oopsed when several test VMs were created at once under emulation
# (the arm64 program runs its tests one after the other anyway).
ARGS=()
[ "$ARCH" != x86_64 ] || ARGS=(-j1)
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac
# An L1 kernel crash (run-l1 status 123, mostly while L1 boots) is the test bed's, not moat's: run the
# session again, up to twice, saying so.
for attempt in 1 2 3; do
	rc=0
	"$REPO/tools/testbed/run-l1.sh" --arch "$ARCH" -- "$BIN" ${ARGS[@]+"${ARGS[@]}"} "$@" || rc=$?
	[ $rc = 123 ] && [ $attempt -lt 3 ] || break
	echo "run-kvm-tests: RETRY: the test bed's L1 kernel crashed, or L1 reset itself or froze (see above; not a moat failure); running the tests again (attempt $((attempt + 1)) of 3)"
done
exit $rc
