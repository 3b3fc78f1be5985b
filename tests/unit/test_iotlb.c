#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/dma.h"
#include "vmm/iotlb.h"

/* Host addresses are never dereferenced here: a fake base makes every pointer checkable. */
#define HOST(x) ((void *)(uintptr_t)(0x7f0000000000ull + (x)))
#define RW (DMA_READ | DMA_WRITE)

static void fill(struct iotlb *t, uint64_t iova, uint64_t len, uint64_t host, unsigned int perm)
{
	iotlb_fill(t, iotlb_gen(t), iova, len, HOST(host), perm);
}

static void expect_hit(struct iotlb *t, uint64_t iova, uint64_t len, unsigned int perm, uint64_t host,
		       uint64_t run)
{
	void *h = NULL;
	uint64_t r = 0;

	cr_assert(iotlb_lookup(t, iova, len, perm, &h, &r), "iova %#llx hits", (unsigned long long)iova);
	cr_assert_eq(h, HOST(host), "iova %#llx at %p, want %p", (unsigned long long)iova, h, HOST(host));
	cr_assert_eq(r, run, "run %llu, want %llu", (unsigned long long)r, (unsigned long long)run);
}

static void expect_miss(struct iotlb *t, uint64_t iova, unsigned int perm)
{
	void *h;
	uint64_t r;

	cr_assert_not(iotlb_lookup(t, iova, 1, perm, &h, &r), "iova %#llx misses", (unsigned long long)iova);
}

Test(iotlb, hit_inside_an_entry_miss_outside)
{
	struct iotlb t;
	struct iotlb_stats st;

	iotlb_init(&t);
	expect_miss(&t, 0x1000, DMA_READ);
	fill(&t, 0x1000, 0x2000, 0x50000, RW);
	expect_hit(&t, 0x1000, 8, DMA_READ, 0x50000, 8);
	expect_hit(&t, 0x2ffe, 8, DMA_WRITE, 0x51ffe, 2);
	expect_hit(&t, 0x1800, 0x10000, RW, 0x50800, 0x1800);
	expect_miss(&t, 0xfff, DMA_READ);
	expect_miss(&t, 0x3000, DMA_READ);
	expect_miss(&t, 0, DMA_READ);
	iotlb_stats(&t, &st);
	cr_assert_eq(st.hits, 3);
	cr_assert_eq(st.misses, 4);
	cr_assert_eq(st.fills, 1);
	iotlb_fini(&t);
}

Test(iotlb, an_entry_serves_only_the_access_it_was_checked_for)
{
	struct iotlb t;

	iotlb_init(&t);
	fill(&t, 0x1000, 0x1000, 0x1000, DMA_READ);
	expect_hit(&t, 0x1000, 4, DMA_READ, 0x1000, 4);
	expect_miss(&t, 0x1000, DMA_WRITE);
	expect_miss(&t, 0x1000, RW);
	/* The walk for the write found it writable too: a second entry, and both accesses hit. */
	fill(&t, 0x1000, 0x1000, 0x1000, RW);
	expect_hit(&t, 0x1000, 4, DMA_WRITE, 0x1000, 4);
	expect_hit(&t, 0x1000, 4, RW, 0x1000, 4);
	/* A write-only entry serves no read. */
	fill(&t, 0x9000, 0x1000, 0x9000, DMA_WRITE);
	expect_miss(&t, 0x9000, DMA_READ);
	iotlb_fini(&t);
}

