#!/usr/bin/env bash
# End-to-end scenarios: boot the test guest with moat, check moat's exit status and the console.
# Runs where moat runs (a host with hardware KVM, or the test bed's L1: see tests/e2e/run-nested.sh).
#
#   tests/e2e/run.sh [--arch x86_64|arm64] [--only NAME[,NAME...]] [--list]
#
# Prints "PASS name (Xs)" or "FAIL name: reason" per scenario and "N passed, N failed" at the end;
# exits non-zero if a scenario failed.
# Environment: MOAT (the moat binary, default $BUILD/moat, BUILD defaulting to build), MOAT_E2E_RUN_TIMEOUT (safety limit of one
# moat run in seconds, default 300, plus a second per 8 MiB of MOAT_E2E_XFER_BYTES).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ARCH=x86_64
ONLY=
LIST=0
xfer_env=${MOAT_E2E_XFER_BYTES:-0}
[[ $xfer_env =~ ^[0-9]+$ ]] || { echo "run.sh: MOAT_E2E_XFER_BYTES must be a whole number of bytes (say 1073741824 for 1 GiB), not '$xfer_env'" >&2; exit 2; }
SAFETY=${MOAT_E2E_RUN_TIMEOUT:-$((300 + xfer_env / 8388608))}

usage() { echo "usage: $0 [--arch x86_64|arm64] [--only NAME[,NAME...]] [--list]" >&2; exit 2; }
while [ $# -gt 0 ]; do
	case $1 in
	--arch) [ $# -ge 2 ] || usage; ARCH=$2; shift 2 ;;
	--arch=*) ARCH=${1#*=}; shift ;;
	--only) [ $# -ge 2 ] || usage; ONLY=$2; shift 2 ;;
	--only=*) ONLY=${1#*=}; shift ;;
	--list) LIST=1; shift ;;
	-h|--help) usage ;;
	*) echo "run.sh: unknown argument: $1" >&2; usage ;;
	esac
done
IMG=$REPO/build/guest/$ARCH
INITRD=$IMG/initramfs.cpio.gz
INITRD_FULL=$IMG/initramfs-full.cpio.gz # with mke2fs and iperf3, for the device scenarios
# Scenarios that do not apply to an arch, with the reason (printed as SKIP).
declare -A NOT_HERE=()
case $ARCH in
x86_64)
	KERNEL=$IMG/vmlinuz
	CMDLINE="console=ttyS0 quiet panic=-1"
	# Timeout of the "timeout" scenario: well past the guest's boot even in the nested test bed.
	SLEEP_TIMEOUT=40
	DEFAULT_BUILD=build
	# The no-prefetch IOTLB path also runs (misses only) inside vhost-iommu-net's ring set-up and races; its own
	# scenario is left out of the default set for CI time (it passed 6 of 6 runs by hand).
	NOT_HERE[vhost-iommu-net-nopf]="a variant of vhost-iommu-net (IOTLB misses only, no prefetch), left out for CI time; run it with --only vhost-iommu-net-nopf"
	;;
arm64)
	KERNEL=$IMG/Image
	# The arm64 cloud kernel has no pvpanic: reboot=panic_warm makes its panic a PSCI warm reset, which
	# moat reports as a panic (arch/arm64/arch.c).
	CMDLINE="console=ttyS0 quiet panic=-1 reboot=panic_warm"
	SLEEP_TIMEOUT=40
	DEFAULT_BUILD=build/arm64
	# Left out unless named with --only: the nested arm64 test bed is slow (~35-60 s a scenario on a busy
	# machine), and these add no arm64-specific path to what the default set covers. (timeout stays in: its
	# report reads arm64 registers from the vCPU thread, under that thread's seccomp filter.)
	for n in nproc-1 iommu-blk-strict; do
		NOT_HERE[$n]="arch-independent moat code already covered by the default set and on x86_64; run it with --only $n"
	done
	# Under iommu.strict=1 the arm64 guest's iperf3 once crawled (0.17 Mbit/s up, down failed) with two other
	# emulators loading the machine; it passed (26 s) on a quieter machine. Left out by default until that is
	# understood.
	NOT_HERE[iommu-net-strict]="flaky under heavy load on arm64 (iperf3 crawled once in strict IOMMU mode; passed when the machine was quieter); run it with --only iommu-net-strict"
	# vhost scenarios' checksummed transfers: 8 MiB each way (64 MiB elsewhere). Through the device IOTLB
	# under nested arm64 emulation 64 MiB outlasts the harness's 300 s limit; 8 MiB took 74 s.
	XFER_DEFAULT=8388608
	for n in vhost-iommu-net-nopf vhost-iommu-net-strict; do
		NOT_HERE[$n]="a variant of vhost-iommu-net with no arm64-specific path, left out for CI time; run it with --only $n"
	done
	;;
