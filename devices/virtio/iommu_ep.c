/*
 * virtio-iommu endpoints: the address space every device behind the IOMMU does its DMA through,
 * the faults it records when the IOMMU refuses an access, and the subscribers (device IOTLBs)
 * told when the endpoint's translations change.
 *
 * Translation runs on other devices' threads (their workers, or a vCPU enabling their queues)
 * while the IOMMU's own thread changes domains. A translation first looks in the endpoint's IOTLB
 * (vmm/iotlb.h: no lock, a few loads); a miss takes the state read lock and, inside
 * iommu_translate, the domain's read lock, walks the page table and fills the IOTLB with the page
 * around the access (up to EP_TLB_SPAN more), so ring and buffer accesses that follow hit.
 *
 * Why a hit is never stale: every change to what the endpoint translates goes through here first.
 * UNMAP reaches viommu_fanout_unmapped inside the domain's write lock, which empties the IOTLB
 * entries overlapping the range; an endpoint changing domain or bypass mode reaches
 * viommu_ep_changed, which empties all of them; MAP only adds translations (an overlapping MAP is
 * refused) and faults are never cached. A fill whose walk raced with one of these is dropped.
 *
 * The stale host pointer: a pointer a device got just before an UNMAP could still be used for the
 * copy it was for after the UNMAP completed. Devices translate and copy inside read-side sections
 * (dma_begin/dma_end, the endpoint's dma_gate), and every request that takes translations away
 * (UNMAP, ATTACH, DETACH, reset, a bypass change) waits before it completes until the sections
 * opened before the change have closed (viommu_ep_sync; requests mark the endpoints they affect and
 * the request queue waits once per batch, viommu_sync_pending). Sections never wait.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "devices/virtio/iommu_internal.h"

/* A miss fills the IOTLB with the access's page and up to this much more, as far as it is contiguous. */
#define EP_TLB_SPAN (64u * 1024u)

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
	iotlb_init(&ep->tlb);
	dma_gate_init(&ep->gate);
	/* The subscriber fan-out walks eps under the state lock. */
	pthread_rwlock_wrlock(&v->state);
	if (v->neps == VIOMMU_MAX_ENDPOINTS)
		err = -ENOSPC;
	else
		v->eps[v->neps++] = ep;
	pthread_rwlock_unlock(&v->state);
	if (err) {
		viommu_ep_free(ep);
		return err;
	}
	*out = ep;
	return 0;
}

