#include "vmm/memory.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

void gm_init(struct guest_memory *gm)
{
	memset(gm, 0, sizeof(*gm));
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
	gm->regions[gm->nregions].offset = gm->total;
	gm->nregions++;
	gm->total += size;
	return 0;
}

static void gm_place(struct guest_memory *gm, uint8_t *base)
{
	gm->base = base;
	for (unsigned int i = 0; i < gm->nregions; i++)
		gm->regions[i].host = base + gm->regions[i].offset;
}

/* Stage-2 (and NPT) block size that transparent huge pages let KVM use. */
#define GM_HUGE_ALIGN (2ull << 20)

int gm_alloc(struct guest_memory *gm)
{
	uint64_t len;
	uint8_t *p, *base;

	if (!gm->nregions || gm->base)
		return -EINVAL;
	/* Over-map by one block and trim, so the RAM starts on a 2 MiB boundary like its gpa. */
	if (__builtin_add_overflow(gm->total, GM_HUGE_ALIGN, &len))
		return -ENOMEM;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	base = (uint8_t *)(((uintptr_t)p + GM_HUGE_ALIGN - 1) & ~(uintptr_t)(GM_HUGE_ALIGN - 1));
	if (base > p)
		munmap(p, (size_t)(base - p));
	if (p + len > base + gm->total)
		munmap(base + gm->total, (size_t)(p + len - (base + gm->total)));
	/* Advice only: without huge pages the guest still runs, with more faults. */
	madvise(base, gm->total, MADV_HUGEPAGE);
	/* Guest RAM should not end up in moat's core dumps. */
	madvise(base, gm->total, MADV_DONTDUMP);
	gm->map_len = gm->total;
	gm_place(gm, base);
	return 0;
}

int gm_attach(struct guest_memory *gm, void *buf, uint64_t len)
{
	if (!gm->nregions || gm->base || len < gm->total)
		return -EINVAL;
	gm_place(gm, buf);
	gm->map_len = 0;
	return 0;
}

void gm_free(struct guest_memory *gm)
{
	if (gm->base && gm->map_len)
		munmap(gm->base, gm->map_len);
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
