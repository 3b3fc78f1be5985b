#!/bin/sh
# Block I/O figures on /dev/vda for bench/blk.sh: sequential 1 MiB and random 4 KiB, reads and writes.
secs=5
for arg in $(cat /proc/cmdline); do
	case $arg in moat.blksecs=*) secs=${arg#moat.blksecs=} ;; esac
done
for t in "seqread 1048576" "seqwrite 1048576" "randread 4096" "randwrite 4096"; do
	set -- $t
	echo "BLKIO $(blkio /dev/vda "$1" "$2" "$secs" 2>&1)"
done
echo "BLKBENCH_DONE"
