/*
 * Radix IO page table: 4 levels of 512 entries over 48 bits of IOVA.
 *   level 3 (root): 512 GiB per entry, node pointers only
 *   level 2:          1 GiB per entry, node or 1 GiB leaf
 *   level 1:          2 MiB per entry, node or 2 MiB leaf
 *   level 0:          4 KiB leaves
 *
 * Costs. A lookup or translate loads one entry per level down to the first leaf (<= 4 dependent
 * loads, no allocation, no lock of its own), then one entry per further leaf of the run, walking
 * from the root again only when the run leaves a node. A map or unmap first runs over the same
 * entries without changing anything to count the nodes it will need, so the budget is checked and
 * every node allocated before the table changes: an error leaves the table as it was. Then the real
 * pass: O(levels + entries written), plus a calloc per new node that the free list cannot give. The
 * dry run stops as soon as the count passes the budget, so a huge guest request costs at most what
 * the budget allows.
 *
 * Free list. A node whose use count drops to 0 has only empty entries, so instead of freeing it the
 * table keeps up to IOMMU_PT_FREE_NODES of them and hands them out again without zeroing: mapping and
 * unmapping one page, which creates and empties up to 3 nodes, then allocates nothing (nodes dropped
 * whole with their entries, by a bigger leaf or an unmap covering them, are freed). Kept nodes are
 * not in table_bytes (which stays "nodes in the table"), yet the table and the free list together
 * never hold more than max_table_bytes: a node enters the free list only by leaving the table, and a
 * change needing k nodes, allowed when table_bytes + k nodes <= max_table_bytes, takes them from the
 * free list first, so afterwards the two hold max(table_bytes + k, table_bytes + kept) nodes' worth.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "iommu/iommu.h"

#define PT_ROOT_LEVEL 3
#define PT_MAX_LEAF_LEVEL 2
#define PT_ENTRIES 512u

/*
 * An entry is 0 (empty), a leaf: GPA | perm << 2 | PRESENT, or a node: address | TABLE | PRESENT.
 * GPAs are page aligned and nodes come from calloc (at least 8-byte aligned), so the low bits are free.
 */
#define PTE_PRESENT 1ull
#define PTE_TABLE 2ull
#define PTE_PERM_SHIFT 2
#define PTE_ADDR_MASK (~(IOMMU_PAGE_SIZE - 1))

struct pt_node {
	uint64_t pte[PT_ENTRIES];
	uint64_t live; /* non-empty entries: an unmap frees the node when this drops to 0 */
};

_Static_assert(sizeof(struct pt_node) == IOMMU_PT_TABLE_BYTES, "IOMMU_PT_TABLE_BYTES is what a node costs");

struct iommu_pt {
	struct pt_node *root; /* lives as long as the table */
	uint64_t input_end;   /* last IOVA accepted */
	uint64_t table_bytes; /* nodes in the table, root included */
	uint64_t max_table_bytes;
	struct pt_node *free[IOMMU_PT_FREE_NODES]; /* empty nodes (all entries 0, live 0) kept for reuse */
	unsigned int nfree;
};

/* One map or unmap, run twice: dry (count nodes) and then for real. */
struct pt_op {
	uint64_t first, last;     /* inclusive IOVA range */
	uint64_t delta;           /* map: gpa - iova, modulo 2^64 (so gpa = iova + delta) */
	unsigned int perm;        /* map */
	bool split;               /* unmap: split leaves the range cuts, else leave them alone */
	bool dry;                 /* count into need, change nothing */
	uint64_t need, budget;    /* dry: nodes needed, nodes max_table_bytes still allows */
	struct pt_node *reserve;  /* real: the nodes counted, linked through pte[0] */
};

typedef int (*pt_walk_fn)(struct iommu_pt *pt, struct pt_node *n, int level, uint64_t base, uint64_t lo,
			  uint64_t hi, struct pt_op *op);

static inline unsigned int level_shift(int level)
{
	return 12 + 9 * (unsigned int)level;
}

static inline uint64_t level_size(int level)
{
	return 1ull << level_shift(level);
}

static inline unsigned int pte_index(uint64_t iova, int level)
{
	return (unsigned int)(iova >> level_shift(level)) & (PT_ENTRIES - 1);
}

static inline bool pte_is_table(uint64_t pte)
{
	return pte & PTE_TABLE;
}

static inline bool pte_is_leaf(uint64_t pte)
{
	return (pte & (PTE_PRESENT | PTE_TABLE)) == PTE_PRESENT;
}

