#!/usr/bin/env bash
# The usual x86_64 guest initramfs with this machine's perf appended (an overlay archive: the kernel unpacks
# concatenated archives in order), for profiling the guest during a benchmark:
#
#   bench/guest-perf-initrd.sh            # writes build/guest/x86_64/initramfs-perf.cpio.gz
#   MOAT_BENCH_INITRD=$PWD/build/guest/x86_64/initramfs-perf.cpio.gz MOAT_BENCH_GUEST_ARGS=moat.perf=499 \
#     MOAT_BENCH_SHOW='^PERF ' bench/net.sh --runs 1 --vmms "moat moat-iommu-strict"
#
# The net scenario (tests/e2e/guest/net.sh) then wraps each iperf3 in "perf record -a" and prints the hottest
# kernel and user symbols. Samples are timer driven: time spent with interrupts off shows up where they are
# turned back on (_raw_spin_unlock_irqrestore, say). Needs perf here (apt-get install linux-perf); x86_64 only.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMG=$REPO/build/guest/x86_64
OUT=$IMG/initramfs-perf.cpio.gz
PERF=$(command -v perf || true)
[ -n "$PERF" ] || { echo "guest-perf-initrd.sh: perf not found; apt-get install linux-perf" >&2; exit 1; }
"$REPO/tools/guest-images.sh" --arch x86_64 || { echo "guest-perf-initrd.sh: tools/guest-images.sh failed" >&2; exit 1; }
T=$(mktemp -d "${TMPDIR:-/tmp}/moat-perf.XXXXXX")
trap 'rm -rf --one-file-system "$T"' EXIT
mkdir -p "$T/root/usr/local/bin"
cp -L "$PERF" "$T/root/usr/local/bin/perf"
# Shared libraries at the same paths as on this machine, the loader included.
while IFS= read -r lib; do
	mkdir -p "$T/root$(dirname "$lib")"
	cp -L "$lib" "$T/root$lib"
done < <(ldd "$PERF" | awk '/=> \// { print $3 } /^\t\/[^ ]* \(/ { print $1 }')
(cd "$T/root" && find . | cpio -o -H newc --quiet | gzip -1) >"$T/perf.cpio.gz"
cat "$IMG/initramfs-full.cpio.gz" "$T/perf.cpio.gz" >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "guest-perf-initrd.sh: $OUT ($(du -h "$OUT" | cut -f1))"
