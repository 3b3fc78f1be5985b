#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "iommu/iommu.h"

#define K4 UINT64_C(0x1000)
#define K64 UINT64_C(0x10000)
#define M2 (UINT64_C(1) << 21)
#define G1 (UINT64_C(1) << 30)
#define TB IOMMU_PT_TABLE_BYTES
#define R IOMMU_READ
#define W IOMMU_WRITE
#define RW (IOMMU_READ | IOMMU_WRITE)

static const struct iommu_limits default_limits = {
	.input_start = 0,
	.input_end = IOMMU_IOVA_LAST,
	.max_mappings = 1024,
	.max_table_bytes = 64ull << 20,
	.page_size_mask = ~(K4 - 1),
};

static struct iommu_domain *dom_make(const struct iommu_limits *lim)
{
	struct iommu_domain *d;

	cr_assert_eq(iommu_domain_new(7, lim ? lim : &default_limits, &d), 0);
	cr_assert_eq(iommu_domain_id(d), 7);
	return d;
}

static struct iommu_stats stats(const struct iommu_domain *d)
{
	struct iommu_stats s;

	iommu_domain_stats(d, &s);
	return s;
}

static void expect_tr(struct iommu_domain *d, uint64_t iova, uint64_t len, unsigned int perm, uint64_t gpa,
		      uint64_t run)
{
	uint64_t g = 0, r = 0;
	int err = iommu_translate(d, iova, len, perm, &g, &r);

	cr_assert_eq(err, 0, "translate %#lx+%#lx/%u: %d", iova, len, perm, err);
	cr_assert_eq(g, gpa, "translate %#lx: gpa %#lx, want %#lx", iova, g, gpa);
	cr_assert_eq(r, run, "translate %#lx+%#lx/%u: run %#lx, want %#lx", iova, len, perm, r, run);
}

static int tr(struct iommu_domain *d, uint64_t iova, unsigned int perm)
{
	uint64_t g, r;

	return iommu_translate(d, iova, 1, perm, &g, &r);
}

static void expect_consistent(const struct iommu_domain *d)
{
	cr_assert_eq(iommu_domain_check(d), 0, "records and page table agree");
}

/* ---- A notifier that logs every call and what the page table said at that moment. ---- */

#define LOG_MAX 64

struct call {
	bool mapped;
	uint64_t iova, gpa, len;
	unsigned int perm;
	bool pt_first, pt_last; /* was the first / last page of the range mapped during the call */
	int reentry;            /* what iommu_translate returned from inside the callback */
};

struct log {
	struct iommu_domain *d;
	struct call calls[LOG_MAX];
	unsigned int n;
	bool try_reentry;
};

static bool pt_maps(const struct iommu_domain *d, uint64_t iova)
{
	uint64_t g, r;
	unsigned int p;

	return iommu_pt_lookup(iommu_domain_pt(d), iova, 1, &g, &r, &p) == 0;
}

static struct call *log_add(struct log *l)
{
	cr_assert_lt(l->n, LOG_MAX);
	return &l->calls[l->n++];
}

static void on_unmapped(void *ctx, uint64_t iova, uint64_t len)
{
	struct log *l = ctx;
	struct call *c = log_add(l);

	*c = (struct call){ .iova = iova, .len = len };
	c->pt_first = pt_maps(l->d, iova);
	c->pt_last = pt_maps(l->d, iova + len - 1);
	if (l->try_reentry)
		c->reentry = tr(l->d, iova, R);
}

static void on_mapped(void *ctx, uint64_t iova, uint64_t gpa, uint64_t len, unsigned int perm)
{
	struct log *l = ctx;
	struct call *c = log_add(l);

	*c = (struct call){ .mapped = true, .iova = iova, .gpa = gpa, .len = len, .perm = perm };
	c->pt_first = pt_maps(l->d, iova);
	c->pt_last = pt_maps(l->d, iova + len - 1);
}

static void expect_unmapped_call(const struct log *l, unsigned int i, uint64_t iova, uint64_t len)
{
	const struct call *c = &l->calls[i];

	cr_assert_lt(i, l->n, "call %u happened", i);
	cr_assert(!c->mapped);
	cr_assert_eq(c->iova, iova, "call %u: iova %#lx, want %#lx", i, c->iova, iova);
	cr_assert_eq(c->len, len, "call %u: len %#lx, want %#lx", i, c->len, len);
	cr_assert(!c->pt_first && !c->pt_last, "call %u: the page table no longer mapped the range", i);
}

/* ---- Tests ---- */

Test(iommu_domain, new_rejects_bad_limits)
{
	struct iommu_limits lim;
	struct iommu_domain *d;

	lim = default_limits;
	lim.page_size_mask = 0;
	cr_assert_eq(iommu_domain_new(1, &lim, &d), -EINVAL);
	lim.page_size_mask = 0x800 | M2; /* 2 KiB granule: smaller than our pages */
	cr_assert_eq(iommu_domain_new(1, &lim, &d), -EINVAL);
	lim = default_limits;
	lim.input_start = 0x2000;
	lim.input_end = 0x1fff;
	cr_assert_eq(iommu_domain_new(1, &lim, &d), -EINVAL);
	lim = default_limits;
	lim.input_end = UINT64_MAX;
	cr_assert_eq(iommu_domain_new(1, &lim, &d), -EINVAL);
	lim = default_limits;
	lim.max_table_bytes = TB - 1;
	cr_assert_eq(iommu_domain_new(1, &lim, &d), -EINVAL);
}

