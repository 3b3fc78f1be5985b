#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "iommu/iommu.h"

#define K4 UINT64_C(0x1000)
#define M2 (UINT64_C(1) << 21)
#define G1 (UINT64_C(1) << 30)
#define TB IOMMU_PT_TABLE_BYTES
#define RW (IOMMU_READ | IOMMU_WRITE)

static struct iommu_pt *pt_make(uint64_t input_end, uint64_t max_bytes)
{
	struct iommu_pt *pt;

	cr_assert_eq(iommu_pt_new(input_end, max_bytes, &pt), 0);
	return pt;
}

static struct iommu_pt_shape shape(const struct iommu_pt *pt)
{
	struct iommu_pt_shape s;

	iommu_pt_inspect(pt, &s);
	cr_assert_eq(s.tables * TB, iommu_pt_table_bytes(pt), "table_bytes counts every node");
	cr_assert_eq(iommu_pt_check(pt), 0, "use counts, free list and budget are consistent");
	return s;
}

static void expect_shape(const struct iommu_pt *pt, uint64_t tables, uint64_t l4k, uint64_t l2m, uint64_t l1g)
{
	struct iommu_pt_shape s = shape(pt);

	cr_assert_eq(s.tables, tables, "tables %lu, want %lu", s.tables, tables);
	cr_assert_eq(s.leaves_4k, l4k, "4K leaves %lu, want %lu", s.leaves_4k, l4k);
	cr_assert_eq(s.leaves_2m, l2m, "2M leaves %lu, want %lu", s.leaves_2m, l2m);
	cr_assert_eq(s.leaves_1g, l1g, "1G leaves %lu, want %lu", s.leaves_1g, l1g);
}

static void expect_run(const struct iommu_pt *pt, uint64_t iova, uint64_t len, uint64_t gpa, uint64_t run,
		       unsigned int perm)
{
	uint64_t g = 0, r = 0;
	unsigned int p = 0;

	cr_assert_eq(iommu_pt_lookup(pt, iova, len, &g, &r, &p), 0, "iova %#lx mapped", iova);
	cr_assert_eq(g, gpa, "iova %#lx: gpa %#lx, want %#lx", iova, g, gpa);
	cr_assert_eq(r, run, "iova %#lx: run %#lx, want %#lx", iova, r, run);
	cr_assert_eq(p, perm, "iova %#lx: perm %u, want %u", iova, p, perm);
}

static void expect_hole(const struct iommu_pt *pt, uint64_t iova)
{
	uint64_t g, r;
	unsigned int p;

	cr_assert_eq(iommu_pt_lookup(pt, iova, 1, &g, &r, &p), -ENOENT, "iova %#lx unmapped", iova);
}

Test(iommu_pgtable, map_lookup_4k)
{
	struct iommu_pt *pt = pt_make(IOMMU_IOVA_LAST, UINT64_MAX);

	expect_shape(pt, 1, 0, 0, 0);
	cr_assert_eq(iommu_pt_map(pt, 0x5000, 0x9000, K4, RW), 0);
	expect_shape(pt, 4, 1, 0, 0);
	expect_run(pt, 0x5123, 100, 0x9123, 100, RW);
	expect_run(pt, 0x5123, 1ull << 40, 0x9123, K4 - 0x123, RW);
	expect_run(pt, 0x5fff, 1, 0x9fff, 1, RW);
	expect_hole(pt, 0x4fff);
	expect_hole(pt, 0x6000);
	iommu_pt_free(pt);
}

Test(iommu_pgtable, map_2m_and_1g_leaves)
{
	struct iommu_pt *pt = pt_make(IOMMU_IOVA_LAST, UINT64_MAX);

	cr_assert_eq(iommu_pt_map(pt, 3 * M2, 7 * M2, M2, IOMMU_READ), 0);
	expect_shape(pt, 3, 0, 1, 0);
	expect_run(pt, 3 * M2 + 0x1234, M2, 7 * M2 + 0x1234, M2 - 0x1234, IOMMU_READ);
	cr_assert_eq(iommu_pt_map(pt, 5 * G1, 9 * G1, G1, IOMMU_WRITE), 0);
	expect_shape(pt, 3, 0, 1, 1); /* the 1G leaf shares the level-2 node */
	expect_run(pt, 5 * G1, 2 * G1, 9 * G1, G1, IOMMU_WRITE);
	expect_run(pt, 6 * G1 - 1, 2, 10 * G1 - 1, 1, IOMMU_WRITE);
	expect_hole(pt, 6 * G1);
	iommu_pt_free(pt);
}

