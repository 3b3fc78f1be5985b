#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmm/dma.h"
#include "vmm/memory.h"

/* R0 [0, 64K) and R1 [64K, 128K) back to back, a hole, R2 [1M, 1M+64K). */
#define R1 0x10000ull
#define R2 0x100000ull
#define RSZ 0x10000ull

struct fixture {
	struct guest_memory gm;
	struct dma_as as;
	uint8_t *ram;
};

static void fx_init(struct fixture *f)
{
	gm_init(&f->gm);
	cr_assert_eq(gm_add_region(&f->gm, 0, RSZ), 0);
	cr_assert_eq(gm_add_region(&f->gm, R1, RSZ), 0);
	cr_assert_eq(gm_add_region(&f->gm, R2, RSZ), 0);
	f->ram = calloc(1, 3 * RSZ);
	cr_assert_not_null(f->ram);
	cr_assert_eq(gm_attach(&f->gm, f->ram, 3 * RSZ), 0);
	dma_as_init_identity(&f->as, &f->gm);
}

Test(dma, identity_read_write_in_one_region)
{
	struct fixture f;
	uint8_t out[8] = { 1, 2, 3, 4, 5, 6, 7, 8 }, in[8] = { 0 };

	fx_init(&f);
	cr_assert_eq(dma_write(&f.as, R2 + 100, out, sizeof(out)), 0);
	cr_assert_eq(memcmp(f.ram + 2 * RSZ + 100, out, sizeof(out)), 0, "R2 lands after R0 and R1 in the buffer");
	cr_assert_eq(dma_read(&f.as, R2 + 100, in, sizeof(in)), 0);
	cr_assert_eq(memcmp(in, out, sizeof(in)), 0);
	cr_assert_eq(dma_ptr(&f.as, R2 + 100, 8, DMA_READ | DMA_WRITE), f.ram + 2 * RSZ + 100);
	cr_assert_eq(dma_ptr(&f.as, 0, RSZ, DMA_READ), f.ram, "a whole region is one run");
	free(f.ram);
}

Test(dma, copies_split_across_regions_but_ptr_does_not)
{
	struct fixture f;
	uint8_t out[64], in[64];

	fx_init(&f);
	for (unsigned int i = 0; i < sizeof(out); i++)
		out[i] = (uint8_t)(0xa0 + i);
	cr_assert_eq(dma_write(&f.as, R1 - 10, out, sizeof(out)), 0);
	cr_assert_eq(memcmp(f.ram + R1 - 10, out, sizeof(out)), 0);
	memset(in, 0, sizeof(in));
	cr_assert_eq(dma_read(&f.as, R1 - 10, in, sizeof(in)), 0);
	cr_assert_eq(memcmp(in, out, sizeof(in)), 0);
	cr_assert_null(dma_ptr(&f.as, R1 - 10, sizeof(out), DMA_READ), "spans two regions");
	cr_assert_null(dma_ptr(&f.as, R1 - 1, 2, DMA_READ));
	cr_assert_not_null(dma_ptr(&f.as, R1 - 1, 1, DMA_READ));
	cr_assert_eq(dma_check(&f.as, 0, 2 * RSZ, DMA_READ), 0, "R0+R1 are contiguous in GPA");
	free(f.ram);
}

Test(dma, rejects_hole_beyond_ram_and_overflow)
{
	struct fixture f;
	uint8_t b[16] = { 0 };

	fx_init(&f);
	cr_assert_eq(dma_read(&f.as, 2 * RSZ, b, 1), -EFAULT, "first byte of the hole");
	cr_assert_eq(dma_read(&f.as, 2 * RSZ - 4, b, 8), -EFAULT, "runs from R1 into the hole");
	cr_assert_eq(dma_write(&f.as, R2 - 4, b, 8), -EFAULT, "runs from the hole into R2");
	cr_assert_eq(dma_read(&f.as, R2 + RSZ - 4, b, 8), -EFAULT, "runs past the end of RAM");
	cr_assert_eq(dma_read(&f.as, 0x40000000, b, 1), -EFAULT, "far beyond RAM");
	cr_assert_eq(dma_read(&f.as, UINT64_MAX - 3, b, 8), -EFAULT, "iova+len wraps");
	cr_assert_eq(dma_read(&f.as, 8, b, UINT64_MAX), -EFAULT, "len wraps");
	cr_assert_eq(dma_check(&f.as, 0, 3 * RSZ, DMA_READ), -EFAULT, "covers the hole");
	cr_assert_null(dma_ptr(&f.as, UINT64_MAX, 2, DMA_READ));
	cr_assert_null(dma_ptr(&f.as, R2, 0, DMA_READ), "len 0 has no pointer");
	cr_assert_eq(dma_read(&f.as, 2 * RSZ, b, 0), 0, "len 0 touches nothing");
	cr_assert_eq(dma_check(&f.as, UINT64_MAX, 1, DMA_READ), -EFAULT);
	free(f.ram);
}

