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
 *
 * Read-side sections: every translation and the use of what it returned happen inside
 * dma_begin()/dma_end(). An address space that can change (an IOMMU endpoint) makes every
 * unmap wait, before it completes, for the sections that were open when it took effect: so
 * once the guest sees an UNMAP done, no copy through the old translation is still running.
 * The virtqueue opens one per ring operation and per segment copy; a device handing host
 * pointers to a syscall (writev, preadv) opens one from the translations to the syscall's end.
 * Sections never block and may nest; keep them short, since an unmap waits for them. The
 * identity address space has none (the ops are NULL): a test and a branch.
 */
#ifndef MOAT_DMA_H
#define MOAT_DMA_H

#include <pthread.h>
#include <stdbool.h>
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
	/* Optional, both or neither: open a read-side section (returns a token for end) and close it. */
	unsigned int (*begin)(const struct dma_as *as);
	void (*end)(const struct dma_as *as, unsigned int token);
	/*
	 * Optional: a device thread is between two of its requests, outside any section and holding
	 * nothing of the address space. The IOMMU behind it may use the moment to answer requests its
	 * driver is spinning on, when its own thread has lost the CPU to this one. Never blocks.
	 */
	void (*help)(const struct dma_as *as);
};

struct dma_as {
	const struct dma_as_ops *ops;
	void *ctx; /* the implementation's state (struct guest_memory for identity) */
};

/* IOVA == GPA over gm; gm must outlive as. */
void dma_as_init_identity(struct dma_as *as, struct guest_memory *gm);

/* Open a read-side section on as (see above); pass the token to dma_end() on the same thread. */
static inline unsigned int dma_begin(const struct dma_as *as)
{
	return as->ops->begin ? as->ops->begin(as) : 0;
}

static inline void dma_end(const struct dma_as *as, unsigned int token)
{
	if (as->ops->end)
		as->ops->end(as, token);
}

/* Between two requests of a device on as, outside any section (see dma_as_ops.help). */
static inline void dma_help(const struct dma_as *as)
{
	if (as->ops->help)
		as->ops->help(as);
}

/*
 * The machinery behind an address space's sections: two reader counts and an epoch choosing which
 * one new sections join. dma_gate_wait() moves the epoch on and waits until the count of the old
 * one drains, so it waits only for sections opened before it, never for later ones (no starvation
 * by a device that keeps opening sections), and sections never wait at all.
 *
 * Memory order: a section's entry is a seq_cst add, then a seq_cst look at the epoch, before it
 * reads any translation state; the waiter changes that state, then flips the epoch and reads the
 * count (both seq_cst). Either the waiter sees the section (and waits for it) or the section sees
 * the flip, and with it the new state.
 */
struct dma_gate {
	uint32_t epoch;
	uint32_t readers[2]; /* futex words: sections open under epoch parity 0 / 1 */
	pthread_mutex_t wait_lock; /* waiters one at a time, so no flip can skip a parity in use */
};

void dma_gate_init(struct dma_gate *g);
void dma_gate_fini(struct dma_gate *g);

/*
 * Join the sections of epoch e, which the caller has just read: true with *token set, or false (and
 * nothing joined) if the epoch moved on between that read and the join.
 *
 * Why the second look: a section counted under the parity of an epoch that has already been flipped
 * away from is invisible to the waiter that flipped it (it may have read the count first), and the
 * next waiter flips back to that parity and waits for the other one. A thread stalled between
 * reading the epoch and adding itself across two unmaps would then copy through a translation both
 * had taken away. Reading the epoch again after the add (both seq_cst, against the waiter's flip and
 * count read) rules that out: either no flip came between, and every later waiter counts this
 * section, or one did and the section starts again under the new epoch.
 */
static inline bool dma_gate_try_enter(struct dma_gate *g, uint32_t e, unsigned int *token)
{
	unsigned int p = e & 1;

	__atomic_fetch_add(&g->readers[p], 1, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&g->epoch, __ATOMIC_SEQ_CST) != e) {
		__atomic_fetch_sub(&g->readers[p], 1, __ATOMIC_RELEASE);
		return false;
	}
	*token = p;
	return true;
}

static inline unsigned int dma_gate_enter(struct dma_gate *g)
{
	unsigned int token;

	/* Retries only when a waiter flipped the epoch in a window of a few instructions. */
	while (!dma_gate_try_enter(g, __atomic_load_n(&g->epoch, __ATOMIC_SEQ_CST), &token))
		;
	return token;
}

static inline void dma_gate_leave(struct dma_gate *g, unsigned int token)
{
	__atomic_fetch_sub(&g->readers[token & 1], 1, __ATOMIC_RELEASE);
}

/*
 * Wait until every section open when this was called has closed. Call it after the change it
 * guards (page table and caches updated), holding no lock a section's translation takes. Spins
 * briefly, then sleeps in short futex waits (a section doing disk I/O may take a while).
 */
void dma_gate_wait(struct dma_gate *g);

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
