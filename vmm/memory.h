/*
 * Guest physical memory: a few regions laid out back to back in one private anonymous
 * mapping, 2 MiB aligned and advised for transparent huge pages, so KVM can map the guest
 * with 2 MiB stage-2 / NPT blocks (each 4 KiB page faulted in separately is one more exit;
 * shared memory such as a memfd gets huge pages only if the host's administrator enabled
 * them for shmem). Every guest-controlled address that becomes a host pointer goes through
 * gm_ptr(), which checks [gpa, gpa+len) for overflow and for crossing region boundaries in
 * one place.
 */
#ifndef MOAT_MEMORY_H
#define MOAT_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GM_MAX_REGIONS 4

struct gm_region {
	uint64_t gpa;        /* guest-physical start */
	uint64_t size;       /* bytes */
	uint8_t *host;       /* host mapping of the region */
	uint64_t offset;     /* offset of the region in the mapping */
};

struct guest_memory {
	struct gm_region regions[GM_MAX_REGIONS];
	unsigned int nregions;
	uint8_t *base;       /* one mapping holding every region */
	uint64_t total;      /* bytes of RAM */
	uint64_t map_len;    /* bytes gm_alloc() mapped at base (0: the caller's buffer) */
};

/* Describe the layout before allocation: regions must be sorted and must not overlap. */
int gm_add_region(struct guest_memory *gm, uint64_t gpa, uint64_t size) __attribute__((warn_unused_result));
/* Map the guest's RAM (zeroed, faulted in on first touch); regions keep their gpa. */
int gm_alloc(struct guest_memory *gm) __attribute__((warn_unused_result));
/* Use caller-provided host memory (for tests); regions are laid out back to back in buf. */
int gm_attach(struct guest_memory *gm, void *buf, uint64_t len) __attribute__((warn_unused_result));
void gm_init(struct guest_memory *gm);
void gm_free(struct guest_memory *gm);

/* Host pointer for [gpa, gpa+len) if it lies wholly inside one region, else NULL. */
void *gm_ptr(const struct guest_memory *gm, uint64_t gpa, uint64_t len);
/* Copy in/out; -EFAULT if the range is not wholly inside one region. */
int gm_read(const struct guest_memory *gm, uint64_t gpa, void *dst, uint64_t len) __attribute__((warn_unused_result));
int gm_write(const struct guest_memory *gm, uint64_t gpa, const void *src, uint64_t len) __attribute__((warn_unused_result));

/* Read len bytes at file offset off of fd into guest memory at gpa. -EFAULT if the range is not RAM. */
int gm_load_fd(const struct guest_memory *gm, uint64_t gpa, int fd, uint64_t off, uint64_t len)
	__attribute__((warn_unused_result));

/* Parse "512M", "2G", "1048576K", "123456" (bytes). */
int parse_size(const char *s, uint64_t *out);

#endif
