#!/usr/bin/env bash
# Nested test bed: run one command inside an L1 Linux that has a real KVM.
#
#   tools/testbed/run-l1.sh [--arch x86_64|arm64] [--timeout SEC] [--verbose] -- CMD [ARG...]
#
# Boots the Debian 6.12 cloud kernel under QEMU (software emulation of a CPU with SVM and nested
# paging), shares this machine's root file system read-only into it with virtio-fs, and runs CMD there
# as root, chrooted into the shared root and in this repository's folder (same absolute path), with
# tmpfs on /tmp /run /var/tmp /root /dev/shm. Only the MOAT and MOAT_* environment variables are passed on.
# --arch arm64: the L1 is an arm64 Linux under qemu-system-aarch64 (-M virt,virtualization=on: EL2, so L1
# has KVM). It cannot run the host's x86 programs: CMD runs with the L1 initramfs's arm64 userland (busybox,
# bash) and sees only this repository (bind-mounted at the same path) of the host's files; arm64 programs
# it runs (moat) must be static.
# CMD's stdout and stderr (L1's console) are printed on stdout; the exit status is CMD's.
# Other exit statuses: 123 the L1 kernel crashed, reset itself or froze (the test bed, not CMD), 124 the
# L1 session timed out, 125 L1 died otherwise or failed to set up (the last console lines are printed for
# all three), 1 this script could not start L1, 2 bad usage.
# Environment: MOAT_L1_TIMEOUT (default for --timeout, 1800 s), MOAT_L1_FREEZE_SECS (how long QEMU may use
# almost no CPU before L1 counts as frozen, default 120 s; 0 turns the watch off).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ARCH=x86_64
TIMEOUT=${MOAT_L1_TIMEOUT:-1800}
VERBOSE=0
VIRTIOFSD=/usr/lib/qemu/virtiofsd

die() { echo "run-l1: error: $*" >&2; exit 1; }
usage() {
	echo "usage: $0 [--arch x86_64|arm64] [--timeout SEC] [--verbose] -- CMD [ARG...]" >&2
	exit 2
}

while [ $# -gt 0 ]; do
	case $1 in
	--arch) [ $# -ge 2 ] || usage; ARCH=$2; shift 2 ;;
	--arch=*) ARCH=${1#*=}; shift ;;
	--timeout) [ $# -ge 2 ] || usage; TIMEOUT=$2; shift 2 ;;
	--timeout=*) TIMEOUT=${1#*=}; shift ;;
	--verbose|-v) VERBOSE=1; shift ;;
	--) shift; break ;;
	-h|--help) usage ;;
	*) echo "run-l1: unknown argument: $1 (put the command after --)" >&2; usage ;;
	esac
done
[ $# -gt 0 ] || usage
[[ $TIMEOUT =~ ^[0-9]+$ ]] && [ "$TIMEOUT" -gt 0 ] || die "--timeout needs a positive number of seconds"
case $ARCH in
x86_64) QEMU=qemu-system-x86_64; HOLD_CC=gcc; HOLD_FLAGS=() ;;
arm64) QEMU=qemu-system-aarch64; HOLD_CC=aarch64-linux-gnu-gcc; HOLD_FLAGS=(-static) ;;
*) die "unsupported --arch '$ARCH' (supported: x86_64, arm64)" ;;
esac

if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
		echo "run-l1: not root; re-running with sudo" >&2
		v=()
		[ "$VERBOSE" = 0 ] || v=(--verbose)
		exec sudo --preserve-env "$0" --arch "$ARCH" --timeout "$TIMEOUT" ${v[@]+"${v[@]}"} -- "$@"
	fi
	die "must run as root (it needs a private mount namespace and virtiofsd)"
fi
for tool in "$QEMU" "$HOLD_CC" unshare timeout mount findmnt; do
	command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found; run tools/install-deps.sh"
done
[ -x "$VIRTIOFSD" ] || die "$VIRTIOFSD not found (QEMU 7.2's virtiofsd, package qemu-system-common); run tools/install-deps.sh"

IMG=$REPO/build/guest/$ARCH
BUILD=$REPO/build/testbed
mkdir -p "$BUILD"

# ------------------------------------------------------------------ images and helper
"$REPO/tools/guest-images.sh" --arch "$ARCH" >&2 || die "tools/guest-images.sh failed"
for f in vmlinuz l1-initramfs.cpio.gz; do
	[ -s "$IMG/$f" ] || die "$IMG/$f missing after tools/guest-images.sh"