Test(iommu_domain, map_translate_unmap)
{
	struct iommu_domain *d = dom_make(NULL);
	uint64_t bytes = 1;

	cr_assert_eq(iommu_map(d, 0x10000, 0x1ffff, 0x80000, RW), 0);
	expect_tr(d, 0x10010, 16, R, 0x80010, 16);
	expect_tr(d, 0x1fff0, 0x100, W, 0x8fff0, 0x10);
	cr_assert_eq(tr(d, 0x20000, R), -ENOENT);
	cr_assert_eq(tr(d, 0xffff, R), -ENOENT);
	expect_consistent(d);
	cr_assert_eq(iommu_unmap(d, 0x10000, 0x1ffff, &bytes), 0);
	cr_assert_eq(bytes, 0x10000);
	cr_assert_eq(tr(d, 0x10000, R), -ENOENT);
	cr_assert_eq(stats(d).table_bytes, TB, "empty nodes were freed");
	expect_consistent(d);
	iommu_domain_free(d);
}

Test(iommu_domain, map_unmap_churn_reuses_nodes_and_records)
{
	struct iommu_domain *d = dom_make(NULL);
	struct iommu_pt_shape sh;
	uint64_t bytes;

	for (uint64_t i = 0; i < 1000; i++) {
		uint64_t iova = (i % 64) * K4;

		cr_assert_eq(iommu_map(d, iova, iova + K4 - 1, 0x100000 + i * K4, RW), 0);
		expect_tr(d, iova, K4, R, 0x100000 + i * K4, K4);
		cr_assert_eq(stats(d).table_bytes, 4 * TB);
		cr_assert_eq(iommu_unmap(d, iova, iova + K4 - 1, &bytes), 0);
		cr_assert_eq(bytes, K4);
		cr_assert_eq(tr(d, iova, R), -ENOENT);
		cr_assert_eq(stats(d).table_bytes, TB, "table_bytes counts only the nodes in use");
		if (i % 100 == 0)
			expect_consistent(d);
	}
	iommu_pt_inspect(iommu_domain_pt(d), &sh);
	cr_assert_eq(sh.free_nodes, 3, "the emptied nodes are kept for the next map");
	cr_assert_eq(stats(d).mappings, 0);
	expect_consistent(d);
	iommu_domain_free(d);
}

Test(iommu_domain, overlapping_map_refused)
{
	struct iommu_domain *d = dom_make(NULL);

	cr_assert_eq(iommu_map(d, 0x10000, 0x1ffff, 0x80000, RW), 0);
	cr_assert_eq(iommu_map(d, 0x1f000, 0x20fff, 0, RW), -EEXIST, "overlaps the end");
	cr_assert_eq(iommu_map(d, 0x0f000, 0x10fff, 0, RW), -EEXIST, "overlaps the start");
	cr_assert_eq(iommu_map(d, 0x00000, 0x2ffff, 0, RW), -EEXIST, "covers it");
	cr_assert_eq(iommu_map(d, 0x11000, 0x11fff, 0, RW), -EEXIST, "inside it");
	cr_assert_eq(iommu_map(d, 0x10000, 0x1ffff, 0x80000, RW), -EEXIST, "the same again");
	cr_assert_eq(stats(d).mappings, 1);
	expect_tr(d, 0x11000, K4, R, 0x81000, K4);
	cr_assert_eq(iommu_map(d, 0x20000, 0x20fff, 0x100000, R), 0, "adjacent after");
	cr_assert_eq(iommu_map(d, 0x0f000, 0x0ffff, 0x200000, R), 0, "adjacent before");
	cr_assert_eq(stats(d).mappings, 3);
	expect_consistent(d);
	iommu_domain_free(d);
}

Test(iommu_domain, unmap_straddling_refused_whole)
{
	struct iommu_domain *d = dom_make(NULL);
	struct log l = { .d = d };
	struct iommu_notifier n = { .unmapped = on_unmapped, .ctx = &l };
	uint64_t bytes = 1;

	cr_assert_eq(iommu_map(d, 0x10000, 0x1ffff, 0x80000, RW), 0);
	cr_assert_eq(iommu_map(d, 0x20000, 0x2ffff, 0x90000, RW), 0);
	cr_assert_eq(iommu_notifier_add(d, &n), 0);
	cr_assert_eq(iommu_unmap(d, 0x18000, 0x2ffff, &bytes), -ERANGE, "cuts the first");
	cr_assert_eq(bytes, 0);
	cr_assert_eq(iommu_unmap(d, 0x10000, 0x27fff, &bytes), -ERANGE, "cuts the second");
	cr_assert_eq(iommu_unmap(d, 0x11000, 0x12fff, &bytes), -ERANGE, "inside one");
	cr_assert_eq(iommu_unmap(d, 0x0, 0x10000, &bytes), -ERANGE, "first byte of one");
	cr_assert_eq(l.n, 0, "no notification for a refused unmap");
	cr_assert_eq(stats(d).mappings, 2);
	expect_tr(d, 0x10000, 0x20000, RW, 0x80000, 0x20000);
	expect_consistent(d);
	cr_assert_eq(iommu_unmap(d, 0x10000, 0x2ffff, &bytes), 0);
	cr_assert_eq(bytes, 0x20000);
	cr_assert_eq(stats(d).mappings, 0);
	iommu_notifier_del(d, &n);
	iommu_domain_free(d);
}

