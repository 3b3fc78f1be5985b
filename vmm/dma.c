#include "vmm/dma.h"

#include <errno.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "vmm/memory.h"

static int identity_translate(const struct dma_as *as, uint64_t iova, uint64_t len, unsigned int perm,
			      void **host, uint64_t *run)
{
	const struct guest_memory *gm = as->ctx;

	/* Guest RAM is read-write for devices, so perm needs no check here. */
	for (unsigned int i = 0; i < gm->nregions; i++) {
		const struct gm_region *r = &gm->regions[i];
		uint64_t left;
		void *p;

		if (iova < r->gpa || iova - r->gpa >= r->size)
			continue;
		left = r->size - (iova - r->gpa);
		*run = len < left ? len : left;
		/* GUEST: gm_ptr re-checks [iova, iova+run) for overflow and for lying in this region. */
		p = gm_ptr(gm, iova, *run);
		if (!p)
			return -EFAULT;
		*host = p;
		return 0;
	}
	return -EFAULT;
}

static const struct dma_as_ops identity_ops = {
	.translate = identity_translate,
};

void dma_as_init_identity(struct dma_as *as, struct guest_memory *gm)
{
	as->ops = &identity_ops;
	as->ctx = gm;
}

/* One translation step with the contract enforced, so a buggy IOMMU backend cannot overrun. */
static int dma_step(const struct dma_as *as, uint64_t iova, uint64_t len, unsigned int perm, void **host,
		    uint64_t *run)
{
	int err = as->ops->translate(as, iova, len, perm, host, run);

	if (err)
		return err < 0 ? err : -EFAULT;
	if (*run == 0 || *run > len || !*host)
		return -EFAULT;
	return 0;
}

/* Reject ranges that wrap before translating anything: a wrapped range is never valid DMA. */
static int dma_range_ok(uint64_t iova, uint64_t len)
{
	uint64_t end;

	return len == 0 || !__builtin_add_overflow(iova, len - 1, &end);
}

int dma_translate(const struct dma_as *as, uint64_t iova, uint64_t len, unsigned int perm, void **host,
		  uint64_t *run)
{
	if (len == 0)
		return -EINVAL;
	if (!dma_range_ok(iova, len))
		return -EFAULT;
	return dma_step(as, iova, len, perm, host, run);
}

int dma_read(const struct dma_as *as, uint64_t iova, void *buf, uint64_t len)
{
	uint8_t *dst = buf;

	if (!dma_range_ok(iova, len))
		return -EFAULT;
	while (len) {
		void *p;
		uint64_t run;
		int err = dma_step(as, iova, len, DMA_READ, &p, &run);

		if (err)
			return err;
		memcpy(dst, p, run);
		dst += run;
		iova += run;
		len -= run;
	}
	return 0;
}

int dma_write(const struct dma_as *as, uint64_t iova, const void *buf, uint64_t len)
{
	const uint8_t *src = buf;

	if (!dma_range_ok(iova, len))
		return -EFAULT;
	while (len) {
		void *p;
		uint64_t run;
		int err = dma_step(as, iova, len, DMA_WRITE, &p, &run);

		if (err)
			return err;
		memcpy(p, src, run);
		src += run;
		iova += run;
		len -= run;
	}
	return 0;
}

int dma_check(const struct dma_as *as, uint64_t iova, uint64_t len, unsigned int perm)
{
	if (!dma_range_ok(iova, len))
		return -EFAULT;
	while (len) {
		void *p;
		uint64_t run;
		int err = dma_step(as, iova, len, perm, &p, &run);

		if (err)
			return err;
		iova += run;
		len -= run;
	}
	return 0;
}

void *dma_ptr(const struct dma_as *as, uint64_t iova, uint64_t len, unsigned int perm)
{
	void *p;
	uint64_t run;

	if (len == 0 || !dma_range_ok(iova, len) || dma_step(as, iova, len, perm, &p, &run) || run != len)
		return NULL;
	return p;
}

void dma_gate_init(struct dma_gate *g)
{
	g->epoch = 0;
	g->readers[0] = g->readers[1] = 0;
	pthread_mutex_init(&g->wait_lock, NULL);
}

void dma_gate_fini(struct dma_gate *g)
{
	pthread_mutex_destroy(&g->wait_lock);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

/* Iterations of busy waiting before sleeping: a section copying one packet ends in microseconds. */
#define GATE_SPINS 2000

void dma_gate_wait(struct dma_gate *g)
{
	/* Short naps, not a wake-up from the reader: its exit stays one atomic, and no wake is lost. */
	const struct timespec nap = { .tv_sec = 0, .tv_nsec = 50 * 1000 };
	unsigned int old, spins = 0;
	uint32_t n;

	pthread_mutex_lock(&g->wait_lock);
	old = __atomic_fetch_add(&g->epoch, 1, __ATOMIC_SEQ_CST) & 1;
	/* The flip is a full barrier: the change made before it is visible to sections that miss it. */
	while ((n = __atomic_load_n(&g->readers[old], __ATOMIC_SEQ_CST)) != 0) {
		if (spins++ < GATE_SPINS) {
			cpu_relax();
			continue;
		}
		/* EAGAIN (the count moved), ETIMEDOUT and EINTR all mean: look again. */
		syscall(SYS_futex, &g->readers[old], FUTEX_WAIT_PRIVATE, n, &nap, NULL, 0);
	}
	pthread_mutex_unlock(&g->wait_lock);
}
