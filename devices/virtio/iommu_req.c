/*
 * virtio-iommu request queue (VIRTIO 1.2 5.13.6): ATTACH, DETACH, MAP, UNMAP, PROBE.
 *
 * Every field of a request is guest-controlled and checked here before iommu/ sees it; the
 * status for each refusal is the one the spec names (clause in the comment). A request completes
 * (is pushed) only after iommu_map/iommu_unmap returned, i.e. after the page table and every
 * subscriber's IOTLB reflect it: the guest never sees an UNMAP done while a stale entry is usable.
 *
 * Layout as Linux builds it: the readable part is the request up to its tail, the writable part
 * is the tail (PROBE: probe_size bytes of properties, then the tail). The tail is found at the end
 * of the writable part; every writable byte before it is written (zeros where nothing else goes),
 * so the used length is always the whole writable part, which is what Linux checks before it
 * trusts the status.
 */
#include <endian.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "devices/virtio/iommu_internal.h"

#define TAIL_SIZE ((uint32_t)sizeof(struct virtio_iommu_req_tail))

union viommu_req {
	struct virtio_iommu_req_head head;
	struct virtio_iommu_req_attach attach;
	struct virtio_iommu_req_detach detach;
	struct virtio_iommu_req_map map;
	struct virtio_iommu_req_unmap unmap;
	struct virtio_iommu_req_probe probe;
	uint8_t bytes[offsetof(struct virtio_iommu_req_probe, properties)];
};

/* The device-readable size of each request: everything before the tail. */
static const uint32_t req_read_size[VIRTIO_IOMMU_T_PROBE + 1] = {
	[VIRTIO_IOMMU_T_ATTACH] = offsetof(struct virtio_iommu_req_attach, tail),
	[VIRTIO_IOMMU_T_DETACH] = offsetof(struct virtio_iommu_req_detach, tail),
	[VIRTIO_IOMMU_T_MAP] = offsetof(struct virtio_iommu_req_map, tail),
	[VIRTIO_IOMMU_T_UNMAP] = offsetof(struct virtio_iommu_req_unmap, tail),
	[VIRTIO_IOMMU_T_PROBE] = offsetof(struct virtio_iommu_req_probe, properties),
};
_Static_assert(offsetof(struct virtio_iommu_req_attach, tail) == 20, "ATTACH layout");
_Static_assert(offsetof(struct virtio_iommu_req_map, tail) == 36, "MAP layout");
_Static_assert(offsetof(struct virtio_iommu_req_unmap, tail) == 28, "UNMAP layout");
_Static_assert(offsetof(struct virtio_iommu_req_probe, properties) == 72, "PROBE layout");
_Static_assert(sizeof(struct virtio_iommu_probe_resv_mem) == 24, "RESV_MEM property layout");

