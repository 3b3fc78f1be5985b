/*
 * virtio-iommu (VIRTIO 1.2 section 5.13, <linux/virtio_iommu.h>): the guest's IOMMU for the devices
 * behind it (its endpoints). The guest attaches endpoints to domains and MAPs/UNMAPs IO virtual
 * ranges in them; each endpoint's DMA goes through a struct dma_as that translates through its
 * domain's IO page table (iommu/), and an access the IOMMU refuses is reported on the event queue.
 *
 * Offered: INPUT_RANGE, DOMAIN_RANGE, MAP_UNMAP, BYPASS_CONFIG, PROBE (a RESV_MEM MSI window per
 * endpoint), INDIRECT_DESC, EVENT_IDX. Not MMIO: moat's endpoints only ever DMA into RAM, so a
 * MAP with VIRTIO_IOMMU_MAP_F_MMIO is refused as an unknown flag. Not BYPASS (superseded by
 * BYPASS_CONFIG, and the spec says not to offer both).
 *
 * Threads and locks (the order is top to bottom; never the other way):
 *   dev->lock of the IOMMU          the transport and the IOMMU's worker, around every op
 *   state rwlock (struct virtio_iommu)  which domain each endpoint is in, the domain set, bypass,
 *                                   endpoint subscribers. Written by the request path (ATTACH,
 *                                   DETACH, reset, a bypass write) and subscriber registration;
 *                                   read by every endpoint translation and around MAP/UNMAP.
 *   domain rwlock (iommu/)          the domain's mappings; notifiers run inside its write lock
 *   endpoint IOTLB mutex            fills and invalidations of one endpoint's IOTLB (a leaf)
 *   fault mutex                     the bounded fault queue (a leaf)
 * A request that takes translations away (UNMAP, ATTACH, DETACH, reset, bypass) then waits, holding
 * only dev->lock, for the endpoints' read-side sections opened before it (vmm/dma.h); sections never
 * wait and never take dev->lock of the IOMMU, so that wait always ends.
 * Endpoint translations run on OTHER devices' threads holding THEIR dev->lock, so nothing under
 * the state lock may take any device's dev->lock, and a subscriber callback must not call back
 * into the IOMMU (translate included): it runs with the state lock held.
 */
#ifndef MOAT_VIRTIO_IOMMU_H
#define MOAT_VIRTIO_IOMMU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "devices/virtio/virtio.h"
#include "iommu/iommu.h"
#include "vmm/dma.h"

#define VIRTIO_ID_IOMMU 23u

struct guest_memory;

struct viommu_config {
	bool bypass;                 /* initial config.bypass: unattached endpoints bypass (true) or are blocked */
	uint32_t max_domains;        /* live domains, 1..65536 (ids are 0..65535): ATTACH beyond -> NOMEM */
	uint32_t max_mappings;       /* per domain, >= 1 */
	uint64_t max_table_bytes;    /* per domain page-table bytes, >= IOMMU_PT_TABLE_BYTES */
	uint64_t msi_start, msi_end; /* PROBE RESV_MEM MSI window, inclusive; msi_end < msi_start: none */
	/*
	 * 0: every request is a notification that exits to the kicking vCPU, which serves it. Else the
	 * device's thread serves kicks and, after each, polls the request queue with notifications off
	 * until poll_us pass without a request (at most VIOMMU_POLL_MAX_US).
	 */
	uint32_t poll_us;
};

#define VIOMMU_POLL_MAX_US 100000u /* MOAT_IOMMU_POLL_MAX_US */

struct virtio_iommu;
struct viommu_endpoint;

/*
 * as: how the IOMMU reaches its own queues (identity: the IOMMU does not translate itself).
 * gm: guest memory the endpoints' translated addresses land in. Both must outlive the device.
 * -EINVAL bad config, -ENOMEM, or -errno from eventfd().
 */
int virtio_iommu_new(const struct viommu_config *cfg, const struct dma_as *as, struct guest_memory *gm,
		     struct virtio_iommu **out, char *err, size_t errlen) __attribute__((warn_unused_result));
struct virtio_dev *virtio_iommu_dev(struct virtio_iommu *v);
/* Frees the endpoints too: no device may translate through them any more. NULL is fine. */
void virtio_iommu_free(struct virtio_iommu *v);
/* Requests, faults and events, then one line per live domain. Callable from any thread. */
void virtio_iommu_stats(const struct virtio_iommu *v, char *buf, size_t len);

/*
 * Endpoints: the devices behind the IOMMU. Created before the device model (whose DMA address space
 * is the endpoint's), the id set once the PCI slot is known (endpoint id = PCI BDF). Ids must be
 * unique; an endpoint with no id yet is invisible to the guest's requests. At most 256.
 * -ENOSPC, -ENOMEM.
 */
int virtio_iommu_endpoint_new(struct virtio_iommu *v, struct viommu_endpoint **out)
	__attribute__((warn_unused_result));
void virtio_iommu_endpoint_set_id(struct viommu_endpoint *ep, uint32_t id);
/* The address space a device behind this endpoint does all its DMA through; lives as long as v. */
const struct dma_as *virtio_iommu_endpoint_as(struct viommu_endpoint *ep);

/*
 * A subscriber caching the endpoint's translations (vhost device IOTLB). n is kept by pointer.
 *  unmapped(ctx, iova, len): [iova, iova+len) no longer translates the way it did; called before the
 *      UNMAP request completes. len == UINT64_MAX means everything from iova 0: the endpoint changed
 *      domain (ATTACH, DETACH, its domain destroyed, a bypass change, reset).
 *  mapped(ctx, iova, gpa, len, perm): a MAP in the endpoint's domain (a prefetch hint).
 * Both run with the IOMMU's state lock and the domain's write lock held, on the IOMMU's thread.
 * -EINVAL no callback, -EEXIST already registered, -ENOSPC more than 4.
 */
int virtio_iommu_endpoint_notifier(struct viommu_endpoint *ep, const struct iommu_notifier *n)
	__attribute__((warn_unused_result));

/* One run of an endpoint's translation, as a device IOTLB caches it. */
struct viommu_run {
	uint64_t iova;     /* where the run starts: the start of the page holding the address asked for */
	uint64_t len;      /* bytes from iova, contiguous in the host, all with perm */
	void *host;        /* host address of iova */
	unsigned int perm; /* IOMMU_READ | IOMMU_WRITE: what the mapping allows, at least what was asked */
};

/*
 * A device IOTLB miss (vhost): find the run holding iova for an access needing perm (IOMMU_READ and/or
 * IOMMU_WRITE) -- from iova's page, at most max_len bytes, the same permissions throughout, merged across
 * adjacent mappings that are contiguous in guest memory, clipped to one RAM region -- and pass it to fn
 * WHILE the IOMMU's locks are held: no UNMAP or ATTACH can complete between the lookup and what fn does
 * (push it into the cache), so the UNMAP's notifier always comes after and invalidates it. fn must not
 * call into the IOMMU. A refused access (unmapped, permission denied, endpoint blocked) returns -EFAULT and,
 * with report, is recorded as a fault event for the guest like any DMA fault; otherwise fn's result.
 * -EINVAL: bad perm or max_len 0.
 */
int virtio_iommu_endpoint_resolve(struct viommu_endpoint *ep, uint64_t iova, unsigned int perm, uint64_t max_len,
				  bool report, int (*fn)(void *arg, const struct viommu_run *run), void *arg)
	__attribute__((warn_unused_result));

#endif
