#!/usr/bin/env bash
# Network throughput benchmark: iperf3 TCP guest->host (up) and host->guest (down) through moat's
# virtio-net and through QEMU's userspace virtio-net (-netdev tap,vhost=off), same kernel, initramfs and
# guest script, plus the ceiling of a veth pair between two network namespaces.
#
#   bench/net.sh [--arch x86_64] [--runs N] [--secs S] [--vmms "moat qemu"] [--base MOAT_BINARY]
#
# VMM names: moat, qemu, and with an IOMMU: moat-iommu, qemu-iommu (the guest's default lazy unmap),
# moat-iommu-strict, qemu-iommu-strict (iommu.strict=1). QEMU's IOMMU is -device virtio-iommu-pci with
# iommu_platform=on on its virtio-net. With the kernel's vhost-net data path: moat-vhost, qemu-vhost,
# moat-vhost-iommu, qemu-vhost-iommu, moat-vhost-iommu-strict, qemu-vhost-iommu-strict, and moat's IOTLB
# without prefetch: moat-vhost-iommu-nopf, moat-vhost-iommu-strict-nopf, and with one prefetch mode forced
# (iotlb-prefetch=sync or queue): moat-vhost-iommu[-strict]-sync, -queue. For moat behind the IOMMU with vhost,
# the IOTLB misses per GiB moved and the miss-service latency (moat's exit report) are printed too.
# --base: another moat build (say, the last commit's) to compare with in the same session: a VMM name
# starting with "base" (base, base-iommu-strict, ...) runs it with the options of the same "moat" name, and
# each moat row gets the median of its per-run ratios to that base row (runs of a pair are adjacent).
#
# A moat name with the IOMMU ending in -poll (moat-iommu-poll, moat-iommu-strict-poll, moat-vhost-iommu-poll...)
# adds --iommu-poll MOAT_BENCH_IOMMU_POLL (microseconds, default 50), -pollN --iommu-poll N; -nopoll adds
# --iommu-poll 0. Any name with -pin (moat-iommu-pin, qemu-iommu-pin...) puts the VMM's vCPU threads on CPU 0 and
# its other threads and the iperf3 server on the other CPUs (taskset), once they exist.
# Environment: MOAT_BENCH_NET_ARGS (more moat options), MOAT_BENCH_GUEST_ARGS (more guest kernel arguments),
# MOAT_BENCH_PROFILE (a command run where the VMMs run as each iperf3 starts, say "bench/kvm-exits.sh 6"),
# MOAT_BENCH_INITRD (another guest initramfs, say the usual one with an overlay appended), MOAT_BENCH_SHOW (an
# extended regular expression: the guest's console lines it matches are copied to the bench log),
# MOAT_BENCH_GUEST_LIMIT (seconds before a guest that stopped making progress is given up: moat's --timeout;
# default 240 + 4 x S).
# Every run prints the CPU use of this machine (by thread) and of the guest during each iperf3.
# Median of N interleaved runs (default 3) of S seconds (default 10) per direction. Everything happens in
# network namespaces this script creates, and in ONE session: on this host if its KVM is hardware
# virtualization, else inside one L1 of the nested test bed (figures from different sessions do not compare).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARCH=x86_64
RUNS=3
SECS=10
VMMS="moat qemu"
INNER=0
EXTRA_MOAT=${MOAT_BENCH_NET_ARGS:-}
POLL_US=${MOAT_BENCH_IOMMU_POLL:-50}

usage() { echo "usage: $0 [--arch x86_64] [--runs N] [--secs S] [--vmms \"moat qemu\"] [--base MOAT_BINARY]" >&2; exit 2; }
while [ $# -gt 0 ]; do
	case $1 in
	--arch) [ $# -ge 2 ] || usage; ARCH=$2; shift 2 ;;
	--runs) [ $# -ge 2 ] || usage; RUNS=$2; shift 2 ;;
	--secs) [ $# -ge 2 ] || usage; SECS=$2; shift 2 ;;
	--vmms) [ $# -ge 2 ] || usage; VMMS=$2; shift 2 ;;
	--base) [ $# -ge 2 ] || usage; MOAT_BASE=$2; shift 2 ;;
	--inner) INNER=1; shift ;;
	-h|--help) usage ;;
	*) echo "net.sh: unknown argument: $1" >&2; usage ;;
	esac
