/*
 * Domains: the guest's mapping records, the page table that serves translations, notifiers, stats.
 *
 * The records are what MAP/UNMAP reason about (overlap, straddle, whole-mapping removal); the page
 * table is what translations read, so a translate never looks at the records. The two always agree:
 * a mapping's leaves never cross its ends (the page table picks leaves inside the mapped range and
 * mappings do not overlap), so removing a whole mapping never splits a leaf and cannot fail.
 *
 * Costs, with n mappings: iommu_translate takes the read lock, walks the page table (<= 4 loads to
 * the first leaf, one per further leaf of the run; see pgtable.c) and does a relaxed atomic add.
 * iommu_map: O(log n) to find the neighbour and insert, a record (from the tree's few spare ones, else
 * malloc), and the page-table map (a new node comes from the table's free list, else calloc). iommu_unmap: O((k + 1) log n) for k removed mappings, plus their leaves.
 *
 * Locking: one rwlock per domain, writer-preferring so that device workers translating all the time
 * cannot starve MAP/UNMAP. Readers: translate, stats. Writers: map, unmap, unmap_all, notifier
 * add/del; notifiers run inside the write lock, so a subscriber's cache is invalidated before the
 * guest can see UNMAP complete and no translation can slip in between.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "iommu/iommu.h"
#include "iommu/maptree.h"

struct iommu_domain {
	pthread_rwlock_t lock;
	uint32_t id;
	struct iommu_limits lim;
	uint64_t granule; /* lowest bit of lim.page_size_mask */
	struct iommu_pt *pt;
	struct maptree maps;
	const struct iommu_notifier *notifiers[IOMMU_MAX_NOTIFIERS];
	unsigned int nnotifiers;
	/*
	 * Under the write lock, except translations and translate_faults which readers bump with relaxed
	 * atomics; mappings and table_bytes are read from maps and pt.
	 */
	struct iommu_stats st;
};

/* A contiguous run of removed mappings, reported to the notifiers as one range. */
struct unmap_run {
	bool open;
	uint64_t start, last;
};

