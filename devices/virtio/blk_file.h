/*
 * The disk behind virtio-blk: a raw image file or a host block device, driven with plain
 * syscalls (preadv, pwritev, fdatasync, fallocate) on the device's worker thread.
 */
#ifndef MOAT_VIRTIO_BLK_FILE_H
#define MOAT_VIRTIO_BLK_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct blk_file {
	int fd;
	uint64_t size; /* bytes, >= 512 */
	bool punch;    /* a writable regular file whose file system frees blocks (PUNCH_HOLE) */
};

/*
 * Open path read-write (read-only if readonly) and size it. Refuses what is not a regular file
 * or block device, and anything under 512 bytes. err names the path and the fix.
 */
int blk_file_open(struct blk_file *f, const char *path, bool readonly, char *err, size_t errlen)
	__attribute__((warn_unused_result));
void blk_file_close(struct blk_file *f);

/* All of iov at pos, across short transfers and EINTR (iov is consumed). -EIO at end of file. */
int blk_file_rw(const struct blk_file *f, struct iovec *iov, unsigned int n, uint64_t pos, bool write)
	__attribute__((warn_unused_result));
int blk_file_sync(const struct blk_file *f) __attribute__((warn_unused_result));
/* Free [off, off+len) where the file system can; a hint, so "cannot" is not an error. */
int blk_file_discard(const struct blk_file *f, uint64_t off, uint64_t len) __attribute__((warn_unused_result));
/* Make [off, off+len) read back as zeros; unmap allows freeing the blocks. */
int blk_file_zero(const struct blk_file *f, uint64_t off, uint64_t len, bool unmap)
	__attribute__((warn_unused_result));

#endif
