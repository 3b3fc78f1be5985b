/*
 * A small IOTLB: the last few translations of one device's address space (IOVA -> host pointer,
 * with the access they were checked for), so that ring and buffer accesses that hit the same pages
 * over and over do not walk the IO page table each time (seed 003: a per-virtqueue cache in DPDK).
 *
 * Correctness never depends on it: every entry covering a range is dropped by iotlb_invalidate()
 * before the UNMAP (or domain change) that called it completes, and a fill that raced with an
 * invalidation is thrown away instead of landing (the generation check below).
 *
 * Threads: lookups run on the device's threads and take no lock and write nothing shared but two
 * hints (the slot hit last, a hit counter); fills and invalidations serialise on a small mutex and
 * publish entries through a sequence count that a lookup checks after reading the entry, so it
 * never uses an entry that changed under it. An invalidation may come from any thread (the
 * IOMMU's), and lookups may run on several threads at once.
 *
 *   lookup:      seq (acquire), scan, fence, seq again; hit only if unchanged and even
 *   fill:        gen read BEFORE the walk; under the lock, the entry is stored only if gen has not
 *                moved since (an invalidation in between may have covered what the walk saw)
 *   invalidate:  under the lock, gen++, then every overlapping entry emptied inside a seq window
 *
 * A host pointer from a hit is as good as one from a walk: valid until the mapping goes away.
 * Keeping it no longer than the copy it is for is the DMA read-side section's job (dma.h).
 */
#ifndef MOAT_IOTLB_H
#define MOAT_IOTLB_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/* Entries per cache: a power of two. Rings (3 areas a queue) and a few buffers in flight. */
#define IOTLB_ENTRIES 16u

struct iotlb_entry {
	uint64_t iova;  /* first byte covered */
	uint64_t len;   /* bytes covered; 0: empty */
	uintptr_t host; /* host address of iova */
	uint32_t perm;  /* DMA_READ / DMA_WRITE bits the range was checked for */
};

/* Counters: hits is bumped without an atomic add (cheap on the hit path), so it is approximate
 * when several threads look up at once; the others are exact (counted under the lock or a miss). */
struct iotlb_stats {
	uint64_t hits, misses;
	uint64_t fills, stale_fills;       /* stored; dropped because an invalidation came in between */
	uint64_t invalidations, dropped;   /* invalidate calls; entries they emptied */
};

struct iotlb {
	uint32_t seq;         /* odd while a writer changes entries */
	uint32_t mru;         /* slot hit or filled last: looked at first */
	uint64_t gen;         /* invalidations so far */
	pthread_mutex_t lock; /* fill and invalidate */
	uint32_t victim;      /* next slot to reuse when none is empty (round robin), under lock */
	struct iotlb_entry e[IOTLB_ENTRIES];
	struct iotlb_stats st;
};

void iotlb_init(struct iotlb *t);
void iotlb_fini(struct iotlb *t);

/*
 * A cached translation of iova for an access of up to len (> 0) bytes with perm: true with *host
 * at iova and *run (1 <= *run <= len) the bytes from there the entry covers; false on a miss (also
 * when a writer was busy: the caller walks instead).
 */
bool iotlb_lookup(struct iotlb *t, uint64_t iova, uint64_t len, unsigned int perm, void **host, uint64_t *run);
/* Read before walking the page table for a fill. */
uint64_t iotlb_gen(const struct iotlb *t);
/*
 * Remember that [iova, iova+len) is at host with perm, as a walk begun when iotlb_gen() returned
 * gen found it. Dropped (counted) if an invalidation has happened since. len 0 does nothing.
 */
void iotlb_fill(struct iotlb *t, uint64_t gen, uint64_t iova, uint64_t len, void *host, unsigned int perm);
/* Forget every entry overlapping [iova, iova+len); len UINT64_MAX forgets everything. */
void iotlb_invalidate(struct iotlb *t, uint64_t iova, uint64_t len);
/* A snapshot of the counters, from any thread. */
void iotlb_stats(const struct iotlb *t, struct iotlb_stats *out);

#endif
