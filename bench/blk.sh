#!/usr/bin/env bash
# Block I/O benchmark: sequential 1 MiB and random 4 KiB O_DIRECT reads and writes in the guest
# (bench/blkio.c) on a raw image through moat's virtio-blk and QEMU's (virtio-blk-pci, aio=threads,
# cache=writeback as moat), same kernel, initramfs and image.
#
#   bench/blk.sh [--arch x86_64] [--runs N] [--secs S]
#
# Median of N interleaved runs (default 3), S seconds per pattern (default 5). ONE session: this host if
# its KVM is hardware virtualization, else one L1 of the nested test bed.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARCH=x86_64
RUNS=3
SECS=5
INNER=0
usage() { echo "usage: $0 [--arch x86_64] [--runs N] [--secs S]" >&2; exit 2; }
while [ $# -gt 0 ]; do
	case $1 in
	--arch) [ $# -ge 2 ] || usage; ARCH=$2; shift 2 ;;
	--runs) [ $# -ge 2 ] || usage; RUNS=$2; shift 2 ;;
	--secs) [ $# -ge 2 ] || usage; SECS=$2; shift 2 ;;
	--inner) INNER=1; shift ;;
	-h|--help) usage ;;
	*) echo "blk.sh: unknown argument: $1" >&2; usage ;;
	esac
done
[[ $RUNS =~ ^[0-9]+$ ]] && [ "$RUNS" -ge 1 ] || usage
[[ $SECS =~ ^[0-9]+$ ]] && [ "$SECS" -ge 1 ] || usage
case $ARCH in
x86_64) hw_flags='vmx|svm' ;;
*) echo "blk.sh: unsupported --arch '$ARCH'" >&2; exit 2 ;;
esac
IMG=$REPO/build/guest/$ARCH
BUILD_DIR=${BUILD:-build}
[[ $BUILD_DIR == /* ]] || BUILD_DIR=$REPO/$BUILD_DIR
export MOAT=${MOAT:-$BUILD_DIR/moat}

if [ $INNER = 0 ]; then
	"$REPO/tools/guest-images.sh" --arch "$ARCH" || { echo "blk.sh: tools/guest-images.sh failed" >&2; exit 1; }
	args=(--inner --arch "$ARCH" --runs "$RUNS" --secs "$SECS")
	if grep -qwE "$hw_flags" /proc/cpuinfo && [ -e /dev/kvm ]; then
		echo "blk.sh: running on this host (hardware KVM)"
		exec "$0" "${args[@]}"
	fi
	echo "blk.sh: this host's KVM cannot boot Linux; running everything inside one L1 of the nested test bed"
	exec "$REPO/tools/testbed/run-l1.sh" --arch "$ARCH" -- bench/blk.sh "${args[@]}"
fi

KERNEL=$IMG/vmlinuz
INITRD=$IMG/initramfs-full.cpio.gz
CMDLINE="console=ttyS0 quiet panic=-1 moat.scenario=blkbench moat.blksecs=$SECS"
W=$(mktemp -d "${TMPDIR:-/tmp}/moat-bblk.XXXXXX")
cleanup() { rm -rf --one-file-system "$W"; }
trap cleanup EXIT
# The image lives in tmpfs (/tmp in the test bed): the figures are the VMMs' paths, not a disk's.
truncate -s 256M "$W/disk.img"
dd if=/dev/urandom of="$W/disk.img" bs=1M count=256 conv=notrunc status=none

run_vmm() {
	local v=$1 con=$W/$1.console rc=0
	case $v in
	moat)
		timeout 600 "$MOAT" --kernel "$KERNEL" --initrd "$INITRD" --memory 512M --cmdline "$CMDLINE" \
			--disk "path=$W/disk.img" --console "file:$con" </dev/null 2>"$W/$v.err" || rc=$?
		;;
	qemu)
		timeout 600 qemu-system-x86_64 -enable-kvm -M q35 -cpu host -m 512 -smp 1 -nodefaults -no-user-config \
			-display none -vga none -no-reboot -kernel "$KERNEL" -initrd "$INITRD" -append "$CMDLINE" \
			-drive "file=$W/disk.img,format=raw,if=none,id=d0,cache=writeback,aio=threads" \
			-device virtio-blk-pci,drive=d0 -serial "file:$con" </dev/null 2>"$W/$v.err" || rc=$?
		;;
	esac
	if ! grep -q BLKBENCH_DONE "$con" 2>/dev/null; then
		echo "fail exit $rc: $(tail -n 2 "$W/$v.err" | tr '\n' ' ')"
		return
	fi
	tr -d '\r' <"$con" | awk '/^BLKIO / { for (i = 3; i <= NF; i++) { split($i, kv, "="); printf "%s.%s=%s ", $2, kv[1], kv[2] } } END { print "" }'
}

declare -A VAL=()
echo "blk.sh: kernel $(cat "$IMG/kernel-version"); $RUNS interleaved runs; ${SECS}s per pattern; 256 MiB raw image in tmpfs"
for n in $(seq "$RUNS"); do
	for v in moat qemu; do
		res=$(run_vmm "$v")
		echo "  run $n $v: $res"
		[[ $res == fail* ]] && continue
		for kv in $res; do VAL[$v.${kv%%=*}]+="${kv#*=} "; done
	done
done
med() { [ -n "${1// /}" ] || { echo -; return; }; printf '%s\n' $1 | sort -g | awk '{ a[NR] = $1 } END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; print m }'; }
echo
printf '%-10s %12s %12s %12s %12s %8s\n' pattern "moat IOPS" "qemu IOPS" "moat MB/s" "qemu MB/s" ratio
for p in seqread seqwrite randread randwrite; do
	mi=$(med "${VAL[moat.$p.iops]:-}"); qi=$(med "${VAL[qemu.$p.iops]:-}")
	mm=$(med "${VAL[moat.$p.mbps]:-}"); qm=$(med "${VAL[qemu.$p.mbps]:-}")
	r=-
	[ "$mi" = - ] || [ "$qi" = - ] || r=$(awk -v a="$mi" -v b="$qi" 'BEGIN { printf "%.2fx", a / b }')
	printf '%-10s %12s %12s %12s %12s %8s\n' "$p" "$mi" "$qi" "$mm" "$qm" "$r"
done
