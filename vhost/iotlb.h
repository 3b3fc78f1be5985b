/*
 * The device IOTLB of a kernel vhost back end, served from moat's IOMMU page tables.
 *
 * With VIRTIO_F_ACCESS_PLATFORM and VHOST_BACKEND_F_IOTLB_MSG_V2 negotiated, vhost addresses the rings
 * and buffers by IOVA and keeps its own cache of IOVA -> host address entries. A miss makes it queue a
 * VHOST_IOTLB_MISS message on the vhost fd and park the queue; this module's thread reads it, resolves
 * the IOVA through the device's IOMMU endpoint and writes back a VHOST_IOTLB_UPDATE covering the largest
 * run from the missed page that has one permission and is contiguous in the host. Guest UNMAPs (and
 * endpoint changes) become VHOST_IOTLB_INVALIDATE messages written from the IOMMU's notifier, before the
 * UNMAP request completes; with prefetch on, a guest MAP is queued for the thread, which pushes it as an
 * UPDATE right away (resolving it again, so a range unmapped meanwhile is not pushed).
 *
 * Ordering, the security point: an UPDATE is written while the IOMMU's locks are held
 * (virtio_iommu_endpoint_resolve), and an UNMAP's INVALIDATE is written under the domain's write lock,
 * so an UPDATE can never land after the INVALIDATE of the UNMAP that removed it.
 *
 * The fd is the vhost fd (or, in tests, one end of a SOCK_SEQPACKET socketpair carrying the same
 * 72-byte struct vhost_msg_v2 messages).
 */
#ifndef MOAT_VHOST_IOTLB_H
#define MOAT_VHOST_IOTLB_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "devices/virtio/iommu.h"
#include "iommu/iommu.h"
#include "vmm/dma.h"
#include "vmm/lathist.h"

struct vm;

/* Miss-service latency histogram (vmm/lathist.h). */
#define VHOST_IOTLB_HIST LATHIST_BUCKETS

/*
 * Resolve iova for perm and call emit with the run while translations cannot change (the endpoint's,
 * virtio_iommu_endpoint_resolve). report: a refusal is a device fault to report (a miss), not a prefetch
 * of something already gone.
 */
typedef int (*vhost_iotlb_resolve_fn)(void *ctx, uint64_t iova, unsigned int perm, uint64_t max_len, bool report,
				      int (*emit)(void *arg, const struct viommu_run *run), void *arg);

/* Invalidations held during one batch of IOMMU requests; when full they are written out. */
#define VHOST_IOTLB_INV_BATCH 32u

/* Guest MAPs waiting for the IOTLB thread to push them (prefetch); beyond this they are dropped. */
#define VHOST_IOTLB_PREFETCH_QUEUE 1024u

/*
 * Prefetch: how a guest MAP reaches vhost's IOTLB before vhost needs it.
 * SYNC: the UPDATE is written on the IOMMU's (vCPU) thread while it handles the MAP, so vhost never misses
 * on a mapped buffer; the vCPU may wait for vhost's queue locks. QUEUED: the MAP is queued for the IOTLB
 * thread; the vCPU never waits, but vhost can reach the buffer first and miss.
 */
enum vhost_iotlb_prefetch { VHOST_PREFETCH_OFF = 0, VHOST_PREFETCH_QUEUED = 1, VHOST_PREFETCH_SYNC = 2 };

struct vhost_iotlb_hint {
	uint64_t iova, len;
	unsigned int perm;
};

struct vhost_iotlb_counters {
	uint64_t misses;        /* VHOST_IOTLB_MISS messages read */
	uint64_t updates;       /* UPDATE messages written for misses and ring set-up */
	uint64_t prefetches;    /* UPDATE messages written for guest MAPs (prefetch on) */
	uint64_t prefetch_dropped; /* MAPs not pushed: the prefetch queue was full */
	uint64_t invalidations; /* INVALIDATE messages written */
	uint64_t inval_merged;  /* UNMAPs folded into another one's INVALIDATE (adjacent, same request batch) */
	uint64_t faults;        /* misses the IOMMU refused (reported to the guest as fault events) */
	uint64_t errors;        /* bad messages from the back end, failed writes */
	uint64_t service_ns;    /* total miss-service time */
	uint64_t service_max_ns;
	uint64_t hist[VHOST_IOTLB_HIST];
	/* every message written (UPDATE, INVALIDATE): how long vhost took it (it takes every queue's lock) */
	uint64_t writes;
	uint64_t write_hist[VHOST_IOTLB_HIST];
};

