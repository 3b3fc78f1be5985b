#!/usr/bin/env bash
# Boot-time benchmark: moat vs QEMU (-M microvm and -M q35; arm64: -M virt), same kernel, initramfs and
# command line (but the console's name).
#
#   bench/boot.sh [--arch x86_64|arm64] [--runs N]
#
# Measures the time from starting the VMM process to the guest's MOAT_INIT_OK console line (median,
# min, max of N interleaved runs each, default 5), moat's own start-up (its debug log's "first KVM_RUN"
# line) and moat's resident memory excluding guest memory. All VMMs run in ONE session: directly on this
# host if its KVM is hardware virtualization, else inside one L1 of the nested test bed
# (tools/testbed/run-l1.sh); figures from different sessions are not comparable.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARCH=x86_64
RUNS=5
INNER=0

usage() { echo "usage: $0 [--arch x86_64|arm64] [--runs N]" >&2; exit 2; }
while [ $# -gt 0 ]; do
	case $1 in
	--arch) [ $# -ge 2 ] || usage; ARCH=$2; shift 2 ;;
	--arch=*) ARCH=${1#*=}; shift ;;
	--runs) [ $# -ge 2 ] || usage; RUNS=$2; shift 2 ;;
	--runs=*) RUNS=${1#*=}; shift ;;
	--inner) INNER=1; shift ;;
	-h|--help) usage ;;
	*) echo "boot.sh: unknown argument: $1" >&2; usage ;;
	esac
done
[[ $RUNS =~ ^[0-9]+$ ]] && [ "$RUNS" -ge 1 ] || { echo "boot.sh: --runs needs a positive number" >&2; exit 2; }
case $ARCH in
x86_64) hw_flags='vmx|svm'; DEFAULT_BUILD=build; TARGET_CC=gcc; LT_FLAGS=(); LINETIME_NAME=linetime ;;
# arm64: the cross-built moat, a static linetime, and QEMU from Debian's :arm64 packages (QROOT) for the
# arm64 test bed's L1, which cannot run the host's x86 QEMU.
arm64) hw_flags='no-such-flag'; DEFAULT_BUILD=build/arm64; TARGET_CC=aarch64-linux-gnu-gcc; LT_FLAGS=(-static)
	LINETIME_NAME=linetime-arm64 ;;
*) echo "boot.sh: unsupported --arch '$ARCH' (supported: x86_64, arm64)" >&2; exit 2 ;;
esac

