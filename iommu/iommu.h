/*
 * IOMMU core: domains of IO virtual addresses, each with its own IO page table, the set of
 * mappings the guest made (virtio-iommu MAP/UNMAP work on whole mappings, VIRTIO 1.2 5.13.6.5-6),
 * invalidation notifiers and statistics. Pure C: no KVM, no threads; the virtio-iommu device
 * and the DMA layer sit on top.
 *
 * Two levels of API:
 *  - iommu_pt_*: a radix IO page table. Any page-aligned range can be mapped or unmapped; huge
 *    leaves are split when an unmap cuts one. Not locked: the owner serialises.
 *  - iommu_*: a domain. Keeps the mapping records (MAP of an overlapping range is refused, UNMAP
 *    removes whole mappings only), drives the page table, calls notifiers, counts, locks.
 *
 * Permission bits have the values of VIRTIO_IOMMU_MAP_F_{READ,WRITE,MMIO} and DMA_{READ,WRITE}:
 * READ lets the device read guest memory, WRITE lets it write.
 */
#ifndef MOAT_IOMMU_H
#define MOAT_IOMMU_H

#include <stdint.h>

#define IOMMU_READ 1u
#define IOMMU_WRITE 2u
#define IOMMU_MMIO 4u /* stored and compared, never interpreted here: for the device layer */
#define IOMMU_PERM_MASK (IOMMU_READ | IOMMU_WRITE | IOMMU_MMIO)

/* The page table translates a 48-bit IOVA space in 4 KiB pages (leaves of 4 KiB, 2 MiB, 1 GiB). */
#define IOMMU_IOVA_BITS 48
#define IOMMU_IOVA_LAST ((UINT64_C(1) << IOMMU_IOVA_BITS) - 1)
#define IOMMU_PAGE_SIZE UINT64_C(4096)
/* Bytes one page-table node costs against max_table_bytes (512 entries and a use count). */
#define IOMMU_PT_TABLE_BYTES UINT64_C(4104)
/*
 * Empty nodes a page table keeps for reuse instead of freeing them, so that map/unmap churn of one
 * page does not allocate and zero its nodes every time. They are not in table_bytes, yet the nodes
 * in the table plus the kept ones never pass max_table_bytes (see pgtable.c).
 */
#define IOMMU_PT_FREE_NODES 16

#define IOMMU_MAX_NOTIFIERS 8

/* ---- IO page table ---- */

struct iommu_pt;

/*
 * A page table accepting IOVAs up to input_end (inclusive, <= IOMMU_IOVA_LAST) whose nodes may use
 * at most max_table_bytes (>= IOMMU_PT_TABLE_BYTES: the root is counted). -EINVAL, -ENOMEM.
 */
int iommu_pt_new(uint64_t input_end, uint64_t max_table_bytes, struct iommu_pt **out)
	__attribute__((warn_unused_result));
void iommu_pt_free(struct iommu_pt *pt);

/*
 * Map [iova, iova+len) to [gpa, gpa+len) with perm (IOMMU_PERM_MASK bits), replacing whatever was
 * mapped there. Each piece gets the largest leaf its IOVA and GPA alignment and the remaining length
 * allow. -EINVAL: len 0, not page aligned, a range that wraps, unknown perm bits; -ERANGE: beyond
 * input_end; -ENOSPC: more than max_table_bytes of nodes (counting the nodes the request adds before
 * any a replacement frees); -ENOMEM. The table is unchanged on error.
 */
int iommu_pt_map(struct iommu_pt *pt, uint64_t iova, uint64_t gpa, uint64_t len, unsigned int perm)
	__attribute__((warn_unused_result));
/*
 * Unmap every page of [iova, iova+len), splitting a huge leaf that the range cuts (which needs new
 * nodes: -ENOSPC, -ENOMEM are possible). Unmapped pages in the range are fine. Errors as for map;
 * the table is unchanged on error.
 */
int iommu_pt_unmap(struct iommu_pt *pt, uint64_t iova, uint64_t len) __attribute__((warn_unused_result));
/*
 * Clear only the leaves lying wholly inside [iova, last]: never splits, never allocates, cannot fail.
 * The domain uses it on whole mappings, whose leaves never cross the mapping's ends.
 */