Test(iommu_domain, unmap_covers_several_and_skips_holes)
{
	struct iommu_domain *d = dom_make(NULL);
	uint64_t bytes;

	cr_assert_eq(iommu_map(d, 0x10000, 0x10fff, 0x1000, R), 0);
	cr_assert_eq(iommu_map(d, 0x30000, 0x3ffff, 0x2000, R), 0);
	cr_assert_eq(iommu_map(d, 0x50000, 0x51fff, 0x3000, R), 0);
	cr_assert_eq(iommu_map(d, 0x70000, 0x70fff, 0x4000, R), 0);
	/* Unaligned ends are fine as long as no mapping is cut. */
	cr_assert_eq(iommu_unmap(d, 0x10000, 0x6ffff, &bytes), 0);
	cr_assert_eq(bytes, 0x1000 + 0x10000 + 0x2000);
	cr_assert_eq(tr(d, 0x30000, R), -ENOENT);
	cr_assert_eq(tr(d, 0x70000, R), 0);
	cr_assert_eq(stats(d).mappings, 1);
	expect_consistent(d);
	iommu_domain_free(d);
}

Test(iommu_domain, unmap_of_nothing_is_fine)
{
	struct iommu_domain *d = dom_make(NULL);
	struct log l = { .d = d };
	struct iommu_notifier n = { .unmapped = on_unmapped, .ctx = &l };
	uint64_t bytes = 1;

	cr_assert_eq(iommu_notifier_add(d, &n), 0);
	cr_assert_eq(iommu_unmap(d, 0, UINT64_MAX, &bytes), 0);
	cr_assert_eq(bytes, 0);
	cr_assert_eq(iommu_map(d, 0x10000, 0x1ffff, 0, R), 0);
	cr_assert_eq(iommu_map(d, 0x40000, 0x4ffff, 0, R), 0);
	cr_assert_eq(iommu_unmap(d, 0x20000, 0x3ffff, &bytes), 0, "the hole between two mappings");
	cr_assert_eq(bytes, 0);
	cr_assert_eq(iommu_unmap(d, 0x20000, 0x3ffff, NULL), 0);
	cr_assert_eq(l.n, 0);
	cr_assert_eq(iommu_unmap(d, 0x30000, 0x20000, &bytes), -EINVAL, "end < start");
	cr_assert_eq(stats(d).mappings, 2);
	iommu_domain_free(d);
}

Test(iommu_domain, map_argument_errors_leave_domain_unchanged)
{
	struct iommu_domain *d = dom_make(NULL);
	struct log l = { .d = d };
	struct iommu_notifier n = { .mapped = on_mapped, .ctx = &l };
	struct iommu_limits lim = default_limits;
	struct iommu_stats before;

	cr_assert_eq(iommu_map(d, 0x10000, 0x1ffff, 0x80000, RW), 0);
	cr_assert_eq(iommu_notifier_add(d, &n), 0);
	before = stats(d);
	cr_assert_eq(iommu_map(d, 0x20000, 0x1ffff, 0, RW), -EINVAL, "end < start");
	cr_assert_eq(iommu_map(d, 0x20800, 0x20fff, 0, RW), -EINVAL, "start unaligned");
	cr_assert_eq(iommu_map(d, 0x20000, 0x207ff, 0, RW), -EINVAL, "end + 1 unaligned");
	cr_assert_eq(iommu_map(d, 0x20000, 0x20fff, 0x800, RW), -EINVAL, "gpa unaligned");
	cr_assert_eq(iommu_map(d, 0x20000, 0x20fff, 0, 8), -EINVAL, "unknown flag");
	cr_assert_eq(iommu_map(d, 0x20000, 0x21fff, UINT64_MAX - K4 + 1, RW), -EINVAL, "gpa + len wraps");
	cr_assert_eq(iommu_map(d, 0, UINT64_MAX, 0, RW), -ERANGE, "the whole 64-bit space");
	cr_assert_eq(iommu_map(d, 0, UINT64_MAX, K4, RW), -EINVAL, "the whole space from a GPA that wraps");
	cr_assert_eq(iommu_map(d, UINT64_MAX - K4 + 1, UINT64_MAX, 0, RW), -ERANGE, "last page of 64 bits");
	cr_assert_eq(iommu_map(d, IOMMU_IOVA_LAST - K4 + 1, IOMMU_IOVA_LAST + K4, 0, RW), -ERANGE, "past 48 bits");
	cr_assert_eq(iommu_map(d, 0x1f000, 0x1ffff, 0, RW), -EEXIST);
	cr_assert_eq(l.n, 0, "no mapped notification for a refused map");
	cr_assert_eq(stats(d).mappings, before.mappings);
	cr_assert_eq(stats(d).table_bytes, before.table_bytes);
	cr_assert_eq(stats(d).mapped_bytes, before.mapped_bytes);
	cr_assert_eq(stats(d).map_requests, before.map_requests + 11, "refused requests are counted");
	expect_consistent(d);
	/* The last page of the 48-bit space is fine, and unmapping up to UINT64_MAX removes it. */
	cr_assert_eq(iommu_map(d, IOMMU_IOVA_LAST - K4 + 1, IOMMU_IOVA_LAST, 0x5000, RW), 0);
	expect_tr(d, IOMMU_IOVA_LAST, UINT64_MAX, R, 0x5fff, 1);
	cr_assert_eq(iommu_unmap(d, IOMMU_IOVA_LAST - K4 + 1, UINT64_MAX, NULL), 0);
	cr_assert_eq(tr(d, IOMMU_IOVA_LAST, R), -ENOENT);
	iommu_notifier_del(d, &n);
	iommu_domain_free(d);

	/* A granule of 64 KiB and an input range that does not start at 0. */
	lim.page_size_mask = ~(K64 - 1);
	lim.input_start = 0x100000;
	lim.input_end = G1 - 1;
	d = dom_make(&lim);
	cr_assert_eq(iommu_map(d, 0x100000, 0x100fff, 0, RW), -EINVAL, "4 KiB is below the granule");
	cr_assert_eq(iommu_map(d, 0x110000, 0x11ffff, 0x1000, RW), -EINVAL, "gpa below the granule");
	cr_assert_eq(iommu_map(d, 0xf0000, 0xfffff, 0, RW), -ERANGE, "below input_start");
	cr_assert_eq(iommu_map(d, 0xf0000, 0x10ffff, 0, RW), -ERANGE, "across input_start");
	cr_assert_eq(iommu_map(d, G1 - K64, G1 + K64 - 1, 0, RW), -ERANGE, "across input_end");
	cr_assert_eq(iommu_map(d, 0x100000, 0x10ffff, 0, RW), 0);
	cr_assert_eq(iommu_map(d, G1 - K64, G1 - 1, 0, RW), 0);
	cr_assert_eq(stats(d).mappings, 2);
	iommu_domain_free(d);
}

