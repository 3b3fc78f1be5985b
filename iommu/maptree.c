#include "iommu/maptree.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

/* Recursion below is bounded by the AVL height, about 1.44 * log2(count): under 50 for any uint32_t count. */

static int height(const struct mt_node *n)
{
	return n ? n->height : 0;
}

static void update(struct mt_node *n)
{
	int l = height(n->left), r = height(n->right);

	n->height = 1 + (l > r ? l : r);
}

static struct mt_node *rotate_right(struct mt_node *n)
{
	struct mt_node *l = n->left;

	n->left = l->right;
	l->right = n;
	update(n);
	update(l);
	return l;
}

static struct mt_node *rotate_left(struct mt_node *n)
{
	struct mt_node *r = n->right;

	n->right = r->left;
	r->left = n;
	update(n);
	update(r);
	return r;
}

/* Restore |height(left) - height(right)| <= 1 at n after one insert or remove below it. */
static struct mt_node *rebalance(struct mt_node *n)
{
	int bf;

	update(n);
	bf = height(n->left) - height(n->right);
	if (bf > 1) {
		if (height(n->left->left) < height(n->left->right))
			n->left = rotate_left(n->left);
		return rotate_right(n);
	}
	if (bf < -1) {
		if (height(n->right->right) < height(n->right->left))
			n->right = rotate_right(n->right);
		return rotate_left(n);
	}
	return n;
}

void mt_init(struct maptree *t)
{
	t->root = NULL;
	t->count = 0;
	t->spare = NULL;
	t->nspare = 0;
}

static void destroy(struct mt_node *n)
{
	if (!n)
		return;
	destroy(n->left);
	destroy(n->right);
	free(n);
}

void mt_destroy(struct maptree *t)
{
	destroy(t->root);
	while (t->spare) {
		struct mt_node *n = t->spare;

		t->spare = n->right;
		free(n);
	}
	mt_init(t);
}

const struct iommu_mapping *mt_floor(const struct maptree *t, uint64_t key)
{
	const struct mt_node *n = t->root, *best = NULL;

	while (n) {
		if (n->m.start <= key) {
			best = n;
			n = n->right;
		} else {
			n = n->left;
		}
	}
	return best ? &best->m : NULL;
}

const struct iommu_mapping *mt_ceil(const struct maptree *t, uint64_t key)
{
	const struct mt_node *n = t->root, *best = NULL;

	while (n) {
		if (n->m.start >= key) {
			best = n;
			n = n->left;
		} else {
			n = n->right;
		}
	}
	return best ? &best->m : NULL;
}

struct mt_node *mt_node_new(struct maptree *t, const struct iommu_mapping *m)
{
	struct mt_node *n = t->spare;

	if (n) {
		t->spare = n->right;
		t->nspare--;
	} else {
		n = malloc(sizeof(*n));
		if (!n)
			return NULL;
	}
	*n = (struct mt_node){ .m = *m, .height = 1 };
	return n;
}

void mt_node_put(struct maptree *t, struct mt_node *n)
{
	if (t->nspare >= MT_SPARE_MAX) {
		free(n);
		return;
	}
	n->right = t->spare;
	t->spare = n;
	t->nspare++;
}

static struct mt_node *insert(struct mt_node *r, struct mt_node *n)
{
	if (!r)
		return n;
	if (n->m.start < r->m.start)
		r->left = insert(r->left, n);
	else
		r->right = insert(r->right, n);
	return rebalance(r);
}

void mt_insert(struct maptree *t, struct mt_node *n)
{
	n->left = n->right = NULL;
	n->height = 1;
	t->root = insert(t->root, n);
	t->count++;
}

static struct mt_node *remove_min(struct mt_node *r, struct mt_node **min)
{
	if (!r->left) {
		*min = r;
		return r->right;
	}
	r->left = remove_min(r->left, min);
	return rebalance(r);
}

static struct mt_node *remove_key(struct mt_node *r, uint64_t start, struct mt_node **gone)
{
	struct mt_node *succ, *rest;

	if (!r)
		return NULL;
	if (start < r->m.start) {
		r->left = remove_key(r->left, start, gone);
	} else if (start > r->m.start) {
		r->right = remove_key(r->right, start, gone);
	} else {
		*gone = r;
		if (!r->right)
			return r->left;
		/* Replace r by its in-order successor. */
		rest = remove_min(r->right, &succ);
		succ->left = r->left;
		succ->right = rest;
		return rebalance(succ);
	}
	return rebalance(r);
}

void mt_remove(struct maptree *t, uint64_t start)
{
	struct mt_node *gone = NULL;

	t->root = remove_key(t->root, start, &gone);
	if (gone) {
		mt_node_put(t, gone);
		t->count--;
	}
}

/*
 * Checks n's subtree in order: starts ascending with no overlap after *prev, heights exact and
 * balanced. Counts nodes into *count.
 */
static bool check(const struct mt_node *n, const struct iommu_mapping **prev, uint64_t *count)
{
	int l, r;

	if (!n)
		return true;
	if (!check(n->left, prev, count))
		return false;
	if (n->m.last < n->m.start || (*prev && (*prev)->last >= n->m.start))
		return false;
	*prev = &n->m;
	(*count)++;
	if (!check(n->right, prev, count))
		return false;
	l = height(n->left);
	r = height(n->right);
	return n->height == 1 + (l > r ? l : r) && l - r <= 1 && r - l <= 1;
}

int mt_check(const struct maptree *t)
{
	const struct iommu_mapping *prev = NULL;
	uint64_t count = 0;

	if (!check(t->root, &prev, &count) || count != t->count)
		return -EUCLEAN;
	count = 0;
	for (const struct mt_node *n = t->spare; n && count <= MT_SPARE_MAX; n = n->right)
		count++;
	if (count != t->nspare || count > MT_SPARE_MAX)
		return -EUCLEAN;
	return 0;
}
