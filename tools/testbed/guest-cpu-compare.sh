#!/usr/bin/env bash
# The guest's view of its CPU under moat and under QEMU (-cpu host), same kernel and initramfs, run where KVM
# can boot Linux (inside the test bed's L1: tools/testbed/run-l1.sh -- tools/testbed/guest-cpu-compare.sh).
# Prints each guest's CPU flags and FPU/XSAVE boot lines (the guest scenario tests/e2e/guest/cpuinfo.sh) and
# the flags only one of them has. A diagnostic: it checks nothing.
set -u
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IMG=$REPO/build/guest/x86_64
MOAT=${MOAT:-$REPO/build/moat}
CMDLINE="console=ttyS0 quiet panic=-1 moat.scenario=cpuinfo"
W=$(mktemp -d "${TMPDIR:-/tmp}/moat-cpu.XXXXXX")
q=
cleanup() {
	if [ -n "$q" ] && kill -0 "$q" 2>/dev/null; then kill -KILL "$q"; wait "$q" 2>/dev/null; fi
	rm -rf "$W"
}
trap cleanup EXIT
[ -e /dev/kvm ] || { echo "guest-cpu-compare: no /dev/kvm here; run it inside the test bed's L1" >&2; exit 1; }
"$MOAT" --kernel "$IMG/vmlinuz" --initrd "$IMG/initramfs.cpio.gz" --cmdline "$CMDLINE" \
	--console "file:$W/moat.con" --timeout 120 </dev/null 2>"$W/moat.err" || echo "moat exit status $?"
qemu-system-x86_64 -enable-kvm -M q35 -cpu host -m 512 -smp 1 -nodefaults -no-user-config -display none \
	-vga none -no-reboot -kernel "$IMG/vmlinuz" -initrd "$IMG/initramfs.cpio.gz" -append "$CMDLINE" \
	-serial "file:$W/qemu.con" </dev/null 2>"$W/qemu.err" &
q=$!
for _ in $(seq 120); do grep -q 'scenario cpuinfo returned' "$W/qemu.con" 2>/dev/null && break; sleep 1; done
for v in moat qemu; do
	tr -d '\r' <"$W/$v.con" | grep -E '^CPU_' | sed "s/^/$v: /"
	tr -d '\r' <"$W/$v.con" | sed -n 's/^CPU_FLAGS=//p' | tr ' ' '\n' | sed '/^$/d' | sort >"$W/$v.flags"
done
echo "only moat: $(comm -23 "$W/moat.flags" "$W/qemu.flags" | tr '\n' ' ')"
echo "only qemu: $(comm -13 "$W/moat.flags" "$W/qemu.flags" | tr '\n' ' ')"