Test(iommu_domain, max_mappings_cap)
{
	struct iommu_limits lim = default_limits;
	struct iommu_domain *d;
	uint64_t tb;

	lim.max_mappings = 2;
	d = dom_make(&lim);
	cr_assert_eq(iommu_map(d, 0x10000, 0x10fff, 0, RW), 0);
	cr_assert_eq(iommu_map(d, 0x20000, 0x20fff, 0, RW), 0);
	tb = stats(d).table_bytes;
	cr_assert_eq(iommu_map(d, 0x30000, 0x30fff, 0, RW), -ENOSPC);
	cr_assert_eq(stats(d).mappings, 2);
	cr_assert_eq(stats(d).table_bytes, tb);
	cr_assert_eq(tr(d, 0x30000, R), -ENOENT);
	cr_assert_eq(iommu_unmap(d, 0x10000, 0x10fff, NULL), 0);
	cr_assert_eq(iommu_map(d, 0x30000, 0x30fff, 0, RW), 0);
	expect_consistent(d);
	iommu_domain_free(d);
}

Test(iommu_domain, table_bytes_cap)
{
	struct iommu_limits lim = default_limits;
	struct iommu_domain *d;
	struct log l;
	struct iommu_notifier n = { .mapped = on_mapped, .ctx = &l };

	lim.max_table_bytes = 4 * TB;
	d = dom_make(&lim);
	l = (struct log){ .d = d };
	cr_assert_eq(iommu_notifier_add(d, &n), 0);
	cr_assert_eq(iommu_map(d, 0, K4 - 1, 0x100000, RW), 0, "root + 3 nodes");
	cr_assert_eq(stats(d).table_bytes, 4 * TB);
	cr_assert_eq(iommu_map(d, G1, G1 + K4 - 1, 0x200000, RW), -ENOSPC, "2 more nodes needed");
	cr_assert_eq(iommu_map(d, G1 + K4, 3 * G1 - 1, 0x201000, RW), -ENOSPC, "a huge request, refused early");
	cr_assert_eq(stats(d).mappings, 1);
	cr_assert_eq(stats(d).table_bytes, 4 * TB);
	cr_assert_eq(stats(d).mapped_bytes, K4);
	cr_assert_eq(tr(d, G1, R), -ENOENT);
	cr_assert_eq(l.n, 1, "only the first map was notified");
	expect_consistent(d);
	/* 2M and 1G leaves in existing nodes cost nothing. */
	cr_assert_eq(iommu_map(d, M2, 2 * M2 - 1, 4 * M2, RW), 0);
	cr_assert_eq(iommu_map(d, 4 * G1, 5 * G1 - 1, 8 * G1, RW), 0);
	cr_assert_eq(stats(d).table_bytes, 4 * TB);
	expect_consistent(d);
	iommu_domain_free(d);
}

