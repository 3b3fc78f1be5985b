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
RM_ONEFS=()
if rm --help 2>&1 | grep -q -- --one-file-system; then RM_ONEFS=(--one-file-system); fi # not in busybox
NETXFER=$(dirname "$INITRD")/netxfer
pid=
srv=
xrecv=
cleanup() {
	for p in $pid $srv $xrecv; do
		kill -0 "$p" 2>/dev/null || continue
		kill -KILL "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	rm -rf ${RM_ONEFS[@]+"${RM_ONEFS[@]}"} "$W"
}
trap cleanup EXIT

ip link set lo up
# All addresses of this namespace (the TAP does not exist yet); nothing outside can reach it.
iperf3 -s >"$W/iperf-server.log" 2>&1 &
srv=$!
TIMEOUT=240
# Each transfer may take 45 s plus a second per 16 MiB (a strict-mode guest under emulation moves 1 GiB in
# 60-90 s); the guest's upload happens before it waits for the host, so the limit covers both.
XFER_SECS=0
if [ "$XFER" -gt 0 ]; then
	[ -x "$NETXFER" ] || { echo "net check failed: $NETXFER is missing (tools/guest-images.sh builds it)"; exit 1; }
	"$NETXFER" recv 5557 >"$W/xup" 2>&1 &
	xrecv=$!
	XFER_SECS=$((45 + XFER / 16777216))
	TIMEOUT=$((196 + 2 * XFER_SECS))
fi

"$MOAT_BIN" --kernel "$KERNEL" --initrd "$INITRD" --memory 512M \
	--net "tap=auto,host-ip=$HOST_IP/24$DEVOPTS" ${EXTRA[@]+"${EXTRA[@]}"} \
	--cmdline "$CMDLINE moat.scenario=net moat.ip=$GUEST_IP moat.peer=$HOST_IP moat.iperf=$SECS moat.xfer=$XFER" \
	--console "file:$W/console" --timeout $TIMEOUT </dev/null 2>"$W/err" &
pid=$!

waited=0
while [ $waited -lt $((TIMEOUT - 85)) ]; do
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
	if [ "$XFER" -gt 0 ]; then
		t0=$(date +%s.%N)
		timeout "$XFER_SECS" "$NETXFER" send "$GUEST_IP" 5558 "$XFER" 9 >"$W/xdown" 2>&1 ||
			fail+=("host -> guest transfer: $(cat "$W/xdown") (exit status $?)")
		echo "host -> guest transfer of $XFER bytes: $(awk -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.1f s", t1 - t0 }')"
	fi
	# Tell the guest we are done (it waits on port 5555), then let it power off.
	if ! { exec 3<>"/dev/tcp/$GUEST_IP/5555" && echo bye >&3 && exec 3>&-; } 2>"$W/nc.err"; then
		fail+=("cannot reach the guest's TCP port 5555: $(cat "$W/nc.err")")
	fi
else
	fail+=("the guest never reported MOAT_NET_WAIT (after ${waited}s)")
fi
# A guest that stopped making progress: moat's counters (SIGUSR2) say where, then it is stopped, all within the
# harness's time limit.
if ! grep -q HOST_SAID "$W/console" 2>/dev/null && kill -0 "$pid" 2>/dev/null; then
	for _ in $(seq 20); do
		kill -0 "$pid" 2>/dev/null || break
		grep -q HOST_SAID "$W/console" 2>/dev/null && break
		sleep 1
	done
	if kill -0 "$pid" 2>/dev/null && ! grep -q HOST_SAID "$W/console" 2>/dev/null; then
		kill -USR2 "$pid" 2>/dev/null || true
		sleep 1
		echo "STALLED: the guest made no progress; moat's counters:"
		grep 'stats:' "$W/err" | tail -n 4 || true
		kill -TERM "$pid" 2>/dev/null || true
	fi