*) echo "run.sh: unsupported --arch '$ARCH' (supported: x86_64, arm64)" >&2; exit 2 ;;
esac
BUILD_DIR=${BUILD:-$DEFAULT_BUILD}
[[ $BUILD_DIR == /* ]] || BUILD_DIR=$REPO/$BUILD_DIR
MOAT_BIN=${MOAT:-$BUILD_DIR/moat}

# Console strings that mean something went wrong in any scenario whose guest should not crash.
FORBID_COMMON='Kernel panic|Call Trace|moat-init: cannot load|moat-init: no scenario|moat-init: bad scenario|moat-init: poweroff failed'
FORBID_PANIC='moat-init: cannot load|moat-init: no scenario|still alive after the panic trigger'

# ------------------------------------------------------------------ scenario table
# scenario NAME EXPECTED_STATUS EXPECT_ON_CONSOLE FORBID_ON_CONSOLE EXPECT_ON_STDERR -- MOAT_ARGS...
# String lists are separated by '|'; empty means none.
NAMES=()
declare -A S_RC=() S_EXPECT=() S_FORBID=() S_ERR=() S_ARGS=()
scenario() {
	local name=$1
	NAMES+=("$name")
	S_RC[$name]=$2
	S_EXPECT[$name]=$3
	S_FORBID[$name]=$4
	S_ERR[$name]=$5
	[ "$6" = -- ] || { echo "run.sh: bad scenario definition '$name'" >&2; exit 2; }
	shift 6
	S_ARGS[$name]=$(printf '%q ' "$@")
}

# A guest that hangs ends with 124 after GUEST_LIMIT seconds instead of running into the harness's safety kill.
GUEST_LIMIT=150
G=(--kernel "$KERNEL" --initrd "$INITRD" --memory 512M --timeout "$GUEST_LIMIT")
scenario boot 0 'MOAT_INIT_OK|CPUS=' "$FORBID_COMMON" '' -- \
	"${G[@]}" --cmdline "$CMDLINE"
scenario nproc-1 0 'MOAT_INIT_OK|NPROC=1' "$FORBID_COMMON" '' -- \
	"${G[@]}" --cpus 1 --cmdline "$CMDLINE moat.scenario=nproc"
scenario nproc-2 0 'MOAT_INIT_OK|NPROC=2' "$FORBID_COMMON" '' -- \
	"${G[@]}" --cpus 2 --cmdline "$CMDLINE moat.scenario=nproc"
scenario poweroff 0 'MOAT_INIT_OK|moat-scenario: poweroff requested' "$FORBID_COMMON" '' -- \
	"${G[@]}" --cmdline "$CMDLINE moat.scenario=poweroff"
scenario panic 3 'MOAT_INIT_OK|moat-scenario: triggering a kernel panic' "$FORBID_PANIC" '' -- \
	"${G[@]}" --cmdline "$CMDLINE moat.scenario=panic"
scenario timeout 124 'MOAT_INIT_OK|moat-scenario: sleeping forever' "$FORBID_COMMON" 'vCPU 0 was at |when the --timeout stopped it|vCPU 0 in the last second before the --timeout: KVM counted ' -- \
	"${G[@]}" --cmdline "$CMDLINE moat.scenario=sleep" --timeout "$SLEEP_TIMEOUT"
# The sandbox: an unprivileged user with 2 vCPUs, and a look at /proc of a running moat (tests/e2e/sandbox-proc.sh).
scenario user-poweroff 0 'MOAT_INIT_OK|moat-scenario: poweroff requested' "$FORBID_COMMON" '' -- \
	"${G[@]}" --cpus 2 --user 65534 --cmdline "$CMDLINE moat.scenario=poweroff"
scenario sandbox-proc 0 'sandbox check passed' '' '' -- @sandbox-proc
# Devices: host-side scripts that set up back ends, run moat and check both sides (tests/e2e/NAME.sh).
scenario net 0 'net check passed' '' '' -- @net
scenario blk 0 'blk check passed' '' '' -- @blk
# The same behind the virtio-iommu (ACCESS_PLATFORM, the guest's DMA API maps every buffer): the guest's
# default lazy invalidation, and strict (every unmap reaches the IOMMU before the buffer is reused).
scenario iommu-net 0 'net check passed' '' '' -- @net --iommu
scenario iommu-net-strict 0 'net check passed' '' '' -- @net --iommu cmdline+=iommu.strict=1
# Kernel vhost-net data path: plain (IOVA == GPA), and with its device IOTLB served from the virtio-iommu, with
# and without prefetch. Each also moves XFER bytes each way with a checksum compared at both ends (64 MiB by
# default to keep CI short under emulation; MOAT_E2E_XFER_BYTES=1073741824 for the full 1 GiB).
XFER=${MOAT_E2E_XFER_BYTES:-${XFER_DEFAULT:-67108864}}
scenario vhost-net 0 'net check passed' '' '' -- @net dev+=vhost=on xfer=$XFER
scenario vhost-iommu-net 0 'net check passed' '' '' -- @net --iommu dev+=vhost=on xfer=$XFER
scenario vhost-iommu-net-nopf 0 'net check passed' '' '' -- @net --iommu dev+=vhost=on,iotlb-prefetch=off
scenario vhost-iommu-net-strict 0 'net check passed' '' '' -- @net --iommu dev+=vhost=on cmdline+=iommu.strict=1 \
	xfer=$XFER
scenario iommu-blk 0 'blk check passed' '' '' -- @blk --iommu
# The IOMMU without polling (--iommu-poll=0: every request served on the kicking vCPU) also runs here.
scenario iommu-blk-strict 0 'blk check passed' '' '' -- @blk --iommu --iommu-poll=0 cmdline+=iommu.strict=1
scenario rng 0 'MOAT_INIT_OK|RNG_CURRENT=virtio_rng|RNG_BYTES=256' "$FORBID_COMMON" '' -- \
	"${G[@]}" --rng --cmdline "$CMDLINE moat.scenario=rng"
scenario missing-kernel 1 '' '' '/nonexistent' -- \
	--kernel /nonexistent --initrd "$INITRD" --cmdline "$CMDLINE"
scenario jail-missing-dir 1 '' '' "--jail '/nonexistent/moat-jail' does not exist|mkdir" -- \
	"${G[@]}" --cmdline "$CMDLINE" --jail /nonexistent/moat-jail

if [ $LIST = 1 ]; then
	for n in "${NAMES[@]}"; do echo "$n: exit ${S_RC[$n]}; moat ${S_ARGS[$n]}"; done
	exit 0
fi
if [ -n "$ONLY" ]; then
	sel=()
	for n in ${ONLY//,/ }; do
		[ -n "${S_RC[$n]:-}" ] || { echo "run.sh: no scenario '$n' (see --list)" >&2; exit 2; }
		sel+=("$n")
	done
	NAMES=("${sel[@]}")
fi

# ------------------------------------------------------------------ setup
W=
# busybox's rm (the arm64 test bed's) lacks --one-file-system.
RM_ONEFS=()
if rm --help 2>&1 | grep -q -- --one-file-system; then RM_ONEFS=(--one-file-system); fi
cleanup() { [ -z "$W" ] || rm -rf ${RM_ONEFS[@]+"${RM_ONEFS[@]}"} "$W"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
W=$(mktemp -d "${TMPDIR:-/tmp}/moat-e2e.XXXXXX")

if [ ! -s "$KERNEL" ] || [ ! -s "$INITRD" ] || [ ! -s "$INITRD_FULL" ]; then
	echo "run.sh: guest images missing in $IMG; building them"
	"$REPO/tools/guest-images.sh" --arch "$ARCH" || { echo "run.sh: tools/guest-images.sh failed" >&2; exit 1; }
fi

status_meaning() {
	case $1 in
	0) echo "guest power-off/reboot" ;;
	1) echo "moat error" ;;
	3) echo "guest panic" ;;
	124) echo "--timeout expired" ;;
	126|127) echo "moat could not be executed" ;;
	13[0-9]|14[0-9]) echo "killed by signal $(($1 - 128))" ;;
	*) echo "unexpected" ;;
	esac
}

# split_list 'a|b|c': one string a line.
split_list() {
	[ -z "$1" ] || printf '%s\n' "${1//|/$'\n'}"
}

# check NAME: runs the scenario once; sets REASON (empty on success), RESET_SUSPECT and ELAPSED.
REASON=
RESET_SUSPECT=0
ELAPSED=0
check() {
	local name=$1 rc start s args
	local out=$W/$name.out err=$W/$name.err
	REASON=
	RESET_SUSPECT=0
	eval "args=(${S_ARGS[$name]})"
	if [ ! -x "$MOAT_BIN" ]; then
		REASON="moat binary $MOAT_BIN not found or not executable (run make)"
		ELAPSED=0
		return
	fi
	start=$EPOCHREALTIME
	rc=0
	if [ "${args[0]}" = @sandbox-proc ]; then
		timeout -k 10 "$SAFETY" "$REPO/tests/e2e/sandbox-proc.sh" "$MOAT_BIN" "$KERNEL" "$INITRD" "$CMDLINE" \
			</dev/null >"$out" 2>"$err" || rc=$?
	elif [[ ${args[0]} == @* ]]; then
		timeout -k 10 "$SAFETY" "$REPO/tests/e2e/${args[0]#@}.sh" "$MOAT_BIN" "$KERNEL" "$INITRD_FULL" "$CMDLINE" \
			"${args[@]:1}" </dev/null >"$out" 2>"$err" || rc=$?
	else
		timeout -k 10 "$SAFETY" "$MOAT_BIN" "${args[@]}" </dev/null >"$out" 2>"$err" || rc=$?
	fi
	ELAPSED=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')

	local reasons=() missing=0
	if [ "$rc" = 124 ] && awk -v e="$ELAPSED" -v s="$SAFETY" 'BEGIN { exit !(e >= s - 1) }'; then
		reasons+=("hung: killed by the harness's safety timeout after ${SAFETY}s")
	elif [ "$rc" != "${S_RC[$name]}" ]; then
		reasons+=("exit status: expected ${S_RC[$name]} ($(status_meaning "${S_RC[$name]}")), got $rc ($(status_meaning "$rc"))")
	fi
	while IFS= read -r s; do
		grep -qF -- "$s" "$out" || { reasons+=("console lacks '$s'"); missing=1; }
	done < <(split_list "${S_EXPECT[$name]}")
	while IFS= read -r s; do
		! grep -qF -- "$s" "$out" || reasons+=("console has '$s'")
	done < <(split_list "${S_FORBID[$name]}")
	while IFS= read -r s; do
		grep -qF -- "$s" "$err" || reasons+=("stderr lacks '$s'")
	done < <(split_list "${S_ERR[$name]}")
	if [ ${#reasons[@]} -gt 0 ]; then
		REASON=$(printf '%s; ' "${reasons[@]}")
		REASON=${REASON%; }
		# A guest kernel oops on an int3 in code being live-patched (static keys, alternatives): seen only
		# under nested emulation, several vCPUs racing the text-poke protocol. Not moat's doing: retry once.
		if grep -qE 'Oops: int3|int3: 0000' "$out"; then
			RESET_SUSPECT=2
		# An open problem: a guest behind the virtio-iommu in lazy mode has triple-faulted under heavy
		# TCP traffic in 2 of about 16 runs, cause not found yet. Retried once and reported, never hidden.
		# vhost guests behind the IOMMU die the same way at the start of an upload (2026-11-30, 3 times).
		elif [[ $name == iommu-* || $name == vhost-iommu-* ]] && grep -q 'triple fault' "$out" "$err" 2>/dev/null; then
			RESET_SUSPECT=3
		# Another open problem: a vhost-net guest behind the IOMMU stopped making progress in 2 of about 20
		# runs (net.sh reports 'STALLED' with moat's IOTLB counters). Retried once and reported, never hidden.
		elif [[ $name == vhost-iommu-* ]] && grep -q 'STALLED' "$out" 2>/dev/null; then
			RESET_SUSPECT=4
		# The guest reset by itself (moat exits 0 on a reboot) before the scenario finished.
		elif [ "$rc" = 0 ] && { [ "${S_RC[$name]}" != 0 ] || [ $missing = 1 ]; } &&
			! grep -qF 'Kernel panic' "$out" && { grep -qiE 'reboot|reset' "$err" || [ $missing = 1 ]; }; then
			RESET_SUSPECT=1
		fi
	fi
}

show_tail() {
	local name=$1
	if [ -s "$W/$name.out" ]; then
		# A device check's verdict comes before the console it prints, beyond the tail.
		grep -E '^[a-z0-9 -]+ check failed: ' "$W/$name.out" | sed 's/^/  | /' || true
		echo "  --- last console lines ($name):"
		tail -n 15 "$W/$name.out" | tr -d '\r' | sed 's/^/  | /' || true
	fi
	if [ -s "$W/$name.err" ]; then
		echo "  --- last stderr lines ($name):"
		tail -n 10 "$W/$name.err" | sed 's/^/  | /' || true
	fi
}

# ------------------------------------------------------------------ run
pass=0
fail=0
skipped=0
for name in "${NAMES[@]}"; do
	if [ -n "${NOT_HERE[$name]:-}" ] && [ -z "$ONLY" ]; then
		echo "SKIP $name ($ARCH): ${NOT_HERE[$name]}"
		skipped=$((skipped + 1))
		continue
	fi
	check "$name"
	if [ -n "$REASON" ] && [ $RESET_SUSPECT != 0 ]; then
		first=$REASON
		if [ $RESET_SUSPECT = 2 ]; then
			echo "RETRY $name: the guest kernel oopsed on an int3 in live-patched code (seen only under nested emulation) ($first); retrying once"
		elif [ $RESET_SUSPECT = 3 ]; then
			echo "RETRY $name: KNOWN OPEN BUG: the guest triple-faulted behind the virtio-iommu ($first); retrying once"
		elif [ $RESET_SUSPECT = 4 ]; then
			echo "RETRY $name: BUG: vhost-net behind the virtio-iommu stalled ($first); the known cause (an interrupt lost on a masked MSI-X vector) is fixed, so this is a new one; retrying once"
			grep -E 'STALLED|stats:' "$W/$name.out" | sed 's/^/  | /' || true
		else
			echo "RETRY $name: the guest seems to have reset silently ($first); retrying once"
		fi
		show_tail "$name"
		check "$name"
		if [ -z "$REASON" ]; then
			echo "PASS $name (${ELAPSED}s) [passed on the retry; the first run failed: $first]"
			pass=$((pass + 1))
			continue
		fi
		REASON="$REASON (also on the first run: $first)"
	fi
	if [ -z "$REASON" ]; then
		echo "PASS $name (${ELAPSED}s)"
		pass=$((pass + 1))
	else
		echo "FAIL $name: $REASON (after ${ELAPSED}s)"
		show_tail "$name"
		fail=$((fail + 1))
	fi
done
if [ $skipped -gt 0 ]; then
	echo "$pass passed, $fail failed, $skipped skipped"
else
	echo "$pass passed, $fail failed"
fi
[ $fail -eq 0 ]