Test(iommu_domain, permissions)
{
	struct iommu_domain *d = dom_make(NULL);
	uint64_t g, r;

	cr_assert_eq(iommu_map(d, 0x10000, 0x10fff, 0x1000, R), 0);
	cr_assert_eq(iommu_map(d, 0x20000, 0x20fff, 0x2000, W), 0);
	cr_assert_eq(iommu_map(d, 0x30000, 0x30fff, 0x3000, RW), 0);
	cr_assert_eq(iommu_map(d, 0x40000, 0x40fff, 0x4000, 0), 0);
	cr_assert_eq(tr(d, 0x10000, R), 0);
	cr_assert_eq(tr(d, 0x10000, W), -EACCES, "read-only mapping written");
	cr_assert_eq(tr(d, 0x10000, RW), -EACCES);
	cr_assert_eq(tr(d, 0x20000, R), -EACCES, "write-only mapping read");
	cr_assert_eq(tr(d, 0x20000, W), 0);
	cr_assert_eq(tr(d, 0x30000, RW), 0);
	cr_assert_eq(tr(d, 0x40000, R), -EACCES);
	cr_assert_eq(tr(d, 0x40000, W), -EACCES);
	cr_assert_eq(tr(d, 0x50000, R), -ENOENT);
	cr_assert_eq(iommu_translate(d, 0x30000, 0, R, &g, &r), -EINVAL, "len 0");
	cr_assert_eq(iommu_translate(d, 0x30000, 1, IOMMU_MMIO, &g, &r), -EINVAL, "not an access");
	cr_assert_eq(stats(d).translations, 9, "valid calls only");
	cr_assert_eq(stats(d).translate_faults, 6);
	iommu_domain_free(d);
}

Test(iommu_domain, translate_merges_adjacent_mappings)
{
	struct iommu_domain *d = dom_make(NULL);

	/* Four 64K mappings: GPA continues over the first three, permissions narrow on the third. */
	cr_assert_eq(iommu_map(d, 0x00000, 0x0ffff, 0x100000, RW), 0);
	cr_assert_eq(iommu_map(d, 0x10000, 0x1ffff, 0x110000, RW), 0);
	cr_assert_eq(iommu_map(d, 0x20000, 0x2ffff, 0x120000, R), 0);
	cr_assert_eq(iommu_map(d, 0x30000, 0x3ffff, 0x500000, RW), 0);
	expect_tr(d, 0, 0x100000, R, 0x100000, 0x30000);
	expect_tr(d, 0, 0x100000, W, 0x100000, 0x20000);
	expect_tr(d, 0, 0x100000, RW, 0x100000, 0x20000);
	expect_tr(d, 0x8000, 0x28000, R, 0x108000, 0x28000);
	expect_tr(d, 100, 50, R, 0x100064, 50);
	/* Two 2M mappings continuing in GPA, and an MMIO mapping continuing them: not merged with it. */
	cr_assert_eq(iommu_map(d, 2 * M2, 3 * M2 - 1, 8 * M2, RW), 0);
	cr_assert_eq(iommu_map(d, 3 * M2, 4 * M2 - 1, 9 * M2, RW), 0);
	cr_assert_eq(iommu_map(d, 4 * M2, 4 * M2 + K4 - 1, 10 * M2, RW | IOMMU_MMIO), 0);
	expect_tr(d, 2 * M2 + 5, UINT64_MAX, W, 8 * M2 + 5, 2 * M2 - 5);
	expect_tr(d, 4 * M2, UINT64_MAX, W, 10 * M2, K4);
	cr_assert_eq(stats(d).translations, 7);
	cr_assert_eq(stats(d).translate_faults, 0);
	iommu_domain_free(d);
}

Test(iommu_domain, unmapped_notifier_runs_before_return_per_contiguous_run)
{
	struct iommu_domain *d = dom_make(NULL);
	struct log a = { .d = d, .try_reentry = true }, b = { .d = d };
	struct iommu_notifier na = { .unmapped = on_unmapped, .ctx = &a }, nb = { .unmapped = on_unmapped, .ctx = &b };
	uint64_t bytes;

	cr_assert_eq(iommu_map(d, 0x10000, 0x1ffff, 0x1000000, RW), 0);
	cr_assert_eq(iommu_map(d, 0x20000, 0x2ffff, 0x7000000, R), 0); /* adjacent in IOVA only */
	cr_assert_eq(iommu_map(d, 0x40000, 0x4ffff, 0x2000000, RW), 0);
	cr_assert_eq(iommu_map(d, 0x90000, 0x9ffff, 0x3000000, RW), 0);
	cr_assert_eq(iommu_notifier_add(d, &na), 0);
	cr_assert_eq(iommu_notifier_add(d, &nb), 0);
	cr_assert_eq(iommu_unmap(d, 0, 0x5ffff, &bytes), 0);
	cr_assert_eq(bytes, 0x30000);
	/* Logged during the call, so before it returned; the page table had already dropped each range. */
	cr_assert_eq(a.n, 2);
	expect_unmapped_call(&a, 0, 0x10000, 0x20000);
	expect_unmapped_call(&a, 1, 0x40000, 0x10000);
	cr_assert_eq(a.calls[0].reentry, -EDEADLK, "callbacks run under the write lock");
	cr_assert_eq(b.n, 2);
	expect_unmapped_call(&b, 0, 0x10000, 0x20000);
	expect_unmapped_call(&b, 1, 0x40000, 0x10000);
	/* Unsubscribed: no more calls. */
	iommu_notifier_del(d, &na);
	cr_assert_eq(iommu_unmap(d, 0x90000, 0x9ffff, NULL), 0);
	cr_assert_eq(a.n, 2);
	cr_assert_eq(b.n, 3);
	expect_unmapped_call(&b, 2, 0x90000, 0x10000);
	iommu_notifier_del(d, &nb);
	iommu_notifier_del(d, &nb); /* not registered: nothing */
	iommu_domain_free(d);
}

