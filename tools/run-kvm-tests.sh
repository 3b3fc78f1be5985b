#!/usr/bin/env bash
# Run the host-KVM tests (tests/kvm, built as BIN): on this host when it has /dev/kvm, otherwise inside the
# nested test bed's L1, which has a real KVM (tools/testbed/run-l1.sh). Exits with the tests' status.
#
#   tools/run-kvm-tests.sh BIN [criterion options...]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ $# -ge 1 ] || { echo "usage: $0 BIN [criterion options...]" >&2; exit 2; }
BIN=$1
shift
[ -x "$BIN" ] || { echo "run-kvm-tests: $BIN does not exist (run make)" >&2; exit 1; }
if [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
	exec "$BIN" "$@"
fi
echo "run-kvm-tests: this host has no usable /dev/kvm; running the host-KVM tests inside the nested test bed's L1"
"$REPO/tools/guest-images.sh" --arch x86_64 >/dev/null || { echo "run-kvm-tests: tools/guest-images.sh failed" >&2; exit 1; }
# One test at a time: L1's kernel has oopsed when several test VMs were created at once under emulation.
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac
# An L1 kernel crash (run-l1 status 123, mostly while L1 boots) is the test bed's, not moat's: run the
# session again, up to twice, saying so.
for attempt in 1 2 3; do
	rc=0
	"$REPO/tools/testbed/run-l1.sh" --arch x86_64 -- "$BIN" -j1 "$@" || rc=$?
	[ $rc = 123 ] && [ $attempt -lt 3 ] || break
	echo "run-kvm-tests: RETRY: the test bed's L1 kernel crashed (see above; not a moat failure); running the tests again (attempt $((attempt + 1)) of 3)"
done
exit $rc
