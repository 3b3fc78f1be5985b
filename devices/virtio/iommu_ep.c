/*
 * virtio-iommu endpoints: the address space every device behind the IOMMU does its DMA through,
 * the faults it records when the IOMMU refuses an access, and the subscribers (device IOTLBs)
 * told when the endpoint's translations change.
 *
 * Translation runs on other devices' threads (their workers, or a vCPU enabling their queues)
 * while the IOMMU's own thread changes domains: it takes only the state read lock and, inside
 * iommu_translate, the domain's read lock. It never caches: every access walks the page table,
 * so an UNMAP is in force for every new translation the moment the domain's write lock is
 * released. What stays open: a host pointer a device got just before that is still used for the
 * one copy it was for (dma.h: use it at once, never keep it), so that copy may land after the
 * UNMAP completed. Closing it needs devices to bracket translate + copy in a read-side section
 * that UNMAP waits out: a dma_as API change, not something this file can do alone.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "devices/virtio/iommu_internal.h"

_Static_assert(DMA_READ == IOMMU_READ && DMA_WRITE == IOMMU_WRITE, "DMA and IOMMU permissions share values");
_Static_assert(IOMMU_READ == VIRTIO_IOMMU_FAULT_F_READ && IOMMU_WRITE == VIRTIO_IOMMU_FAULT_F_WRITE,
	       "fault flags carry the access's permission bits");

int virtio_iommu_endpoint_new(struct virtio_iommu *v, struct viommu_endpoint **out)
{
	struct viommu_endpoint *ep;
	int err = 0;

	ep = calloc(1, sizeof(*ep));
	if (!ep)
		return -ENOMEM;
	ep->v = v;
	ep->as = (struct dma_as){ .ops = &viommu_ep_as_ops, .ctx = ep };
	/* The subscriber fan-out walks eps under the state lock. */
	pthread_rwlock_wrlock(&v->state);
	if (v->neps == VIOMMU_MAX_ENDPOINTS)
		err = -ENOSPC;
	else
		v->eps[v->neps++] = ep;
	pthread_rwlock_unlock(&v->state);
	if (err) {
		free(ep);
		return err;
	}
	*out = ep;
	return 0;
}

void virtio_iommu_endpoint_set_id(struct viommu_endpoint *ep, uint32_t id)
{
	pthread_rwlock_wrlock(&ep->v->state);
	ep->id = id;
	ep->has_id = true;
	pthread_rwlock_unlock(&ep->v->state);
}

const struct dma_as *virtio_iommu_endpoint_as(struct viommu_endpoint *ep)
{
	return &ep->as;
}

int virtio_iommu_endpoint_notifier(struct viommu_endpoint *ep, const struct iommu_notifier *n)
{
	int err = 0;

	if (!n || (!n->unmapped && !n->mapped))
		return -EINVAL;
	pthread_rwlock_wrlock(&ep->v->state);
	for (unsigned int i = 0; i < ep->nsubs; i++)
		if (ep->subs[i] == n)
			err = -EEXIST;
	if (!err && ep->nsubs == VIOMMU_EP_MAX_NOTIFIERS)
		err = -ENOSPC;
	if (!err)
		ep->subs[ep->nsubs++] = n;
	pthread_rwlock_unlock(&ep->v->state);
	return err;
}

struct viommu_endpoint *viommu_ep_find(struct virtio_iommu *v, uint32_t id)
{
	struct viommu_endpoint *found = NULL;

	/*
	 * At most 256, and only ATTACH, DETACH and PROBE look: a scan is enough. Endpoints may still be
	 * added or named from other threads; they are never removed, so the pointer outlives the lock.
	 */
	pthread_rwlock_rdlock(&v->state);
	for (unsigned int i = 0; i < v->neps && !found; i++)
		if (v->eps[i]->has_id && v->eps[i]->id == id)
			found = v->eps[i];
	pthread_rwlock_unlock(&v->state);
	return found;
}

void viommu_ep_changed(struct viommu_endpoint *ep)
{
	for (unsigned int i = 0; i < ep->nsubs; i++)
		if (ep->subs[i]->unmapped)
			ep->subs[i]->unmapped(ep->subs[i]->ctx, 0, UINT64_MAX);
}