Test(iommu_domain, mapped_notifier_and_registration_rules)
{
	struct iommu_domain *d = dom_make(NULL);
	struct log l = { .d = d };
	struct iommu_notifier n = { .mapped = on_mapped, .ctx = &l }, none = { .ctx = &l };
	struct iommu_notifier more[IOMMU_MAX_NOTIFIERS];

	cr_assert_eq(iommu_notifier_add(d, &n), 0);
	cr_assert_eq(iommu_notifier_add(d, &n), -EEXIST);
	cr_assert_eq(iommu_notifier_add(d, &none), -EINVAL);
	cr_assert_eq(iommu_notifier_add(d, NULL), -EINVAL);
	for (unsigned int i = 0; i < IOMMU_MAX_NOTIFIERS - 1; i++) {
		more[i] = (struct iommu_notifier){ .mapped = on_mapped, .ctx = &l };
		cr_assert_eq(iommu_notifier_add(d, &more[i]), 0);
	}
	more[IOMMU_MAX_NOTIFIERS - 1] = n;
	cr_assert_eq(iommu_notifier_add(d, &more[IOMMU_MAX_NOTIFIERS - 1]), -ENOSPC);
	for (unsigned int i = 0; i < IOMMU_MAX_NOTIFIERS - 1; i++)
		iommu_notifier_del(d, &more[i]);

	cr_assert_eq(iommu_map(d, 0x200000, 0x3fffff, 0x40000000, R | IOMMU_MMIO), 0);
	cr_assert_eq(l.n, 1);
	cr_assert(l.calls[0].mapped);
	cr_assert_eq(l.calls[0].iova, 0x200000);
	cr_assert_eq(l.calls[0].gpa, 0x40000000);
	cr_assert_eq(l.calls[0].len, 0x200000);
	cr_assert_eq(l.calls[0].perm, R | IOMMU_MMIO);
	cr_assert(l.calls[0].pt_first && l.calls[0].pt_last, "the page table maps it during the call");
	cr_assert_eq(iommu_map(d, 0x200000, 0x200fff, 0, R), -EEXIST);
	cr_assert_eq(l.n, 1);
	iommu_notifier_del(d, &n);
	cr_assert_eq(iommu_map(d, 0x400000, 0x400fff, 0, R), 0);
	cr_assert_eq(l.n, 1);
	iommu_domain_free(d);
}

Test(iommu_domain, unmap_all)
{
	struct iommu_domain *d = dom_make(NULL);
	struct log l = { .d = d };
	struct iommu_notifier n = { .unmapped = on_unmapped, .ctx = &l };
	struct iommu_stats s;

	cr_assert_eq(iommu_map(d, 0, G1 - 1, 0, RW), 0);
	cr_assert_eq(iommu_map(d, G1, G1 + K4 - 1, 0x1000, R), 0);
	cr_assert_eq(iommu_map(d, 1ull << 40, (1ull << 40) + 3 * M2 - 1, 0, RW), 0);
	cr_assert_eq(iommu_notifier_add(d, &n), 0);
	iommu_unmap_all(d);
	cr_assert_eq(l.n, 2);
	expect_unmapped_call(&l, 0, 0, G1 + K4);
	expect_unmapped_call(&l, 1, 1ull << 40, 3 * M2);
	s = stats(d);
	cr_assert_eq(s.mappings, 0);
	cr_assert_eq(s.table_bytes, TB);
	cr_assert_eq(s.unmapped_bytes, G1 + K4 + 3 * M2);
	cr_assert_eq(s.unmap_requests, 0, "a reset is not a request");
	cr_assert_eq(tr(d, 0, R), -ENOENT);
	expect_consistent(d);
	iommu_unmap_all(d);
	cr_assert_eq(l.n, 2, "nothing left to report");
	cr_assert_eq(iommu_map(d, 0, G1 - 1, 0, RW), 0, "usable again");
	iommu_notifier_del(d, &n);
	iommu_domain_free(d);
}

Test(iommu_domain, stats)
{
	struct iommu_domain *d = dom_make(NULL);
	struct iommu_stats s;
	uint64_t g, r;

	cr_assert_eq(iommu_map(d, 0x10000, 0x1ffff, 0, RW), 0);
	cr_assert_eq(iommu_map(d, M2, 2 * M2 - 1, M2, R), 0);
	cr_assert_eq(iommu_map(d, 0x10000, 0x1ffff, 0, RW), -EEXIST);
	cr_assert_eq(iommu_translate(d, 0x10000, 8, R, &g, &r), 0);
	cr_assert_eq(iommu_translate(d, M2, 8, W, &g, &r), -EACCES);
	cr_assert_eq(iommu_translate(d, 0, 8, R, &g, &r), -ENOENT);
	cr_assert_eq(iommu_unmap(d, 0, 0x1ffff, NULL), 0);
	cr_assert_eq(iommu_unmap(d, M2, M2 + 5, NULL), -ERANGE);
	s = stats(d);
	cr_assert_eq(s.mappings, 1);
	cr_assert_eq(s.map_requests, 3);
	cr_assert_eq(s.unmap_requests, 2);
	cr_assert_eq(s.translations, 3);
	cr_assert_eq(s.translate_faults, 2);
	cr_assert_eq(s.mapped_bytes, 0x10000 + M2);
	cr_assert_eq(s.unmapped_bytes, 0x10000);
	cr_assert_eq(s.table_bytes, 3 * TB, "root, level 2 and the level-1 node holding the 2M leaf");
	iommu_domain_free(d);
}

