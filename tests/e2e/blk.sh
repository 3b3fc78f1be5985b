#!/usr/bin/env bash
# virtio-blk end to end: a writable disk the guest formats as ext4 and writes a file to, checked afterwards in
# the image with debugfs; a read-only disk whose writes the guest must see refused and whose content must be
# unchanged.
#
#   tests/e2e/blk.sh MOAT KERNEL INITRD CMDLINE [MOAT_ARGS...]
set -euo pipefail

command -v debugfs >/dev/null 2>&1 || { echo "blk check failed: no debugfs (e2fsprogs) here"; exit 1; }
MOAT_BIN=$1 KERNEL=$2 INITRD=$3 CMDLINE=$4
shift 4
# Extra arguments: moat options, and cmdline+=STR for the guest (tests/e2e/lib.sh).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
device_args "$@"
W=$(mktemp -d "${TMPDIR:-/tmp}/moat-blk.XXXXXX")
RM_ONEFS=()
if rm --help 2>&1 | grep -q -- --one-file-system; then RM_ONEFS=(--one-file-system); fi # not in busybox
cleanup() { rm -rf ${RM_ONEFS[@]+"${RM_ONEFS[@]}"} "$W"; }
trap cleanup EXIT

truncate -s 64M "$W/rw.img"
head -c 1048576 /dev/urandom >"$W/ro.img"
ro_sum=$(sha256sum "$W/ro.img" | cut -d' ' -f1)

rc=0
timeout -k 5 240 "$MOAT_BIN" --kernel "$KERNEL" --initrd "$INITRD" --memory 512M \
	--disk "path=$W/rw.img" --disk "path=$W/ro.img,readonly=on" ${EXTRA[@]+"${EXTRA[@]}"} \
	--cmdline "$CMDLINE moat.scenario=blk" --console "file:$W/console" </dev/null 2>"$W/err" || rc=$?
tr -d '\r' <"$W/console" | grep -E '^(DISK|DATA_|RO_|BLK_|MOAT_INIT_OK|IOMMU_)' || true
fail=()
[ "$rc" = 0 ] || fail+=("moat exit status $rc, expected 0; stderr: $(tail -n 3 "$W/err" | tr '\n' ' ')")
grep -q BLK_DONE "$W/console" || fail+=("the guest did not finish (no BLK_DONE)")
guest_sum=$(tr -d '\r' <"$W/console" | sed -n 's/^DATA_SHA256=//p' | head -n 1)
if [ -n "$guest_sum" ]; then
	host_sum=$(debugfs -R "cat /data" "$W/rw.img" 2>"$W/debugfs.err" | sha256sum | cut -d' ' -f1)
	echo "file written by the guest: guest sha256 $guest_sum, read back from the image with debugfs $host_sum"
	[ "$guest_sum" = "$host_sum" ] ||
		fail+=("the file in the image does not match what the guest wrote; debugfs: $(grep -v '^debugfs [0-9]' \
			"$W/debugfs.err" | tail -n 2 | tr '\n' ' ')")
else
	fail+=("the guest printed no DATA_SHA256")
fi
grep -q RO_WRITE_REFUSED "$W/console" || fail+=("a write to the read-only disk was not refused")
grep -q "RO_SHA256=$ro_sum" "$W/console" || fail+=("the guest read different data from the read-only disk")
[ "$(sha256sum "$W/ro.img" | cut -d' ' -f1)" = "$ro_sum" ] || fail+=("the read-only image changed")
check_iommu "$W/console" "$W/err"
for s in 'Kernel panic' 'Call Trace' BLK_FAIL; do
	! grep -q "$s" "$W/console" || fail+=("console has '$s'")
done
if [ ${#fail[@]} -gt 0 ]; then
	printf 'blk check failed: %s\n' "${fail[@]}"
	echo "--- last console lines"
	tail -n 20 "$W/console" | tr -d '\r'
	exit 1
fi
echo "blk check passed"