/*
 * Inside the domain's write lock, on the IOMMU's thread, with the state lock held (read for
 * MAP/UNMAP, write for a domain being destroyed): the endpoint set and their subscribers are stable.
 */
void viommu_fanout_unmapped(void *ctx, uint64_t iova, uint64_t len)
{
	struct viommu_dom *dom = ctx;
	struct virtio_iommu *v = dom->v;

	for (unsigned int i = 0; i < v->neps; i++) {
		struct viommu_endpoint *ep = v->eps[i];

		if (ep->dom != dom)
			continue;
		for (unsigned int k = 0; k < ep->nsubs; k++)
			if (ep->subs[k]->unmapped)
				ep->subs[k]->unmapped(ep->subs[k]->ctx, iova, len);
	}
}

void viommu_fanout_mapped(void *ctx, uint64_t iova, uint64_t gpa, uint64_t len, unsigned int perm)
{
	struct viommu_dom *dom = ctx;
	struct virtio_iommu *v = dom->v;

	for (unsigned int i = 0; i < v->neps; i++) {
		struct viommu_endpoint *ep = v->eps[i];

		if (ep->dom != dom)
			continue;
		for (unsigned int k = 0; k < ep->nsubs; k++)
			if (ep->subs[k]->mapped)
				ep->subs[k]->mapped(ep->subs[k]->ctx, iova, gpa, len, perm);
	}
}

/*
 * Queue a fault for the IOMMU's worker. Called on the faulting device's thread, so it must neither
 * block on the IOMMU nor allocate: a full queue drops the fault and counts it.
 */
static void fault_record(struct virtio_iommu *v, const struct viommu_fault_rec *f)
{
	bool wake;

	ctr_add(&v->ctr.faults, 1);
	pthread_mutex_lock(&v->fault_lock);
	if (v->fault_count == VIOMMU_FAULT_QUEUE) {
		pthread_mutex_unlock(&v->fault_lock);
		ctr_add(&v->ctr.dropped, 1);
		return;
	}
	v->faultq[(v->fault_head + v->fault_count) % VIOMMU_FAULT_QUEUE] = *f;
	/* One wake-up per batch: the worker drains the whole queue after reading the eventfd. */
	wake = v->fault_count++ == 0;
	pthread_mutex_unlock(&v->fault_lock);
	if (wake) {
		uint64_t one = 1;

		/* Only EAGAIN (counter saturated) can fail, and then a wake-up is pending anyway. */
		if (write(v->fault_fd, &one, sizeof(one)) < 0)
			return;
	}
}

unsigned int viommu_faults_take(struct virtio_iommu *v, struct viommu_fault_rec *out)
{
	unsigned int n;

	pthread_mutex_lock(&v->fault_lock);
	n = v->fault_count;
	for (unsigned int i = 0; i < n; i++)
		out[i] = v->faultq[(v->fault_head + i) % VIOMMU_FAULT_QUEUE];
	v->fault_head = 0;
	v->fault_count = 0;
	pthread_mutex_unlock(&v->fault_lock);
	return n;
}

static int ep_translate(const struct dma_as *as, uint64_t iova, uint64_t len, unsigned int perm, void **host,
			uint64_t *run)
{
	struct viommu_endpoint *ep = as->ctx;
	struct virtio_iommu *v = ep->v;
	struct viommu_fault_rec f = { .reason = 0 };
	uint64_t gpa = iova, glen = len;
	int err = 0;

	if (!len || !perm || (perm & ~(DMA_READ | DMA_WRITE)))
		return -EFAULT;
	/* GUEST: iova and len come from a driver; the page table and gm bound them below. */
	pthread_rwlock_rdlock(&v->state);
	f.endpoint = ep->id;
	if (ep->dom && !ep->dom->bypass) {
		err = iommu_translate(ep->dom->d, iova, len, perm, &gpa, &glen);
		if (err == -ENOENT || err == -EACCES)
			f.reason = VIRTIO_IOMMU_FAULT_R_MAPPING;
	} else if (!ep->dom && !v->bypass) {
		/* 5.13.6.2: unattached and not in bypass mode: no access to guest memory. */
		err = -EPERM;
		f.reason = VIRTIO_IOMMU_FAULT_R_DOMAIN;
	}
	/* Neither: bypass (config.bypass or a bypass domain), identity over the whole length. */
	if (!err) {
		/* GUEST: [gpa, gpa+glen) from the page table (or identity); clipped to one RAM region. */
		err = v->gm_as.ops->translate(&v->gm_as, gpa, glen, perm, host, run);
		if (err)
			ctr_add(&v->ctr.bad_target, 1);
	}
	pthread_rwlock_unlock(&v->state);
	if (f.reason) {
		f.flags = perm | VIRTIO_IOMMU_FAULT_F_ADDRESS;
		f.address = iova;
		fault_record(v, &f);
	}
	return err ? -EFAULT : 0;
}