/*
 * Randomized: MAP/UNMAP/translate against a page array of mapping ids over 16 MiB, checking every
 * return code (overlap, straddle, cap), the bytes unmapped, every translation, and a notifier-fed
 * cache that must always equal what is mapped (nothing stale survives an unmap).
 */
#define RW_PAGES 4096u
#define RMAX 300u

struct rmap {
	uint64_t start, last, gpa;
	unsigned int flags;
	bool live;
};

struct rdom {
	struct rmap maps[4096];
	unsigned int nmaps, live;
	int page[RW_PAGES]; /* mapping index or -1 */
	uint8_t cache[RW_PAGES];
	bool cache_error;
};

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1Dull;
}

static void cache_mapped(void *ctx, uint64_t iova, uint64_t gpa, uint64_t len, unsigned int perm)
{
	struct rdom *rd = ctx;

	for (uint64_t p = iova / K4; p < (iova + len) / K4; p++) {
		rd->cache_error |= p >= RW_PAGES || rd->cache[p];
		if (p < RW_PAGES)
			rd->cache[p] = 1;
	}
}

static void cache_unmapped(void *ctx, uint64_t iova, uint64_t len)
{
	struct rdom *rd = ctx;

	rd->cache_error |= (iova | len) % K4 != 0;
	for (uint64_t p = iova / K4; p < (iova + len) / K4; p++) {
		rd->cache_error |= p >= RW_PAGES || !rd->cache[p];
		if (p < RW_PAGES)
			rd->cache[p] = 0;
	}
}

static int ref_translate(const struct rdom *rd, uint64_t iova, uint64_t len, unsigned int perm, uint64_t *gpa,
			 uint64_t *run)
{
	uint64_t pg = iova / K4, got;
	const struct rmap *m, *m0;

	if (pg >= RW_PAGES || rd->page[pg] < 0)
		return -ENOENT;
	m0 = &rd->maps[rd->page[pg]];
	if ((m0->flags & perm) != perm)
		return -EACCES;
	*gpa = m0->gpa + (iova - m0->start);
	got = K4 - iova % K4;
	for (uint64_t p = pg + 1; got < len && p < RW_PAGES && rd->page[p] >= 0; p++, got += K4) {
		m = &rd->maps[rd->page[p]];
		if ((m->flags & perm) != perm || ((m->flags ^ m0->flags) & IOMMU_MMIO) ||
		    m->gpa + (p * K4 - m->start) != *gpa + got)
			break;
	}
	*run = got < len ? got : len;
	return 0;
}