done
[[ $RUNS =~ ^[0-9]+$ ]] && [ "$RUNS" -ge 1 ] || { echo "net.sh: --runs needs a positive number" >&2; exit 2; }
[[ $SECS =~ ^[0-9]+$ ]] && [ "$SECS" -ge 1 ] || { echo "net.sh: --secs needs a positive number" >&2; exit 2; }
# A guest's whole run (boot, ping, both iperf3s) takes 40-90 s here; one that stopped making progress is given up
# after this many seconds (moat's --timeout, and the wait for any VMM), not ten minutes.
GUEST_LIMIT=${MOAT_BENCH_GUEST_LIMIT:-$((240 + 4 * SECS))}
[[ $GUEST_LIMIT =~ ^[0-9]+$ ]] && [ "$GUEST_LIMIT" -ge 1 ] ||
	{ echo "net.sh: MOAT_BENCH_GUEST_LIMIT needs a positive number of seconds" >&2; exit 2; }
case $ARCH in
x86_64) hw_flags='vmx|svm' ;;
*) echo "net.sh: unsupported --arch '$ARCH' (supported: x86_64)" >&2; exit 2 ;;
esac

IMG=$REPO/build/guest/$ARCH
BUILD_DIR=${BUILD:-build}
[[ $BUILD_DIR == /* ]] || BUILD_DIR=$REPO/$BUILD_DIR
export MOAT=${MOAT:-$BUILD_DIR/moat}
if [ -n "${MOAT_BASE:-}" ]; then
	[[ $MOAT_BASE == /* ]] || MOAT_BASE=$PWD/$MOAT_BASE
	[ -x "$MOAT_BASE" ] || { echo "net.sh: --base $MOAT_BASE is not an executable moat" >&2; exit 2; }
	export MOAT_BASE
fi
for v in $VMMS; do
	[[ $v != base* ]] || [ -n "${MOAT_BASE:-}" ] || { echo "net.sh: VMM '$v' needs --base MOAT_BINARY" >&2; exit 2; }
done
export MOAT_BENCH_NET_ARGS=$EXTRA_MOAT

if [ $INNER = 0 ]; then
	"$REPO/tools/guest-images.sh" --arch "$ARCH" || { echo "net.sh: tools/guest-images.sh failed" >&2; exit 1; }
	args=(--inner --arch "$ARCH" --runs "$RUNS" --secs "$SECS" --vmms "$VMMS")
	if grep -qwE "$hw_flags" /proc/cpuinfo && [ -e /dev/kvm ]; then
		echo "net.sh: running on this host (hardware KVM)"
		exec "$0" "${args[@]}"
	fi
	echo "net.sh: this host's KVM cannot boot Linux; running everything inside one L1 of the nested test bed"
	exec "$REPO/tools/testbed/run-l1.sh" --arch "$ARCH" -- bench/net.sh "${args[@]}"
fi

# ------------------------------------------------------------------ inner part, in a fresh network namespace
if [ "${MOAT_BENCH_IN_NETNS:-}" != 1 ]; then
	exec unshare --net -- env MOAT_BENCH_IN_NETNS=1 "$0" --inner --arch "$ARCH" --runs "$RUNS" --secs "$SECS" --vmms "$VMMS"
fi
KERNEL=$IMG/vmlinuz
INITRD=${MOAT_BENCH_INITRD:-$IMG/initramfs-full.cpio.gz}
HOST_IP=10.0.2.1
GUEST_IP=10.0.2.15
# MOAT_BENCH_GUEST_ARGS: more guest kernel arguments for every VMM (say, page_poison=1 to catch DMA into freed pages).
CMDLINE="console=ttyS0 quiet panic=-1 moat.scenario=net moat.ip=$GUEST_IP moat.peer=$HOST_IP moat.iperf=$SECS${MOAT_BENCH_GUEST_ARGS:+ $MOAT_BENCH_GUEST_ARGS}"
W=$(mktemp -d "${TMPDIR:-/tmp}/moat-bnet.XXXXXX")
PIDS=()
cleanup() {
	for p in ${PIDS[@]+"${PIDS[@]}"}; do
		kill -0 "$p" 2>/dev/null || continue
		kill -KILL "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	ip netns del moat-bench-peer 2>/dev/null || true
	rm -rf --one-file-system "$W"
}
trap cleanup EXIT
ip link set lo up
# A FIFO nobody writes: "read -t" on it is a sleep without a process.
mkfifo "$W/tick"
exec {TICK}<>"$W/tick"
# A fresh iperf3 server for each guest: one whose client vanished mid-test (a guest that crashed) stays busy
# with that test and would fail every later run of the session.
srv=
server_start() {
	iperf3 -s >>"$W/iperf-server.log" 2>&1 &
	srv=$!
	PIDS+=("$srv")
	for _ in $(seq 50); do
		ss -ltn 2>/dev/null | grep -q ':5201 ' && return 0
		sleep 0.1
	done
}
server_stop() {
	[ -n "$srv" ] || return 0
	kill -KILL "$srv" 2>/dev/null || true
	wait "$srv" 2>/dev/null || true
	srv=
}

# cpu_snap PID: the time now (s), this machine's busy and total CPU ticks, then "ticks name" for each thread of
# PID (by name) and for the iperf3 server.
cpu_snap() {
	local t s name u n s0 i w q sq st
	echo "$EPOCHREALTIME"
	read -r _ u n s0 i w q sq st _ </proc/stat
	echo "$((u + n + s0 + q + sq + st)) $((u + n + s0 + i + w + q + sq + st))"
	# Builtins only: a sample must be quick and not load the machine it measures.
	for t in /proc/"$1"/task/* ${srv:+/proc/$srv}; do
		read -r s 2>/dev/null <"$t/stat" || continue
		read -r name 2>/dev/null <"$t/comm" || name=?
		name=${name// /_}
		[ "$t" != "/proc/$srv" ] || name=iperf3-server
		s=${s##*) }
		# shellcheck disable=SC2086
		set -- $s
		echo "$((${12} + ${13})) $name"
	done
}
# cpu_report VMM DIRECTION BEFORE AFTER CONSOLE: CPUs used meanwhile (CPU-seconds per second), by thread name,
# the rest of this machine (kernel threads: softirq, vhost, the TAP), and the guest's own busy share.
cpu_report() {
	local hz guest
	hz=$(getconf CLK_TCK)
	guest=$(tr -d '\r' <"$5" | sed -n "s/^IPERF_$2_CPU=//p" | head -n 1)
	awk -v hz="$hz" -v v="$1" -v d="$2" -v g="${guest:--}" -v ncpu="$(nproc)" '
		{ f = FILENAME == ARGV[1] ? 1 : 2 }
		FNR == 1 { t[f] = $1; next }
		FNR == 2 { busy[f] = $1; next }
		{ th[f, $2] += $1; names[$2] = 1 }
		END {
			wall = t[2] - t[1]
			if (wall <= 0) exit
			all = (busy[2] - busy[1]) / hz / wall
			line = sprintf("  cpu %s %s (%.1f s): this machine %.2f of %d CPUs:", v, tolower(d), wall, all, ncpu)
			used = 0
			for (n in names) {
				c = (th[2, n] - th[1, n]) / hz / wall
				used += c
				if (c >= 0.01)
					line = line sprintf(" %s %.2f", n, c)
			}
			printf "%s, other %.2f; the guest busy %s%%\n", line, all - used, g
		}' "$3" "$4"
}

# pin_threads PID (a VMM name with -pin): its vCPU threads on CPU 0, every other thread of it and the iperf3
# server on the other CPUs, so that a device thread woken by a kick never runs on the CPU of the vCPU that kicked.
pin_threads() {
	local pid=$1 t name others n=0
	local -A done=()
	[ "$(nproc)" -gt 1 ] || return 0
	others=1-$(($(nproc) - 1))
	while [ $n -lt 300 ] && kill -0 "$pid" 2>/dev/null; do
		for t in /proc/"$pid"/task/*; do
			[ -z "${done[$t]:-}" ] || continue
			read -r name 2>/dev/null <"$t/comm" || continue
			# A new thread of moat names itself first thing: until then it has the process's name.
			[ "${t##*/}" = "$pid" ] || [ "$name" != moat ] || continue
			done[$t]=1
			case $name in
			moat-vcpu* | "CPU "*/KVM) taskset -p -c 0 "${t##*/}" >/dev/null 2>&1 ;;
			*) taskset -p -c "$others" "${t##*/}" >/dev/null 2>&1 ;;
			esac
		done
		if [ -n "$srv" ] && [ -z "${done[srv]:-}" ]; then
			taskset -p -c "$others" "$srv" >/dev/null 2>&1
			done[srv]=1
		fi
		# Device threads start when the guest's drivers do: keep looking for a minute.
		read -r -t 0.2 -u "$TICK" || true
		n=$((n + 1))
	done
}

