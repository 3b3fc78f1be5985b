#include "vmm/iotlb.h"

#include <string.h>

/* Entry fields are read by lookups while a writer may store them: relaxed atomics, plain moves on x86. */
#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

void iotlb_init(struct iotlb *t)
{
	memset(t, 0, sizeof(*t));
	pthread_mutex_init(&t->lock, NULL);
}

void iotlb_fini(struct iotlb *t)
{
	pthread_mutex_destroy(&t->lock);
}

/*
 * A counter bumped without a locked add: by the hit path (see struct iotlb_stats) or under the lock;
 * atomic so that iotlb_stats() may read it from another thread.
 */
static void bump(uint64_t *c)
{
	STORE(*c, LOAD(*c) + 1);
}

bool iotlb_lookup(struct iotlb *t, uint64_t iova, uint64_t len, unsigned int perm, void **host, uint64_t *run)
{
	uint32_t s = __atomic_load_n(&t->seq, __ATOMIC_ACQUIRE), m = LOAD(t->mru);

	if (s & 1)
		return false;
	for (uint32_t i = 0; i < IOTLB_ENTRIES; i++) {
		uint32_t slot = (m + i) & (IOTLB_ENTRIES - 1);
		struct iotlb_entry *e = &t->e[slot];
		uint64_t off = iova - LOAD(e->iova), elen = LOAD(e->len);
		uintptr_t h;

		/* Unsigned: an iova below the entry wraps to a huge offset and misses. */
		if (off >= elen || (LOAD(e->perm) & perm) != perm)
			continue;
		h = LOAD(e->host);
		/* Boehm's seqlock reader: the entry's loads before the second look at seq. */
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if (LOAD(t->seq) != s)
			return false;
		if (slot != m)
			STORE(t->mru, slot);
		bump(&t->st.hits);
		*host = (void *)(h + off);
		*run = elen - off < len ? elen - off : len;
		return true;
	}
	__atomic_fetch_add(&t->st.misses, 1, __ATOMIC_RELAXED);
	return false;
}

uint64_t iotlb_gen(const struct iotlb *t)
{
	return __atomic_load_n(&t->gen, __ATOMIC_ACQUIRE);
}

/* Writer side of the seqcount; the lock is held. */
static void write_begin(struct iotlb *t)
{
	STORE(t->seq, t->seq + 1);
	__atomic_thread_fence(__ATOMIC_RELEASE);
}

static void write_end(struct iotlb *t)
{
	__atomic_store_n(&t->seq, t->seq + 1, __ATOMIC_RELEASE);
}

void iotlb_fill(struct iotlb *t, uint64_t gen, uint64_t iova, uint64_t len, void *host, unsigned int perm)
{
	uint32_t slot = IOTLB_ENTRIES;

	if (!len)
		return;
	pthread_mutex_lock(&t->lock);
	if (t->gen != gen) {
		/* The walk may predate an UNMAP that covered it: storing it would resurrect the mapping. */
		bump(&t->st.stale_fills);
		pthread_mutex_unlock(&t->lock);
		return;
	}
	for (uint32_t i = 0; i < IOTLB_ENTRIES && slot == IOTLB_ENTRIES; i++)
		if (!t->e[i].len)
			slot = i;
	if (slot == IOTLB_ENTRIES)
		slot = t->victim++ & (IOTLB_ENTRIES - 1);
	write_begin(t);
	STORE(t->e[slot].len, 0);
	STORE(t->e[slot].iova, iova);
	STORE(t->e[slot].host, (uintptr_t)host);
	STORE(t->e[slot].perm, perm);
	STORE(t->e[slot].len, len);
	write_end(t);
	STORE(t->mru, slot);
	bump(&t->st.fills);
	pthread_mutex_unlock(&t->lock);
}

/* [a, a+alen) and [b, b+blen) share a byte; neither may wrap past 2^64 except blen UINT64_MAX (to the end). */
static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a >= b ? a - b < blen : b - a < alen;
}

void iotlb_invalidate(struct iotlb *t, uint64_t iova, uint64_t len)
{
	bool all = len == UINT64_MAX, busy = false;

	pthread_mutex_lock(&t->lock);
	/* First: a walk in flight now must not fill, whatever it covers. */
	__atomic_store_n(&t->gen, t->gen + 1, __ATOMIC_RELEASE);
	bump(&t->st.invalidations);
	for (uint32_t i = 0; i < IOTLB_ENTRIES; i++) {
		struct iotlb_entry *e = &t->e[i];

		if (!e->len || !(all || overlaps(e->iova, e->len, iova, len)))
			continue;
		if (!busy) {
			write_begin(t);
			busy = true;
		}
		STORE(e->len, 0);
		bump(&t->st.dropped);
	}
	if (busy)
		write_end(t);
	pthread_mutex_unlock(&t->lock);
}

void iotlb_stats(const struct iotlb *t, struct iotlb_stats *out)
{
	out->hits = LOAD(t->st.hits);
	out->misses = LOAD(t->st.misses);
	out->fills = LOAD(t->st.fills);
	out->stale_fills = LOAD(t->st.stale_fills);
	out->invalidations = LOAD(t->st.invalidations);
	out->dropped = LOAD(t->st.dropped);
}