/*
 * A stand-in IOMMU: 4 KiB IOVA pages 0..3 map to scattered host pages with their own
 * permissions. Shows the ops are enough for an IOMMU and that callers split correctly.
 */
#define PG 4096u
struct fake_iommu {
	uint8_t *page[4];
	unsigned int perm[4];
	int bug; /* 1: report run 0, 2: report run > len */
};

static int fake_translate(const struct dma_as *as, uint64_t iova, uint64_t len, unsigned int perm, void **host,
			  uint64_t *run)
{
	struct fake_iommu *m = as->ctx;
	uint64_t pfn = iova / PG, left;

	if (pfn >= 4 || !m->page[pfn] || (perm & ~m->perm[pfn]))
		return -EFAULT;
	left = PG - iova % PG;
	*run = len < left ? len : left;
	if (m->bug == 1)
		*run = 0;
	if (m->bug == 2)
		*run = len + 1;
	*host = m->page[pfn] + iova % PG;
	return 0;
}

static const struct dma_as_ops fake_ops = { .translate = fake_translate };

Test(dma, iommu_backend_pages_are_split_and_permissions_hold)
{
	static uint8_t host[8 * PG] __attribute__((aligned(4096)));
	struct fake_iommu m = { 0 };
	struct dma_as as = { .ops = &fake_ops, .ctx = &m };
	uint8_t out[3 * PG], in[3 * PG];

	/* IOVA page i -> host page 6 - 2i, so contiguous IOVAs are far apart in the host. */
	for (unsigned int i = 0; i < 4; i++) {
		m.page[i] = host + (6 - 2 * i) * PG;
		m.perm[i] = DMA_READ | DMA_WRITE;
	}
	for (unsigned int i = 0; i < sizeof(out); i++)
		out[i] = (uint8_t)(i * 7);
	cr_assert_eq(dma_write(&as, PG / 2, out, sizeof(out)), 0);
	cr_assert_eq(memcmp(m.page[0] + PG / 2, out, PG / 2), 0);
	cr_assert_eq(memcmp(m.page[1], out + PG / 2, PG), 0);
	cr_assert_eq(memcmp(m.page[3], out + PG / 2 + 2 * PG, PG / 2), 0);
	cr_assert_eq(dma_read(&as, PG / 2, in, sizeof(in)), 0);
	cr_assert_eq(memcmp(in, out, sizeof(in)), 0);
	cr_assert_null(dma_ptr(&as, PG - 2, 4, DMA_READ), "crosses an IOVA page");
	cr_assert_eq(dma_ptr(&as, PG + 8, 8, DMA_READ), m.page[1] + 8);

	m.perm[2] = DMA_READ; /* read-only mapping */
	cr_assert_eq(dma_read(&as, 0, in, sizeof(in)), 0);
	cr_assert_eq(dma_write(&as, 0, out, sizeof(out)), -EFAULT);
	cr_assert_null(dma_ptr(&as, 2 * PG, 4, DMA_WRITE));
	cr_assert_not_null(dma_ptr(&as, 2 * PG, 4, DMA_READ));
	cr_assert_eq(dma_check(&as, 2 * PG, 4, DMA_READ | DMA_WRITE), -EFAULT);
	m.page[3] = NULL; /* unmapped */
	cr_assert_eq(dma_read(&as, 3 * PG - 1, in, 2), -EFAULT);

	m.bug = 1;
	cr_assert_eq(dma_read(&as, 0, in, 4), -EFAULT, "a backend reporting no progress cannot hang us");
	m.bug = 2;
	cr_assert_eq(dma_read(&as, 0, in, 4), -EFAULT, "nor overrun the caller's buffer");
	cr_assert_null(dma_ptr(&as, 0, 4, DMA_READ));
}