static inline struct pt_node *pte_node(uint64_t pte)
{
	return (struct pt_node *)(uintptr_t)(pte & ~(PTE_PRESENT | PTE_TABLE));
}

static inline uint64_t pte_gpa(uint64_t pte)
{
	return pte & PTE_ADDR_MASK;
}

static inline unsigned int pte_perm(uint64_t pte)
{
	return (unsigned int)(pte >> PTE_PERM_SHIFT) & IOMMU_PERM_MASK;
}

static inline uint64_t make_leaf(uint64_t gpa, unsigned int perm)
{
	return gpa | (uint64_t)perm << PTE_PERM_SHIFT | PTE_PRESENT;
}

static inline uint64_t make_table(const struct pt_node *n)
{
	return (uint64_t)(uintptr_t)n | PTE_TABLE | PTE_PRESENT;
}

/* An empty node (live 0, so every entry is 0), not counted in table_bytes: keep it if there is room. */
static void node_put(struct iommu_pt *pt, struct pt_node *n)
{
	if (pt->nfree < IOMMU_PT_FREE_NODES)
		pt->free[pt->nfree++] = n;
	else
		free(n);
}

/* An empty node, from the free list or fresh. */
static struct pt_node *node_get(struct iommu_pt *pt)
{
	if (pt->nfree)
		return pt->free[--pt->nfree];
	return calloc(1, sizeof(struct pt_node));
}

/* n is at level; its children are at level - 1. */
static void free_subtree(struct iommu_pt *pt, struct pt_node *n, int level)
{
	if (level > 0) {
		for (unsigned int i = 0; i < PT_ENTRIES; i++)
			if (pte_is_table(n->pte[i]))
				free_subtree(pt, pte_node(n->pte[i]), level - 1);
	}
	/* Its entries are still set: zeroing it would cost what calloc does, so it is not kept. */
	free(n);
	pt->table_bytes -= IOMMU_PT_TABLE_BYTES;
}

static void reserve_free(struct iommu_pt *pt, struct pt_op *op)
{
	while (op->reserve) {
		struct pt_node *n = op->reserve;

		op->reserve = pte_node(n->pte[0]);
		n->pte[0] = 0;
		node_put(pt, n);
	}
}

static int reserve_fill(struct iommu_pt *pt, struct pt_op *op)
{
	op->reserve = NULL;
	for (uint64_t k = 0; k < op->need; k++) {
		struct pt_node *n = node_get(pt);

		if (!n) {
			reserve_free(pt, op);
			return -ENOMEM;
		}
		n->pte[0] = (uint64_t)(uintptr_t)op->reserve;
		op->reserve = n;
	}
	return 0;
}

/*
 * Hang a node from n->pte[i] (n at level): empty, or holding the old leaf split into 512 leaves one
 * level down, so the pages outside the range being changed keep their translation.
 */
static struct pt_node *install_node(struct iommu_pt *pt, struct pt_node *n, unsigned int i, int level,
				    struct pt_op *op)
{
	struct pt_node *child = op->reserve;
	uint64_t old = n->pte[i];

	/* The dry run counted this node, so the reserve cannot be empty here. */
	op->reserve = pte_node(child->pte[0]);
	child->pte[0] = 0;
	pt->table_bytes += IOMMU_PT_TABLE_BYTES;
	if (pte_is_leaf(old)) {
		uint64_t sub = level_size(level - 1);

		/* The leaf's GPA range did not wrap when it was mapped, so neither do these. */
		for (unsigned int j = 0; j < PT_ENTRIES; j++)
			child->pte[j] = make_leaf(pte_gpa(old) + j * sub, pte_perm(old));
		child->live = PT_ENTRIES;
	} else {
		n->live++;
	}
	n->pte[i] = make_table(child);
	return child;
}

static void set_leaf(struct iommu_pt *pt, struct pt_node *n, unsigned int i, int level, uint64_t gpa,
		     unsigned int perm)
{
	uint64_t old = n->pte[i];

	if (pte_is_table(old))
		free_subtree(pt, pte_node(old), level - 1);
	else if (!old)
		n->live++;
	n->pte[i] = make_leaf(gpa, perm);
}

static void clear_entry(struct iommu_pt *pt, struct pt_node *n, unsigned int i, int level)
{
	uint64_t old = n->pte[i];

	if (pte_is_table(old))
		free_subtree(pt, pte_node(old), level - 1);
	n->pte[i] = 0;
	n->live--;
}

/*
 * Map [lo, hi] (inclusive, inside n's span which starts at base). In a dry run n may be NULL: a node
 * that does not exist yet, whose entries are all empty or leaves (so none is a node to reuse).
 */