fi
rc=0
wait "$pid" || rc=$?
pid=
tr -d '\r' <"$W/console" | grep -E '^(NET_|PING_|IPERF_|HOST_SAID|MOAT_INIT_OK|IOMMU_|XFER_)' || true
# moat's own verdict first (a triple fault, the --timeout), then its last lines.
[ "$rc" = 0 ] || fail+=("moat exit status $rc, expected 0; $(grep -m1 -E 'triple fault|--timeout of' "$W/err" | tr '\n' ' ')stderr: $(tail -n 3 "$W/err" | tr '\n' ' ')")
for s in 'DRIVER=virtio_net' PING_HOST_OK IPERF_UP_MBPS= IPERF_DOWN_MBPS= HOST_SAID=bye; do
	grep -q "$s" "$W/console" || fail+=("console lacks '$s'")
done
check_iommu "$W/console" "$W/err"
# x86: the guest's virtio driver must kick through the I/O-port notify structure moat lists first.
if [ "$(uname -m)" = x86_64 ]; then
	tr -d '\r' <"$W/console" | grep -qE '^NET_NOTIFY_PORTS=[1-9]' ||
		fail+=("the guest's virtio driver claimed no I/O-port notify range (NET_NOTIFY_PORTS)")
fi
# xfer: each side's count and hash of what it sent must be what the other side counted and hashed.
if [ "$XFER" -gt 0 ]; then
	up_sent=$(tr -d '\r' <"$W/console" | sed -n 's/^XFER_UP NETXFER sent=\([0-9]*\) sum=\([0-9a-f]*\).*/\1 \2/p')
	# No file when the guest never got that far: the failures above say why.
	up_recv=$(sed -n 's/^NETXFER recv=\([0-9]*\) sum=\([0-9a-f]*\).*/\1 \2/p' "$W/xup" 2>/dev/null || true)
	down_sent=$(sed -n 's/^NETXFER sent=\([0-9]*\) sum=\([0-9a-f]*\).*/\1 \2/p' "$W/xdown" 2>/dev/null || true)
	down_recv=$(tr -d '\r' <"$W/console" | sed -n 's/^XFER_DOWN NETXFER recv=\([0-9]*\) sum=\([0-9a-f]*\).*/\1 \2/p')
	echo "transfer guest -> host: sent '$up_sent' received '$up_recv'; host -> guest: sent '$down_sent' received '$down_recv'"
	[ -n "$up_sent" ] && [ "$up_sent" = "$up_recv" ] && [ "${up_sent%% *}" = "$XFER" ] ||
		fail+=("guest -> host transfer of $XFER bytes does not match: sent '$up_sent', received '$up_recv'")
	[ -n "$down_sent" ] && [ "$down_sent" = "$down_recv" ] && [ "${down_sent%% *}" = "$XFER" ] ||
		fail+=("host -> guest transfer of $XFER bytes does not match: sent '$down_sent', received '$down_recv'")
fi
# vhost: moat's report (--log-level info) must show the device IOTLB at work behind the IOMMU.
if [ "$IOMMU" = 1 ] && [[ $DEVOPTS == *vhost=on* ]]; then
	echo "vhost stats: $(grep 'stats: vhost-net' "$W/err" | tail -n 1)"
	grep -qE 'stats: vhost-net: .*iotlb: [0-9]+ misses, [0-9]+ updates, [0-9]+ prefetched, [1-9][0-9]* invalidations' "$W/err" ||
		fail+=("moat's report shows no vhost IOTLB invalidations")
	st=$(grep 'stats: vhost-net' "$W/err" | tail -n 1)
	misses=$(sed -n 's/.*iotlb: \([0-9]*\) misses.*/\1/p' <<<"$st")
	updates=$(sed -n 's/.* \([0-9]*\) updates.*/\1/p' <<<"$st")
	prefetched=$(sed -n 's/.* \([0-9]*\) prefetched.*/\1/p' <<<"$st")
	if [[ $DEVOPTS == *iotlb-prefetch=off* ]]; then
		[ "${misses:-0}" -gt 0 ] && [ "${updates:-0}" -ge "${misses:-0}" ] ||
			fail+=("without prefetch, moat's report shows no IOTLB misses answered (misses '$misses', updates '$updates')")
	else
		# Prefetch pushes every MAP, so vhost should almost never miss.
		[ "${prefetched:-0}" -gt 0 ] && [ $((${misses:-0} * 10)) -lt "${prefetched:-0}" ] ||
			fail+=("with prefetch, misses did not drop: $misses misses for $prefetched prefetched MAPs")
	fi
fi
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
