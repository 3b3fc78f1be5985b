/*
 * virtio-iommu internals shared by iommu.c (device ops, event queue, stats), iommu_req.c (the
 * request queue) and iommu_ep.c (endpoint translation, faults, subscribers). See iommu.h for the
 * lock order.
 */
#ifndef MOAT_VIRTIO_IOMMU_INTERNAL_H
#define MOAT_VIRTIO_IOMMU_INTERNAL_H

#include <linux/virtio_iommu.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "devices/virtio/iommu.h"
#include "vmm/lathist.h"
#include "vmm/iotlb.h"

#define VIOMMU_REQUESTQ 0u
#define VIOMMU_EVENTQ 1u
#define VIOMMU_REQUESTQ_SIZE 256u
#define VIOMMU_EVENTQ_SIZE 64u

/* Domain ids the guest may use (config domain_range); live domains are capped separately. */
#define VIOMMU_DOMAIN_LAST 0xffffu
#define VIOMMU_MAX_ENDPOINTS 256u
#define VIOMMU_EP_MAX_NOTIFIERS 4u
/* Faults waiting for the worker; more are dropped (counted), never blocked on, never allocated. */
#define VIOMMU_FAULT_QUEUE 64u
#define VIOMMU_PROBE_SIZE 512u

/* Features beyond VERSION_1 (which the core adds). */
#define VIOMMU_FEATURES                                                                                      \
	(VIRTIO_BIT(VIRTIO_IOMMU_F_INPUT_RANGE) | VIRTIO_BIT(VIRTIO_IOMMU_F_DOMAIN_RANGE) |                  \
	 VIRTIO_BIT(VIRTIO_IOMMU_F_MAP_UNMAP) | VIRTIO_BIT(VIRTIO_IOMMU_F_BYPASS_CONFIG) |                   \
	 VIRTIO_BIT(VIRTIO_IOMMU_F_PROBE) | VIRTIO_BIT(VIRTIO_RING_F_INDIRECT_DESC) |                        \
	 VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX))

/* One live domain. Fields change only on the IOMMU's thread, under the state write lock. */
struct viommu_dom {
	struct virtio_iommu *v;
	uint32_t id;
	bool bypass;             /* created by ATTACH_F_BYPASS: identity, no page table, no MAP */
	unsigned int nendpoints; /* 0 only between creation and the first attach */
	struct iommu_domain *d;  /* NULL for a bypass domain */
	struct iommu_notifier fanout; /* on d: forwards to the subscribers of the endpoints in it */
};

struct viommu_endpoint {
	struct virtio_iommu *v;
	struct dma_as as; /* ops: endpoint translation; ctx: this endpoint */
	uint32_t id;
	bool has_id;
	struct viommu_dom *dom; /* NULL: not attached (bypass or blocked by config.bypass) */
	const struct iommu_notifier *subs[VIOMMU_EP_MAX_NOTIFIERS];
	unsigned int nsubs;
	struct iotlb tlb;     /* the device's recent translations; emptied before subscribers are told */
	struct dma_gate gate; /* the device's read-side sections, waited out before a change completes */
	bool sync_pending;    /* a request in the batch being served took translations away (IOMMU's thread) */
};

struct viommu_fault_rec {
	uint8_t reason;  /* VIRTIO_IOMMU_FAULT_R_* */
	uint32_t flags;  /* VIRTIO_IOMMU_FAULT_F_* */
	uint32_t endpoint;
	uint64_t address;
};

/* Counters read by virtio_iommu_stats from any thread: relaxed atomics. */
struct viommu_counters {
	uint64_t req[VIRTIO_IOMMU_T_PROBE + 1]; /* by type; [0]: unrecognised or unparsable (used len 0) */
	uint64_t failed;        /* requests answered with a status other than OK */
	uint64_t faults;        /* translations refused and recorded */
	uint64_t events;        /* fault reports posted on the event queue */
	uint64_t dropped;       /* faults lost: queue full, no event buffer, device not live, reset */
	uint64_t bad_target;    /* translations allowed by the IOMMU that landed outside RAM */
	uint64_t polls;         /* polling spells: kicks off, the request queue watched (cfg.poll_us) */
	uint64_t polled;        /* requests taken while polling, each one a guest exit saved */
	uint64_t looks;         /* looks at the request queue while polling */
	uint64_t helped;        /* ... of them taken by another device's thread between its own requests */
	/* polling: time since the previous look, for each look that found requests (how late they were seen) */
	uint64_t gap_hist[LATHIST_BUCKETS];
	/* polling: from such a look to the requests' completions published */
	uint64_t answer_hist[LATHIST_BUCKETS];
	uint64_t gap_ns;        /* the sum of those times since the previous look */
	uint64_t verified;      /* MOAT_IOTLB=verify: IOTLB hits checked against a page-table walk */
	uint64_t stale;         /* ... that disagreed with it (a bug: the cache kept what the guest unmapped) */
};