static int map_node(struct iommu_pt *pt, struct pt_node *n, int level, uint64_t base, uint64_t lo, uint64_t hi,
		    struct pt_op *op)
{
	uint64_t size = level_size(level);

	if (op->dry && level == 0)
		return 0; /* 4 KiB entries are always leaves: nothing to count */
	for (unsigned int i = pte_index(lo, level); i <= pte_index(hi, level); i++) {
		uint64_t eb = base + (uint64_t)i * size, el = eb + (size - 1);
		uint64_t sl = lo > eb ? lo : eb, sh = hi < el ? hi : el;
		uint64_t pte = n ? n->pte[i] : 0;
		struct pt_node *child;
		int err;

		/* Level 0 always takes this branch: the range and delta are page aligned. */
		if (level <= PT_MAX_LEAF_LEVEL && sl == eb && sh == el && !((eb + op->delta) & (size - 1))) {
			if (!op->dry)
				set_leaf(pt, n, i, level, eb + op->delta, op->perm);
			continue;
		}
		child = pte_is_table(pte) ? pte_node(pte) : NULL;
		if (op->dry) {
			if (!child && op->need++ == op->budget)
				return -ENOSPC;
			err = map_node(pt, child, level - 1, eb, sl, sh, op);
			if (err)
				return err;
			continue;
		}
		if (!child)
			child = install_node(pt, n, i, level, op);
		(void)map_node(pt, child, level - 1, eb, sl, sh, op); /* cannot fail outside a dry run */
	}
	return 0;
}

/*
 * Unmap [lo, hi] inside n's span. In a dry run n may be NULL: a leaf being split, so every entry is
 * a leaf. Nodes left empty are freed, so map/unmap churn cannot pile up nodes.
 */
static int unmap_node(struct iommu_pt *pt, struct pt_node *n, int level, uint64_t base, uint64_t lo,
		      uint64_t hi, struct pt_op *op)
{
	uint64_t size = level_size(level);

	if (op->dry && level == 0)
		return 0; /* whole pages only: nothing to split */
	for (unsigned int i = pte_index(lo, level); i <= pte_index(hi, level); i++) {
		uint64_t eb = base + (uint64_t)i * size, el = eb + (size - 1);
		uint64_t sl = lo > eb ? lo : eb, sh = hi < el ? hi : el;
		uint64_t pte = n ? n->pte[i] : PTE_PRESENT;
		struct pt_node *child;
		int err;

		if (!pte)
			continue;
		if (sl == eb && sh == el) {
			if (!op->dry)
				clear_entry(pt, n, i, level);
			continue;
		}
		if (pte_is_leaf(pte) && !op->split)
			continue;
		if (op->dry) {
			child = pte_is_table(pte) ? pte_node(pte) : NULL;
			if (!child && op->need++ == op->budget)
				return -ENOSPC;
			err = unmap_node(pt, child, level - 1, eb, sl, sh, op);
			if (err)
				return err;
			continue;
		}
		child = pte_is_table(pte) ? pte_node(pte) : install_node(pt, n, i, level, op);
		(void)unmap_node(pt, child, level - 1, eb, sl, sh, op);
		if (!child->live) {
			node_put(pt, child);
			pt->table_bytes -= IOMMU_PT_TABLE_BYTES;
			n->pte[i] = 0;
			n->live--;
		}
	}
	return 0;
}

/* Count, check the budget, allocate, then change the table: all or nothing. */
static int pt_apply(struct iommu_pt *pt, pt_walk_fn walk, struct pt_op *op)
{
	int err;

	op->dry = true;
	op->need = 0;
	op->budget = (pt->max_table_bytes - pt->table_bytes) / IOMMU_PT_TABLE_BYTES;
	err = walk(pt, pt->root, PT_ROOT_LEVEL, 0, op->first, op->last, op);
	if (err)
		return err;
	err = reserve_fill(pt, op);
	if (err)
		return err;
	op->dry = false;
	(void)walk(pt, pt->root, PT_ROOT_LEVEL, 0, op->first, op->last, op);
	reserve_free(pt, op); /* empty unless the dry run over-counted */
	return 0;
}

/* Shared argument checks: page aligned, non-empty, not wrapping, not past input_end. */
static int pt_range(const struct iommu_pt *pt, uint64_t iova, uint64_t len, uint64_t *last)
{
	if (!len || ((iova | len) & (IOMMU_PAGE_SIZE - 1)))
		return -EINVAL;
	if (__builtin_add_overflow(iova, len - 1, last))
		return -EINVAL;
	if (*last > pt->input_end)
		return -ERANGE;
	return 0;
}