done
HOLD=$BUILD/kvm-hold
[ "$ARCH" = x86_64 ] || HOLD=$BUILD/kvm-hold-$ARCH
if [ ! -x "$HOLD" ] || [ "$REPO/tools/testbed/kvm-hold.c" -nt "$HOLD" ]; then
	"$HOLD_CC" -O2 ${HOLD_FLAGS[@]+"${HOLD_FLAGS[@]}"} -Wall -Wextra -o "$HOLD.tmp" "$REPO/tools/testbed/kvm-hold.c" || die "cannot build kvm-hold"
	mv "$HOLD.tmp" "$HOLD"
fi

# ------------------------------------------------------------------ state and cleanup
T=
JOB=
VFS_PID=
QEMU_PID=
WATCH_PID=
cleanup() {
	local rc=$? p _
	trap - EXIT INT TERM HUP
	for p in $WATCH_PID $QEMU_PID $VFS_PID; do
		kill -0 "$p" 2>/dev/null || continue
		kill -TERM "$p" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	exec 3<&- 2>/dev/null || true
	[ -z "$T" ] || rm -rf --one-file-system "$T"
	[ -z "$JOB" ] || rm -rf --one-file-system "$JOB"
	exit "$rc"
}
trap cleanup EXIT
trap 'echo "run-l1: interrupted" >&2; exit 130' INT
trap 'echo "run-l1: terminated" >&2; exit 143' TERM HUP

T=$(mktemp -d "${TMPDIR:-/tmp}/moat-l1.XXXXXX")
mkdir "$T/root"

# ------------------------------------------------------------------ the job, read by L1's /init
JOB=$(mktemp -d "$BUILD/job.XXXXXX")
chmod 755 "$JOB"
[[ $JOB =~ ^[A-Za-z0-9._/+-]+$ ]] ||
	die "the repository path '$REPO' has characters that cannot go on a kernel command line; move it"
cat >"$JOB/env" <<EOF
L1_REPO='$REPO'
L1_KVM_HOLD='$HOLD'
EOF
{
	echo "# run-l1 job"
	while IFS= read -r n; do
		[[ $n == MOAT || $n == MOAT_* ]] && printf 'export %s=%q\n' "$n" "${!n}"
	done < <(compgen -e)
	printf 'cd -- %q || exit 125\n' "$REPO"
	printf 'exec'
	printf ' %q' "$@"
	printf '\n'
} >"$JOB/cmd.sh"

# ------------------------------------------------------------------ virtio-fs share of / (read-only)
# Mounts to share besides /: the chains of mounts holding the repository and the system folders.
declare -A seen_mnt=()
binds=()
for d in /usr /etc /var /opt "$REPO"; do
	[ -e "$d" ] || continue
	chain=()
	m=$(findmnt -n -o TARGET -T "$d")
	while [ "$m" != / ]; do
		chain=("$m" ${chain[@]+"${chain[@]}"})
		m=$(findmnt -n -o TARGET -T "$(dirname "$m")")
	done
	for m in ${chain[@]+"${chain[@]}"}; do
		[ -z "${seen_mnt[$m]:-}" ] || continue
		seen_mnt[$m]=1
		binds+=("$m")
	done
done

# shellcheck disable=SC2016
unshare -m --propagation private -- /bin/bash -c '
	set -e
	t=$1; vfsd=$2; shift 2
	mount --bind / "$t/root"
	mount -o remount,bind,ro "$t/root"
	for m in "$@"; do
		mount --bind "$m" "$t/root$m"
		mount -o remount,bind,ro "$t/root$m"
	done
	exec "$vfsd" --socket-path="$t/vfs.sock" -o source="$t/root" -o cache=always
' run-l1-share "$T" "$VIRTIOFSD" ${binds[@]+"${binds[@]}"} >"$T/virtiofsd.log" 2>&1 &
VFS_PID=$!
for _ in $(seq 100); do
	[ -S "$T/vfs.sock" ] && break
	kill -0 "$VFS_PID" 2>/dev/null || break
	sleep 0.1
done
if [ ! -S "$T/vfs.sock" ]; then
	cat "$T/virtiofsd.log" >&2 || true
	die "virtiofsd did not start (log above)"
fi

