#include "devices/virtio/blk_file.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmm/log.h"

#define SECTOR 512u

static int open_error(const char *path, bool readonly, int e, char *err, size_t errlen)
{
	if (e == ENOENT)
		return set_err(err, errlen, -e, "disk image '%s' does not exist; check path= in --disk", path);
	if ((e == EACCES || e == EPERM) && !readonly)
		return set_err(err, errlen, -e,
			       "no permission to open disk image '%s' for writing; fix its permissions or add "
			       "readonly=on to --disk",
			       path);
	if (e == EACCES || e == EPERM)
		return set_err(err, errlen, -e, "no permission to read disk image '%s'; fix its permissions", path);
	if (e == EROFS || e == ETXTBSY)
		return set_err(err, errlen, -e, "disk image '%s' cannot be written (%s); add readonly=on to --disk",
			       path, strerror(e));
	return set_err(err, errlen, -e, "cannot open disk image '%s': %s; give a disk image file or block device",
		       path, strerror(e));
}

/*
 * Can the file system punch holes? Asked past the end of the file with KEEP_SIZE, where there is
 * no data to lose and the size stays: file systems that can return 0 without touching anything.
 */
static bool can_punch_holes(int fd, uint64_t size)
{
	return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)size, SECTOR) == 0;
}

static int size_of(struct blk_file *f, const char *path, bool readonly, char *err, size_t errlen)
{
	struct stat st;

	if (fstat(f->fd, &st))
		return set_err(err, errlen, -errno, "cannot stat disk image '%s': %s", path, strerror(errno));
	if (S_ISREG(st.st_mode)) {
		f->size = (uint64_t)st.st_size;
	} else if (S_ISBLK(st.st_mode)) {
		if (ioctl(f->fd, BLKGETSIZE64, &f->size))
			return set_err(err, errlen, -errno, "cannot read the size of block device '%s': %s", path,
				       strerror(errno));
	} else {
		return set_err(err, errlen, -EINVAL,
			       "'%s' is not a regular file or a block device; give a disk image file", path);
	}
	if (f->size < SECTOR)
		return set_err(err, errlen, -EINVAL,
			       "disk image '%s' is smaller than one 512-byte sector (%llu bytes); grow it, e.g. "
			       "truncate -s 1G '%s'",
			       path, (unsigned long long)f->size, path);
	f->punch = !readonly && S_ISREG(st.st_mode) && can_punch_holes(f->fd, f->size);
	return 0;
}

int blk_file_open(struct blk_file *f, const char *path, bool readonly, char *err, size_t errlen)
{
	/* O_NONBLOCK: a FIFO given by mistake must not hang the open; cleared once the type is known. */
	int flags = (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
	int r;

	memset(f, 0, sizeof(*f));
	f->fd = open(path, flags);
	if (f->fd < 0)
		return open_error(path, readonly, errno, err, errlen);
	r = size_of(f, path, readonly, err, errlen);
	if (!r && fcntl(f->fd, F_SETFL, fcntl(f->fd, F_GETFL) & ~O_NONBLOCK))
		r = set_err(err, errlen, -errno, "cannot set up disk image '%s': %s", path, strerror(errno));
	if (r) {
		close(f->fd);
		f->fd = -1;
	}
	return r;
}

void blk_file_close(struct blk_file *f)
{
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
}

int blk_file_rw(const struct blk_file *f, struct iovec *iov, unsigned int n, uint64_t pos, bool write)
{
	while (n) {
		ssize_t r = write ? pwritev(f->fd, iov, (int)n, (off_t)pos) : preadv(f->fd, iov, (int)n, (off_t)pos);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -EIO; /* end of file inside the disk: the image shrank under us */
		pos += (uint64_t)r;
		while (n && (size_t)r >= iov->iov_len) {
			r -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n) {
			iov->iov_base = (char *)iov->iov_base + r;
			iov->iov_len -= (size_t)r;
		}
	}
	return 0;
}

int blk_file_sync(const struct blk_file *f)
{
	while (fdatasync(f->fd))
		if (errno != EINTR)
			return -errno;
	return 0;
}

static int falloc(const struct blk_file *f, int mode, uint64_t off, uint64_t len)
{
	while (fallocate(f->fd, mode, (off_t)off, (off_t)len))
		if (errno != EINTR)
			return -errno;
	return 0;
}

int blk_file_discard(const struct blk_file *f, uint64_t off, uint64_t len)
{
	int err = falloc(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);

	/* The image moved to a file system without holes since the probe: a discard is only a hint. */
	return err == -EOPNOTSUPP ? 0 : err;
}

/* Zeros by plain writes, for back ends that cannot zero a range in place. */
static int write_zeros(const struct blk_file *f, uint64_t off, uint64_t len)
{
	static const uint8_t zeros[4096]; /* read-only: not mutable state */
	struct iovec iov[16];

	while (len) {
		uint64_t chunk = len < sizeof(zeros) * 16 ? len : sizeof(zeros) * 16, left = chunk;
		unsigned int n = 0;
		int err;

		for (; left; n++) {
			size_t l = left < sizeof(zeros) ? (size_t)left : sizeof(zeros);

			iov[n] = (struct iovec){ .iov_base = (void *)zeros, .iov_len = l };
			left -= l;
		}
		err = blk_file_rw(f, iov, n, off, true);
		if (err)
			return err;
		off += chunk;
		len -= chunk;
	}
	return 0;
}

int blk_file_zero(const struct blk_file *f, uint64_t off, uint64_t len, bool unmap)
{
	int err = -EOPNOTSUPP;

	if (unmap && f->punch)
		err = falloc(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
	if (err == -EOPNOTSUPP)
		err = falloc(f, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len);
	/* No ZERO_RANGE in this file system, or a block device with logical blocks over 512 bytes. */
	if (err == -EOPNOTSUPP || err == -EINVAL)
		err = write_zeros(f, off, len);
	return err;
}