int iommu_domain_new(uint32_t id, const struct iommu_limits *lim, struct iommu_domain **out)
{
	pthread_rwlockattr_t attr;
	struct iommu_domain *d;
	uint64_t granule = lim->page_size_mask & -lim->page_size_mask;
	int err;

	if (granule < IOMMU_PAGE_SIZE || lim->input_start > lim->input_end || lim->input_end > IOMMU_IOVA_LAST)
		return -EINVAL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	err = iommu_pt_new(lim->input_end, lim->max_table_bytes, &d->pt);
	if (err)
		goto fail;
	err = -pthread_rwlockattr_init(&attr);
	if (err)
		goto fail;
	err = -pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	if (!err)
		err = -pthread_rwlock_init(&d->lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	if (err)
		goto fail;
	d->id = id;
	d->lim = *lim;
	d->granule = granule;
	mt_init(&d->maps);
	*out = d;
	return 0;
fail:
	iommu_pt_free(d->pt);
	free(d);
	return err;
}

void iommu_domain_free(struct iommu_domain *d)
{
	if (!d)
		return;
	mt_destroy(&d->maps);
	iommu_pt_free(d->pt);
	pthread_rwlock_destroy(&d->lock);
	free(d);
}

uint32_t iommu_domain_id(const struct iommu_domain *d)
{
	return d->id;
}

const struct iommu_pt *iommu_domain_pt(const struct iommu_domain *d)
{
	return d->pt;
}

/*
 * The lock is changed by readers too, so it cannot be const; the domain is always a heap object
 * created non-const, which makes casting the const away well defined.
 */
static pthread_rwlock_t *domain_lock(const struct iommu_domain *d)
{
	return (pthread_rwlock_t *)&d->lock;
}

static void notify_mapped(const struct iommu_domain *d, const struct iommu_mapping *m)
{
	for (unsigned int i = 0; i < d->nnotifiers; i++)
		if (d->notifiers[i]->mapped)
			d->notifiers[i]->mapped(d->notifiers[i]->ctx, m->start, m->gpa, m->last - m->start + 1,
						m->flags);
}

/* Stop translating the run, then tell every subscriber, all before the caller returns. */
static void run_flush(struct iommu_domain *d, struct unmap_run *r)
{
	if (!r->open)
		return;
	r->open = false;
	iommu_pt_unmap_leaves(d->pt, r->start, r->last);
	for (unsigned int i = 0; i < d->nnotifiers; i++)
		if (d->notifiers[i]->unmapped)
			d->notifiers[i]->unmapped(d->notifiers[i]->ctx, r->start, r->last - r->start + 1);
}

static void run_add(struct iommu_domain *d, struct unmap_run *r, uint64_t start, uint64_t last)
{
	if (r->open && r->last + 1 == start) {
		r->last = last;
		return;
	}
	run_flush(d, r);
	*r = (struct unmap_run){ .open = true, .start = start, .last = last };
}

static int map_locked(struct iommu_domain *d, uint64_t start, uint64_t end, uint64_t gpa, unsigned int flags)
{
	struct iommu_mapping m = { .start = start, .last = end, .gpa = gpa, .flags = flags };
	const struct iommu_mapping *prev;
	uint64_t mask = d->granule - 1, gpa_last, len;
	struct mt_node *node;
	int err;

	if ((flags & ~IOMMU_PERM_MASK) || end < start)
		return -EINVAL;
	/* end == UINT64_MAX makes end + 1 wrap to 0, which is aligned: the range check refuses it. */
	if ((start & mask) || ((end + 1) & mask) || (gpa & mask))
		return -EINVAL;
	if (__builtin_add_overflow(gpa, end - start, &gpa_last))
		return -EINVAL;
	if (start < d->lim.input_start || end > d->lim.input_end)
		return -ERANGE;
	/* GUEST: [start, end] lies in the input range (< 2^48), so len and every end below fit. */
	len = end - start + 1;
	prev = mt_floor(&d->maps, end);
	if (prev && prev->last >= start)
		return -EEXIST;
	if (d->maps.count >= d->lim.max_mappings)
		return -ENOSPC;
	node = mt_node_new(&d->maps, &m);
	if (!node)
		return -ENOMEM;
	/* The page table checks its byte budget and changes nothing on error. */
	err = iommu_pt_map(d->pt, start, gpa, len, flags);
	if (err) {
		mt_node_put(&d->maps, node);
		return err;
	}
	mt_insert(&d->maps, node);
	d->st.mapped_bytes += len;
	notify_mapped(d, &m);
	return 0;
}

int iommu_map(struct iommu_domain *d, uint64_t iova_start, uint64_t iova_end, uint64_t gpa, unsigned int flags)
{
	int err = -pthread_rwlock_wrlock(&d->lock);

	if (err)
		return err;
	d->st.map_requests++;
	err = map_locked(d, iova_start, iova_end, gpa, flags);
	pthread_rwlock_unlock(&d->lock);
	return err;
}

static int unmap_locked(struct iommu_domain *d, uint64_t start, uint64_t end, uint64_t *bytes)
{
	struct unmap_run run = { .open = false };
	const struct iommu_mapping *m;
	uint64_t cursor = start;

	*bytes = 0;
	if (end < start)
		return -EINVAL;
	/* Refuse before removing anything if a mapping sticks out of either end (5.13.6.6). */
	m = mt_floor(&d->maps, start);
	if (m && m->start < start && m->last >= start)
		return -ERANGE;
	/* A mapping containing both ends was caught above, so this one starts inside. */
	m = mt_floor(&d->maps, end);
	if (m && m->last > end)
		return -ERANGE;
	/* Every mapping starting in [start, end] now lies wholly inside it. */
	while ((m = mt_ceil(&d->maps, cursor)) && m->start <= end) {
		uint64_t s = m->start, l = m->last;

		mt_remove(&d->maps, s);
		run_add(d, &run, s, l);
		*bytes += l - s + 1;
		cursor = l + 1; /* l < 2^48 */
	}
	run_flush(d, &run);
	d->st.unmapped_bytes += *bytes;
	return 0;
}

int iommu_unmap(struct iommu_domain *d, uint64_t iova_start, uint64_t iova_end, uint64_t *unmapped_bytes)
{
	uint64_t bytes = 0;
	int err = -pthread_rwlock_wrlock(&d->lock);

	if (!err) {
		d->st.unmap_requests++;
		err = unmap_locked(d, iova_start, iova_end, &bytes);
		pthread_rwlock_unlock(&d->lock);
	}
	if (unmapped_bytes)
		*unmapped_bytes = bytes;
	return err;
}

void iommu_unmap_all(struct iommu_domain *d)
{
	uint64_t bytes;

	/* Fails only if this thread already holds the lock (a notifier calling back): do nothing then. */
	if (pthread_rwlock_wrlock(&d->lock))
		return;
	/* Nothing can straddle the whole space, so this cannot fail. */
	(void)unmap_locked(d, 0, UINT64_MAX, &bytes);
	pthread_rwlock_unlock(&d->lock);
}

int iommu_translate(struct iommu_domain *d, uint64_t iova, uint64_t len, unsigned int perm, uint64_t *gpa,
		    uint64_t *contiguous_len)
{
	int err;

	if (!len || (perm & ~(IOMMU_READ | IOMMU_WRITE)))
		return -EINVAL;
	/* EDEADLK here means a notifier called back into its domain. */
	err = -pthread_rwlock_rdlock(&d->lock);
	if (err)
		return err;
	err = iommu_pt_translate(d->pt, iova, len, perm, gpa, contiguous_len);
	pthread_rwlock_unlock(&d->lock);
	__atomic_fetch_add(&d->st.translations, 1, __ATOMIC_RELAXED);
	if (err)
		__atomic_fetch_add(&d->st.translate_faults, 1, __ATOMIC_RELAXED);
	return err;
}

int iommu_resolve(struct iommu_domain *d, uint64_t iova, uint64_t len,
		  int (*fn)(void *arg, uint64_t iova, uint64_t gpa, uint64_t len, unsigned int perm), void *arg)
{
	uint64_t gpa, run;
	unsigned int perm;
	int err;

	if (!len)
		return -EINVAL;
	err = -pthread_rwlock_rdlock(&d->lock);
	if (err)
		return err;
	err = iommu_pt_lookup(d->pt, iova, len, &gpa, &run, &perm);
	if (!err)
		err = fn(arg, iova, gpa, run, perm);
	pthread_rwlock_unlock(&d->lock);
	__atomic_fetch_add(&d->st.translations, 1, __ATOMIC_RELAXED);
	if (err == -ENOENT)
		__atomic_fetch_add(&d->st.translate_faults, 1, __ATOMIC_RELAXED);
	return err;
}

int iommu_notifier_add(struct iommu_domain *d, const struct iommu_notifier *n)
{
	int err;

	if (!n || (!n->unmapped && !n->mapped))
		return -EINVAL;
	err = -pthread_rwlock_wrlock(&d->lock);
	if (err)
		return err;
	for (unsigned int i = 0; i < d->nnotifiers; i++)
		if (d->notifiers[i] == n)
			err = -EEXIST;
	if (!err && d->nnotifiers == IOMMU_MAX_NOTIFIERS)
		err = -ENOSPC;
	if (!err)
		d->notifiers[d->nnotifiers++] = n;
	pthread_rwlock_unlock(&d->lock);
	return err;
}

void iommu_notifier_del(struct iommu_domain *d, const struct iommu_notifier *n)
{
	if (pthread_rwlock_wrlock(&d->lock))
		return;
	for (unsigned int i = 0; i < d->nnotifiers; i++) {
		if (d->notifiers[i] != n)
			continue;
		memmove(&d->notifiers[i], &d->notifiers[i + 1], (d->nnotifiers - i - 1) * sizeof(d->notifiers[0]));
		d->nnotifiers--;
		break;
	}
	pthread_rwlock_unlock(&d->lock);
}

void iommu_domain_stats(const struct iommu_domain *d, struct iommu_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (pthread_rwlock_rdlock(domain_lock(d)))
		return;
	out->mappings = d->maps.count;
	out->map_requests = d->st.map_requests;
	out->unmap_requests = d->st.unmap_requests;
	out->translations = __atomic_load_n(&d->st.translations, __ATOMIC_RELAXED);
	out->translate_faults = __atomic_load_n(&d->st.translate_faults, __ATOMIC_RELAXED);
	out->table_bytes = iommu_pt_table_bytes(d->pt);
	out->unmapped_bytes = d->st.unmapped_bytes;
	out->mapped_bytes = d->st.mapped_bytes;
	pthread_rwlock_unlock(domain_lock(d));
}

int iommu_domain_check(const struct iommu_domain *d)
{
	const struct iommu_mapping *m;
	uint64_t cursor = 0, bytes = 0;
	int err = -pthread_rwlock_rdlock(domain_lock(d));

	if (err)
		return err;
	err = mt_check(&d->maps);
	while (!err && (m = mt_ceil(&d->maps, cursor))) {
		uint64_t len = m->last - m->start + 1, gpa, run;
		unsigned int perm;

		/* Exactly the mapping's GPA and flags over its whole length (the run may go on past it). */
		if (iommu_pt_lookup(d->pt, m->start, len, &gpa, &run, &perm) || gpa != m->gpa || run != len ||
		    perm != m->flags)
			err = -EUCLEAN;
		bytes += len;
		cursor = m->last + 1;
	}
	if (!err && bytes != d->st.mapped_bytes - d->st.unmapped_bytes)
		err = -EUCLEAN;
	if (!err)
		err = iommu_pt_check(d->pt);
	if (!err) {
		struct iommu_pt_shape sh;
		uint64_t leaf_bytes;

		iommu_pt_inspect(d->pt, &sh);
		leaf_bytes = sh.leaves_4k * IOMMU_PAGE_SIZE + (sh.leaves_2m << 21) + (sh.leaves_1g << 30);
		if (leaf_bytes != bytes || sh.tables * IOMMU_PT_TABLE_BYTES != iommu_pt_table_bytes(d->pt))
			err = -EUCLEAN;
	}
	pthread_rwlock_unlock(domain_lock(d));
	return err;
}