IMG=$REPO/build/guest/$ARCH
LINETIME=$REPO/build/bench/$LINETIME_NAME
QROOT=$IMG/qemu-root
BUILD_DIR=${BUILD:-$DEFAULT_BUILD}
[[ $BUILD_DIR == /* ]] || BUILD_DIR=$REPO/$BUILD_DIR
export MOAT=${MOAT:-$BUILD_DIR/moat}
MOAT_BIN=$MOAT

# ------------------------------------------------------------------ outer part: prepare, pick where to run
if [ $INNER = 0 ]; then
	"$REPO/tools/guest-images.sh" --arch "$ARCH" || { echo "boot.sh: tools/guest-images.sh failed" >&2; exit 1; }
	mkdir -p "$REPO/build/bench"
	if [ ! -x "$LINETIME" ] || [ "$REPO/bench/linetime.c" -nt "$LINETIME" ]; then
		"$TARGET_CC" -O2 ${LT_FLAGS[@]+"${LT_FLAGS[@]}"} -Wall -Wextra -o "$LINETIME" "$REPO/bench/linetime.c" ||
			{ echo "boot.sh: cannot build linetime" >&2; exit 1; }
	fi
	if [ "$ARCH" = arm64 ] && [ "$(uname -m)" != aarch64 ] && [ ! -x "$QROOT/usr/bin/qemu-system-aarch64" ]; then
		# qemu-system-arm:arm64 and the arm64 libraries it needs, unpacked (they cannot be installed here).
		echo "boot.sh: fetching qemu-system-arm:arm64 and its libraries into $QROOT"
		qdir=$IMG/cache/qemu
		mkdir -p "$qdir"
		pkgs=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
			--no-enhances qemu-system-arm:arm64 | grep -E '^(lib[^ ]*|zlib1g):arm64$' | sort -u)
		(cd "$qdir" && apt-get download -q -o APT::Sandbox::User=root qemu-system-arm:arm64 $pkgs >/dev/null) ||
			{ echo "boot.sh: apt-get download of qemu-system-arm:arm64 failed" >&2; exit 1; }
		rm -rf "$QROOT.tmp"
		for d in "$qdir"/*.deb; do dpkg-deb -x "$d" "$QROOT.tmp" || exit 1; done
		rm -rf "$QROOT"
		mv "$QROOT.tmp" "$QROOT"
	fi
	if [ "$ARCH" = arm64 ] && [ "$(uname -m)" = aarch64 ] && [ -e /dev/kvm ]; then
		echo "boot.sh: running on this host (arm64 KVM)"
		exec "$0" --inner --arch "$ARCH" --runs "$RUNS"
	fi
	if grep -qwE "$hw_flags" /proc/cpuinfo && [ -e /dev/kvm ]; then
		echo "boot.sh: running on this host (hardware KVM)"
		exec "$0" --inner --arch "$ARCH" --runs "$RUNS"
	fi
	echo "boot.sh: this host's KVM cannot boot Linux; running every VMM inside one L1 of the nested test bed"
	exec "$REPO/tools/testbed/run-l1.sh" --arch "$ARCH" -- bench/boot.sh --inner --arch "$ARCH" --runs "$RUNS"
fi

# ------------------------------------------------------------------ inner part: where the VMMs run
KERNEL=$IMG/vmlinuz
[ "$ARCH" != arm64 ] || KERNEL=$IMG/Image
INITRD=$IMG/initramfs.cpio.gz
CMDLINE="console=ttyS0 quiet panic=-1"
RUN_TIMEOUT=180
for f in "$KERNEL" "$INITRD" "$LINETIME"; do
	[ -e "$f" ] || { echo "boot.sh: $f missing (run bench/boot.sh without --inner)" >&2; exit 1; }
done
[ -e /dev/kvm ] || { echo "boot.sh: /dev/kvm missing" >&2; exit 1; }

W=
RM_ONEFS=()
if rm --help 2>&1 | grep -q -- --one-file-system; then RM_ONEFS=(--one-file-system); fi # not in busybox
cleanup() { [ -z "$W" ] || rm -rf ${RM_ONEFS[@]+"${RM_ONEFS[@]}"} "$W"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
W=$(mktemp -d "${TMPDIR:-/tmp}/moat-bench.XXXXXX")

QEMU_COMMON=(qemu-system-x86_64 -enable-kvm -cpu host -m 512 -smp 1 -nodefaults -no-user-config -nographic
	-serial stdio -no-reboot -kernel "$KERNEL" -initrd "$INITRD" -append "$CMDLINE")
VMMS=(moat qemu-microvm qemu-q35)
REF=qemu-microvm
if [ "$ARCH" = arm64 ]; then
	QEMU_BIN=(qemu-system-aarch64)
	if [ -x "$QROOT/usr/bin/qemu-system-aarch64" ]; then
		QEMU_BIN=(env "LD_LIBRARY_PATH=$QROOT/lib/aarch64-linux-gnu:$QROOT/usr/lib/aarch64-linux-gnu"
			"$QROOT/usr/bin/qemu-system-aarch64")
	fi
	# virt's console is a PL011 (ttyAMA0); moat's a 16550 (ttyS0).
	QEMU_COMMON=("${QEMU_BIN[@]}" -enable-kvm -cpu host -m 512 -smp 1 -nodefaults -no-user-config -nographic
		-serial stdio -no-reboot -kernel "$KERNEL" -initrd "$INITRD" -append "${CMDLINE/ttyS0/ttyAMA0}")
	VMMS=(moat qemu-virt)
	REF=qemu-virt
fi
vmm_cmd() {
	case $1 in
	moat) CMD=("$MOAT_BIN" --kernel "$KERNEL" --initrd "$INITRD" --cmdline "$CMDLINE" --cpus 1 --memory 512M "${@:2}") ;;
	qemu-microvm) CMD=("${QEMU_COMMON[@]}" -M "microvm,rtc=on") ;;
	qemu-q35) CMD=("${QEMU_COMMON[@]}" -M q35) ;;
	qemu-virt) CMD=("${QEMU_COMMON[@]}" -M virt,gic-version=3) ;;
	esac
}

declare -A TIMES=() FAILS=() ERR=() RSS=() SHM=()
for v in "${VMMS[@]}"; do TIMES[$v]=""; FAILS[$v]=0; RSS[$v]=""; SHM[$v]=""; done
if [ ! -x "$MOAT_BIN" ]; then
	ERR[moat]="$MOAT_BIN not found (run make)"
fi

val() { awk -v k="$1" '$1 == k { $1 = ""; sub(/^ /, ""); print; exit }' "$2"; }

# run_one VMM N: one timed run; appends the time or records the failure.
run_one() {
	local v=$1 n=$2 res=$W/$1.$2.res log=$W/$1.$2.log t rc guest=()
	vmm_cmd "$v"
	# moat's guest RAM is one private mapping of exactly --memory: counted apart from moat's own memory.
	[ "$v" != moat ] || guest=(-g $((512 << 20)))
	"$LINETIME" -t "$RUN_TIMEOUT" -r ${guest[@]+"${guest[@]}"} -l "$log" -m MOAT_INIT_OK -- "${CMD[@]}" >"$res"
	t=$(val marker1 "$res")
	rc=$(val exit "$res")
	if [ "$t" != none ] && [ "$rc" = 0 ]; then
		TIMES[$v]+="$t "
		RSS[$v]+="$(val rss_kb "$res") "
		SHM[$v]+="$(val guest_kb "$res") "
		printf '  run %d %-13s %.3f s\n' "$n" "$v" "$t"
	else
		FAILS[$v]=$((FAILS[$v] + 1))
		local why="exit status $rc"
		[ "$t" != none ] || why="$why, no MOAT_INIT_OK"
		ERR[$v]="$why; last output: $(tr -d '\r' <"$log" | grep -v '^$' | tail -n 3 | tr '\n' '|' | cut -c1-300)"
		printf '  run %d %-13s FAILED (%s)\n' "$n" "$v" "$why"
	fi
}

echo "boot.sh: $RUNS interleaved runs of each VMM; time from process start to MOAT_INIT_OK on the console"
echo "boot.sh: kernel $(cat "$IMG/kernel-version"), cmdline '$CMDLINE', 1 vCPU, 512 MiB"
for n in $(seq "$RUNS"); do
	for v in "${VMMS[@]}"; do
		# A VMM that failed twice (or is missing) is not run again.
		if [ "$v" = moat ] && [ ! -x "$MOAT_BIN" ]; then continue; fi
		[ "${FAILS[$v]}" -lt 2 ] || continue
		run_one "$v" "$n"
	done
done

# stats "t1 t2 ...": prints "median min max count"
stats() {
	if [ -z "${1// /}" ]; then echo "- - - 0"; return; fi
	printf '%s\n' $1 | sort -g | awk '{ a[NR] = $1 } END {
		if (NR == 0) { print "- - - 0"; exit }
		m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
		printf "%.3f %.3f %.3f %d\n", m, a[1], a[NR], NR }'
}

ref=$(stats "${TIMES[$REF]}" | cut -d' ' -f1)
echo
printf '%-14s %5s %9s %8s %8s %12s\n' VMM runs "median s" "min s" "max s" "vs ${REF#qemu-}"
for v in "${VMMS[@]}"; do
	read -r med min max cnt <<<"$(stats "${TIMES[$v]}")"
	if [ "$cnt" = 0 ]; then
		printf '%-14s %s failed: %s\n' "$v" "${v%%-*}" "${ERR[$v]:-no successful run}"
		continue
	fi
	ratio=-
	[ "$ref" = - ] || ratio=$(awk -v a="$med" -v b="$ref" 'BEGIN { printf "%.2fx", a / b }')
	printf '%-14s %5s %9s %8s %8s %12s\n' "$v" "$cnt" "$med" "$min" "$max" "$ratio"
	[ "${FAILS[$v]}" = 0 ] || printf '%-14s   (%d failed run(s): %s)\n' "" "${FAILS[$v]}" "${ERR[$v]}"
done

# ------------------------------------------------------------------ moat's own start-up and memory
echo
if [ -z "${TIMES[moat]}" ]; then
	echo "moat start-up and memory: not measured (moat failed: ${ERR[moat]:-no successful run})"
	exit 0
fi
read -r rss_med _ <<<"$(stats "${RSS[moat]}")"
read -r shm_med _ <<<"$(stats "${SHM[moat]}")"
echo "moat memory: peak RssAnon+RssFile $(printf '%.0f' "$rss_med") KiB (median of runs; excludes guest memory), peak guest memory touched (Rss of its RAM mapping) $(printf '%.0f' "$shm_med") KiB"

# Start-up: separate runs with --log-level debug (debug logging would slow the timed runs).
own=()
seen=()
for n in $(seq 3); do
	vmm_cmd moat --log-level debug
	res=$W/dbg.$n.res
	log=$W/dbg.$n.log
	"$LINETIME" -t "$RUN_TIMEOUT" -l "$log" -m 'first KVM_RUN' -- "${CMD[@]}" >"$res"
	line=$(grep -m1 'first KVM_RUN' "$log" || true)
	if [ -z "$line" ]; then
		echo "moat start-up: no 'first KVM_RUN' line in moat's debug log (exit $(val exit "$res"))"
		break
	fi
	# moat[S.UUUUUU] debug: ... first KVM_RUN ...
	us=$(sed -nE 's/^.*moat\[([0-9]+)\.([0-9]{6})\].*$/\1 \2/p' <<<"$line" | awk '{ printf "%d", $1 * 1000000 + $2 }')
	[ -z "$us" ] || own+=("$us")
	t=$(val marker1 "$res")
	[ "$t" = none ] || seen+=("$(awk -v t="$t" 'BEGIN { printf "%d", t * 1000000 }')")
done
if [ ${#own[@]} -gt 0 ]; then
	read -r med min max cnt <<<"$(stats "${own[*]}")"
	echo "moat start-up (its log: start to first KVM_RUN): median $(printf '%.0f' "$med") us (min $(printf '%.0f' "$min"), max $(printf '%.0f' "$max"), $cnt runs)"
elif [ -n "$line" ]; then
	echo "moat start-up: cannot parse the time in: $line"
fi
if [ ${#seen[@]} -gt 0 ]; then
	read -r med _ <<<"$(stats "${seen[*]}")"
	echo "moat start-up (process start to the first KVM_RUN line read from its stderr): median $(printf '%.0f' "$med") us"
fi

# ------------------------------------------------------------------ each VMM's floor (arm64)
# The same VMM command line with a kernel that powers the VM off at its first instruction (PSCI SYSTEM_OFF):
# start-up, the vCPU's first entry and the tear-down, without the guest's own work. A VMM's time to the marker
# less its floor is what its guest took; where that is the same for two VMMs, no VMM can go below it.
if [ "$ARCH" != arm64 ]; then
	echo "floor: not measured for $ARCH (it needs a kernel image that powers off at once; only arm64 has one here)"
	exit 0
fi
le32() { printf "\\\\x%02x\\\\x%02x\\\\x%02x\\\\x%02x" $(($1 & 255)) $(($1 >> 8 & 255)) $(($1 >> 16 & 255)) $(($1 >> 24 & 255)); }
# arm64 Image header: b +64, text_offset 0, image_size 64 KiB, flags 0, ..., magic "ARM\x64" at 0x38.
hdr="$(le32 0x14000010)$(le32 0)$(le32 0)$(le32 0)$(le32 0x10000)$(le32 0)$(le32 0)$(le32 0)"
hdr+="$(le32 0)$(le32 0)$(le32 0)$(le32 0)$(le32 0)$(le32 0)$(le32 0x644d5241)$(le32 0)"
# movz x0, #0x8; movk x0, #0x8400, lsl 16 (SYSTEM_OFF); hvc #0; b .
code="$(le32 0xd2800100)$(le32 0xf2b08000)$(le32 0xd4000002)$(le32 0x14000000)"
printf "$hdr$code" >"$W/off.Image"
truncate -s 65536 "$W/off.Image"
declare -A FLOOR=()
for n in $(seq "$RUNS"); do
	for v in "${VMMS[@]}"; do
		[ -n "${TIMES[$v]}" ] || continue
		vmm_cmd "$v"
		for i in "${!CMD[@]}"; do [ "${CMD[$i]}" != "$KERNEL" ] || CMD[i]=$W/off.Image; done
		res=$W/$v.floor.$n.res
		"$LINETIME" -t "$RUN_TIMEOUT" -l "$W/$v.floor.$n.log" -m MOAT_NO_SUCH_LINE -- "${CMD[@]}" >"$res"
		if [ "$(val exit "$res")" = 0 ]; then
			FLOOR[$v]+="$(val wall "$res") "
		else
			echo "  floor run $n $v: exit $(val exit "$res"): $(tail -n 2 "$W/$v.floor.$n.log" | tr '\n' '|')"
		fi
	done
done
echo
echo "floor: the same command lines with a kernel that powers off at its first instruction (start to exit)"
printf '%-14s %5s %9s %8s %8s %18s\n' VMM runs "floor s" "min s" "max s" "marker - floor s"
for v in "${VMMS[@]}"; do
	[ -n "${FLOOR[$v]:-}" ] || continue
	read -r med min max cnt <<<"$(stats "${FLOOR[$v]}")"
	read -r tot _ <<<"$(stats "${TIMES[$v]}")"
	printf '%-14s %5s %9s %8s %8s %18s\n' "$v" "$cnt" "$med" "$min" "$max" "$(awk -v a="$tot" -v b="$med" 'BEGIN { printf "%.3f", a - b }')"
done