void iommu_pt_unmap_leaves(struct iommu_pt *pt, uint64_t iova, uint64_t last);
/* Unmap everything; only the root node remains. */
void iommu_pt_clear(struct iommu_pt *pt);

/*
 * Largest run starting at iova (any byte address), up to len (> 0) bytes, that is mapped with the
 * same permissions and contiguous in GPA, across leaves: *gpa (for iova), *run, *perm.
 * -ENOENT if iova is unmapped, -EINVAL for len 0.
 */
int iommu_pt_lookup(const struct iommu_pt *pt, uint64_t iova, uint64_t len, uint64_t *gpa, uint64_t *run,
		    unsigned int *perm) __attribute__((warn_unused_result));
/*
 * Like lookup, but the run continues across permission changes as long as every leaf allows perm
 * (and the IOMMU_MMIO bit stays the same). -ENOENT unmapped, -EACCES iova's leaf does not allow perm.
 */
int iommu_pt_translate(const struct iommu_pt *pt, uint64_t iova, uint64_t len, unsigned int perm, uint64_t *gpa,
		       uint64_t *run) __attribute__((warn_unused_result));

/* Bytes of the nodes in the table, root included (the empty nodes kept for reuse are not). */
uint64_t iommu_pt_table_bytes(const struct iommu_pt *pt);

/* What the table looks like, counted by a full walk (tests, debugging): not for the fast path. */
struct iommu_pt_shape {
	uint64_t tables; /* nodes, root included */
	uint64_t leaves_4k, leaves_2m, leaves_1g;
	uint64_t free_nodes; /* empty nodes kept for reuse */
};
void iommu_pt_inspect(const struct iommu_pt *pt, struct iommu_pt_shape *out);
/*
 * Consistency check for tests and debugging, a full walk: every node's use count matches its entries,
 * table_bytes counts the nodes, the kept nodes are all empty and within IOMMU_PT_FREE_NODES, and the
 * table plus the kept nodes fit max_table_bytes. 0 or -EUCLEAN.
 */
int iommu_pt_check(const struct iommu_pt *pt) __attribute__((warn_unused_result));

/* ---- Domains ---- */

struct iommu_limits {
	uint64_t input_start, input_end; /* inclusive IOVA range MAP accepts; input_end <= IOMMU_IOVA_LAST */
	uint32_t max_mappings;           /* mapping records */
	uint64_t max_table_bytes;        /* page-table nodes, root included */
	uint64_t page_size_mask;         /* the granule is its lowest bit, at least IOMMU_PAGE_SIZE */
};

/*
 * Called with the domain's write lock held, before the iommu_* call that caused them returns.
 * A callback must not call back into the domain (it would deadlock); it may read the page table
 * through iommu_domain_pt(). Either callback may be NULL.
 *  unmapped: once per contiguous run of removed mappings (adjacent mappings removed by one call are
 *            reported as one range), after the page table stops mapping it.
 *  mapped:   once per new mapping, after the page table maps it.
 */
struct iommu_notifier {
	void (*unmapped)(void *ctx, uint64_t iova, uint64_t len);
	void (*mapped)(void *ctx, uint64_t iova, uint64_t gpa, uint64_t len, unsigned int perm);
	/*
	 * Optional, from the virtio-iommu: a batch of guest requests starts (begin) or ends. Between the two,
	 * unmapped() may defer what it must do, to do it at the end (one INVALIDATE for adjacent UNMAPs), which
	 * comes before any request of the batch completes. Outside a batch unmapped() must act at once.
	 */
	void (*batch)(void *ctx, bool begin);
	void *ctx;
};

struct iommu_stats {
	uint64_t mappings;         /* mapping records now */
	uint64_t map_requests;     /* iommu_map calls, failed ones included */
	uint64_t unmap_requests;   /* iommu_unmap calls, failed ones included */
	uint64_t translations;     /* iommu_translate calls with valid arguments */
	uint64_t translate_faults; /* of those, -ENOENT and -EACCES */
	uint64_t table_bytes;      /* page-table nodes now */
	uint64_t unmapped_bytes;   /* total ever unmapped (unmap and unmap_all) */
	uint64_t mapped_bytes;     /* total ever mapped: mapped_bytes - unmapped_bytes are mapped now */
};