/* One range whose pieces need every leaf size: 4K head, 2M up to 1G, a 1G leaf, a 2M leaf, 4K tail. */
Test(iommu_pgtable, largest_leaf_per_piece)
{
	struct iommu_pt *pt = pt_make(IOMMU_IOVA_LAST, UINT64_MAX);
	uint64_t iova = M2 - K4, len = (2 * G1 + M2 + K4) - iova, gpa = iova + (64 * G1);

	cr_assert_eq(iommu_pt_map(pt, iova, gpa, len, RW), 0);
	expect_shape(pt, 1 + 1 + 2 + 2, 2, 511 + 1, 1);
	/* The run merges across every leaf. */
	expect_run(pt, iova, UINT64_MAX, gpa, len, RW);
	expect_run(pt, G1 - 5, 10, gpa + (G1 - 5 - iova), 10, RW);
	iommu_pt_free(pt);
}

Test(iommu_pgtable, gpa_alignment_limits_leaf_size)
{
	struct iommu_pt *pt = pt_make(IOMMU_IOVA_LAST, UINT64_MAX);

	/* 2M-aligned IOVA, GPA only 4K aligned: 4K leaves only. */
	cr_assert_eq(iommu_pt_map(pt, 0, 0x1000000 + K4, 2 * M2, RW), 0);
	expect_shape(pt, 1 + 1 + 1 + 2, 1024, 0, 0);
	expect_run(pt, 0, 4 * M2, 0x1000000 + K4, 2 * M2, RW);
	/* 1G-aligned IOVA, 2M-aligned GPA: 2M leaves only. */
	cr_assert_eq(iommu_pt_map(pt, G1, 33 * M2, G1, RW), 0);
	expect_shape(pt, 1 + 1 + 1 + 2 + 1, 1024, 512, 0);
	expect_run(pt, G1 + 5, G1, 33 * M2 + 5, G1 - 5, RW);
	iommu_pt_free(pt);
}

Test(iommu_pgtable, partial_unmap_splits_1g_into_2m_and_4k)
{
	struct iommu_pt *pt = pt_make(IOMMU_IOVA_LAST, UINT64_MAX);
	uint64_t hole = G1 + M2 + K4;

	cr_assert_eq(iommu_pt_map(pt, G1, 5 * G1, G1, RW), 0);
	expect_shape(pt, 2, 0, 0, 1);
	cr_assert_eq(iommu_pt_unmap(pt, hole, K4), 0);
	/* The 1G leaf became 512 2M leaves, the second of which became 512 4K leaves, one removed. */
	expect_shape(pt, 4, 511, 511, 0);
	expect_hole(pt, hole);
	expect_run(pt, G1, G1, 5 * G1, M2 + K4, RW);
	expect_run(pt, hole + K4, G1, 5 * G1 + M2 + 2 * K4, G1 - M2 - 2 * K4, RW);
	expect_run(pt, G1 + 100 * M2 + 7, 1, 5 * G1 + 100 * M2 + 7, 1, RW);
	/* Cut across a 2M boundary: two more 2M leaves split. */
	cr_assert_eq(iommu_pt_unmap(pt, G1 + 10 * M2 - K4, 2 * K4), 0);
	expect_shape(pt, 6, 511 + 2 * 511, 509, 0);
	expect_hole(pt, G1 + 10 * M2 - K4);
	expect_hole(pt, G1 + 10 * M2);
	expect_run(pt, G1 + 10 * M2 + K4, M2, 5 * G1 + 10 * M2 + K4, M2, RW);
	/* Putting the pages back makes one run again, although the leaves stay small. */
	cr_assert_eq(iommu_pt_map(pt, hole, 5 * G1 + M2 + K4, K4, RW), 0);
	cr_assert_eq(iommu_pt_map(pt, G1 + 10 * M2 - K4, 5 * G1 + 10 * M2 - K4, 2 * K4, RW), 0);
	expect_run(pt, G1, UINT64_MAX, 5 * G1, G1, RW);
	/* Unmapping everything frees every node but the root. */
	cr_assert_eq(iommu_pt_unmap(pt, G1, G1), 0);
	expect_shape(pt, 1, 0, 0, 0);
	expect_hole(pt, G1);
	iommu_pt_free(pt);
}