static bool feature(const struct virtio_iommu *v, unsigned int bit)
{
	return v->dev.driver_features & VIRTIO_BIT(bit);
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* ------------------------------------------------------------------ domains */

struct viommu_dom *viommu_dom_find(const struct virtio_iommu *v, uint32_t id)
{
	uint32_t lo = 0, hi = v->ndoms;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (v->doms[mid]->id == id)
			return v->doms[mid];
		if (v->doms[mid]->id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static int dom_new(struct virtio_iommu *v, uint32_t id, bool bypass, struct viommu_dom **out)
{
	struct viommu_dom *dom = calloc(1, sizeof(*dom));
	int err;

	if (!dom)
		return -ENOMEM;
	dom->v = v;
	dom->id = id;
	dom->bypass = bypass;
	if (!bypass) {
		err = iommu_domain_new(id, &v->lim, &dom->d);
		if (err) {
			free(dom);
			return err;
		}
		dom->fanout = (struct iommu_notifier){
			.unmapped = viommu_fanout_unmapped, .mapped = viommu_fanout_mapped, .ctx = dom
		};
		err = iommu_notifier_add(dom->d, &dom->fanout);
		if (err) {
			iommu_domain_free(dom->d);
			free(dom);
			return err;
		}
	}
	*out = dom;
	return 0;
}

/* Its mappings go first, through the notifiers, then the domain. State write lock held. */
static void dom_destroy(struct viommu_dom *dom)
{
	if (dom->d) {
		iommu_unmap_all(dom->d);
		iommu_domain_free(dom->d);
	}
	free(dom);
}

/* State write lock held; a slot is free (the caller checked the cap). */
static void dom_insert(struct virtio_iommu *v, struct viommu_dom *dom)
{
	uint32_t i = 0;

	while (i < v->ndoms && v->doms[i]->id < dom->id)
		i++;
	memmove(&v->doms[i + 1], &v->doms[i], (v->ndoms - i) * sizeof(v->doms[0]));
	v->doms[i] = dom;
	v->ndoms++;
}

/* State write lock held: unlist and destroy a domain whose last endpoint left. */
static void dom_remove(struct virtio_iommu *v, struct viommu_dom *dom)
{
	for (uint32_t i = 0; i < v->ndoms; i++) {
		if (v->doms[i] != dom)
			continue;
		memmove(&v->doms[i], &v->doms[i + 1], (v->ndoms - i - 1) * sizeof(v->doms[0]));
		v->ndoms--;
		break;
	}
	dom_destroy(dom);
}

/*
 * Move ep to dom (NULL: detach). The old domain is destroyed if ep was its last endpoint (5.13.6.4:
 * it ceases to exist), and ep's subscribers drop everything they cached. State write lock held.
 */
static void ep_move(struct virtio_iommu *v, struct viommu_endpoint *ep, struct viommu_dom *dom)
{
	struct viommu_dom *old = ep->dom;

	ep->dom = dom;
	if (dom)
		dom->nendpoints++;
	if (old && --old->nendpoints == 0)
		dom_remove(v, old);
	viommu_ep_changed(ep);
}

void viommu_clear(struct virtio_iommu *v)
{
	bool moved[VIOMMU_MAX_ENDPOINTS] = { false };

	pthread_rwlock_wrlock(&v->state);
	for (unsigned int i = 0; i < v->neps; i++) {
		if (!v->eps[i]->dom)
			continue;
		v->eps[i]->dom = NULL;
		moved[i] = true;
		viommu_ep_changed(v->eps[i]);
	}
	for (uint32_t i = 0; i < v->ndoms; i++)
		dom_destroy(v->doms[i]);
	v->ndoms = 0;
	pthread_rwlock_unlock(&v->state);
	for (unsigned int i = 0; i < VIOMMU_MAX_ENDPOINTS; i++)
		if (moved[i])
			viommu_ep_sync(v->eps[i]);
}

/* ------------------------------------------------------------------ requests */

static uint8_t req_attach(struct virtio_iommu *v, const struct virtio_iommu_req_attach *a)
{
	uint32_t id = le32toh(a->domain), flags = le32toh(a->flags);
	uint32_t known = feature(v, VIRTIO_IOMMU_F_BYPASS_CONFIG) ? VIRTIO_IOMMU_ATTACH_F_BYPASS : 0;
	bool bypass = flags & VIRTIO_IOMMU_ATTACH_F_BYPASS, created = false;
	struct viommu_endpoint *ep;
	struct viommu_dom *dom;

	/* 5.13.6.3.2: reserved not zero, or a flag not recognised (BYPASS only with BYPASS_CONFIG): MUST INVAL. */
	if (!all_zero(a->reserved, sizeof(a->reserved)) || (flags & ~known))
		return VIRTIO_IOMMU_S_INVAL;
	/* 5.13.6.3.2: MUST NOENT for an endpoint that does not exist. */
	ep = viommu_ep_find(v, le32toh(a->endpoint));
	if (!ep)
		return VIRTIO_IOMMU_S_NOENT;
	/* 5.13.6.1: the driver MUST NOT send a domain outside domain_range: an out-of-range parameter. */
	if (id > VIOMMU_DOMAIN_LAST)
		return VIRTIO_IOMMU_S_RANGE;
	dom = viommu_dom_find(v, id);
	/* 5.13.6.3.2: the bypass flag must match an existing domain's kind: SHOULD INVAL. */
	if (dom && dom->bypass != bypass)
		return VIRTIO_IOMMU_S_INVAL;
	if (dom && ep->dom == dom)
		return VIRTIO_IOMMU_S_OK;
	if (!dom) {
		/* Leaving a domain as its last endpoint frees a slot before the new one takes it. */
		bool frees_slot = ep->dom && ep->dom->nendpoints == 1;

		if (v->ndoms == v->cfg.max_domains && !frees_slot)
			return VIRTIO_IOMMU_S_NOMEM;
		if (dom_new(v, id, bypass, &dom))
			return VIRTIO_IOMMU_S_NOMEM;
		created = true;
	}
	pthread_rwlock_wrlock(&v->state);
	/* 5.13.6.3.2: attached elsewhere: behave as DETACH then ATTACH. */
	ep_move(v, ep, dom);
	if (created)
		dom_insert(v, dom);
	pthread_rwlock_unlock(&v->state);
	/* No copy through the old domain may outlive the request (waited for before the batch completes). */
	ep->sync_pending = true;
	return VIRTIO_IOMMU_S_OK;
}

static uint8_t req_detach(struct virtio_iommu *v, const struct virtio_iommu_req_detach *d)
{
	uint32_t id = le32toh(d->domain);
	struct viommu_endpoint *ep;

	/* 5.13.6.4.2: reserved is ignored; an endpoint that does not exist: MUST NOENT. */
	ep = viommu_ep_find(v, le32toh(d->endpoint));
	if (!ep)
		return VIRTIO_IOMMU_S_NOENT;
	if (id > VIOMMU_DOMAIN_LAST)
		return VIRTIO_IOMMU_S_RANGE;
	/* 5.13.6.4.2: no such domain, or ep not attached to it: MAY INVAL (we do). */
	if (!ep->dom || ep->dom->id != id)
		return VIRTIO_IOMMU_S_INVAL;
	pthread_rwlock_wrlock(&v->state);
	ep_move(v, ep, NULL);
	pthread_rwlock_unlock(&v->state);
	ep->sync_pending = true;
	return VIRTIO_IOMMU_S_OK;
}

/* The domain a MAP/UNMAP targets, or the status refusing it. */
static uint8_t map_domain(const struct virtio_iommu *v, uint32_t id, struct viommu_dom **out)
{
	if (id > VIOMMU_DOMAIN_LAST)
		return VIRTIO_IOMMU_S_RANGE;
	/* 5.13.6.5.2 / 5.13.6.6.2: no such domain (one without endpoints no longer exists): NOENT. */
	*out = viommu_dom_find(v, id);
	if (!*out)
		return VIRTIO_IOMMU_S_NOENT;
	/* A bypass domain has no mappings: SHOULD INVAL. */
	if ((*out)->bypass)
		return VIRTIO_IOMMU_S_INVAL;
	return VIRTIO_IOMMU_S_OK;
}

static bool overlaps_msi(const struct virtio_iommu *v, uint64_t start, uint64_t end)
{
	return v->cfg.msi_start <= v->cfg.msi_end && start <= v->cfg.msi_end && end >= v->cfg.msi_start;
}

static uint8_t req_map(struct virtio_iommu *v, const struct virtio_iommu_req_map *m)
{
	uint64_t start = le64toh(m->virt_start), end = le64toh(m->virt_end), phys = le64toh(m->phys_start);
	uint64_t mask = IOMMU_PAGE_SIZE - 1, phys_end;
	uint32_t flags = le32toh(m->flags);
	struct viommu_dom *dom;
	uint8_t st = map_domain(v, le32toh(m->domain), &dom);
	int err;

	if (st != VIRTIO_IOMMU_S_OK)
		return st;
	/* 5.13.6.5.2: an unrecognised flag MUST INVAL; MMIO is one (VIRTIO_IOMMU_F_MMIO is not offered). */
	if (flags & ~(VIRTIO_IOMMU_MAP_F_READ | VIRTIO_IOMMU_MAP_F_WRITE))
		return VIRTIO_IOMMU_S_INVAL;
	/* 5.13.6.5.2: virt_start, phys_start or virt_end + 1 not on the granule: SHOULD RANGE. */
	if ((start & mask) || ((end + 1) & mask) || (phys & mask))
		return VIRTIO_IOMMU_S_RANGE;
	/* 5.13.6.5.1: virt_end MUST be greater than virt_start. */
	if (end < start)
		return VIRTIO_IOMMU_S_INVAL;
	/* 5.13.6: a MAP outside input_range fails (RANGE); the physical range must not wrap either. */
	if (start < v->lim.input_start || end > v->lim.input_end ||
	    __builtin_add_overflow(phys, end - start, &phys_end))
		return VIRTIO_IOMMU_S_RANGE;
	/* 5.13.6.8.1.2: SHOULD reject a MAP overlapping a RESV_MEM region; like an existing mapping: INVAL. */
	if (overlaps_msi(v, start, end))
		return VIRTIO_IOMMU_S_INVAL;
	/* The state lock keeps the endpoints' subscriber lists still while the fan-out walks them. */
	pthread_rwlock_rdlock(&v->state);
	err = iommu_map(dom->d, start, end, phys, flags);
	pthread_rwlock_unlock(&v->state);
	switch (err) {
	case 0:
		return VIRTIO_IOMMU_S_OK;
	case -EEXIST: /* 5.13.6.5.2: a mapping already exists in the range: SHOULD INVAL */
	case -EINVAL:
		return VIRTIO_IOMMU_S_INVAL;
	case -ERANGE:
		return VIRTIO_IOMMU_S_RANGE;
	case -ENOSPC: /* max_mappings or max_table_bytes */
	case -ENOMEM:
		return VIRTIO_IOMMU_S_NOMEM;
	default:
		return VIRTIO_IOMMU_S_DEVERR;
	}
}

static uint8_t req_unmap(struct virtio_iommu *v, const struct virtio_iommu_req_unmap *u)
{
	uint64_t start = le64toh(u->virt_start), end = le64toh(u->virt_end), bytes = 0;
	struct viommu_dom *dom;
	uint8_t st;
	int err;

	/* 5.13.6.6.2: reserved not zero MAY INVAL; we then leave every mapping in place. */
	if (!all_zero(u->reserved, sizeof(u->reserved)))
		return VIRTIO_IOMMU_S_INVAL;
	st = map_domain(v, le32toh(u->domain), &dom);
	if (st != VIRTIO_IOMMU_S_OK)
		return st;
	if (end < start)
		return VIRTIO_IOMMU_S_INVAL;
	/* 5.13.6.1: the driver MUST NOT send virt addresses outside input_range. */
	if (start < v->lim.input_start || end > v->lim.input_end)
		return VIRTIO_IOMMU_S_RANGE;
	pthread_rwlock_rdlock(&v->state);
	err = iommu_unmap(dom->d, start, end, &bytes);
	/* The page table and the IOTLBs are clean; no copy through what was removed may outlive the batch. */
	if (!err && bytes)
		viommu_dom_mark(v, dom);
	pthread_rwlock_unlock(&v->state);
	switch (err) {
	case 0: /* 5.13.6.6.2: unmapped parts of the range are fine */
		return VIRTIO_IOMMU_S_OK;
	case -ERANGE: /* 5.13.6.6.2: would split a mapping: SHOULD RANGE, nothing removed */
		return VIRTIO_IOMMU_S_RANGE;
	case -EINVAL:
		return VIRTIO_IOMMU_S_INVAL;
	default:
		return VIRTIO_IOMMU_S_DEVERR;
	}
}

/* props: probe_size zeroed bytes to fill with the endpoint's properties. */
static uint8_t req_probe(struct virtio_iommu *v, const struct virtio_iommu_req_probe *p, uint8_t *props)
{
	struct virtio_iommu_probe_resv_mem msi = {
		.head.type = htole16(VIRTIO_IOMMU_PROBE_T_RESV_MEM),
		.head.length = htole16(sizeof(msi) - sizeof(msi.head)),
		.subtype = VIRTIO_IOMMU_RESV_MEM_T_MSI,
		.start = htole64(v->cfg.msi_start),
		.end = htole64(v->cfg.msi_end),
	};

	/* 5.13.6.7.2: reserved is ignored; an endpoint that does not exist: SHOULD NOENT. */
	if (!viommu_ep_find(v, le32toh(p->endpoint)))
		return VIRTIO_IOMMU_S_NOENT;
	/* The MSI doorbell window (x86: the LAPIC range), then zeros: a NONE property ends the list. */
	if (v->cfg.msi_start <= v->cfg.msi_end)
		memcpy(props, &msi, sizeof(msi));
	return VIRTIO_IOMMU_S_OK;
}

/* A type this device serves under the negotiated features; anything else is "not recognised". */
static bool type_known(const struct virtio_iommu *v, uint8_t type)
{
	switch (type) {
	case VIRTIO_IOMMU_T_ATTACH:
	case VIRTIO_IOMMU_T_DETACH:
		return true;
	case VIRTIO_IOMMU_T_MAP:
	case VIRTIO_IOMMU_T_UNMAP:
		return feature(v, VIRTIO_IOMMU_F_MAP_UNMAP);
	case VIRTIO_IOMMU_T_PROBE:
		return feature(v, VIRTIO_IOMMU_F_PROBE);
	default:
		return false;
	}
}

static uint8_t dispatch(struct virtio_iommu *v, const union viommu_req *r, uint8_t *reply)
{
	switch (r->head.type) {
	case VIRTIO_IOMMU_T_ATTACH:
		return req_attach(v, &r->attach);
	case VIRTIO_IOMMU_T_DETACH:
		return req_detach(v, &r->detach);
	case VIRTIO_IOMMU_T_MAP:
		return req_map(v, &r->map);
	case VIRTIO_IOMMU_T_UNMAP:
		return req_unmap(v, &r->unmap);
	default: /* type_known let only PROBE through */
		return req_probe(v, &r->probe, reply);
	}
}

/*
 * One request: *used is what to push. -EFAULT if the chain's memory went away (the queue is then
 * broken), else 0.
 */
static int serve_one(struct virtio_iommu *v, const struct virtq *q, const struct virtq_chain *c, uint32_t *used)
{
	uint8_t reply[VIOMMU_PROBE_SIZE + TAIL_SIZE];
	struct virtio_iommu_req_tail tail = { .status = VIRTIO_IOMMU_S_INVAL };
	union viommu_req r;
	uint32_t want_w;
	uint8_t type;

	*used = 0;
	/*
	 * 5.13.6: no room for a tail, or not even a type: the request cannot be parsed and is returned
	 * unwritten. 5.13.6.2 (device): a type not recognised likewise, used length 0.
	 */
	if (c->write_len < TAIL_SIZE || c->read_len < sizeof(r.head)) {
		ctr_add(&v->ctr.req[0], 1);
		return 0;
	}
	/* GUEST: 4 bytes within read_len; chain_read checks the mapping. */
	if (virtq_chain_read(q, c, 0, &r.head, sizeof(r.head)))
		return -EFAULT;
	type = r.head.type;
	want_w = type == VIRTIO_IOMMU_T_PROBE ? VIOMMU_PROBE_SIZE + TAIL_SIZE : TAIL_SIZE;
	/* More writable room than the type has: the tail's place is a guess, so this is not parsed either. */
	if (!type_known(v, type) || c->write_len > want_w) {
		ctr_add(&v->ctr.req[0], 1);
		return 0;
	}
	ctr_add(&v->ctr.req[type], 1);
	/* GUEST: write_len <= want_w <= sizeof(reply). */
	memset(reply, 0, c->write_len);
	/*
	 * PROBE with fewer than probe_size bytes of properties: 5.13.6.7.2 SHOULD INVAL and write no
	 * property. A readable part too short for the type: invalid parameters, INVAL.
	 */
	if (c->write_len == want_w && c->read_len >= req_read_size[type]) {
		/* GUEST: req_read_size[type] <= sizeof(r) and <= read_len; chain_read checks the mapping. */
		if (virtq_chain_read(q, c, 0, &r, req_read_size[type]))
			return -EFAULT;
		tail.status = dispatch(v, &r, reply);
	}
	if (tail.status != VIRTIO_IOMMU_S_OK)
		ctr_add(&v->ctr.failed, 1);
	/* The tail ends the writable part; its reserved bytes stay zero (5.13.6.2 SHOULD). */
	memcpy(reply + c->write_len - TAIL_SIZE, &tail, TAIL_SIZE);
	/* GUEST: write_len bytes, all inside the writable part; chain_write checks the mapping. */
	if (virtq_chain_write(q, c, 0, reply, c->write_len))
		return -EFAULT;
	*used = c->write_len;
	return 0;
}

/*
 * Serve every available request, then complete them together: a request that took translations
 * away (UNMAP, ATTACH, DETACH) must not complete while a device copy through them may still run, and
 * one wait per batch covers all of them (a lazy guest sends its UNMAPs in batches).
 */
unsigned int viommu_serve_requests(struct virtio_iommu *v)
{
	struct virtq *q = virtio_queue(&v->dev, VIOMMU_REQUESTQ);
	struct virtq_chain chain;
	uint16_t head[VIOMMU_REQUESTQ_SIZE];
	uint32_t used[VIOMMU_REQUESTQ_SIZE];
	unsigned int n = 0;
	int r = 0;

	if (!q)
		return 0;
	/* Subscribers may gather the batch's invalidations and send them at its end, before any completion. */
	viommu_batch(v, true);
	/* At most a queue's worth is outstanding (virtq_pop refuses more), so the arrays cannot overflow. */
	while (n < VIOMMU_REQUESTQ_SIZE && (r = virtq_pop(q, &chain)) == 1) {
		r = serve_one(v, q, &chain, &used[n]);
		if (r)
			break;
		head[n++] = chain.head;
	}
	viommu_batch(v, false);
	viommu_sync_pending(v);
	for (unsigned int i = 0; i < n; i++)
		if (virtq_push(q, head[i], used[i]))
			r = -EFAULT;
	/* A malformed chain, or guest memory gone from under one: the queue is broken until a reset. */
	if (r < 0)
		virtio_set_needs_reset(&v->dev);
	/* A ring fault while notifying marks the device NEEDS_RESET in virtio_notify_used itself. */
	if (n) {
		__atomic_fetch_add(&v->served, n, __ATOMIC_RELAXED);
		virtio_notify_used(&v->dev, VIOMMU_REQUESTQ);
	}
	return n;
}