/* MOAT_IOTLB (debugging): on (default), off (every translation walks the page table), verify (hits are checked). */
enum viommu_tlb_mode { VIOMMU_TLB_ON, VIOMMU_TLB_OFF, VIOMMU_TLB_VERIFY };

struct virtio_iommu {
	struct virtio_dev dev; /* first: the ops get &dev */
	struct viommu_config cfg;
	enum viommu_tlb_mode tlb_mode;
	uint64_t stale_iova;    /* the first stale hit, for the report */
	struct guest_memory *gm;
	struct dma_as gm_as;    /* identity over gm: where translated addresses become host pointers */
	struct iommu_limits lim;

	pthread_rwlock_t state; /* see iommu.h */
	bool bypass;            /* config.bypass now */
	struct viommu_dom **doms; /* cfg.max_domains slots, the first ndoms sorted by id */
	uint32_t ndoms;
	struct viommu_endpoint *eps[VIOMMU_MAX_ENDPOINTS];
	unsigned int neps;

	pthread_mutex_t fault_lock;
	struct viommu_fault_rec faultq[VIOMMU_FAULT_QUEUE];
	unsigned int fault_head, fault_count;
	int fault_fd; /* eventfd: a fault is waiting; polled by the IOMMU's worker */

	bool polling;           /* a polling spell is on: the guest does not kick (atomic) */
	uint64_t served;        /* requests completed, by any thread (atomic): the poller's sign of activity */

	struct viommu_counters ctr;
};

static inline struct virtio_iommu *to_viommu(struct virtio_dev *dev)
{
	return (struct virtio_iommu *)((char *)dev - offsetof(struct virtio_iommu, dev));
}

static inline void ctr_add(uint64_t *c, uint64_t n)
{
	__atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

static inline uint64_t ctr_get(const uint64_t *c)
{
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

/* iommu_req.c: serve every available request on the request queue (queue_notify). */
unsigned int viommu_serve_requests(struct virtio_iommu *v);
/* iommu_req.c: the domain with that id, or NULL. Called with the state lock held or on the IOMMU's thread. */
struct viommu_dom *viommu_dom_find(const struct virtio_iommu *v, uint32_t id);
/* iommu_req.c: detach every endpoint and destroy every domain (reset, free). Takes the state lock. */
void viommu_clear(struct virtio_iommu *v);

/* iommu_ep.c */
extern const struct dma_as_ops viommu_ep_as_ops;
/* The endpoint with that id, or NULL. Takes the state read lock: not with the state lock held. */
struct viommu_endpoint *viommu_ep_find(struct virtio_iommu *v, uint32_t id);
/* Tell ep's subscribers to forget everything (it changed domain). State lock held. */
void viommu_ep_changed(struct viommu_endpoint *ep);
/* The domain notifier's callbacks: forward to the subscribers of the endpoints in the domain. */
void viommu_fanout_unmapped(void *ctx, uint64_t iova, uint64_t len);
void viommu_fanout_mapped(void *ctx, uint64_t iova, uint64_t gpa, uint64_t len, unsigned int perm);
/* Free an endpoint (virtio_iommu_free): no device may translate through it any more. */
void viommu_ep_free(struct viommu_endpoint *ep);
/*
 * Wait until no copy through a translation ep had before now is running: its device's read-side
 * sections opened earlier have closed. On the IOMMU's thread, after the change (UNMAP, ATTACH, ...)
 * and before its request completes, holding neither the state lock nor a domain lock.
 */
void viommu_ep_sync(struct viommu_endpoint *ep);
/* Mark every endpoint attached to dom for viommu_sync_pending. State lock held (either way). */
void viommu_dom_mark(struct virtio_iommu *v, const struct viommu_dom *dom);
/*
 * viommu_ep_sync for every endpoint marked since the last call, then clear the marks: once per batch
 * of requests, before any of them completes. IOMMU's thread, no lock held.
 */
void viommu_sync_pending(struct virtio_iommu *v);
/*
 * Tell every endpoint's subscribers that a batch of requests begins or ends (iommu_notifier.batch); the end
 * comes before any request of the batch completes. IOMMU's thread, no lock held.
 */
void viommu_batch(struct virtio_iommu *v, bool begin);

/* Another device's thread, between its requests and outside any section: serve what waits (dma_as_ops.help). */
void virtio_iommu_help(struct virtio_iommu *v);
/* Drain the fault queue into out (VIOMMU_FAULT_QUEUE entries); returns how many. */
unsigned int viommu_faults_take(struct virtio_iommu *v, struct viommu_fault_rec *out);

#endif