Test(iommu_domain, random_against_reference, .timeout = 120)
{
	static const unsigned int flags[] = { RW, RW, RW, R, W, RW | IOMMU_MMIO };
	struct iommu_limits lim = default_limits;
	struct rdom *rd = calloc(1, sizeof(*rd));
	struct iommu_notifier n = { .mapped = cache_mapped, .unmapped = cache_unmapped, .ctx = rd };
	struct iommu_domain *d;
	uint64_t seed = 0x0123456789abcdefull, counts[6] = { 0 };

	cr_assert_not_null(rd);
	lim.max_mappings = RMAX;
	d = dom_make(&lim);
	cr_assert_eq(iommu_notifier_add(d, &n), 0);
	for (unsigned int p = 0; p < RW_PAGES; p++)
		rd->page[p] = -1;
	for (int step = 0; step < 6000; step++) {
		unsigned int op = (unsigned int)(rnd(&seed) % 10);
		uint64_t s = rnd(&seed) % RW_PAGES, pages = 1 + rnd(&seed) % (rnd(&seed) % 8 ? 8 : 256);

		if (s + pages > RW_PAGES)
			pages = RW_PAGES - s;
		if (op < 5 && rd->nmaps < 4096) {
			/* Often continue the GPA of the mapping just below, so translations merge. */
			uint64_t gpa = (rnd(&seed) % 0x100000) * K4;
			unsigned int f = flags[rnd(&seed) % 6];
			int want = 0, err;

			if (s > 0 && rd->page[s - 1] >= 0 && rnd(&seed) % 2) {
				const struct rmap *b = &rd->maps[rd->page[s - 1]];

				gpa = b->gpa + (s * K4 - b->start);
				f = b->flags;
			}
			for (uint64_t p = s; p < s + pages; p++)
				if (rd->page[p] >= 0)
					want = -EEXIST;
			if (!want && rd->live == RMAX)
				want = -ENOSPC;
			err = iommu_map(d, s * K4, (s + pages) * K4 - 1, gpa, f);
			cr_assert_eq(err, want, "step %d: map %#lx+%lu pages: %d, want %d", step, s * K4, pages, err,
				     want);
			if (!err) {
				rd->maps[rd->nmaps] =
					(struct rmap){ s * K4, (s + pages) * K4 - 1, gpa, f, true };
				for (uint64_t p = s; p < s + pages; p++)
					rd->page[p] = (int)rd->nmaps;
				rd->nmaps++;
				rd->live++;
			}
			counts[err == 0 ? 0 : err == -EEXIST ? 1 : 2]++;
		} else if (op < 8) {
			/* Byte-granular ends: a cut mapping at either end means -ERANGE. */
			uint64_t start = s * K4 + (rnd(&seed) % 2 ? rnd(&seed) % K4 : 0);
			uint64_t end = (s + pages) * K4 - 1 - (rnd(&seed) % 2 ? rnd(&seed) % K4 : 0);
			int ms = rd->page[start / K4], me = end / K4 < RW_PAGES ? rd->page[end / K4] : -1;
			uint64_t bytes, want_bytes = 0;
			int want = 0, err;

			if (end < start)
				end = start;
			if ((ms >= 0 && rd->maps[ms].start < start) || (me >= 0 && rd->maps[me].last > end))
				want = -ERANGE;
			if (!want) {
				for (unsigned int i = 0; i < rd->nmaps; i++) {
					struct rmap *m = &rd->maps[i];

					if (!m->live || m->start < start || m->start > end)
						continue;
					want_bytes += m->last - m->start + 1;
					m->live = false;
					rd->live--;
					for (uint64_t p = m->start / K4; p <= m->last / K4; p++)
						rd->page[p] = -1;
				}
			}
			err = iommu_unmap(d, start, end, &bytes);
			cr_assert_eq(err, want, "step %d: unmap [%#lx, %#lx]: %d, want %d", step, start, end, err,
				     want);
			cr_assert_eq(bytes, want_bytes, "step %d: unmapped %#lx, want %#lx", step, bytes, want_bytes);
			counts[err ? 4 : 3]++;
		} else {
			uint64_t iova = rnd(&seed) % (RW_PAGES * K4 + K4), len = 1 + rnd(&seed) % (64 * K4);
			unsigned int perm = (unsigned int)(rnd(&seed) % 4);
			uint64_t g = 0, r = 0, eg = 0, er = 0;
			int err = iommu_translate(d, iova, len, perm, &g, &r);
			int want = ref_translate(rd, iova, len, perm, &eg, &er);

			cr_assert_eq(err, want, "step %d: translate %#lx/%u: %d, want %d", step, iova, perm, err,
				     want);
			cr_assert(err || (g == eg && r == er), "step %d: translate %#lx+%#lx: %#lx+%#lx, want %#lx+%#lx",
				  step, iova, len, g, r, eg, er);
			counts[5]++;
		}
		cr_assert(!rd->cache_error, "step %d: notifications match the mappings", step);
		for (unsigned int p = 0; p < RW_PAGES; p++)
			cr_assert_eq(rd->cache[p], rd->page[p] >= 0, "step %d: page %u cached iff mapped", step, p);
		if (step % 250 == 0)
			expect_consistent(d);
	}
	for (unsigned int i = 0; i < 6; i++)
		cr_assert_gt(counts[i], 50, "outcome %u was exercised (%lu times)", i, counts[i]);
	cr_assert_eq(stats(d).mappings, rd->live);
	iommu_unmap_all(d);
	cr_assert(!rd->cache_error);
	for (unsigned int p = 0; p < RW_PAGES; p++)
		cr_assert_eq(rd->cache[p], 0);
	cr_assert_eq(stats(d).table_bytes, TB);
	iommu_notifier_del(d, &n);
	iommu_domain_free(d);
	free(rd);
}

/*
 * Translations from several threads while one thread maps and unmaps: the stable mapping always
 * translates, the churned one either translates correctly or not at all.
 */
struct race {
	struct iommu_domain *d;
	volatile bool stop;
	uint64_t bad, hits, misses;
};

static void *translator(void *arg)
{
	struct race *x = arg;
	uint64_t n = 0;

	while (!__atomic_load_n(&x->stop, __ATOMIC_ACQUIRE) || n < 1000) {
		uint64_t g, r;
		int err;

		n++;
		err = iommu_translate(x->d, 0x10000 + (n % 16) * K4, K4, R, &g, &r);
		if (err || g != 0x500000 + (n % 16) * K4)
			__atomic_fetch_add(&x->bad, 1, __ATOMIC_RELAXED);
		err = iommu_translate(x->d, M2 + (n % 512) * K4, 8, W, &g, &r);
		if (err == 0 && g == 0x40000000 + (n % 512) * K4 && r == 8)
			__atomic_fetch_add(&x->hits, 1, __ATOMIC_RELAXED);
		else if (err == -ENOENT)
			__atomic_fetch_add(&x->misses, 1, __ATOMIC_RELAXED);
		else
			__atomic_fetch_add(&x->bad, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

Test(iommu_domain, concurrent_translate_during_map_unmap, .timeout = 60)
{
	struct race x = { .d = dom_make(NULL) };
	pthread_t t[3];

	cr_assert_eq(iommu_map(x.d, 0x10000, 0x1ffff, 0x500000, R), 0);
	for (unsigned int i = 0; i < 3; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, translator, &x), 0);
	for (unsigned int i = 0; i < 2000; i++) {
		cr_assert_eq(iommu_map(x.d, M2, 2 * M2 - 1, 0x40000000, RW), 0);
		cr_assert_eq(iommu_unmap(x.d, M2, 2 * M2 - 1, NULL), 0);
	}
	__atomic_store_n(&x.stop, true, __ATOMIC_RELEASE);
	for (unsigned int i = 0; i < 3; i++)
		cr_assert_eq(pthread_join(t[i], NULL), 0);
	cr_assert_eq(x.bad, 0);
	cr_assert_gt(x.hits + x.misses, 0);
	cr_assert_geq(stats(x.d).translations, 3 * 2 * 1000, "every translation counted");
	iommu_domain_free(x.d);
}