struct vhost_iotlb {
	int fd;
	vhost_iotlb_resolve_fn resolve;
	void *resolve_ctx;
	int prefetch; /* enum vhost_iotlb_prefetch */
	const struct guest_memory *gm; /* for SYNC prefetch: MAPs' GPAs to host addresses */
	bool active; /* the back end has an IOTLB (features negotiated): invalidations matter; atomic */
	struct iommu_notifier notifier;
	/* prefetch: MAPs queued by the IOMMU's thread for this one, and its wake-up */
	pthread_mutex_t pf_lock;
	struct vhost_iotlb_hint pf[VHOST_IOTLB_PREFETCH_QUEUE];
	unsigned int pf_head, pf_count;
	int pf_fd;
	/* invalidations of the current request batch, merged, written at its end (or before an overlapping UPDATE) */
	pthread_mutex_t inv_lock;
	unsigned int batch_depth;
	struct vhost_iotlb_range { uint64_t iova, end; } inv[VHOST_IOTLB_INV_BATCH]; /* [iova, end) */
	unsigned int ninv;
	struct vhost_iotlb_counters c; /* atomics; hist and service_* written by the serving thread only */
	/* the thread */
	struct vm *vm;
	char name[16];
	int stop_fd;
	pthread_t thread;
	bool started;
	bool warned;
};

/* fd is not owned. -errno (eventfd). */
/* prefetch: enum vhost_iotlb_prefetch; SYNC needs vhost_iotlb_set_memory(), else it queues. */
int vhost_iotlb_init(struct vhost_iotlb *t, int fd, vhost_iotlb_resolve_fn resolve, void *resolve_ctx, int prefetch)
	__attribute__((warn_unused_result));
/* The guest memory MAPs point into (SYNC prefetch). */
void vhost_iotlb_set_memory(struct vhost_iotlb *t, const struct guest_memory *gm);
/* Stops the thread if it runs; closes only what init opened. */
void vhost_iotlb_fini(struct vhost_iotlb *t);

/* The notifier to subscribe to the device's IOMMU endpoint (unmapped -> INVALIDATE, mapped -> prefetch). */
const struct iommu_notifier *vhost_iotlb_notifier(struct vhost_iotlb *t);
/* The back end's IOTLB exists (after VHOST_SET_FEATURES with ACCESS_PLATFORM): start sending invalidations. */
void vhost_iotlb_set_active(struct vhost_iotlb *t, bool active);
/* Invalidate [iova, iova+len) in the back end (len UINT64_MAX: everything). */
void vhost_iotlb_invalidate(struct vhost_iotlb *t, uint64_t iova, uint64_t len);

/*
 * Push UPDATEs covering every byte of [iova, iova+len) for perm (ring set-up, before the back end starts
 * and reads them). -EFAULT if some byte is refused (a fault event is recorded), -EINVAL len 0 or a
 * wrapping range, -errno from write.
 */
int vhost_iotlb_fill(struct vhost_iotlb *t, uint64_t iova, uint64_t len, unsigned int perm)
	__attribute__((warn_unused_result));
/*
 * Push the queued prefetches, then read every message waiting on the fd (non-blocking) and answer each
 * miss. Returns how many prefetches and messages were handled, or -errno if reading failed for another
 * reason than EAGAIN.
 */
int vhost_iotlb_serve(struct vhost_iotlb *t);

/* Start the serving thread (named name, under the vhost seccomp allow-list), when the guest starts. -errno. */
int vhost_iotlb_start(struct vhost_iotlb *t, struct vm *vm, const char *name) __attribute__((warn_unused_result));
void vhost_iotlb_stop(struct vhost_iotlb *t);

void vhost_iotlb_counters(const struct vhost_iotlb *t, struct vhost_iotlb_counters *out);
/* Upper bound in microseconds of the bucket holding the q-quantile (0 < q <= 1) of the misses; 0 if none. */
double vhost_iotlb_quantile_us(const struct vhost_iotlb_counters *c, double q);
/* One line: misses, updates, prefetches, invalidations, faults, miss-service p50/p99/max. */
void vhost_iotlb_stats(const struct vhost_iotlb *t, char *buf, size_t len);

#endif