Test(iommu_pgtable, run_stops_at_perm_change_gpa_gap_and_hole)
{
	struct iommu_pt *pt = pt_make(IOMMU_IOVA_LAST, UINT64_MAX);
	uint64_t g, r;

	cr_assert_eq(iommu_pt_map(pt, 0, 0x10000, 2 * K4, IOMMU_READ), 0);
	cr_assert_eq(iommu_pt_map(pt, 2 * K4, 0x12000, 2 * K4, RW), 0);          /* GPA continues, perm changes */
	cr_assert_eq(iommu_pt_map(pt, 4 * K4, 0x20000, K4, RW), 0);              /* GPA jumps */
	cr_assert_eq(iommu_pt_map(pt, 5 * K4, 0x21000, K4, RW | IOMMU_MMIO), 0); /* GPA continues, MMIO */
	/* 6 * K4 is a hole */
	cr_assert_eq(iommu_pt_map(pt, 7 * K4, 0x23000, K4, RW), 0);
	expect_run(pt, 0, 0x100000, 0x10000, 2 * K4, IOMMU_READ);
	expect_run(pt, 2 * K4, 0x100000, 0x12000, 2 * K4, RW);
	expect_run(pt, 4 * K4, 0x100000, 0x20000, K4, RW);
	expect_run(pt, 5 * K4, 0x100000, 0x21000, K4, RW | IOMMU_MMIO);
	expect_hole(pt, 6 * K4);
	expect_run(pt, 7 * K4 + 1, 0x100000, 0x23001, K4 - 1, RW);

	/* translate merges across permissions that all allow the access, but not across MMIO. */
	cr_assert_eq(iommu_pt_translate(pt, 0, 0x100000, IOMMU_READ, &g, &r), 0);
	cr_assert_eq(g, 0x10000);
	cr_assert_eq(r, 4 * K4);
	cr_assert_eq(iommu_pt_translate(pt, 0, 0x100000, IOMMU_WRITE, &g, &r), -EACCES);
	cr_assert_eq(iommu_pt_translate(pt, K4, 0x100000, IOMMU_WRITE, &g, &r), -EACCES);
	cr_assert_eq(iommu_pt_translate(pt, 2 * K4, 0x100000, RW, &g, &r), 0);
	cr_assert_eq(r, 2 * K4);
	cr_assert_eq(iommu_pt_translate(pt, 4 * K4, 0x100000, IOMMU_READ, &g, &r), 0);
	cr_assert_eq(r, K4, "an MMIO leaf ends the run even though its GPA continues");
	cr_assert_eq(iommu_pt_translate(pt, 6 * K4, 1, IOMMU_READ, &g, &r), -ENOENT);
	iommu_pt_free(pt);
}

Test(iommu_pgtable, run_crosses_node_boundaries)
{
	struct iommu_pt *pt = pt_make(IOMMU_IOVA_LAST, UINT64_MAX);
	uint64_t iova = (1ull << 39) - 3 * K4; /* 3 pages before a root entry boundary */

	/* 4K leaves ending one level-0 node, one level-1 node, one level-2 node and one root entry. */
	cr_assert_eq(iommu_pt_map(pt, iova, 0x7000, 6 * K4, RW), 0);
	expect_run(pt, iova, UINT64_MAX, 0x7000, 6 * K4, RW);
	expect_run(pt, iova + 2 * K4 + 1, 2 * K4, 0x9001, 2 * K4, RW);
	iommu_pt_free(pt);
}

