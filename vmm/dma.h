/*
 * Device DMA: the one way a device model reaches guest memory.
 *
 * Devices see an address space (struct dma_as) of IO virtual addresses. Today the
 * identity implementation maps IOVA == GPA over struct guest_memory; a virtio-iommu
 * plugs in its own ops later without any device changing. translate() returns only
 * the run of bytes that is contiguous in the host, so a caller that needs more loops
 * (dma_read/dma_write do), and IOMMU page boundaries need no special case.
 *
 * Host pointers from translate()/dma_ptr() are valid only until the address space
 * changes (an IOMMU unmap): use them at once, do not cache them. That is also why the
 * virtqueue stores IOVAs and translates on every access.
 */
#ifndef MOAT_DMA_H
#define MOAT_DMA_H

#include <stdint.h>

struct guest_memory;

/* Access the device intends; an IOMMU may allow one and not the other. */
#define DMA_READ 1u  /* device reads guest memory */
#define DMA_WRITE 2u /* device writes guest memory */

struct dma_as;

struct dma_as_ops {
	/*
	 * Translate iova for an access of up to len (> 0) bytes with perm (DMA_READ and/or
	 * DMA_WRITE): on success *host points at iova and *run is the number of bytes,
	 * 1 <= *run <= len, that are contiguous in the host from there with that permission.
	 * -EFAULT if iova is not mapped or the permission is denied.
	 */
	int (*translate)(const struct dma_as *as, uint64_t iova, uint64_t len, unsigned int perm,
			 void **host, uint64_t *run);
};

struct dma_as {
	const struct dma_as_ops *ops;
	void *ctx; /* the implementation's state (struct guest_memory for identity) */
};

/* IOVA == GPA over gm; gm must outlive as. */
void dma_as_init_identity(struct dma_as *as, struct guest_memory *gm);

/*
 * One step of a scatter-gather walk, for handing guest memory to a syscall (preadv/pwritev): *host
 * points at iova and *run, 1 <= *run <= len, is how many bytes from there are contiguous in the host
 * with perm. Use the pointer at once. -EFAULT if iova is unmapped, perm is denied or [iova, iova+len)
 * wraps; -EINVAL for len 0.
 */
int dma_translate(const struct dma_as *as, uint64_t iova, uint64_t len, unsigned int perm, void **host,
		  uint64_t *run) __attribute__((warn_unused_result));
/* Copy [iova, iova+len) to buf, following every contiguous run; -EFAULT if any byte is unmapped. */
int dma_read(const struct dma_as *as, uint64_t iova, void *buf, uint64_t len) __attribute__((warn_unused_result));
/* Copy buf to [iova, iova+len); on -EFAULT a prefix may already have been written. */
int dma_write(const struct dma_as *as, uint64_t iova, const void *buf, uint64_t len)
	__attribute__((warn_unused_result));
/* 0 if every byte of [iova, iova+len) is mapped with perm (len 0 is always fine), else -EFAULT. */
int dma_check(const struct dma_as *as, uint64_t iova, uint64_t len, unsigned int perm)
	__attribute__((warn_unused_result));
/* Host pointer for the whole range if it is one contiguous run allowed for perm, else NULL (also for len 0). */
void *dma_ptr(const struct dma_as *as, uint64_t iova, uint64_t len, unsigned int perm)
	__attribute__((warn_unused_result));

#endif