Test(iotlb, invalidation_drops_exactly_the_overlapping_entries)
{
	struct iotlb t;
	struct iotlb_stats st;

	iotlb_init(&t);
	fill(&t, 0x1000, 0x1000, 0xa000, RW);  /* A [0x1000, 0x2000) */
	fill(&t, 0x3000, 0x2000, 0xb000, RW);  /* B [0x3000, 0x5000) */
	fill(&t, 0x8000, 0x1000, 0xc000, RW);  /* C [0x8000, 0x9000) */
	/* The gap between A and B touches both ends and overlaps neither. */
	iotlb_invalidate(&t, 0x2000, 0x1000);
	expect_hit(&t, 0x1fff, 1, DMA_READ, 0xafff, 1);
	expect_hit(&t, 0x3000, 1, DMA_READ, 0xb000, 1);
	/* B's last byte alone takes B and nothing else. */
	iotlb_invalidate(&t, 0x4fff, 1);
	expect_miss(&t, 0x3000, DMA_READ);
	expect_miss(&t, 0x4fff, DMA_READ);
	expect_hit(&t, 0x1000, 1, DMA_READ, 0xa000, 1);
	expect_hit(&t, 0x8000, 1, DMA_READ, 0xc000, 1);
	/* A range starting below A and ending inside it. */
	iotlb_invalidate(&t, 0, 0x1001);
	expect_miss(&t, 0x1800, DMA_READ);
	expect_hit(&t, 0x8fff, 1, DMA_READ, 0xcfff, 1);
	/* A range covering C from inside to the top of the address space. */
	iotlb_invalidate(&t, 0x8800, UINT64_MAX - 0x8800);
	expect_miss(&t, 0x8000, DMA_READ);
	iotlb_stats(&t, &st);
	cr_assert_eq(st.dropped, 3);
	cr_assert_eq(st.invalidations, 4);
	iotlb_fini(&t);
}

Test(iotlb, len_max_forgets_everything)
{
	struct iotlb t;

	iotlb_init(&t);
	fill(&t, 0, 0x1000, 0x1000, RW);
	fill(&t, 0x1000000, 0x1000, 0x2000, RW);
	fill(&t, UINT64_MAX - 0xfff, 0x1000, 0x3000, RW);
	expect_hit(&t, UINT64_MAX, 1, DMA_READ, 0x3fff, 1);
	/* As an endpoint changing domain reports it: from 0, UINT64_MAX bytes. */
	iotlb_invalidate(&t, 0, UINT64_MAX);
	expect_miss(&t, 0, DMA_READ);
	expect_miss(&t, 0x1000000, DMA_READ);
	expect_miss(&t, UINT64_MAX, DMA_READ);
	/* And from anywhere: UINT64_MAX means all. */
	fill(&t, 0, 0x1000, 0x1000, RW);
	iotlb_invalidate(&t, 0x5000, UINT64_MAX);
	expect_miss(&t, 0, DMA_READ);
	iotlb_fini(&t);
}

Test(iotlb, a_fill_that_raced_with_an_invalidation_is_dropped)
{
	struct iotlb t;
	struct iotlb_stats st;
	uint64_t gen;

	iotlb_init(&t);
	gen = iotlb_gen(&t);
	/* The walk saw the mapping; then an UNMAP took it away and told the cache; then the fill. */
	iotlb_invalidate(&t, 0x1000, 0x1000);
	iotlb_fill(&t, gen, 0x1000, 0x1000, HOST(0x1000), RW);
	expect_miss(&t, 0x1000, DMA_READ);
	iotlb_stats(&t, &st);
	cr_assert_eq(st.stale_fills, 1);
	cr_assert_eq(st.fills, 0);
	/* A fresh walk fills. */
	fill(&t, 0x1000, 0x1000, 0x1000, RW);
	expect_hit(&t, 0x1000, 1, DMA_READ, 0x1000, 1);
	iotlb_fini(&t);
}

Test(iotlb, full_cache_reuses_slots_and_never_answers_wrong)
{
	struct iotlb t;
	unsigned int hits = 0;

	iotlb_init(&t);
	for (uint64_t i = 0; i < IOTLB_ENTRIES + 5; i++)
		fill(&t, i << 12, 0x1000, (i << 12) + 0x100000, RW);
	for (uint64_t i = 0; i < IOTLB_ENTRIES + 5; i++) {
		void *h;
		uint64_t r;

		if (!iotlb_lookup(&t, (i << 12) + 7, 1, DMA_READ, &h, &r))
			continue;
		cr_assert_eq(h, HOST((i << 12) + 0x100007));
		hits++;
	}
	cr_assert_eq(hits, IOTLB_ENTRIES, "every slot holds one of the translations");
	expect_hit(&t, (uint64_t)(IOTLB_ENTRIES + 4) << 12, 1, DMA_READ,
		   ((uint64_t)(IOTLB_ENTRIES + 4) << 12) + 0x100000, 1);
	iotlb_fini(&t);
}