# ------------------------------------------------------------------ boot L1
mkfifo "$T/console"
if [ "$ARCH" = x86_64 ]; then
	MACHINE=(-M q35 -cpu max)
	KCONSOLE=(-serial file:"$T/kernel.log")
	KCON=ttyS1
	# Emulated, the TSC follows the host's clock, but on a loaded machine the clocksource watchdog can call
	# it unstable mid-session; that flips the sched_clock static key, and code patching under multi-threaded
	# emulation is what oopses L1 (kvm-hold.c). Its flip to stable at boot remains (run-l1 status 123).
	KARGS="tsc=reliable"
else
	# EL2 emulated (L1 gets VHE KVM), GICv3 for the L2's vGICv3 and ITS; pointer authentication with
	# QEMU's cheap algorithm (the architected one makes emulation ~3x slower). virt has one UART: the
	# kernel's console goes to a virtio console.
	MACHINE=(-M virt,virtualization=on,gic-version=3 -cpu max,pauth-impdef=on)
	KCONSOLE=(-device virtio-serial-pci -chardev file,id=klog,path="$T/kernel.log" -device virtconsole,chardev=klog)
	KCON=hvc0
	KARGS=
fi
timeout -k 10 "$TIMEOUT" "$QEMU" \
	"${MACHINE[@]}" -accel tcg,thread=multi -smp 2 -m 4G \
	-object memory-backend-memfd,id=mem,size=4G,share=on -numa node,memdev=mem \
	-chardev socket,id=vfs,path="$T/vfs.sock" -device vhost-user-fs-pci,chardev=vfs,tag=hostroot \
	-nodefaults -no-user-config -display none -no-reboot \
	-serial stdio "${KCONSOLE[@]}" \
	-kernel "$IMG/vmlinuz" -initrd "$IMG/l1-initramfs.cpio.gz" \
	-append "console=$KCON panic=-1 oops=panic $KARGS moat.l1job=$JOB" \
	</dev/null >"$T/console" 2>"$T/qemu.err" &
QEMU_PID=$!

# A frozen L1: every vCPU halted and nothing ever wakes one (seen once in a vhost bench, 2026-11-30: no console
# or kernel output, QEMU's threads asleep, 30 ms of CPU a minute) never ends on its own. A live L1 uses ~200 ms
# of CPU every 30 s even when idle (sleep 150: 170-230 ms), so QEMU using under 50 ms in each 30 s for
# MOAT_L1_FREEZE_SECS (default 120) means it froze: it is stopped and reported like a crash (status 123).
FREEZE_SECS=${MOAT_L1_FREEZE_SECS:-120}
[[ $FREEZE_SECS =~ ^[0-9]+$ ]] || die "MOAT_L1_FREEZE_SECS needs a number of seconds (0: no watch)"
if [ "$FREEZE_SECS" -gt 0 ]; then
	(
		sp=
		trap - EXIT INT HUP
		trap '[ -z "$sp" ] || kill "$sp" 2>/dev/null; exit 0' TERM
		hz=$(getconf CLK_TCK)
		cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null; }
		qpid=
		for _ in $(seq 100); do
			read -r qpid _ <"/proc/$QEMU_PID/task/$QEMU_PID/children" 2>/dev/null || true
			[ -z "$qpid" ] || break
			sleep 0.1
		done
		[ -n "$qpid" ] || exit 0
		prev=$(cpu_ticks "$qpid") || exit 0
		quiet=0
		for (( ; ; )); do
			sleep 30 &
			sp=$!
			wait "$sp" || true
			sp=
			now=$(cpu_ticks "$qpid") || exit 0
			[ -n "$now" ] || exit 0
			if [ $(((now - prev) * 1000 / hz)) -lt 50 ]; then quiet=$((quiet + 30)); else quiet=0; fi
			prev=$now
			if [ $quiet -ge "$FREEZE_SECS" ]; then
				echo "$quiet" >"$T/frozen"
				kill -TERM "$qpid" 2>/dev/null || true
				exit 0
			fi
		done
	) </dev/null &
	WATCH_PID=$!
fi
exec 3<"$T/console"