# guest_run VMM: one boot; prints "UP DOWN" in Mbit/s, or "fail REASON".
guest_run() {
	local v=$1 con=$W/$1.console pid rc=0 cmdline=$CMDLINE moat_iommu=() qemu_iommu=() nic_iommu=
	local netopt= qvhost=off
	rm -f "$con"
	case $v in *-vhost*) netopt=,vhost=on; qvhost=on ;; esac
	case $v in
	*-nopf) netopt=$netopt,iotlb-prefetch=off ;;
	*-sync) netopt=$netopt,iotlb-prefetch=sync ;;
	*-queue) netopt=$netopt,iotlb-prefetch=queue ;;
	esac
	case $v in
	*-iommu*)
		moat_iommu=(--iommu)
		qemu_iommu=(-device virtio-iommu-pci)
		nic_iommu=,iommu_platform=on,disable-legacy=on
		;;
	esac
	case $v in *-strict|*-strict-*) cmdline="$cmdline iommu.strict=1" ;; esac
	# moat's request-queue polling (--iommu-poll): -poll sets it, -nopoll turns it off.
	case $v in
	moat*-iommu*-nopoll* | base*-iommu*-nopoll*) moat_iommu+=(--iommu-poll 0) ;;
	moat*-iommu*-poll* | base*-iommu*-poll*)
		local us=${v##*-poll}
		[[ $us =~ ^[0-9]+$ ]] || us=$POLL_US
		moat_iommu+=(--iommu-poll "$us")
		;;
	esac
	case $v in
	moat* | base*)
		local bin=$MOAT
		[[ $v != base* ]] || bin=$MOAT_BASE
		# shellcheck disable=SC2086
		"$bin" --kernel "$KERNEL" --initrd "$INITRD" --memory 512M --cmdline "$cmdline" \
			--net "tap=auto,host-ip=$HOST_IP/24$netopt" ${moat_iommu[@]+"${moat_iommu[@]}"} --log-level info $EXTRA_MOAT \
			--console "file:$con" --timeout "$GUEST_LIMIT" </dev/null 2>"$W/$v.err" &
		pid=$!
		;;
	qemu*)
		qemu-system-x86_64 -enable-kvm -M q35 -cpu host -m 512 -smp 1 -nodefaults -no-user-config \
			-display none -vga none -no-reboot -kernel "$KERNEL" -initrd "$INITRD" -append "$cmdline" \
			${qemu_iommu[@]+"${qemu_iommu[@]}"} \
			-netdev tap,id=n0,ifname=qtap0,script=no,downscript=no,vhost=$qvhost \
			-device "virtio-net-pci,netdev=n0,romfile=$nic_iommu" -serial "file:$con" </dev/null 2>"$W/$v.err" &
		pid=$!
		for _ in $(seq 100); do ip link show qtap0 >/dev/null 2>&1 && break; sleep 0.1; done
		ip addr add "$HOST_IP/24" dev qtap0 2>/dev/null || true
		ip link set qtap0 up 2>/dev/null || true
		;;
	esac
	PIDS+=("$pid")
	case $v in *-pin*) pin_threads "$pid" & ;; esac
	# Every 0.2 s (shell builtins only, not to load the machine measured): the guest's MOAT_IPERF_BEGIN/END
	# lines start and end a CPU sample of this machine.
	local marks=0 seen line ready PROF= deadline=$((SECONDS + GUEST_LIMIT + 60))
	# By the clock: a guest printing without end makes each look slower (it reads the whole console).
	while [ $SECONDS -lt $deadline ]; do
		seen=0 ready=0
		while IFS= read -r line; do
			case $line in
			MOAT_IPERF_*) seen=$((seen + 1)) ;;
			MOAT_NET_WAIT*) ready=1 ;;
			esac
		done 2>/dev/null <"$con"
		# One sample per new line: a late look may find END and the next BEGIN (or MOAT_NET_WAIT) at once.
		while [ $marks -lt 4 ] && [ $seen -gt $marks ]; do
			cpu_snap "$pid" >"$W/cpu.$marks"
			# MOAT_BENCH_PROFILE: a command run when each iperf3 starts, its output in the bench log.
			if [ -n "${MOAT_BENCH_PROFILE:-}" ] && [ $((marks % 2)) = 0 ]; then
				(cd "$REPO" && bash -c "$MOAT_BENCH_PROFILE" profile >>"$W/profile" 2>&1 </dev/null) &
				PROF=$!
			fi
			marks=$((marks + 1))
		done
		[ $ready = 0 ] || break
		kill -0 "$pid" 2>/dev/null || break
		read -r -t 0.2 -u "$TICK" || true
	done
	# moat's --timeout has stopped its guest by now; QEMU has none: a guest that never finished is stopped here.
	if kill -0 "$pid" 2>/dev/null && ! grep -q MOAT_NET_WAIT "$con" 2>/dev/null; then
		echo "--- $v: still running $((GUEST_LIMIT + 60)) s after it started without finishing: stopped" >&2
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	if grep -q MOAT_NET_WAIT "$con" 2>/dev/null; then
		{ exec 3<>"/dev/tcp/$GUEST_IP/5555" && echo bye >&3 && exec 3>&-; } 2>/dev/null || true
	fi
	wait "$pid" || rc=$?
	if [ -n "$PROF" ]; then
		wait "$PROF" 2>/dev/null || true
		PROF=
	fi
	if [ -s "$W/profile" ]; then
		sed "s/^/  $v| /" "$W/profile" >&2
		rm -f "$W/profile"
	fi
	if [ -n "${MOAT_BENCH_SHOW:-}" ]; then
		tr -d '\r' <"$con" 2>/dev/null | grep -E -- "$MOAT_BENCH_SHOW" | sed "s/^/  $v| /" >&2 || true
	fi
	# The guest says BEGIN and END for the upload, then for the download.
	[ $marks -lt 2 ] || cpu_report "$v" UP "$W/cpu.0" "$W/cpu.1" "$con" >&2
	[ $marks -lt 4 ] || cpu_report "$v" DOWN "$W/cpu.2" "$W/cpu.3" "$con" >&2
	rm -f "$W"/cpu.?
	local up down
	up=$(tr -d '\r' <"$con" 2>/dev/null | sed -n 's/^IPERF_UP_MBPS=//p' | head -n 1)
	down=$(tr -d '\r' <"$con" 2>/dev/null | sed -n 's/^IPERF_DOWN_MBPS=//p' | head -n 1)
	# A guest's kernel report (an oops, a slab poison check with slub_debug, a warning), in a run that failed or
	# not: the whole report on stderr (the bench log). The first clue to a guest crash.
	if grep -qE 'BUG|Oops|general protection fault|Kernel panic|WARNING:' "$con" 2>/dev/null; then
		echo "--- $v: the guest's kernel report" >&2
		tr -d '\r' <"$con" | sed -n '/BUG\|Oops\|general protection fault\|Kernel panic\|WARNING:/,$p' | head -n 80 |
			sed 's/^/  guest| /' >&2
	fi
	# With MOAT_IOTLB set (off or verify, a debugging switch), moat's IOMMU report of every run.
	if [ -n "${MOAT_IOTLB:-}" ] && [ -n "$up" ] && [ -n "$down" ]; then
		grep 'stats: virtio-iommu' "$W/$v.err" 2>/dev/null | tail -n 1 | sed "s/^/  $v| /" >&2
	fi
	if [ -n "$up" ] && [ -n "$down" ]; then
		# vhost behind the IOMMU: IOTLB misses and the miss-service median and p99 from moat's exit report.
		local st misses p50 p99 inval merged w50 w99
		st=$(grep 'stats: vhost-net' "$W/$v.err" 2>/dev/null | tail -n 1)
		misses=$(sed -n 's/.*iotlb: \([0-9]*\) misses.*/\1/p' <<<"$st")
		p50=$(sed -n 's/.*miss service p50 <= \([0-9.]*\) us.*/\1/p' <<<"$st")
		p99=$(sed -n 's/.*miss service p50 <= [0-9.]* us, p99 <= \([0-9.]*\) us.*/\1/p' <<<"$st")
		# How long vhost took each message moat wrote (UPDATE, INVALIDATE): it takes every queue's lock.
		w50=$(sed -n 's/.*vhost took each in p50 <= \([0-9.]*\) us.*/\1/p' <<<"$st")
		w99=$(sed -n 's/.*vhost took each in p50 <= [0-9.]* us, p99 <= \([0-9.]*\) us.*/\1/p' <<<"$st")
		inval=$(sed -n 's/.* \([0-9]*\) invalidations.*/\1/p' <<<"$st")
		merged=$(sed -n 's/.* \([0-9]*\) unmaps merged.*/\1/p' <<<"$st")
		echo "$up $down ${misses:--} ${p50:--} ${p99:--} ${inval:--} ${merged:--} ${w50:--} ${w99:--}"
	else
		# moat's exit report of a failed run (its device and IOMMU counters: faults, requests, IOTLB) on stderr.
		if grep -q 'stats:' "$W/$v.err" 2>/dev/null; then
			echo "--- $v: moat's exit report" >&2
			grep -E 'stats:|warn|error' "$W/$v.err" | tail -n 12 | sed 's/^/  moat| /' >&2
		fi
		# A vCPU stopped by the --timeout in a module's code: which module, and where in it (the guest's
		# init lists each module's base; bash's signed 64-bit arithmetic keeps kernel addresses in order).
		local rip name size base
		rip=$(sed -n 's/.*was at rip=\(0x[0-9a-f]*\).*/\1/p' "$W/$v.err" 2>/dev/null | head -n 1)
		if [ -n "$rip" ]; then
			while read -r _ name size base; do
				[[ $size =~ ^[0-9]+$ && $base =~ ^0x[0-9a-f]+$ ]] || continue
				if ((rip >= base && rip < base + size)); then
					printf '  %s: the vCPU was stopped in module %s at +0x%x (%s)\n' "$v" "$name" $((rip - base)) "$rip" >&2
				fi
			done < <(tr -d '\r' <"$con" 2>/dev/null | grep '^MOAT_MODULE ')
		fi
		# The guest's last console lines too: a guest that crashed (a triple fault) says where only there.
		echo "fail exit $rc; $(tr -d '\r' <"$con" 2>/dev/null | grep -E 'FAIL|Kernel panic' | head -n 2 | tr '\n' ' ')$(tail -n 2 "$W/$v.err" | tr '\n' ' '); console: $(tr -d '\r' <"$con" 2>/dev/null | tail -n 4 | tr '\n' '|')"
	fi
}