Test(iommu_pgtable, input_limit_48_bits)
{
	struct iommu_pt *pt;
	uint64_t top = 1ull << 48;

	cr_assert_eq(iommu_pt_new(top, UINT64_MAX, &pt), -EINVAL);
	cr_assert_eq(iommu_pt_new(IOMMU_IOVA_LAST, TB - 1, &pt), -EINVAL, "the root alone needs a node");
	pt = pt_make(IOMMU_IOVA_LAST, UINT64_MAX);
	cr_assert_eq(iommu_pt_map(pt, top, 0, K4, RW), -ERANGE);
	cr_assert_eq(iommu_pt_map(pt, top - K4, 0, 2 * K4, RW), -ERANGE);
	cr_assert_eq(iommu_pt_map(pt, UINT64_MAX - K4 + 1, 0, 2 * K4, RW), -EINVAL, "iova + len wraps");
	cr_assert_eq(iommu_pt_unmap(pt, top, K4), -ERANGE);
	/* The top gigabyte as one leaf; a run ends at the end of the space. */
	cr_assert_eq(iommu_pt_map(pt, top - G1, 3 * G1, G1, RW), 0);
	expect_shape(pt, 2, 0, 0, 1);
	expect_run(pt, top - 1, UINT64_MAX, 4 * G1 - 1, 1, RW);
	expect_run(pt, top - G1, UINT64_MAX, 3 * G1, G1, RW);
	expect_hole(pt, top);
	expect_hole(pt, UINT64_MAX);
	iommu_pt_free(pt);

	/* A smaller input range. */
	pt = pt_make(G1 - 1, UINT64_MAX);
	cr_assert_eq(iommu_pt_map(pt, G1 - K4, 0, K4, RW), 0);
	cr_assert_eq(iommu_pt_map(pt, G1, 0, K4, RW), -ERANGE);
	cr_assert_eq(iommu_pt_map(pt, 0, 0, G1 + K4, RW), -ERANGE);
	cr_assert_eq(iommu_pt_unmap(pt, G1 - K4, 2 * K4), -ERANGE);
	expect_hole(pt, G1);
	iommu_pt_free(pt);
}

Test(iommu_pgtable, bad_arguments)
{
	struct iommu_pt *pt = pt_make(IOMMU_IOVA_LAST, UINT64_MAX);
	uint64_t g, r;
	unsigned int p;

	cr_assert_eq(iommu_pt_map(pt, 0, 0, 0, RW), -EINVAL);
	cr_assert_eq(iommu_pt_map(pt, 0x800, 0, K4, RW), -EINVAL);
	cr_assert_eq(iommu_pt_map(pt, 0, 0x800, K4, RW), -EINVAL);
	cr_assert_eq(iommu_pt_map(pt, 0, 0, 0x800, RW), -EINVAL);
	cr_assert_eq(iommu_pt_map(pt, 0, 0, K4, 8), -EINVAL);
	cr_assert_eq(iommu_pt_map(pt, 0, UINT64_MAX - K4 + 1, 2 * K4, RW), -EINVAL, "gpa + len wraps");
	cr_assert_eq(iommu_pt_map(pt, 0, UINT64_MAX - K4 + 1, K4, RW), 0, "the last GPA page is fine");
	expect_run(pt, 0, UINT64_MAX, UINT64_MAX - K4 + 1, K4, RW);
	cr_assert_eq(iommu_pt_unmap(pt, 0, 0), -EINVAL);
	cr_assert_eq(iommu_pt_unmap(pt, 0x10, K4), -EINVAL);
	cr_assert_eq(iommu_pt_lookup(pt, 0, 0, &g, &r, &p), -EINVAL);
	expect_shape(pt, 4, 1, 0, 0);
	iommu_pt_free(pt);
}

Test(iommu_pgtable, map_replaces_and_collapses)
{
	struct iommu_pt *pt = pt_make(IOMMU_IOVA_LAST, UINT64_MAX);

	cr_assert_eq(iommu_pt_map(pt, M2, 0x40000000, M2, RW), 0);
	cr_assert_eq(iommu_pt_map(pt, M2 + 5 * K4, 0x7000, K4, IOMMU_READ), 0);
	expect_shape(pt, 4, 512, 0, 0);
	expect_run(pt, M2 + 5 * K4, M2, 0x7000, K4, IOMMU_READ);
	expect_run(pt, M2, M2, 0x40000000, 5 * K4, RW);
	expect_run(pt, M2 + 6 * K4, M2, 0x40000000 + 6 * K4, M2 - 6 * K4, RW);
	/* Mapping the whole 2M again frees the 4K node. */
	cr_assert_eq(iommu_pt_map(pt, M2, 0x80000000, M2, IOMMU_WRITE), 0);
	expect_shape(pt, 3, 0, 1, 0);
	expect_run(pt, M2 + 5 * K4, M2, 0x80000000 + 5 * K4, M2 - 5 * K4, IOMMU_WRITE);
	iommu_pt_free(pt);
}

