#!/usr/bin/env bash
# virtio-net end to end: boots the test guest with --net tap=auto inside a network namespace this script
# creates (so no packet leaves it), runs an iperf3 server on the host side of the TAP, lets the guest ping
# and iperf3 both ways, pings the guest, and checks moat's exit status and the guest's report.
#
#   tests/e2e/net.sh MOAT KERNEL INITRD CMDLINE [MOAT_ARGS...]
# Prints what it saw and the throughput lines; exits 0 when everything held.
set -euo pipefail

if [ "${MOAT_E2E_IN_NETNS:-}" != 1 ]; then
	exec unshare --net -- env MOAT_E2E_IN_NETNS=1 "$0" "$@"
fi
MOAT_BIN=$1 KERNEL=$2 INITRD=$3 CMDLINE=$4
shift 4
# Extra arguments: moat options, and cmdline+=STR for the guest (tests/e2e/lib.sh).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
device_args "$@"
HOST_IP=10.0.2.1
GUEST_IP=10.0.2.15
SECS=${MOAT_E2E_IPERF_SECS:-3}
W=$(mktemp -d "${TMPDIR:-/tmp}/moat-net.XXXXXX")
pid=
srv=
cleanup() {
	for p in $pid $srv; do
		kill -0 "$p" 2>/dev/null || continue
		kill -KILL "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	rm -rf --one-file-system "$W"
}
trap cleanup EXIT

ip link set lo up
# All addresses of this namespace (the TAP does not exist yet); nothing outside can reach it.
iperf3 -s >"$W/iperf-server.log" 2>&1 &
srv=$!

"$MOAT_BIN" --kernel "$KERNEL" --initrd "$INITRD" --memory 512M \
	--net "tap=auto,host-ip=$HOST_IP/24$DEVOPTS" ${EXTRA[@]+"${EXTRA[@]}"} \
	--cmdline "$CMDLINE moat.scenario=net moat.ip=$GUEST_IP moat.peer=$HOST_IP moat.iperf=$SECS" \
	--console "file:$W/console" --timeout 240 </dev/null 2>"$W/err" &
pid=$!

waited=0
while [ $waited -lt 200 ]; do
	grep -q MOAT_NET_WAIT "$W/console" 2>/dev/null && break
	kill -0 "$pid" 2>/dev/null || break
	sleep 1
	waited=$((waited + 1))
done
fail=()
if grep -q MOAT_NET_WAIT "$W/console" 2>/dev/null; then
	if ping -c 3 -W 5 "$GUEST_IP" >"$W/ping" 2>&1; then
		echo "host -> guest ping: $(grep -oE '[0-9]+ (packets )?received' "$W/ping")"
	else
		fail+=("the host could not ping the guest: $(tail -n 2 "$W/ping" | tr '\n' ' ')")
	fi
	# Tell the guest we are done (it waits on port 5555), then let it power off.
	if ! { exec 3<>"/dev/tcp/$GUEST_IP/5555" && echo bye >&3 && exec 3>&-; } 2>"$W/nc.err"; then
		fail+=("cannot reach the guest's TCP port 5555: $(cat "$W/nc.err")")
	fi
else
	fail+=("the guest never reported MOAT_NET_WAIT (after ${waited}s)")
fi
rc=0
wait "$pid" || rc=$?
pid=
tr -d '\r' <"$W/console" | grep -E '^(NET_|PING_|IPERF_|HOST_SAID|MOAT_INIT_OK|IOMMU_)' || true
[ "$rc" = 0 ] || fail+=("moat exit status $rc, expected 0; stderr: $(tail -n 3 "$W/err" | tr '\n' ' ')")
for s in 'DRIVER=virtio_net' PING_HOST_OK IPERF_UP_MBPS= IPERF_DOWN_MBPS= HOST_SAID=bye; do
	grep -q "$s" "$W/console" || fail+=("console lacks '$s'")
done
check_iommu "$W/console" "$W/err"
for s in 'Kernel panic' 'Call Trace' _FAIL; do
	! grep -q "$s" "$W/console" || fail+=("console has '$s'")
done
if [ ${#fail[@]} -gt 0 ]; then
	printf 'net check failed: %s\n' "${fail[@]}"
	echo "--- last console lines"
	tail -n 20 "$W/console" | tr -d '\r'
	exit 1
fi
echo "net check passed"
