#!/bin/sh
# virtio-blk: /dev/vda (writable) gets an ext4 file system and a file of random data whose SHA-256 the host
# checks in the image afterwards; /dev/vdb is read-only: writing must fail and its content must be the host's.
mkfs=/usr/local/sbin/mke2fs # e2fsprogs, not busybox, for ext4
for d in vda vdb; do
	[ -b "/dev/$d" ] || { echo "BLK_FAIL no /dev/$d"; exit 1; }
	grp=$(readlink "$(readlink -f "/sys/block/$d/device")/../iommu_group" 2>/dev/null)
	echo "DISK $d sectors=$(cat /sys/block/$d/size) ro=$(cat /sys/block/$d/ro) IOMMU_GROUP=${grp##*/}"
done
[ -x $mkfs ] || { echo "BLK_FAIL no $mkfs in the image"; exit 1; }
$mkfs -q -F -t ext4 /dev/vda || { echo "BLK_FAIL mke2fs"; exit 1; }
mkdir -p /mnt
mount -t ext4 /dev/vda /mnt || { echo "BLK_FAIL mount"; exit 1; }
dd if=/dev/urandom of=/mnt/data bs=1M count=8 2>/dev/null
sync
echo "DATA_SHA256=$(sha256sum /mnt/data | cut -d' ' -f1)"
umount /mnt || echo "BLK_FAIL umount"
echo "RO_SHA256=$(dd if=/dev/vdb bs=1M count=1 2>/dev/null | sha256sum | cut -d' ' -f1)"
if dd if=/dev/zero of=/dev/vdb bs=4096 count=1 oflag=direct 2>/tmp/ro.err; then
	echo "RO_WRITE_ACCEPTED"
else
	echo "RO_WRITE_REFUSED: $(head -n 1 /tmp/ro.err)"
fi
sync
echo "BLK_DONE"