Test(dma, translate_returns_one_contiguous_run)
{
	struct fixture f;
	static uint8_t host[4 * PG] __attribute__((aligned(4096)));
	struct fake_iommu m = { .page = { host + 2 * PG, host }, .perm = { DMA_READ | DMA_WRITE, DMA_READ } };
	struct dma_as as = { .ops = &fake_ops, .ctx = &m };
	void *p = NULL;
	uint64_t run = 0;

	fx_init(&f);
	cr_assert_eq(dma_translate(&f.as, R1 - 10, 64, DMA_WRITE, &p, &run), 0);
	cr_assert_eq(p, f.ram + R1 - 10);
	cr_assert_eq(run, 10, "stops at the R0/R1 boundary: the regions are separate host ranges");
	cr_assert_eq(dma_translate(&f.as, R2, 100, DMA_READ, &p, &run), 0);
	cr_assert_eq(run, 100, "never more than asked for");
	cr_assert_eq(dma_translate(&f.as, 2 * RSZ, 1, DMA_READ, &p, &run), -EFAULT, "hole");
	cr_assert_eq(dma_translate(&f.as, UINT64_MAX - 3, 8, DMA_READ, &p, &run), -EFAULT, "wraps");
	cr_assert_eq(dma_translate(&f.as, 0, 0, DMA_READ, &p, &run), -EINVAL, "len 0");
	free(f.ram);

	cr_assert_eq(dma_translate(&as, PG - 8, 64, DMA_READ, &p, &run), 0);
	cr_assert_eq(p, host + 3 * PG - 8);
	cr_assert_eq(run, 8, "stops at the IOVA page boundary");
	cr_assert_eq(dma_translate(&as, PG, 8, DMA_WRITE, &p, &run), -EFAULT, "read-only page");
	m.bug = 2;
	cr_assert_eq(dma_translate(&as, 0, 4, DMA_READ, &p, &run), -EFAULT, "a run longer than asked is refused");
}

Test(dma, identity_has_no_sections)
{
	struct fixture f;

	fx_init(&f);
	cr_assert_null(f.as.ops->begin, "guest memory as is never changes: nothing to wait for");
	cr_assert_null(f.as.ops->end);
	dma_end(&f.as, dma_begin(&f.as));
	free(f.ram);
}

struct gate_waiter {
	struct dma_gate *g;
	int done;
};

static void *gate_wait_thread(void *arg)
{
	struct gate_waiter *w = arg;

	dma_gate_wait(w->g);
	__atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

Test(dma, gate_waits_for_older_sections_only)
{
	struct dma_gate g;
	struct gate_waiter w = { .g = &g };
	unsigned int old, young;
	uint32_t epoch;
	pthread_t th;

	dma_gate_init(&g);
	dma_gate_wait(&g); /* nobody inside: returns at once */
	old = dma_gate_enter(&g);
	epoch = __atomic_load_n(&g.epoch, __ATOMIC_ACQUIRE);
	cr_assert_eq(pthread_create(&th, NULL, gate_wait_thread, &w), 0);
	/* Once the waiter has moved the epoch on, a new section does not hold it up. */
	while (__atomic_load_n(&g.epoch, __ATOMIC_ACQUIRE) == epoch)
		sched_yield();
	young = dma_gate_enter(&g);
	cr_assert_neq(young, old);
	usleep(20 * 1000);
	cr_assert_eq(__atomic_load_n(&w.done, __ATOMIC_ACQUIRE), 0, "the older section is still open");
	dma_gate_leave(&g, old);
	for (unsigned int i = 0; i < 2000 && !__atomic_load_n(&w.done, __ATOMIC_ACQUIRE); i++)
		usleep(1000);
	cr_assert_eq(__atomic_load_n(&w.done, __ATOMIC_ACQUIRE), 1, "done while the younger section is still open");
	cr_assert_eq(pthread_join(th, NULL), 0);
	/* Sections nest and close in any order. */
	old = dma_gate_enter(&g);
	dma_gate_leave(&g, young);
	dma_gate_leave(&g, old);
	dma_gate_wait(&g);
	dma_gate_fini(&g);
}

/*
 * A section whose thread read the epoch, then stalled while an unmap went by, must not join under the
 * parity it read: that unmap's waiter may have read the count before the join, and the next waiter
 * waits for the other parity, so the section would copy through a translation the next unmap took
 * away. It must start over under the current epoch, where the next waiter counts it.
 */
Test(dma, gate_section_that_read_an_old_epoch_starts_over)
{
	struct dma_gate g;
	struct gate_waiter w = { .g = &g };
	unsigned int token;
	uint32_t stale;
	pthread_t th;

	dma_gate_init(&g);
	stale = __atomic_load_n(&g.epoch, __ATOMIC_ACQUIRE);
	dma_gate_wait(&g); /* an unmap completes while the reader is stalled */
	cr_assert_not(dma_gate_try_enter(&g, stale, &token), "joining under an epoch that moved on is refused");
	cr_assert_eq(g.readers[0] + g.readers[1], 0, "a refused join leaves no count behind");
	token = dma_gate_enter(&g);
	cr_assert_eq(token, __atomic_load_n(&g.epoch, __ATOMIC_ACQUIRE) & 1, "joined under the current epoch");
	/* The next unmap waits for the section until it closes. */
	cr_assert_eq(pthread_create(&th, NULL, gate_wait_thread, &w), 0);
	usleep(20 * 1000);
	cr_assert_eq(__atomic_load_n(&w.done, __ATOMIC_ACQUIRE), 0, "the unmap waits for the open section");
	dma_gate_leave(&g, token);
	for (unsigned int i = 0; i < 2000 && !__atomic_load_n(&w.done, __ATOMIC_ACQUIRE); i++)
		usleep(1000);
	cr_assert_eq(__atomic_load_n(&w.done, __ATOMIC_ACQUIRE), 1);
	cr_assert_eq(pthread_join(th, NULL), 0);
	dma_gate_fini(&g);
}

struct gate_stress {
	struct dma_gate *g;
	uint64_t *live;  /* the "mapping": nonzero while mapped */
	int stop;
	uint64_t stale;  /* copies that saw the mapping gone inside their section */
	uint64_t sections;
};

static void *gate_stress_reader(void *arg)
{
	struct gate_stress *s = arg;

	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		unsigned int t = dma_gate_enter(s->g);
		uint64_t *m = __atomic_load_n(&s->live, __ATOMIC_ACQUIRE);

		/* Use the "translation" a while: the unmapper must not free it under us. */
		for (int i = 0; i < 64; i++)
			if (__atomic_load_n(m, __ATOMIC_ACQUIRE) != 1)
				__atomic_fetch_add(&s->stale, 1, __ATOMIC_RELAXED);
		dma_gate_leave(s->g, t);
		if ((__atomic_add_fetch(&s->sections, 1, __ATOMIC_RELEASE) & 255) == 0)
			sched_yield();
	}
	return NULL;
}