struct iommu_domain;

/* -EINVAL for limits the page table cannot honour, -ENOMEM. */
int iommu_domain_new(uint32_t id, const struct iommu_limits *lim, struct iommu_domain **out)
	__attribute__((warn_unused_result));
/* Frees without notifying: call iommu_unmap_all first if subscribers hold cached translations. */
void iommu_domain_free(struct iommu_domain *d);
uint32_t iommu_domain_id(const struct iommu_domain *d);

/*
 * MAP [iova_start, iova_end] (inclusive, as the spec) to gpa with flags (IOMMU_PERM_MASK bits).
 * -EINVAL unknown flags, end < start, start / end+1 / gpa not aligned to the granule, gpa range wraps;
 * -ERANGE outside [input_start, input_end]; -EEXIST overlaps a mapping; -ENOSPC max_mappings or
 * max_table_bytes would be exceeded; -ENOMEM. The domain is unchanged on every error.
 */
int iommu_map(struct iommu_domain *d, uint64_t iova_start, uint64_t iova_end, uint64_t gpa, unsigned int flags)
	__attribute__((warn_unused_result));
/*
 * UNMAP [iova_start, iova_end]: removes every mapping wholly inside. -ERANGE (nothing removed) if a
 * mapping straddles either end; -EINVAL end < start. 0 with *unmapped_bytes 0 if nothing was mapped
 * there. unmapped_bytes may be NULL.
 */
int iommu_unmap(struct iommu_domain *d, uint64_t iova_start, uint64_t iova_end, uint64_t *unmapped_bytes)
	__attribute__((warn_unused_result));
/* Remove every mapping (detach, reset), notifying as unmap does. */
void iommu_unmap_all(struct iommu_domain *d);

/*
 * Translate iova for an access of up to len (> 0) bytes with perm (IOMMU_READ and/or IOMMU_WRITE).
 * On success *gpa is iova's address and *contiguous_len, 1 <= it <= len, the longest run from iova
 * that is contiguous in GPA and allowed for perm, across adjacent mappings. -ENOENT unmapped,
 * -EACCES perm denied, -EINVAL len 0 or bad perm. Takes the read lock: callable from many threads.
 */
int iommu_translate(struct iommu_domain *d, uint64_t iova, uint64_t len, unsigned int perm, uint64_t *gpa,
		    uint64_t *contiguous_len) __attribute__((warn_unused_result));

/*
 * For a device IOTLB (vhost): look up the run at iova as iommu_pt_lookup does (up to len bytes, same
 * permissions, contiguous in GPA, across mappings) and call fn with it while holding the read lock, so
 * that no UNMAP can complete between the lookup and what fn does with it (pushing the entry into a
 * cache that the UNMAP's notifier then invalidates). fn must not call into the domain. Returns fn's
 * result, or -ENOENT unmapped, -EINVAL len 0.
 */
int iommu_resolve(struct iommu_domain *d, uint64_t iova, uint64_t len,
		  int (*fn)(void *arg, uint64_t iova, uint64_t gpa, uint64_t len, unsigned int perm), void *arg)
	__attribute__((warn_unused_result));

/* n is kept by pointer and must stay valid until removed. -EINVAL no callback, -EEXIST, -ENOSPC full. */
int iommu_notifier_add(struct iommu_domain *d, const struct iommu_notifier *n) __attribute__((warn_unused_result));
/* Removing a notifier that is not registered does nothing. */
void iommu_notifier_del(struct iommu_domain *d, const struct iommu_notifier *n);

void iommu_domain_stats(const struct iommu_domain *d, struct iommu_stats *out);
/* The domain's page table, to read from a notifier callback (the lock is held there) or a test. */
const struct iommu_pt *iommu_domain_pt(const struct iommu_domain *d);
/*
 * Consistency check for tests and debugging, O(n log n + leaves): the record tree is ordered and
 * balanced, every record is mapped exactly by the page table, which maps nothing else, the page table
 * passes iommu_pt_check, and the byte counters agree. 0 or -EUCLEAN.
 */
int iommu_domain_check(const struct iommu_domain *d) __attribute__((warn_unused_result));

#endif