void viommu_ep_free(struct viommu_endpoint *ep)
{
	iotlb_fini(&ep->tlb);
	dma_gate_fini(&ep->gate);
	free(ep);
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
	iotlb_invalidate(&ep->tlb, 0, UINT64_MAX);
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
		iotlb_invalidate(&ep->tlb, iova, len);
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

/*
 * One walk of [iova, iova+len) through ep's domain (or bypass) to a host run. A refusal by the
 * IOMMU fills *f (to report) and returns -EFAULT; a translation landing outside RAM returns -ERANGE.
 */
static int ep_walk(struct viommu_endpoint *ep, uint64_t iova, uint64_t len, unsigned int perm, void **host,
		   uint64_t *run, struct viommu_fault_rec *f)
{
	struct virtio_iommu *v = ep->v;
	uint64_t gpa = iova, glen = len;
	int err = 0;

	/* GUEST: iova and len come from a driver; the page table and gm bound them below. */
	pthread_rwlock_rdlock(&v->state);
	f->endpoint = ep->id;
	if (ep->dom && !ep->dom->bypass) {
		err = iommu_translate(ep->dom->d, iova, len, perm, &gpa, &glen);
		if (err == -ENOENT || err == -EACCES)
			f->reason = VIRTIO_IOMMU_FAULT_R_MAPPING;
	} else if (!ep->dom && !v->bypass) {
		/* 5.13.6.2: unattached and not in bypass mode: no access to guest memory. */
		err = -EPERM;
		f->reason = VIRTIO_IOMMU_FAULT_R_DOMAIN;
	}
	/* Neither: bypass (config.bypass or a bypass domain), identity over the whole length. */
	if (!err) {
		/* GUEST: [gpa, gpa+glen) from the page table (or identity); clipped to one RAM region. */
		err = v->gm_as.ops->translate(&v->gm_as, gpa, glen, perm, host, run) ? -ERANGE : 0;
	}
	pthread_rwlock_unlock(&v->state);
	return err == -ERANGE ? err : err ? -EFAULT : 0;
}

/*
 * MOAT_IOTLB=verify: a hit must agree with a walk of the page table done now, unless the IOTLB was
 * invalidated since the lookup began (an UNMAP in flight, which waits for this access's section).
 */
static void ep_verify_hit(struct viommu_endpoint *ep, uint64_t gen, uint64_t iova, uint64_t len, unsigned int perm,
			  void *host, uint64_t run)
{
	struct viommu_fault_rec f = { .reason = 0 };
	void *h = NULL;
	uint64_t r = 0;
	int err = ep_walk(ep, iova, len, perm, &h, &r, &f);

	if (iotlb_gen(&ep->tlb) != gen)
		return;
	ctr_add(&ep->v->ctr.verified, 1);
	if (err || h != host || r < run) {
		if (__atomic_fetch_add(&ep->v->ctr.stale, 1, __ATOMIC_RELAXED) == 0)
			__atomic_store_n(&ep->v->stale_iova, iova, __ATOMIC_RELAXED);
	}
}

static int ep_translate(const struct dma_as *as, uint64_t iova, uint64_t len, unsigned int perm, void **host,
			uint64_t *run)
{
	struct viommu_endpoint *ep = as->ctx;
	struct viommu_fault_rec f = { .reason = 0 };
	uint64_t gen, base, skip, wide, r;
	void *h;
	int err;

	if (!len || !perm || (perm & ~(DMA_READ | DMA_WRITE)))
		return -EFAULT;
	if (ep->v->tlb_mode == VIOMMU_TLB_OFF)
		goto walk;
	if (ep->v->tlb_mode == VIOMMU_TLB_VERIFY) {
		gen = iotlb_gen(&ep->tlb);
		if (iotlb_lookup(&ep->tlb, iova, len, perm, host, run)) {
			ep_verify_hit(ep, gen, iova, len, perm, *host, *run);
			return 0;
		}
	} else if (iotlb_lookup(&ep->tlb, iova, len, perm, host, run)) {
		return 0;
	}
	/* Before the walk: an invalidation from here on makes the fill below a no-op. */
	gen = iotlb_gen(&ep->tlb);
	/* The whole page the access starts in, and EP_TLB_SPAN past it, so the accesses that follow hit. */
	base = iova & ~(IOMMU_PAGE_SIZE - 1);
	skip = iova - base;
	wide = skip + (len > EP_TLB_SPAN ? len : EP_TLB_SPAN);
	if (wide - 1 > UINT64_MAX - base)
		wide = skip + len; /* iova + len - 1 does not wrap (dma.c checked) */
	if (ep_walk(ep, base, wide, perm, &h, &r, &f) == 0 && r > skip) {
		iotlb_fill(&ep->tlb, gen, base, r, h, perm);
		*host = (uint8_t *)h + skip;
		*run = r - skip < len ? r - skip : len;
		return 0;
	}
walk:
	/* The access itself decides: a refusal at the page start need not be one at iova (RAM may start mid-page). */
	f = (struct viommu_fault_rec){ .reason = 0 };
	err = ep_walk(ep, iova, len, perm, host, run, &f);
	if (err == -ERANGE)
		ctr_add(&ep->v->ctr.bad_target, 1);
	if (f.reason) {
		f.flags = perm | VIRTIO_IOMMU_FAULT_F_ADDRESS;
		f.address = iova;
		fault_record(ep->v, &f);
	}
	return err ? -EFAULT : 0;
}

static unsigned int ep_begin(const struct dma_as *as)
{
	struct viommu_endpoint *ep = as->ctx;

	return dma_gate_enter(&ep->gate);
}

static void ep_end(const struct dma_as *as, unsigned int token)
{
	struct viommu_endpoint *ep = as->ctx;

	dma_gate_leave(&ep->gate, token);
}

void viommu_ep_sync(struct viommu_endpoint *ep)
{
	dma_gate_wait(&ep->gate);
}

void viommu_dom_mark(struct virtio_iommu *v, const struct viommu_dom *dom)
{
	for (unsigned int i = 0; i < v->neps; i++)
		if (v->eps[i]->dom == dom)
			v->eps[i]->sync_pending = true;
}

void viommu_batch(struct virtio_iommu *v, bool begin)
{
	pthread_rwlock_rdlock(&v->state);
	for (unsigned int i = 0; i < v->neps; i++)
		for (unsigned int k = 0; k < v->eps[i]->nsubs; k++)
			if (v->eps[i]->subs[k]->batch)
				v->eps[i]->subs[k]->batch(v->eps[i]->subs[k]->ctx, begin);
	pthread_rwlock_unlock(&v->state);
}

void viommu_sync_pending(struct virtio_iommu *v)
{
	struct viommu_endpoint *eps[VIOMMU_MAX_ENDPOINTS];
	unsigned int n = 0;

	/* Collected under the lock, waited for outside it: a section's next translation takes it. */
	pthread_rwlock_rdlock(&v->state);
	for (unsigned int i = 0; i < v->neps; i++) {
		if (!v->eps[i]->sync_pending)
			continue;
		v->eps[i]->sync_pending = false;
		eps[n++] = v->eps[i];
	}
	pthread_rwlock_unlock(&v->state);
	for (unsigned int i = 0; i < n; i++)
		dma_gate_wait(&eps[i]->gate);
}

static void ep_help(const struct dma_as *as)
{
	const struct viommu_endpoint *ep = as->ctx;

	virtio_iommu_help(ep->v);
}

const struct dma_as_ops viommu_ep_as_ops = {
	.translate = ep_translate,
	.begin = ep_begin,
	.end = ep_end,
	.help = ep_help,
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
				  bool report, int (*fn)(void *arg, const struct viommu_run *run), void *arg)
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
	if (f.reason && report) {
		f.flags = perm | VIRTIO_IOMMU_FAULT_F_ADDRESS;
		f.address = iova;
		fault_record(v, &f);
	}
	return f.reason || err == -ENXIO ? -EFAULT : err;
}