Test(iommu_pgtable, node_budget_enospc_leaves_table_unchanged)
{
	struct iommu_pt *pt = pt_make(IOMMU_IOVA_LAST, 4 * TB);

	cr_assert_eq(iommu_pt_map(pt, 0, 0x100000, K4, RW), 0);
	expect_shape(pt, 4, 1, 0, 0);
	cr_assert_eq(iommu_pt_map(pt, G1, 0x200000, K4, RW), -ENOSPC);
	cr_assert_eq(iommu_pt_map(pt, G1 + K4, 0x201000, 2 * G1, RW), -ENOSPC, "refused during the count");
	expect_shape(pt, 4, 1, 0, 0);
	expect_hole(pt, G1);
	/* A 2M leaf in the existing level-1 node needs no node. */
	cr_assert_eq(iommu_pt_map(pt, M2, 4 * M2, M2, RW), 0);
	expect_shape(pt, 4, 1, 1, 0);
	/* Splitting it would: refused, and the leaf still maps all of it. */
	cr_assert_eq(iommu_pt_unmap(pt, M2 + K4, K4), -ENOSPC);
	expect_run(pt, M2, UINT64_MAX, 4 * M2, M2, RW);
	/* Unmapping the 4K page frees its node, which the split can then use. */
	cr_assert_eq(iommu_pt_unmap(pt, 0, K4), 0);
	expect_shape(pt, 3, 0, 1, 0);
	cr_assert_eq(iommu_pt_unmap(pt, M2 + K4, K4), 0);
	expect_shape(pt, 4, 511, 0, 0);
	expect_hole(pt, M2 + K4);
	iommu_pt_free(pt);
}

Test(iommu_pgtable, free_list_reuses_empty_nodes_within_budget)
{
	struct iommu_pt *pt = pt_make(IOMMU_IOVA_LAST, 4 * TB);

	/* Churn of one page: the 3 nodes it empties are kept, and the next map takes them back. */
	for (int k = 0; k < 3; k++) {
		cr_assert_eq(iommu_pt_map(pt, 0, 0x100000, K4, RW), 0);
		expect_shape(pt, 4, 1, 0, 0);
		cr_assert_eq(shape(pt).free_nodes, 0);
		iommu_pt_unmap_leaves(pt, 0, K4 - 1);
		expect_shape(pt, 1, 0, 0, 0);
		cr_assert_eq(shape(pt).free_nodes, 3, "emptied nodes kept, not in table_bytes");
		cr_assert_eq(iommu_pt_table_bytes(pt), TB);
	}
	/* Kept nodes share the budget: 1 in the table + 3 kept fill 4, yet a 3-node map fits by reusing them. */
	cr_assert_eq(iommu_pt_map(pt, G1, 0x200000, K4, RW), 0);
	expect_shape(pt, 4, 1, 0, 0);
	cr_assert_eq(shape(pt).free_nodes, 0);
	cr_assert_eq(iommu_pt_map(pt, 2 * G1, 0x300000, K4, RW), -ENOSPC);
	expect_hole(pt, 0);
	expect_run(pt, G1, UINT64_MAX, 0x200000, K4, RW);
	/* A split takes a kept node too. */
	cr_assert_eq(iommu_pt_unmap(pt, G1, K4), 0);
	cr_assert_eq(iommu_pt_map(pt, M2, 4 * M2, M2, RW), 0);
	expect_shape(pt, 3, 0, 1, 0);
	cr_assert_eq(shape(pt).free_nodes, 1);
	cr_assert_eq(iommu_pt_unmap(pt, M2 + K4, K4), 0);
	expect_shape(pt, 4, 511, 0, 0);
	cr_assert_eq(shape(pt).free_nodes, 0);
	expect_run(pt, M2, UINT64_MAX, 4 * M2, K4, RW);
	expect_run(pt, M2 + 2 * K4, UINT64_MAX, 4 * M2 + 2 * K4, M2 - 2 * K4, RW);
	iommu_pt_free(pt);

	/* The list is bounded: emptying 41 nodes keeps IOMMU_PT_FREE_NODES of them. */
	pt = pt_make(IOMMU_IOVA_LAST, UINT64_MAX);
	for (uint64_t i = 0; i < 20; i++)
		cr_assert_eq(iommu_pt_map(pt, i * G1, i * K4, K4, RW), 0);
	expect_shape(pt, 42, 20, 0, 0);
	for (uint64_t i = 0; i < 20; i++)
		cr_assert_eq(iommu_pt_unmap(pt, i * G1, K4), 0);
	expect_shape(pt, 1, 0, 0, 0);
	cr_assert_eq(shape(pt).free_nodes, IOMMU_PT_FREE_NODES);
	/* Reused nodes come back empty: nothing stale shows through. */
	cr_assert_eq(iommu_pt_map(pt, 5 * G1 + 7 * K4, 0x400000, K4, RW), 0);
	expect_shape(pt, 4, 1, 0, 0);
	cr_assert_eq(shape(pt).free_nodes, IOMMU_PT_FREE_NODES - 3);
	expect_hole(pt, 5 * G1);
	expect_hole(pt, 5 * G1 + 8 * K4);
	/* Nodes dropped with their contents (a leaf replacing a subtree) are freed, not kept. */
	cr_assert_eq(iommu_pt_map(pt, 5 * G1, 0, G1, RW), 0);
	expect_shape(pt, 2, 0, 0, 1);
	cr_assert_eq(shape(pt).free_nodes, IOMMU_PT_FREE_NODES - 3);
	iommu_pt_free(pt);
}

