#!/bin/sh
# virtio-net on the host's TAP: bring the first NIC up, ping the host, iperf3 both ways, then wait for the
# host to ping us and say goodbye on TCP port 5555. Addresses: moat.ip=, moat.peer= (defaults below).
ip=10.0.2.15
peer=10.0.2.1
secs=3
xfer=0
perf=0
for arg in $(cat /proc/cmdline); do
	case $arg in
	moat.ip=*) ip=${arg#moat.ip=} ;;
	moat.peer=*) peer=${arg#moat.peer=} ;;
	moat.iperf=*) secs=${arg#moat.iperf=} ;;
	moat.xfer=*) xfer=${arg#moat.xfer=} ;;
	moat.perf=*) perf=${arg#moat.perf=} ;;
	esac
done
# moat.perf=N: profile the whole guest during each iperf3 (perf record, N samples a second) and print the 40
# hottest symbols as "PERF NAME ..." lines. Needs perf in the initramfs: bench/guest-perf-initrd.sh.
[ "$perf" = 0 ] || command -v perf >/dev/null || { echo "PERF_FAIL no perf in this initramfs"; perf=0; }
dev=
for d in /sys/class/net/*; do
	[ "${d##*/}" = lo ] || { dev=${d##*/}; break; }
done
[ -n "$dev" ] || { echo "NET_FAIL no network interface"; exit 1; }
echo "NET_DEV=$dev DRIVER=$(basename "$(readlink "/sys/class/net/$dev/device/driver")") MTU=$(cat "/sys/class/net/$dev/mtu")"
# The PCI function under the virtio device: its IOMMU group, if an IOMMU translates for it.
grp=$(readlink "$(readlink -f "/sys/class/net/$dev/device")/../iommu_group" 2>/dev/null)
# I/O BARs the virtio driver claimed (x86: the notify structure moat lists first is a port range).
echo "NET_NOTIFY_PORTS=$(grep -c virtio-pci-modern /proc/ioports)"
echo "IOMMU_GROUP=${grp##*/} GROUPS=$(ls /sys/kernel/iommu_groups 2>/dev/null | wc -l) ADDED=$(dmesg | grep -c 'Adding to iommu group')"
ip link set lo up
ip link set "$dev" up
ip addr add "$ip/24" dev "$dev"
if ping -c 3 -W 5 "$peer" >/tmp/ping.out 2>&1; then
	echo "PING_HOST_OK $(grep -o '[0-9]* packets received' /tmp/ping.out)"
else
	echo "PING_HOST_FAIL"; cat /tmp/ping.out
fi
# busy: this guest's busy and total CPU ticks since boot (/proc/stat), "BUSY TOTAL".
busy() {
	read -r _ u n s i w q sq st _ </proc/stat
	echo "$((u + n + s + q + sq + st)) $((u + n + s + i + w + q + sq + st))"
}
# rate DIRECTION ARGS: iperf3's receiver line, in Mbit/s, and how busy the guest's CPUs were meanwhile (%).
# MOAT_IPERF_BEGIN/END NAME tell a benchmark on the host when to sample its own CPU use.
rate() {
	name=$1
	shift
	c0=$(busy)
	echo "MOAT_IPERF_BEGIN $name"
	set -- iperf3 -c "$peer" -t "$secs" -f m "$@"
	[ "$perf" = 0 ] || set -- perf record -q -a -F "$perf" -o /tmp/perf.data -- "$@"
	if "$@" >/tmp/iperf.out 2>&1; then
		echo "MOAT_IPERF_END $name"
		echo "$name=$(awk '/receiver/ { print $(NF-2) }' /tmp/iperf.out | tail -n 1)"
	else
		echo "MOAT_IPERF_END $name"
		echo "${name}_FAIL"; tail -n 5 /tmp/iperf.out
	fi
	c1=$(busy)
	if [ "$perf" != 0 ]; then
		perf report -i /tmp/perf.data --stdio --sort sym 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 40 |
			sed "s/^/PERF $name /"
		rm -f /tmp/perf.data
	fi
	# shellcheck disable=SC2086
	set -- $c0 $c1
	echo "${name%_MBPS}_CPU=$(($4 > $2 ? ($3 - $1) * 100 / ($4 - $2) : 0))"
}
rate IPERF_UP_MBPS
rate IPERF_DOWN_MBPS -R
# moat.xfer=BYTES: send that many bytes to the host's port 5557 and receive as many on our port 5558; both ends
# print what they counted and hashed, and the host compares.
if [ "$xfer" -gt 0 ]; then
	if netxfer send "$peer" 5557 "$xfer" 7 >/tmp/xup 2>&1; then
		echo "XFER_UP $(cat /tmp/xup)"
	else
		echo "XFER_UP_FAIL $(cat /tmp/xup)"
	fi
	netxfer recv 5558 >/tmp/xdown 2>&1 &
	xpid=$!
fi
echo "MOAT_NET_WAIT"
# The host pings us (and sends its transfer), then connects here; nc returns when it closes.
timeout 600 nc -l -p 5555 >/tmp/bye 2>/dev/null
echo "HOST_SAID=$(cat /tmp/bye)"
if [ "$xfer" -gt 0 ]; then
	wait "$xpid"
	echo "XFER_DOWN $(grep recv= /tmp/xdown || cat /tmp/xdown)"
fi