t0=$EPOCHREALTIME
t_cmd=
t_end=
status=
setup_failed=0
blank=0
phase=boot
while IFS= read -r line <&3 || [ -n "$line" ]; do
	line=${line//$'\r'/}
	printf '%s\n' "$line" >>"$T/console.log"
	if [ $phase = boot ]; then
		if [ "$line" = L1_CMD_START ]; then
			phase=cmd
			t_cmd=$EPOCHREALTIME
		elif [ "$line" = L1_SETUP_FAILED ]; then
			setup_failed=1
		elif [ $VERBOSE = 1 ] || [[ $line == l1-init:* ]]; then
			printf '%s\n' "$line" >&2
		fi
		continue
	fi
	if [ $phase = finished ]; then
		# L1 shutting down.
		[ $VERBOSE = 0 ] || printf '%s\n' "$line" >&2
		continue
	fi
	if [[ $line =~ ^(.*)L1_EXIT_STATUS=([0-9]+)$ ]]; then
		status=${BASH_REMATCH[2]}
		t_end=$EPOCHREALTIME
		[ -z "${BASH_REMATCH[1]}" ] || printf '%s\n' "${BASH_REMATCH[1]}"
		blank=0
		phase=finished
		continue
	fi
	# The status line is preceded by a newline; hold back one empty line.
	if [ $blank = 1 ]; then printf '\n'; blank=0; fi
	if [ -z "$line" ]; then blank=1; continue; fi
	printf '%s\n' "$line"
done
[ $blank = 0 ] || [ -n "$status" ] || printf '\n'
qrc=0
wait "$QEMU_PID" || qrc=$?
QEMU_PID=
t_stop=$EPOCHREALTIME

secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

if [ $VERBOSE = 1 ] && [ -s "$T/kernel.log" ]; then
	echo "run-l1: L1 kernel log:" >&2
	tr -d '\r' <"$T/kernel.log" | sed 's/^/  k| /' >&2 || true
fi

if [ -n "$status" ]; then
	echo "run-l1: L1 boot to command start $(secs "$t0" "$t_cmd") s; command $(secs "$t_cmd" "$t_end") s; whole L1 session $(secs "$t0" "$t_stop") s; command exit status $status" >&2
	exit "$status"
fi

# L1 ended without reporting the command's status: say why as well as we can.
crash_re='Kernel panic|Oops|BUG:|general protection fault|watchdog: BUG|Call Trace'
if [ -s "$T/frozen" ]; then
	why="L1 froze: QEMU used under 50 ms of CPU in every 30 s for $(cat "$T/frozen") s (all its vCPUs halted, nothing waking them): the test bed died"
	rc=123
elif [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
	why="timed out after $TIMEOUT s (--timeout)"
	rc=124
elif [ $setup_failed = 1 ]; then
	why="L1 setup failed: $(grep 'l1-init: FATAL' "$T/console.log" | tail -n 1)"
	rc=125
elif grep -qE "$crash_re" "$T/kernel.log" 2>/dev/null; then
	why="the L1 kernel crashed: $(grep -m1 -E "$crash_re" "$T/kernel.log" | tr -d '\r')"
	rc=123
elif [ "$qrc" = 0 ] && [ -n "$t_cmd" ]; then
	# L1 powers off only after reporting the status; under -no-reboot QEMU exits 0 when L1 resets instead
	# (a triple fault of L1 itself leaves no kernel message), and nothing the tests run reboots L1.
	why="L1 reset itself while the command ran (QEMU exit status 0 under -no-reboot, no status, no kernel message): the test bed died"
	rc=123
else
	why="L1 stopped without reporting the command's exit status (QEMU exit status $qrc)"
	rc=125
fi
if [ -n "$t_cmd" ]; then
	where="the command started $(secs "$t0" "$t_cmd") s after boot and ran for $(secs "$t_cmd" "$t_stop") s"
else
	where="the command never started ($(secs "$t0" "$t_stop") s after boot)"
fi
{
	echo "run-l1: FAILED: $why; $where"
	if [ -s "$T/console.log" ]; then
		echo "run-l1: last lines of L1's console (init and command output):"
		tail -n 30 "$T/console.log" | sed 's/^/  | /' || true
	fi
	if [ -s "$T/kernel.log" ] && [ $VERBOSE = 0 ]; then
		echo "run-l1: last lines of L1's kernel log:"
		# The task the kernel was running when it died (its name tells whose thread it was), if the tail misses it.
		tail -n 40 "$T/kernel.log" | grep -q 'Comm:' ||
			grep -a 'Comm:' "$T/kernel.log" | tail -n 1 | tr -d '\r' | sed 's/^/  k| /' || true
		tail -n 40 "$T/kernel.log" | tr -d '\r' | sed 's/^/  k| /' || true
	fi
	if [ -s "$T/qemu.err" ]; then
		echo "run-l1: QEMU's stderr:"
		tail -n 20 "$T/qemu.err" | sed 's/^/  | /' || true
	fi
} >&2
exit $rc