Test(iommu_pgtable, unmap_leaves_removes_only_whole_leaves)
{
	struct iommu_pt *pt = pt_make(IOMMU_IOVA_LAST, UINT64_MAX);

	cr_assert_eq(iommu_pt_map(pt, M2, 0, M2, RW), 0);
	iommu_pt_unmap_leaves(pt, M2 + K4, 2 * M2 - 1);
	expect_shape(pt, 3, 0, 1, 0);
	iommu_pt_unmap_leaves(pt, M2 - 1, 2 * M2);
	expect_shape(pt, 1, 0, 0, 0);

	cr_assert_eq(iommu_pt_map(pt, 0, 0x100000, 4 * K4, RW), 0);
	iommu_pt_unmap_leaves(pt, 0x800, 0x2fff); /* page 0 cut, page 1 and 2 whole */
	expect_run(pt, 0, UINT64_MAX, 0x100000, K4, RW);
	expect_hole(pt, K4);
	expect_hole(pt, 2 * K4);
	expect_run(pt, 3 * K4, UINT64_MAX, 0x103000, K4, RW);
	iommu_pt_unmap_leaves(pt, 0, UINT64_MAX);
	expect_shape(pt, 1, 0, 0, 0);
	iommu_pt_unmap_leaves(pt, 5, 4); /* empty range */
	iommu_pt_free(pt);
}

Test(iommu_pgtable, clear_keeps_only_the_root)
{
	struct iommu_pt *pt = pt_make(IOMMU_IOVA_LAST, UINT64_MAX);

	cr_assert_eq(iommu_pt_map(pt, 0, 0, G1 + K4, RW), 0);
	cr_assert_eq(iommu_pt_map(pt, 1ull << 40, 0, 3 * M2, RW), 0);
	iommu_pt_clear(pt);
	expect_shape(pt, 1, 0, 0, 0);
	expect_hole(pt, 0);
	expect_hole(pt, 1ull << 40);
	cr_assert_eq(iommu_pt_map(pt, 0, 0, K4, RW), 0);
	expect_run(pt, 0, 1, 0, 1, RW);
	iommu_pt_free(pt);
}

/*
 * Randomized: the page table against an array of pages over a 4 GiB window that straddles a
 * root-entry boundary, with sizes and alignments chosen to produce every leaf size, splits and
 * replacements.
 */
#define W_BASE ((1ull << 39) - 2 * G1)
#define W_PAGES ((4 * G1) / K4)
#define REF_MAPPED 0x80u

struct ref {
	uint64_t *gpa;
	uint8_t *st; /* REF_MAPPED | perm */
};

static uint64_t rnd(uint64_t *s)
{
	/* xorshift64*: fixed seed, same sequence on every run */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1Dull;
}

static uint64_t rnd_below(uint64_t *s, uint64_t n)
{
	return rnd(s) % n;
}