/* ------------------------------------------------------------------ threads */

#define K_OFF 0x100000ull
#define UNMAPPED_BIT 1u

struct race {
	struct iotlb t;
	uint32_t phase; /* 2k: [R, R+len) may be cached; 2k+1: invalidated, nothing fills it */
	int stop;
	unsigned long hits, checked_unmapped;
	const char *bad;
};

#define R_IOVA 0x40000ull

/*
 * A device thread: every hit must be a translation that was filled (host = iova + K_OFF, never a mix
 * of two entries), and a lookup that ran wholly while the range was invalidated must miss.
 */
static void *race_reader(void *arg)
{
	struct race *r = arg;
	uint64_t x = 88172645463325252ull;

	while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE) && !__atomic_load_n(&r->bad, __ATOMIC_RELAXED)) {
		uint32_t p1 = __atomic_load_n(&r->phase, __ATOMIC_SEQ_CST), p2;
		uint64_t iova, run;
		void *h;
		bool hit;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		/* Half the lookups in the range that comes and goes, half among the other entries. */
		iova = (x & 1) ? R_IOVA + (x >> 8) % 0x2000 : ((x >> 8) % 64) << 12;
		hit = iotlb_lookup(&r->t, iova, 64, DMA_READ, &h, &run);
		p2 = __atomic_load_n(&r->phase, __ATOMIC_SEQ_CST);
		if (hit) {
			__atomic_fetch_add(&r->hits, 1, __ATOMIC_RELAXED);
			if ((uintptr_t)h != (uintptr_t)HOST(iova + K_OFF) || run == 0 || run > 64)
				__atomic_store_n(&r->bad, "a hit that is no filled translation (a torn entry)",
						 __ATOMIC_RELAXED);
		}
		if (p1 == p2 && (p1 & UNMAPPED_BIT) && iova >= R_IOVA && iova < R_IOVA + 0x2000) {
			__atomic_fetch_add(&r->checked_unmapped, 1, __ATOMIC_RELAXED);
			if (hit)
				__atomic_store_n(&r->bad, "a hit on a range invalidated before the lookup began",
						 __ATOMIC_RELAXED);
		}
	}
	return NULL;
}

Test(iotlb, lookups_race_fills_and_invalidations)
{
	struct race *r = calloc(1, sizeof(*r));
	pthread_t th[2];

	cr_assert_not_null(r);
	iotlb_init(&r->t);
	for (unsigned int i = 0; i < 2; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, race_reader, r), 0);
	for (unsigned int k = 0; k < 20000 && !__atomic_load_n(&r->bad, __ATOMIC_RELAXED); k++) {
		/* Churn the other slots so that R's entry moves between slots. */
		uint64_t other = (uint64_t)(k % 64) << 12;

		/* Even before the fill: a lookup that sees the entry must see the phase it belongs to. */
		__atomic_store_n(&r->phase, 2 * k, __ATOMIC_SEQ_CST);
		fill(&r->t, other, 0x1000, other + K_OFF, DMA_READ);
		fill(&r->t, R_IOVA, 0x2000, R_IOVA + K_OFF, DMA_READ);
		if (k % 8 == 0)
			sched_yield();
		iotlb_invalidate(&r->t, R_IOVA + 0x1000, 1);
		__atomic_store_n(&r->phase, 2 * k + 1, __ATOMIC_SEQ_CST);
		if (k % 8 == 4)
			sched_yield();
	}
	__atomic_store_n(&r->stop, 1, __ATOMIC_RELEASE);
	for (unsigned int i = 0; i < 2; i++)
		cr_assert_eq(pthread_join(th[i], NULL), 0);
	cr_assert_null(r->bad, "%s", r->bad);
	cr_assert_gt(r->hits, 0, "the readers hit");
	cr_assert_gt(r->checked_unmapped, 0, "the readers looked while the range was invalidated");
	iotlb_fini(&r->t);
	free(r);
}
