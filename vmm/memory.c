#include "vmm/memory.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <unistd.h>

void gm_init(struct guest_memory *gm)
{
	memset(gm, 0, sizeof(*gm));
	gm->fd = -1;
}

int gm_add_region(struct guest_memory *gm, uint64_t gpa, uint64_t size)
{
	if (gm->nregions >= GM_MAX_REGIONS || size == 0 || gm->base)
		return -EINVAL;
	if (gpa + size < gpa)
		return -EOVERFLOW;
	if (gm->nregions) {
		const struct gm_region *prev = &gm->regions[gm->nregions - 1];
		if (gpa < prev->gpa + prev->size)
			return -EINVAL;
	}
	gm->regions[gm->nregions].gpa = gpa;
	gm->regions[gm->nregions].size = size;
	gm->regions[gm->nregions].fd_offset = gm->total;
	gm->nregions++;
	gm->total += size;
	return 0;
}

static void gm_place(struct guest_memory *gm, uint8_t *base)
{
	gm->base = base;
	for (unsigned int i = 0; i < gm->nregions; i++)
		gm->regions[i].host = base + gm->regions[i].fd_offset;
}

int gm_alloc(struct guest_memory *gm)
{
	void *p;
	int fd;

	if (!gm->nregions || gm->base)
		return -EINVAL;
	fd = memfd_create("moat-guest-ram", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)gm->total) < 0) {
		int err = -errno;
		close(fd);
		return err;
	}
	p = mmap(NULL, gm->total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
	if (p == MAP_FAILED) {
		int err = -errno;
		close(fd);
		return err;
	}
	/* Guest RAM should not end up in moat's core dumps. */
	madvise(p, gm->total, MADV_DONTDUMP);
	gm->fd = fd;
	gm_place(gm, p);
	return 0;
}

int gm_attach(struct guest_memory *gm, void *buf, uint64_t len)
{
	if (!gm->nregions || gm->base || len < gm->total)
		return -EINVAL;
	gm_place(gm, buf);
	gm->fd = -1;
	return 0;
}

void gm_free(struct guest_memory *gm)
{
	if (gm->base && gm->fd >= 0)
		munmap(gm->base, gm->total);
	if (gm->fd >= 0)
		close(gm->fd);
	gm_init(gm);
}

void *gm_ptr(const struct guest_memory *gm, uint64_t gpa, uint64_t len)
{
	uint64_t end;

	if (!gm->base || __builtin_add_overflow(gpa, len, &end))
		return NULL;
	for (unsigned int i = 0; i < gm->nregions; i++) {
		const struct gm_region *r = &gm->regions[i];
		if (gpa >= r->gpa && end <= r->gpa + r->size && gpa < r->gpa + r->size)
			return r->host + (gpa - r->gpa);
	}
	return NULL;
}

int gm_read(const struct guest_memory *gm, uint64_t gpa, void *dst, uint64_t len)
{
	const void *p = gm_ptr(gm, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(dst, p, len);
	return 0;
}

int gm_write(const struct guest_memory *gm, uint64_t gpa, const void *src, uint64_t len)
{
	void *p = gm_ptr(gm, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(p, src, len);
	return 0;
}

static const struct gm_region *gm_region_of(const struct guest_memory *gm, uint64_t gpa, uint64_t len)
{
	uint64_t end;

	if (__builtin_add_overflow(gpa, len, &end))
		return NULL;
	for (unsigned int i = 0; i < gm->nregions; i++) {
		const struct gm_region *r = &gm->regions[i];
		if (gpa >= r->gpa && gpa < r->gpa + r->size && end <= r->gpa + r->size)
			return r;
	}
	return NULL;
}

int gm_load_fd(const struct guest_memory *gm, uint64_t gpa, int fd, uint64_t off, uint64_t len)
{
	const struct gm_region *r = gm_region_of(gm, gpa, len);
	uint8_t *dst;
	uint64_t done = 0;

	if (!r || !gm->base)
		return -EFAULT;
	dst = r->host + (gpa - r->gpa);
	if (gm->fd >= 0) {
		/* Kernel-side copy into the memfd: spares a user page fault per 4 KiB page. */
		loff_t in = (loff_t)off, out = (loff_t)(r->fd_offset + (gpa - r->gpa));
		while (done < len) {
			ssize_t n = copy_file_range(fd, &in, gm->fd, &out, len - done, 0);
			if (n <= 0)
				break;
			done += (uint64_t)n;
		}
		/* Across file systems copy_file_range says EXDEV; sendfile still copies in the kernel. */
		if (done < len && lseek(gm->fd, out, SEEK_SET) == out) {
			while (done < len) {
				ssize_t n = sendfile(gm->fd, fd, &in, len - done);
				if (n <= 0)
					break;
				done += (uint64_t)n;
			}
		}
	}
	while (done < len) {
		ssize_t n = pread(fd, dst + done, len - done, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		done += (uint64_t)n;
	}
	return 0;
}

int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned int shift = 0;

	if (!s || !*s || *s == '-' || *s == '+')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case '\0': break;
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	default: return -EINVAL;
	}
	if (*end == 'i' || *end == 'B')
		end += (*end == 'i' && end[1] == 'B') ? 2 : 1;
	if (*end)
		return -EINVAL;
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = (uint64_t)v << shift;
	return 0;
}