const struct dma_as_ops viommu_ep_as_ops = {
	.translate = ep_translate,
};

/* ------------------------------------------------------------------ device IOTLB misses */

struct ep_resolve {
	struct virtio_iommu *v;
	unsigned int perm;
	int (*fn)(void *arg, const struct viommu_run *run);
	void *arg;
};

/* Inside the domain's read lock (iommu_resolve): the run cannot be unmapped until fn is done. */
static int ep_resolve_run(void *p, uint64_t iova, uint64_t gpa, uint64_t len, unsigned int perm)
{
	struct ep_resolve *r = p;
	struct viommu_run run = { .iova = iova, .perm = perm & (IOMMU_READ | IOMMU_WRITE) };

	/* moat maps no MMIO for devices, and the access needs every bit it asked for. */
	if ((perm & IOMMU_MMIO) || (run.perm & r->perm) != r->perm)
		return -EACCES;
	/* GUEST: [gpa, gpa+len) comes from the page table; gm_as clips it to one RAM region or refuses it. */
	if (r->v->gm_as.ops->translate(&r->v->gm_as, gpa, len, run.perm, &run.host, &run.len)) {
		ctr_add(&r->v->ctr.bad_target, 1);
		return -ENXIO;
	}
	return r->fn(r->arg, &run);
}

int virtio_iommu_endpoint_resolve(struct viommu_endpoint *ep, uint64_t iova, unsigned int perm, uint64_t max_len,
				  int (*fn)(void *arg, const struct viommu_run *run), void *arg)
{
	struct virtio_iommu *v = ep->v;
	struct ep_resolve r = { .v = v, .perm = perm, .fn = fn, .arg = arg };
	struct viommu_fault_rec f = { .reason = 0 };
	uint64_t page = iova & ~(IOMMU_PAGE_SIZE - 1);
	int err;

	if (!perm || (perm & ~(IOMMU_READ | IOMMU_WRITE)) || !max_len)
		return -EINVAL;
	/* GUEST: iova is what the device was asked to access; the page table bounds it. No wrap past 2^64. */
	if (max_len - 1 > UINT64_MAX - page)
		max_len = UINT64_MAX - page + 1;
	pthread_rwlock_rdlock(&v->state);
	f.endpoint = ep->id;
	if (ep->dom && !ep->dom->bypass) {
		err = iommu_resolve(ep->dom->d, page, max_len, ep_resolve_run, &r);
		if (err == -ENOENT || err == -EACCES)
			f.reason = VIRTIO_IOMMU_FAULT_R_MAPPING;
	} else if (!ep->dom && !v->bypass) {
		err = -EPERM;
		f.reason = VIRTIO_IOMMU_FAULT_R_DOMAIN;
	} else {
		/* Bypass: identity over the RAM region, read-write; the state lock keeps it so until fn is done. */
		struct viommu_run run = { .iova = page, .perm = IOMMU_READ | IOMMU_WRITE };

		err = v->gm_as.ops->translate(&v->gm_as, page, max_len, run.perm, &run.host, &run.len);
		if (err) {
			ctr_add(&v->ctr.bad_target, 1);
			err = -ENXIO;
		} else {
			err = fn(arg, &run);
		}
	}
	pthread_rwlock_unlock(&v->state);
	if (f.reason) {
		f.flags = perm | VIRTIO_IOMMU_FAULT_F_ADDRESS;
		f.address = iova;
		fault_record(v, &f);
	}
	return f.reason || err == -ENXIO ? -EFAULT : err;
}
