/*
 * The mapping records of a domain: non-overlapping IOVA intervals in an AVL tree keyed by start,
 * so finding the neighbours of an address, inserting and removing are O(log n) however the guest
 * orders its requests. Internal to iommu/: the domain's lock protects it.
 */
#ifndef MOAT_IOMMU_MAPTREE_H
#define MOAT_IOMMU_MAPTREE_H

#include <stdint.h>

struct iommu_mapping {
	uint64_t start, last; /* inclusive IOVA range */
	uint64_t gpa;         /* of start */
	unsigned int flags;   /* IOMMU_PERM_MASK bits */
};

struct mt_node {
	struct iommu_mapping m;
	struct mt_node *left, *right;
	int height; /* of the subtree: a leaf is 1 */
};

/*
 * Removed nodes kept for the next insert, so that map/unmap churn does not malloc and free a record
 * each time. Bounded, so the records never take more than max_mappings + MT_SPARE_MAX nodes.
 */
#define MT_SPARE_MAX 16

struct maptree {
	struct mt_node *root;
	uint32_t count;
	struct mt_node *spare; /* linked through right */
	uint32_t nspare;
};

void mt_init(struct maptree *t);
/* Free every node, spares included. */
void mt_destroy(struct maptree *t);

/* The mapping with the greatest start <= key, or NULL. */
const struct iommu_mapping *mt_floor(const struct maptree *t, uint64_t key);
/* The mapping with the smallest start >= key, or NULL. */
const struct iommu_mapping *mt_ceil(const struct maptree *t, uint64_t key);

/*
 * A node for m, to insert later: allocating first lets the caller fail before changing anything.
 * NULL when out of memory.
 */
struct mt_node *mt_node_new(struct maptree *t, const struct iommu_mapping *m);
/* Give back a node from mt_node_new that was not inserted. */
void mt_node_put(struct maptree *t, struct mt_node *n);
/* Insert a node from mt_node_new; its start must not be in the tree. Cannot fail. */
void mt_insert(struct maptree *t, struct mt_node *n);
/* Remove the mapping starting at start and put its node back; nothing if there is none. */
void mt_remove(struct maptree *t, uint64_t start);

/*
 * 0 if ordering, heights, balance and count hold, no two mappings overlap and the spares are as many
 * as counted and within MT_SPARE_MAX, else -EUCLEAN (tests).
 */
int mt_check(const struct maptree *t) __attribute__((warn_unused_result));

#endif