# The ceiling: TCP between this namespace and a peer namespace over a veth pair.
veth_run() {
	ip netns add moat-bench-peer
	ip link add vb0 type veth peer name vb1 netns moat-bench-peer
	ip addr add 10.0.3.1/24 dev vb0
	ip link set vb0 up
	ip -n moat-bench-peer addr add 10.0.3.2/24 dev vb1
	ip -n moat-bench-peer link set vb1 up
	ip -n moat-bench-peer link set lo up
	local up down
	up=$(ip netns exec moat-bench-peer iperf3 -c 10.0.3.1 -t "$SECS" -f m 2>/dev/null | awk '/receiver/ { print $(NF-2) }' | tail -n 1)
	down=$(ip netns exec moat-bench-peer iperf3 -c 10.0.3.1 -t "$SECS" -f m -R 2>/dev/null | awk '/receiver/ { print $(NF-2) }' | tail -n 1)
	ip link del vb0 2>/dev/null || true
	ip netns del moat-bench-peer 2>/dev/null || true
	echo "${up:-fail} ${down:-fail}"
}

stats() {
	if [ -z "${1// /}" ]; then echo "- - - 0"; return; fi
	printf '%s\n' $1 | sort -g | awk '{ a[NR] = $1 } END {
		m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
		printf "%.0f %.0f %.0f %d\n", m, a[1], a[NR], NR }'
}