/* A page-aligned [*iova, *iova + *len) inside the window. */
static void rnd_range(uint64_t *s, uint64_t *iova, uint64_t *len)
{
	static const uint64_t aligns[] = { K4, K4, M2, M2, G1 };
	uint64_t align = aligns[rnd_below(s, 5)], pages, first;
	unsigned int kind = (unsigned int)rnd_below(s, 20);

	if (kind < 10)
		pages = 1 + rnd_below(s, 16);
	else if (kind < 16)
		pages = (1 + rnd_below(s, 3)) * (M2 / K4) + rnd_below(s, 5) - 2;
	else if (kind < 19)
		pages = G1 / K4 + rnd_below(s, 1024) - 512;
	else
		pages = 1 + rnd_below(s, 2 * G1 / K4);
	first = rnd_below(s, W_PAGES) * K4 & ~(align - 1);
	if (first / K4 + pages > W_PAGES)
		pages = W_PAGES - first / K4;
	*iova = W_BASE + first;
	*len = pages * K4;
}

/* A GPA for iova sharing its alignment up to 1G, up to 2M, or only 4K; or a fixed offset, so neighbours merge. */
static uint64_t rnd_gpa(uint64_t *s, uint64_t iova)
{
	uint64_t base = rnd(s) & ((1ull << 46) - 1) & ~(G1 - 1);

	switch (rnd_below(s, 5)) {
	case 0:
	case 1:
		return iova + 64 * G1;
	case 2:
		return base + (iova & (G1 - 1));
	case 3:
		return base + (iova & (M2 - 1)) + rnd_below(s, G1 / M2) * M2;
	default:
		return base + rnd_below(s, G1 / K4) * K4;
	}
}

/* What lookup (need 0, same all bits) or translate (need perm, same MMIO) must return, from the array. */
static int ref_run(const struct ref *ref, uint64_t iova, uint64_t len, unsigned int need, unsigned int same,
		   uint64_t *gpa, uint64_t *run, unsigned int *perm)
{
	uint64_t pg, off, got;
	unsigned int p0;

	if (iova < W_BASE || iova - W_BASE >= W_PAGES * K4)
		return -ENOENT;
	pg = (iova - W_BASE) / K4;
	off = iova % K4;
	if (!(ref->st[pg] & REF_MAPPED))
		return -ENOENT;
	p0 = ref->st[pg] & IOMMU_PERM_MASK;
	if ((p0 & need) != need)
		return -EACCES;
	got = K4 - off;
	for (uint64_t k = 1; got < len && pg + k < W_PAGES; k++, got += K4) {
		unsigned int p = ref->st[pg + k] & IOMMU_PERM_MASK;

		if (!(ref->st[pg + k] & REF_MAPPED) || (p & need) != need || ((p ^ p0) & same) ||
		    ref->gpa[pg + k] != ref->gpa[pg] + k * K4)
			break;
	}
	*gpa = ref->gpa[pg] + off;
	*run = got < len ? got : len;
	*perm = p0;
	return 0;
}

static void check_lookup(const struct iommu_pt *pt, const struct ref *ref, uint64_t iova, uint64_t len,
			 uint64_t *run_out)
{
	uint64_t g = 0, r = 0, eg = 0, er = 0;
	unsigned int p = 0, ep = 0;
	int err = iommu_pt_lookup(pt, iova, len, &g, &r, &p);
	int want = ref_run(ref, iova, len, 0, IOMMU_PERM_MASK, &eg, &er, &ep);

	cr_assert_eq(err, want, "lookup %#lx+%#lx: %d, want %d", iova, len, err, want);
	if (!err) {
		cr_assert_eq(g, eg, "lookup %#lx: gpa %#lx, want %#lx", iova, g, eg);
		cr_assert_eq(r, er, "lookup %#lx+%#lx: run %#lx, want %#lx", iova, len, r, er);
		cr_assert_eq(p, ep, "lookup %#lx: perm %u, want %u", iova, p, ep);
	}
	*run_out = err ? 0 : r;
}