/* More readers than cores, so that some are preempted at every instruction of their entry. */
#define STRESS_READERS 4

static bool stress_readers_busy(struct gate_stress *s)
{
	for (int i = 0; i < STRESS_READERS; i++)
		if (__atomic_load_n(&s[i].sections, __ATOMIC_ACQUIRE) < 50000)
			return false;
	return true;
}

/* Readers against an unmapper that swaps the mapping, waits, then poisons the old one: no reader sees the poison. */
Test(dma, gate_no_section_outlives_an_unmap_under_load)
{
	static uint64_t cells[2];
	struct dma_gate g;
	struct gate_stress s[STRESS_READERS];
	pthread_t th[STRESS_READERS];
	uint64_t *cur = &cells[0];

	dma_gate_init(&g);
	cells[0] = 1;
	for (int i = 0; i < STRESS_READERS; i++) {
		s[i] = (struct gate_stress){ .g = &g, .live = cur };
		cr_assert_eq(pthread_create(&th[i], NULL, gate_stress_reader, &s[i]), 0);
	}
	/* At least 20000 unmaps, and on until each reader has opened plenty of sections. */
	for (int n = 0; n < 20000 || !stress_readers_busy(s); n++) {
		uint64_t *next = cur == &cells[0] ? &cells[1] : &cells[0];

		__atomic_store_n(next, 1, __ATOMIC_RELEASE);
		for (int i = 0; i < STRESS_READERS; i++)
			__atomic_store_n(&s[i].live, next, __ATOMIC_RELEASE);
		dma_gate_wait(&g);
		__atomic_store_n(cur, 0, __ATOMIC_RELEASE); /* "freed": a section still using it would see 0 */
		cur = next;
	}
	for (int i = 0; i < STRESS_READERS; i++) {
		__atomic_store_n(&s[i].stop, 1, __ATOMIC_RELEASE);
		cr_assert_eq(pthread_join(th[i], NULL), 0);
	}
	for (int i = 0; i < STRESS_READERS; i++) {
		cr_assert_eq(s[i].stale, 0, "reader %d used a freed mapping %llu times", i, (unsigned long long)s[i].stale);
		cr_assert_gt(s[i].sections, 0);
	}
	dma_gate_fini(&g);
}