declare -A UP=() DOWN=() ERRS=() MPG=() P50=() P99=() RUP=() RDOWN=() LAST_UP=() LAST_DOWN=()
names=($VMMS veth)
for v in "${names[@]}"; do UP[$v]=""; DOWN[$v]=""; ERRS[$v]=""; MPG[$v]=""; P50[$v]=""; P99[$v]=""; done
echo "net.sh: kernel $(cat "$IMG/kernel-version"); $RUNS interleaved runs; iperf3 TCP ${SECS}s each way; Mbit/s"
for n in $(seq "$RUNS"); do
	for v in "${names[@]}"; do
		server_stop
		server_start
		if [ "$v" = veth ]; then res=$(veth_run); else res=$(guest_run "$v"); fi
		if [[ $res == fail* ]]; then
			ERRS[$v]=$res
			printf '  run %d %-6s FAILED: %s\n' "$n" "$v" "$res"
			continue
		fi
		read -r u d mi p5 p9 inv mg w5 w9 <<<"$res"
		UP[$v]+="$u "
		DOWN[$v]+="$d "
		extra=
		if [ "${mi:--}" != - ]; then
			# Misses per GiB moved: both directions ran SECS seconds at the measured rates.
			mpg=$(awk -v m="$mi" -v u="$u" -v d="$d" -v s="$SECS" 'BEGIN { g = (u + d) * 1e6 * s / 8 / 1073741824; printf "%.0f", (g > 0 ? m / g : 0) }')
			MPG[$v]+="$mpg "
			P50[$v]+="$p5 "
			P99[$v]+="$p9 "
			extra="  iotlb misses $mi ($mpg/GiB), service p50 <= $p5 us, p99 <= $p9 us; $inv INVALIDATEs, $mg UNMAPs merged into them; vhost took each message in p50 <= $w5 us, p99 <= $w9 us"
		fi
		# Paired with its base build: the ratio of this run to the base run just before or after it.
		LAST_UP[$v]=$u; LAST_DOWN[$v]=$d
		b=${v/#moat/base}; m=${v/#base/moat}
		if [[ $v == moat* || $v == base* ]] && [ "$b" != "$m" ] && [ -n "${LAST_UP[$b]:-}" ] && [ -n "${LAST_UP[$m]:-}" ]; then
			RUP[$m]+="$(awk -v a="${LAST_UP[$m]}" -v b="${LAST_UP[$b]}" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }') "
			RDOWN[$m]+="$(awk -v a="${LAST_DOWN[$m]}" -v b="${LAST_DOWN[$b]}" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }') "
			unset "LAST_UP[$b]" "LAST_UP[$m]"
		fi
		printf '  run %d %-6s up %8s  down %8s%s\n' "$n" "$v" "$u" "$d" "$extra"
	done
done

echo
# Each VMM against QEMU in the same IOMMU mode (moat-iommu vs qemu-iommu, ...), and moat's modes against moat.
# vhost variants are compared with moat-vhost (the same data path without the IOMMU).
printf '%-30s %10s %10s %12s %12s %12s %12s\n' VMM "up Mbit/s" "down Mbit/s" "up vs qemu" "down vs qemu" "up vs moat" \
	"down vs moat"
read -r mu0 _ <<<"$(stats "${UP[moat]:-}")"
read -r md0 _ <<<"$(stats "${DOWN[moat]:-}")"
read -r vu0 _ <<<"$(stats "${UP[moat-vhost]:-}")"
read -r vd0 _ <<<"$(stats "${DOWN[moat-vhost]:-}")"
for v in "${names[@]}"; do
	read -r mu _ _ cu <<<"$(stats "${UP[$v]}")"
	read -r md _ _ _ <<<"$(stats "${DOWN[$v]}")"
	if [ "$cu" = 0 ]; then
		printf '%-18s failed: %s\n' "$v" "${ERRS[$v]}"
		continue
	fi
	peer=${v/#moat/qemu}
	peer=${peer/#base/qemu}
	peer=${peer%-nopf}
	peer=${peer%-sync}
	peer=${peer%-queue}
	read -r qu _ <<<"$(stats "${UP[$peer]:-}")"
	read -r qd _ <<<"$(stats "${DOWN[$peer]:-}")"
	bu=$mu0; bd=$md0
	[[ $v != *-vhost* ]] || { bu=$vu0; bd=$vd0; }
	ru=-; rd=-; rm=-; rmd=-
	[ "$qu" = - ] || ru=$(awk -v a="$mu" -v b="$qu" 'BEGIN { printf "%.2fx", a / b }')
	[ "$qd" = - ] || rd=$(awk -v a="$md" -v b="$qd" 'BEGIN { printf "%.2fx", a / b }')
	[[ $v == qemu* ]] || [ "$bu" = - ] || rm=$(awk -v a="$mu" -v b="$bu" 'BEGIN { printf "%.2fx", a / b }')
	[[ $v == qemu* ]] || [ "$bd" = - ] || rmd=$(awk -v a="$md" -v b="$bd" 'BEGIN { printf "%.2fx", a / b }')
	extra=
	if [ -n "${MPG[$v]// /}" ]; then
		read -r mm _ <<<"$(stats "${MPG[$v]}")"
		read -r m5 _ <<<"$(stats "${P50[$v]}")"
		read -r m9 _ <<<"$(stats "${P99[$v]}")"
		extra="  iotlb: $mm misses/GiB, miss service p50 <= ${m5} us, p99 <= ${m9} us (medians of runs)"
	fi
	if [ -n "${RUP[$v]:-}" ]; then
		pu=$(printf '%s\n' ${RUP[$v]} | sort -g | awk '{ a[NR] = $1 } END { printf "%.2f", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
		pd=$(printf '%s\n' ${RDOWN[$v]} | sort -g | awk '{ a[NR] = $1 } END { printf "%.2f", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
		extra="$extra  vs base (median of paired runs): up ${pu}x, down ${pd}x [up: ${RUP[$v]% }; down: ${RDOWN[$v]% }]"
	fi
	printf '%-30s %10s %10s %12s %12s %12s %12s%s\n' "$v" "$mu" "$md" "$ru" "$rd" "$rm" "$rmd" "$extra"
done