static void check_translate(const struct iommu_pt *pt, const struct ref *ref, uint64_t iova, uint64_t len,
			    unsigned int need)
{
	uint64_t g = 0, r = 0, eg = 0, er = 0;
	unsigned int ep;
	int err = iommu_pt_translate(pt, iova, len, need, &g, &r);
	int want = ref_run(ref, iova, len, need, IOMMU_MMIO, &eg, &er, &ep);

	cr_assert_eq(err, want, "translate %#lx+%#lx/%u: %d, want %d", iova, len, need, err, want);
	if (!err) {
		cr_assert_eq(g, eg);
		cr_assert_eq(r, er, "translate %#lx+%#lx/%u: run %#lx, want %#lx", iova, len, need, r, er);
	}
}

static uint64_t ref_mapped_bytes(const struct ref *ref)
{
	uint64_t n = 0;

	for (uint64_t i = 0; i < W_PAGES; i++)
		n += ref->st[i] & REF_MAPPED ? K4 : 0;
	return n;
}

Test(iommu_pgtable, random_against_reference, .timeout = 120)
{
	static const unsigned int perms[] = { RW, RW, RW, IOMMU_READ, IOMMU_WRITE, RW | IOMMU_MMIO, 0 };
	struct iommu_pt *pt = pt_make(IOMMU_IOVA_LAST, UINT64_MAX);
	struct ref ref = { calloc(W_PAGES, sizeof(uint64_t)), calloc(W_PAGES, 1) };
	uint64_t seed = 0x9e3779b97f4a7c15ull, run, ops[3] = { 0 };
	struct iommu_pt_shape most = { 0 };

	cr_assert(ref.gpa && ref.st);
	for (int step = 0; step < 4000; step++) {
		unsigned int op = (unsigned int)rnd_below(&seed, 10);
		uint64_t iova, len;

		rnd_range(&seed, &iova, &len);
		if (op < 4) {
			uint64_t gpa = rnd_gpa(&seed, iova);
			unsigned int perm = perms[rnd_below(&seed, 7)];

			cr_assert_eq(iommu_pt_map(pt, iova, gpa, len, perm), 0, "map %#lx+%#lx", iova, len);
			for (uint64_t k = 0; k < len / K4; k++) {
				ref.gpa[(iova - W_BASE) / K4 + k] = gpa + k * K4;
				ref.st[(iova - W_BASE) / K4 + k] = (uint8_t)(REF_MAPPED | perm);
			}
			ops[0]++;
		} else if (op < 6) {
			cr_assert_eq(iommu_pt_unmap(pt, iova, len), 0, "unmap %#lx+%#lx", iova, len);
			memset(ref.st + (iova - W_BASE) / K4, 0, len / K4);
			ops[1]++;
		} else {
			/* Byte addresses, short and long lengths, a little outside the window too. */
			uint64_t at = W_BASE - K4 + rnd_below(&seed, W_PAGES * K4 + 2 * K4);
			uint64_t l = rnd_below(&seed, 2) ? 1 + rnd_below(&seed, 0x10000) : 1 + rnd_below(&seed, 3 * G1);

			check_lookup(pt, &ref, at, l, &run);
			check_translate(pt, &ref, at, l, (unsigned int)rnd_below(&seed, 4));
			ops[2]++;
		}
		if (step % 100 == 0) {
			struct iommu_pt_shape s = shape(pt);

			cr_assert_eq(s.leaves_4k * K4 + s.leaves_2m * M2 + s.leaves_1g * G1, ref_mapped_bytes(&ref),
				     "step %d: leaves cover exactly the mapped pages", step);
			most.leaves_2m = s.leaves_2m > most.leaves_2m ? s.leaves_2m : most.leaves_2m;
			most.leaves_1g = s.leaves_1g > most.leaves_1g ? s.leaves_1g : most.leaves_1g;
		}
	}
	cr_assert(most.leaves_2m > 0 && most.leaves_1g > 0, "the mix produced huge leaves");
	cr_assert(ops[0] > 1000 && ops[1] > 500 && ops[2] > 1000);

	/* Walk the whole window run by run, and a little beyond each end. */
	for (uint64_t at = W_BASE - K4; at < W_BASE + W_PAGES * K4 + K4;) {
		check_lookup(pt, &ref, at, W_BASE + W_PAGES * K4 + K4 - at, &run);
		at += run ? run : K4;
	}
	cr_assert_eq(iommu_pt_unmap(pt, W_BASE, W_PAGES * K4), 0);
	expect_shape(pt, 1, 0, 0, 0);
	free(ref.gpa);
	free(ref.st);
	iommu_pt_free(pt);
}