int iommu_pt_new(uint64_t input_end, uint64_t max_table_bytes, struct iommu_pt **out)
{
	struct iommu_pt *pt;

	if (input_end > IOMMU_IOVA_LAST || max_table_bytes < IOMMU_PT_TABLE_BYTES)
		return -EINVAL;
	pt = calloc(1, sizeof(*pt));
	if (!pt)
		return -ENOMEM;
	pt->root = calloc(1, sizeof(*pt->root));
	if (!pt->root) {
		free(pt);
		return -ENOMEM;
	}
	pt->input_end = input_end;
	pt->table_bytes = IOMMU_PT_TABLE_BYTES;
	pt->max_table_bytes = max_table_bytes;
	*out = pt;
	return 0;
}

void iommu_pt_clear(struct iommu_pt *pt)
{
	for (unsigned int i = 0; i < PT_ENTRIES; i++)
		if (pt->root->pte[i])
			clear_entry(pt, pt->root, i, PT_ROOT_LEVEL);
}

void iommu_pt_free(struct iommu_pt *pt)
{
	if (!pt)
		return;
	iommu_pt_clear(pt);
	while (pt->nfree)
		free(pt->free[--pt->nfree]);
	free(pt->root);
	free(pt);
}

int iommu_pt_map(struct iommu_pt *pt, uint64_t iova, uint64_t gpa, uint64_t len, unsigned int perm)
{
	struct pt_op op = { .perm = perm };
	uint64_t gpa_last;
	int err;

	if ((gpa & (IOMMU_PAGE_SIZE - 1)) || (perm & ~IOMMU_PERM_MASK))
		return -EINVAL;
	err = pt_range(pt, iova, len, &op.last);
	if (err)
		return err;
	if (__builtin_add_overflow(gpa, len - 1, &gpa_last))
		return -EINVAL;
	op.first = iova;
	op.delta = gpa - iova;
	return pt_apply(pt, map_node, &op);
}

int iommu_pt_unmap(struct iommu_pt *pt, uint64_t iova, uint64_t len)
{
	struct pt_op op = { .split = true };
	int err;

	err = pt_range(pt, iova, len, &op.last);
	if (err)
		return err;
	op.first = iova;
	return pt_apply(pt, unmap_node, &op);
}

void iommu_pt_unmap_leaves(struct iommu_pt *pt, uint64_t iova, uint64_t last)
{
	/* Without splits nothing is allocated: no dry run, no reserve. */
	struct pt_op op = { .first = iova, .last = last < IOMMU_IOVA_LAST ? last : IOMMU_IOVA_LAST };

	if (op.first > op.last)
		return;
	(void)unmap_node(pt, pt->root, PT_ROOT_LEVEL, 0, op.first, op.last, &op);
}

/* Where a lookup stands: the leaf pte at n->pte[i], at level, covering [base, base + level_size). */
struct pt_cursor {
	const struct pt_node *n;
	unsigned int i;
	int level;
	uint64_t base;
	uint64_t pte;
};

static bool leaf_at(const struct iommu_pt *pt, uint64_t iova, struct pt_cursor *c)
{
	const struct pt_node *n = pt->root;

	if (iova > pt->input_end)
		return false;
	for (int level = PT_ROOT_LEVEL; level >= 0; level--) {
		unsigned int i = pte_index(iova, level);
		uint64_t pte = n->pte[i];

		if (!pte)
			return false;
		if (pte_is_leaf(pte)) {
			*c = (struct pt_cursor){ n, i, level, iova & ~(level_size(level) - 1), pte };
			return true;
		}
		n = pte_node(pte);
	}
	return false;
}

/* The leaf right after c's, if there is one: same node when possible, else from the root. */
static bool leaf_next(const struct iommu_pt *pt, struct pt_cursor *c)
{
	uint64_t next = c->base + level_size(c->level); /* <= 2^48: no wrap */
	const struct pt_node *n = c->n;
	unsigned int i = c->i + 1;
	int level = c->level;
	uint64_t pte;

	if (i == PT_ENTRIES)
		return leaf_at(pt, next, c);
	for (;;) {
		pte = n->pte[i];
		if (!pte)
			return false;
		if (pte_is_leaf(pte))
			break;
		n = pte_node(pte);
		i = 0;
		level--;
	}
	*c = (struct pt_cursor){ n, i, level, next, pte };
	return true;
}

/*
 * The run from iova: every leaf must allow need, keep the bits in same equal to the first leaf's,
 * and continue the GPA.
 */
static int pt_run(const struct iommu_pt *pt, uint64_t iova, uint64_t len, unsigned int need, unsigned int same,
		  uint64_t *gpa, uint64_t *run, unsigned int *perm)
{
	struct pt_cursor c;
	uint64_t got, first_gpa, expect;
	unsigned int p0;

	if (!len)
		return -EINVAL;
	if (!leaf_at(pt, iova, &c))
		return -ENOENT;
	p0 = pte_perm(c.pte);
	if ((p0 & need) != need)
		return -EACCES;
	first_gpa = pte_gpa(c.pte) + (iova - c.base);
	got = c.base + level_size(c.level) - iova;
	while (got < len && leaf_next(pt, &c)) {
		unsigned int p = pte_perm(c.pte);

		if ((p & need) != need || ((p ^ p0) & same))
			break;
		if (__builtin_add_overflow(first_gpa, got, &expect) || pte_gpa(c.pte) != expect)
			break;
		got += level_size(c.level);
	}
	*gpa = first_gpa;
	*run = got < len ? got : len;
	if (perm)
		*perm = p0;
	return 0;
}

int iommu_pt_lookup(const struct iommu_pt *pt, uint64_t iova, uint64_t len, uint64_t *gpa, uint64_t *run,
		    unsigned int *perm)
{
	return pt_run(pt, iova, len, 0, IOMMU_PERM_MASK, gpa, run, perm);
}

int iommu_pt_translate(const struct iommu_pt *pt, uint64_t iova, uint64_t len, unsigned int perm, uint64_t *gpa,
		       uint64_t *run)
{
	return pt_run(pt, iova, len, perm, IOMMU_MMIO, gpa, run, NULL);
}

uint64_t iommu_pt_table_bytes(const struct iommu_pt *pt)
{
	return pt->table_bytes;
}

static void inspect_node(const struct pt_node *n, int level, struct iommu_pt_shape *out)
{
	out->tables++;
	for (unsigned int i = 0; i < PT_ENTRIES; i++) {
		uint64_t pte = n->pte[i];

		if (pte_is_table(pte))
			inspect_node(pte_node(pte), level - 1, out);
		else if (pte && level == 0)
			out->leaves_4k++;
		else if (pte && level == 1)
			out->leaves_2m++;
		else if (pte && level == 2)
			out->leaves_1g++;
	}
}

void iommu_pt_inspect(const struct iommu_pt *pt, struct iommu_pt_shape *out)
{
	memset(out, 0, sizeof(*out));
	inspect_node(pt->root, PT_ROOT_LEVEL, out);
	out->free_nodes = pt->nfree;
}

/*
 * n's use count matches its entries and only the root may be empty (so no node is both in the table
 * and on the free list); nodes and leaves sit at levels that allow them. Recursively.
 */
static bool check_node(const struct pt_node *n, int level, uint64_t *tables)
{
	uint64_t live = 0;

	(*tables)++;
	for (unsigned int i = 0; i < PT_ENTRIES; i++) {
		uint64_t pte = n->pte[i];

		if (!pte)
			continue;
		live++;
		if (pte_is_table(pte)) {
			if (level == 0 || !check_node(pte_node(pte), level - 1, tables))
				return false;
		} else if (level > PT_MAX_LEAF_LEVEL || (pte_gpa(pte) & (level_size(level) - 1))) {
			return false;
		}
	}
	return live == n->live && (live || level == PT_ROOT_LEVEL);
}

int iommu_pt_check(const struct iommu_pt *pt)
{
	uint64_t tables = 0, bytes;

	if (!check_node(pt->root, PT_ROOT_LEVEL, &tables) || tables * IOMMU_PT_TABLE_BYTES != pt->table_bytes)
		return -EUCLEAN;
	if (pt->nfree > IOMMU_PT_FREE_NODES)
		return -EUCLEAN;
	for (unsigned int k = 0; k < pt->nfree; k++) {
		const struct pt_node *n = pt->free[k];

		if (!n || n == pt->root || n->live)
			return -EUCLEAN;
		for (unsigned int i = 0; i < PT_ENTRIES; i++)
			if (n->pte[i])
				return -EUCLEAN;
		for (unsigned int j = 0; j < k; j++)
			if (pt->free[j] == n)
				return -EUCLEAN;
	}
	/* The free list's share of the budget (see the top of the file). */
	if (__builtin_add_overflow(pt->table_bytes, pt->nfree * IOMMU_PT_TABLE_BYTES, &bytes) ||
	    bytes > pt->max_table_bytes)
		return -EUCLEAN;
	return 0;
}
