/*
 * virtio-iommu device: construction, the device ops, configuration space, the event queue and
 * statistics. Requests are in iommu_req.c, endpoint translation and faults in iommu_ep.c.
 *
 * Faults happen on other devices' threads, which must not take this device's dev->lock: they
 * queue a record under a small mutex and signal fault_fd, which this device's worker polls
 * (backend_fds); the handler, with dev->lock held, turns the records into event queue buffers.
 */
#include "devices/virtio/iommu.h"

#include <endian.h>
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "devices/virtio/iommu_internal.h"
#include "vmm/log.h"

_Static_assert(sizeof(struct virtio_iommu_config) == 40, "config layout");
_Static_assert(sizeof(struct virtio_iommu_fault) == 24, "fault report layout");

/* ------------------------------------------------------------------ event queue */

/*
 * The worker saw fault_fd. Post every queued fault in its own event buffer; with no buffer left
 * (or the device not live) the rest are dropped and counted. Faults are never held back for later
 * buffers: a bounded queue that only drains here stays simple and cannot grow stale.
 */
static void viommu_fault_event(struct virtio_dev *dev, uint32_t events)
{
	struct virtio_iommu *v = to_viommu(dev);
	struct viommu_fault_rec f[VIOMMU_FAULT_QUEUE];
	struct virtq *q = virtio_queue(dev, VIOMMU_EVENTQ);
	struct virtq_chain chain;
	unsigned int n, done = 0;
	bool pushed = false;
	uint64_t cnt;
	int r = 0;

	/* Read first even when not live: the fd is level-triggered and would wake the worker forever. */
	if (read(v->fault_fd, &cnt, sizeof(cnt)) < 0) {
		/* EAGAIN: nothing signalled (a test calling in directly); the queue is drained anyway. */
	}
	n = viommu_faults_take(v, f);
	if (!n)
		return;
	while (q && virtio_dev_live(dev) && done < n && (r = virtq_pop(q, &chain)) == 1) {
		struct virtio_iommu_fault ev = {
			.reason = f[done].reason,
			.flags = htole32(f[done].flags),
			.endpoint = htole32(f[done].endpoint),
			.address = htole64(f[done].address),
		};
		uint32_t len = 0;

		/* 5.13.6.9.2: never split a report; a buffer too small goes back unused and the next is tried. */
		if (chain.write_len >= sizeof(ev)) {
			/* GUEST: 24 bytes within write_len; chain_write checks the mapping. */
			r = virtq_chain_write(q, &chain, 0, &ev, sizeof(ev));
			if (r)
				break;
			len = sizeof(ev);
			done++;
		}
		r = virtq_push(q, chain.head, len);
		if (r)
			break;
		pushed = true;
	}
	if (r < 0)
		virtio_set_needs_reset(dev);
	ctr_add(&v->ctr.events, done);
	ctr_add(&v->ctr.dropped, n - done);
	if (pushed && virtio_notify_used(dev, VIOMMU_EVENTQ) < 0)
		return;
}

static unsigned int viommu_backend_fds(struct virtio_dev *dev, struct virtio_backend_fd *out, unsigned int max)
{
	struct virtio_iommu *v = to_viommu(dev);

	if (max < 1)
		return 0;
	out[0] = (struct virtio_backend_fd){ .fd = v->fault_fd, .events = EPOLLIN, .fn = viommu_fault_event };
	return 1;
}

/* ------------------------------------------------------------------ device ops */

static int viommu_activate(struct virtio_dev *dev)
{
	return 0; /* requests are served as they are kicked; event buffers are taken when a fault comes */
}

static void viommu_reset(struct virtio_dev *dev)
{
	struct virtio_iommu *v = to_viommu(dev);
	struct viommu_fault_rec f[VIOMMU_FAULT_QUEUE];

	/* 5.13.5: after a reset no endpoint is attached to any domain. */
	viommu_clear(v);
	ctr_add(&v->ctr.dropped, viommu_faults_take(v, f));
	/*
	 * bypass stays: 5.13.4.2 says it SHOULD NOT change on device reset, only on system reset (a new
	 * VM in moat). It is also the safe way round: a guest that blocked unattached endpoints keeps
	 * them blocked while its driver resets the device.
	 */
}

static void viommu_queue_notify(struct virtio_dev *dev, unsigned int queue)
{
	/* Event buffers are only taken when a fault is posted: an eventq kick needs nothing. */
	if (queue == VIOMMU_REQUESTQ)
		viommu_serve_requests(to_viommu(dev));
}

/*
 * Polling (cfg.poll_us): the Linux driver waits for every MAP and sync by spinning on the used ring,
 * so the cost of a request is the guest's exit to moat and back, which under nested virtualization
 * is tens of microseconds. After a kick the device's thread turns notifications off and keeps
 * watching the avail ring itself: requests that follow closely are taken without any exit. A spell
 * ends after poll_us without a request, when a fault waits to be posted (the thread's event loop
 * posts it), or after VIOMMU_POLL_SPELL_NS of steady requests (the loop gets a turn, the next kick
 * starts a new spell); the notifications go back on, then one more look, since a request made
 * before the driver saw them on came without a kick. moat stops the vCPUs before the device
 * threads, so a spell never holds up moat's exit for longer than poll_us. dev->lock is held on entry
 * and exit, and dropped between looks so the vCPUs reach the device's registers (a reset in between
 * makes the queue not ready: the spell ends).
 */
#define VIOMMU_POLL_SPELL_NS (1000ull * 1000 * 1000)

static uint64_t mono_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/*
 * Between two looks: a few pause instructions, then give way to any other thread wanting this CPU (the
 * device's back ends, the vCPUs), so a polling spell takes only time nothing else wanted.
 */
static inline void poll_relax(void)
{
	for (int i = 0; i < 8; i++) {
#if defined(__x86_64__) || defined(__i386__)
		__builtin_ia32_pause();
#elif defined(__aarch64__)
		__asm__ __volatile__("yield");
#endif
	}
	sched_yield();
}

static bool poll_should_stop(struct virtio_iommu *v, struct virtq *q)
{
	return !virtio_dev_live(&v->dev) || !q->ready || q->error ||
	       __atomic_load_n(&v->fault_count, __ATOMIC_RELAXED) != 0;
}

static void viommu_queue_notify_poll(struct virtio_dev *dev, unsigned int queue)
{
	struct virtio_iommu *v = to_viommu(dev);
	struct virtq *q = virtio_queue(dev, VIOMMU_REQUESTQ);
	const uint64_t idle_ns = (uint64_t)v->cfg.poll_us * 1000u;
	uint64_t start, last, now, prev, served;

	if (queue != VIOMMU_REQUESTQ || !q)
		return;
	viommu_serve_requests(v);
	if (poll_should_stop(v, q) || virtq_set_kicks(q, false))
		return;
	ctr_add(&v->ctr.polls, 1);
	__atomic_store_n(&v->polling, true, __ATOMIC_RELAXED);
	served = __atomic_load_n(&v->served, __ATOMIC_RELAXED);
	start = last = prev = mono_ns();
	for (;;) {
		int pending;

		pthread_mutex_unlock(&dev->lock);
		poll_relax();
		pthread_mutex_lock(&dev->lock);
		if (poll_should_stop(v, q))
			break;
		pending = virtq_pending(q);
		if (pending < 0)
			break;
		now = mono_ns();
		ctr_add(&v->ctr.looks, 1);
		if (pending) {
			/* The requests came after the previous look: now - prev bounds how long they waited for this one. */
			lathist_add(v->ctr.gap_hist, now - prev);
			ctr_add(&v->ctr.gap_ns, now - prev);
			ctr_add(&v->ctr.polled, viommu_serve_requests(v));
			lathist_add(v->ctr.answer_hist, mono_ns() - now);
			last = now;
		} else if (__atomic_load_n(&v->served, __ATOMIC_RELAXED) != served) {
			last = now; /* another device's thread answered some meanwhile: the guest is still busy */
		} else if (now - last >= idle_ns || now - start >= VIOMMU_POLL_SPELL_NS) {
			break;
		}
		served = __atomic_load_n(&v->served, __ATOMIC_RELAXED);
		prev = now;
	}
	__atomic_store_n(&v->polling, false, __ATOMIC_RELAXED);
	/* Not ready (a reset): nothing to turn back on, the next queue starts with notifications. */
	if (q->ready && !virtq_set_kicks(q, true) && virtq_pending(q) > 0)
		ctr_add(&v->ctr.polled, viommu_serve_requests(v));
}

/*
 * Helping: while this device polls, its thread shares a CPU with the other device threads; when one of
 * them has it, the thread that gave way with sched_yield gets it back only once that one blocks,
 * milliseconds later under emulation, and the guest's driver spins all that time. So a device thread
 * behind this IOMMU looks at the request queue between two of its own requests and serves what waits.
 * It must hold no section (the batch waits for sections to close) and only tries the lock: when the
 * polling thread has it, that thread is serving anyway. Outside a spell the guest kicks, which wakes
 * this device's thread (or serves on the vCPU), so there is nothing to help with.
 */
void virtio_iommu_help(struct virtio_iommu *v)
{
	struct virtq *q;
	unsigned int n = 0;

	if (!__atomic_load_n(&v->polling, __ATOMIC_RELAXED) || pthread_mutex_trylock(&v->dev.lock))
		return;
	q = virtio_queue(&v->dev, VIOMMU_REQUESTQ);
	if (q && __atomic_load_n(&v->polling, __ATOMIC_RELAXED) && !poll_should_stop(v, q) && virtq_pending(q) > 0)
		n = viommu_serve_requests(v);
	pthread_mutex_unlock(&v->dev.lock);
	if (n) {
		ctr_add(&v->ctr.polled, n);
		ctr_add(&v->ctr.helped, n);
	}
}

static void config_fill(const struct virtio_iommu *v, struct virtio_iommu_config *c)
{
	memset(c, 0, sizeof(*c));
	c->page_size_mask = htole64(v->lim.page_size_mask);
	c->input_range.start = htole64(v->lim.input_start);
	c->input_range.end = htole64(v->lim.input_end);
	c->domain_range.start = htole32(0);
	c->domain_range.end = htole32(VIOMMU_DOMAIN_LAST);
	c->probe_size = htole32(VIOMMU_PROBE_SIZE);
	c->bypass = v->bypass;
}

static int viommu_config_read(struct virtio_dev *dev, uint32_t off, void *buf, uint32_t len)
{
	struct virtio_iommu_config c;

	/* GUEST: off and len bounded against the config size without overflow; beyond reads zeros. */
	if (off > sizeof(c) || len > sizeof(c) - off) {
		memset(buf, 0, len);
		return -EINVAL;
	}
	config_fill(to_viommu(dev), &c);
	memcpy(buf, (const uint8_t *)&c + off, len);
	return 0;
}

/*
 * bypass changed: endpoints not attached to a domain switch between identity and blocked, so
 * their subscribers must drop what they cached.
 */
static void set_bypass(struct virtio_iommu *v, bool bypass)
{
	pthread_rwlock_wrlock(&v->state);
	v->bypass = bypass;
	for (unsigned int i = 0; i < v->neps; i++)
		if (!v->eps[i]->dom)
			viommu_ep_changed(v->eps[i]);
	pthread_rwlock_unlock(&v->state);
	/* Endpoints are only added, never removed, and only on this thread do they change domain. */
	for (unsigned int i = 0; i < v->neps; i++)
		if (!v->eps[i]->dom)
			viommu_ep_sync(v->eps[i]);
}

static int viommu_config_write(struct virtio_dev *dev, uint32_t off, const void *buf, uint32_t len)
{
	struct virtio_iommu *v = to_viommu(dev);
	const uint32_t at = offsetof(struct virtio_iommu_config, bypass);
	uint8_t val;

	/* GUEST: off and len bounded against the config size without overflow. */
	if (off > sizeof(struct virtio_iommu_config) || len > sizeof(struct virtio_iommu_config) - off)
		return -EINVAL;
	/* 5.13.4.1: only bypass is writable, and only once BYPASS_CONFIG is negotiated; others are ignored. */
	if (off > at || off + len <= at)
		return 0;
	if (!(dev->status & VIRTIO_STATUS_FEATURES_OK) ||
	    !(dev->driver_features & VIRTIO_BIT(VIRTIO_IOMMU_F_BYPASS_CONFIG)))
		return 0;
	/* GUEST: at - off < len, checked above. 5.13.4.1: only 0 or 1; anything else leaves it alone. */
	val = ((const uint8_t *)buf)[at - off];
	if (val <= 1 && val != v->bypass)
		set_bypass(v, val);
	return 0;
}

static const struct virtio_dev_ops viommu_ops = {
	.name = "iommu",
	.activate = viommu_activate,
	.reset = viommu_reset,
	.queue_notify = viommu_queue_notify,
	.config_read = viommu_config_read,
	.config_write = viommu_config_write,
	.backend_fds = viommu_backend_fds,
	/* The Linux driver spins on each request; answering on the kicking vCPU saves a thread switch. */
	.notify_inline = true,
};

/* cfg.poll_us: kicks go to the device's thread (through KVM's ioeventfd), which then polls. */
static const struct virtio_dev_ops viommu_poll_ops = {
	.name = "iommu",
	.activate = viommu_activate,
	.reset = viommu_reset,
	.queue_notify = viommu_queue_notify_poll,
	.config_read = viommu_config_read,
	.config_write = viommu_config_write,
	.backend_fds = viommu_backend_fds,
};

/* ------------------------------------------------------------------ construction */

static int check_config(const struct viommu_config *cfg, char *err, size_t errlen)
{
	if (cfg->max_domains < 1 || cfg->max_domains > VIOMMU_DOMAIN_LAST + 1)
		return set_err(err, errlen, -EINVAL, "virtio-iommu: max_domains must be 1 to %u, not %u",
			       VIOMMU_DOMAIN_LAST + 1, cfg->max_domains);
	if (cfg->max_mappings < 1)
		return set_err(err, errlen, -EINVAL, "virtio-iommu: max_mappings must be at least 1");
	if (cfg->poll_us > VIOMMU_POLL_MAX_US)
		return set_err(err, errlen, -EINVAL, "virtio-iommu: poll time must be at most %u us, not %u",
			       VIOMMU_POLL_MAX_US, cfg->poll_us);
	if (cfg->max_table_bytes < IOMMU_PT_TABLE_BYTES)
		return set_err(err, errlen, -EINVAL, "virtio-iommu: max_table_bytes must be at least %llu",
			       (unsigned long long)IOMMU_PT_TABLE_BYTES);
	return 0;
}

static int state_lock_init(pthread_rwlock_t *l)
{
	pthread_rwlockattr_t attr;
	int err = pthread_rwlockattr_init(&attr);

	if (err)
		return -err;
	/* Writer-preferring: endpoints translating all the time must not starve ATTACH/DETACH. */
	err = pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	if (!err)
		err = pthread_rwlock_init(l, &attr);
	pthread_rwlockattr_destroy(&attr);
	return -err;
}

int virtio_iommu_new(const struct viommu_config *cfg, const struct dma_as *as, struct guest_memory *gm,
		     struct virtio_iommu **out, char *err, size_t errlen)
{
	static const uint16_t sizes[2] = { VIOMMU_REQUESTQ_SIZE, VIOMMU_EVENTQ_SIZE };
	struct virtio_iommu *v;
	int r;

	if (errlen)
		err[0] = '\0';
	r = check_config(cfg, err, errlen);
	if (r)
		return r;
	v = calloc(1, sizeof(*v));
	if (!v)
		return set_err(err, errlen, -ENOMEM, "out of memory for the virtio-iommu device");
	v->doms = calloc(cfg->max_domains, sizeof(v->doms[0]));
	if (!v->doms) {
		free(v);
		return set_err(err, errlen, -ENOMEM, "out of memory for %u virtio-iommu domains", cfg->max_domains);
	}
	v->cfg = *cfg;
	v->gm = gm;
	{
		/* A debugging switch, read once at start-up; anything unknown leaves the IOTLB on. */
		const char *m = getenv("MOAT_IOTLB");

		v->tlb_mode = !m ? VIOMMU_TLB_ON : !strcmp(m, "off") ? VIOMMU_TLB_OFF :
			      !strcmp(m, "verify") ? VIOMMU_TLB_VERIFY : VIOMMU_TLB_ON;
	}
	dma_as_init_identity(&v->gm_as, gm);
	v->lim = (struct iommu_limits){
		.input_start = 0,
		.input_end = IOMMU_IOVA_LAST,
		.max_mappings = cfg->max_mappings,
		.max_table_bytes = cfg->max_table_bytes,
		.page_size_mask = ~(IOMMU_PAGE_SIZE - 1),
	};
	v->bypass = cfg->bypass;
	v->fault_fd = -1;
	r = state_lock_init(&v->state);
	if (r) {
		free(v->doms);
		free(v);
		return set_err(err, errlen, r, "cannot set up the virtio-iommu state lock");
	}
	pthread_mutex_init(&v->fault_lock, NULL);
	v->fault_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (v->fault_fd < 0) {
		r = set_err(err, errlen, -errno, "cannot create the virtio-iommu fault eventfd: %s", strerror(errno));
		goto fail;
	}
	r = virtio_dev_init(&v->dev, cfg->poll_us ? &viommu_poll_ops : &viommu_ops, VIRTIO_ID_IOMMU, VIOMMU_FEATURES,
			    2, sizes, as, (struct virtio_irq){ 0 });
	if (r) {
		set_err(err, errlen, r, "cannot set up the virtio-iommu device");
		goto fail;
	}
	*out = v;
	return 0;
fail:
	if (v->fault_fd >= 0)
		close(v->fault_fd);
	pthread_mutex_destroy(&v->fault_lock);
	pthread_rwlock_destroy(&v->state);
	free(v->doms);
	free(v);
	return r;
}

struct virtio_dev *virtio_iommu_dev(struct virtio_iommu *v)
{
	return &v->dev;
}

void virtio_iommu_free(struct virtio_iommu *v)
{
	if (!v)
		return;
	viommu_clear(v);
	for (unsigned int i = 0; i < v->neps; i++)
		viommu_ep_free(v->eps[i]);
	virtio_dev_fini(&v->dev);
	close(v->fault_fd);
	pthread_mutex_destroy(&v->fault_lock);
	pthread_rwlock_destroy(&v->state);
	free(v->doms);
	free(v);
}

/* ------------------------------------------------------------------ statistics */

/* snprintf at *pos, never past len, tracking how far the text got. */
static void append(char *buf, size_t len, size_t *pos, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void append(char *buf, size_t len, size_t *pos, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (*pos >= len)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf + *pos, len - *pos, fmt, ap);
	va_end(ap);
	if (n > 0)
		*pos += (size_t)n < len - *pos ? (size_t)n : len - *pos;
}

/* The mean of the polling gaps behind the looks that found requests, in microseconds; 0 without any. */
static double gap_mean_us(const struct viommu_counters *c)
{
	uint64_t n = 0;

	for (unsigned int i = 0; i < LATHIST_BUCKETS; i++)
		n += ctr_get(&c->gap_hist[i]);
	return n ? (double)ctr_get(&c->gap_ns) / 1000.0 / (double)n : 0;
}

void virtio_iommu_stats(const struct virtio_iommu *v, char *buf, size_t len)
{
	const struct viommu_counters *c = &v->ctr;
	/* The device is a heap object created non-const: taking its lock through a const pointer is fine. */
	pthread_rwlock_t *state = (pthread_rwlock_t *)&v->state;
	struct iotlb_stats tlb = { 0 };
	size_t pos = 0;

	if (!len)
		return;
	buf[0] = '\0';
	append(buf, len, &pos,
	       "requests: %llu attach, %llu detach, %llu map, %llu unmap, %llu probe, %llu unparsable; "
	       "%llu failed; faults: %llu, %llu reported, %llu dropped; %llu DMA outside RAM; "
	       "polling: %llu spells, %llu requests taken without a kick (%llu by other device threads)",
	       (unsigned long long)ctr_get(&c->req[VIRTIO_IOMMU_T_ATTACH]),
	       (unsigned long long)ctr_get(&c->req[VIRTIO_IOMMU_T_DETACH]),
	       (unsigned long long)ctr_get(&c->req[VIRTIO_IOMMU_T_MAP]),
	       (unsigned long long)ctr_get(&c->req[VIRTIO_IOMMU_T_UNMAP]),
	       (unsigned long long)ctr_get(&c->req[VIRTIO_IOMMU_T_PROBE]), (unsigned long long)ctr_get(&c->req[0]),
	       (unsigned long long)ctr_get(&c->failed), (unsigned long long)ctr_get(&c->faults),
	       (unsigned long long)ctr_get(&c->events), (unsigned long long)ctr_get(&c->dropped),
	       (unsigned long long)ctr_get(&c->bad_target), (unsigned long long)ctr_get(&c->polls),
	       (unsigned long long)ctr_get(&c->polled), (unsigned long long)ctr_get(&c->helped));
	if (ctr_get(&c->polled))
		append(buf, len, &pos,
		       " in %llu looks, each seen p50 <= %.2f us p99 <= %.2f us mean %.1f us after the look before, "
		       "answered p50 <= %.2f us p99 <= %.2f us after",
		       (unsigned long long)ctr_get(&c->looks), lathist_quantile_us(c->gap_hist, 0.5),
		       lathist_quantile_us(c->gap_hist, 0.99),
		       gap_mean_us(c),
		       lathist_quantile_us(c->answer_hist, 0.5),
		       lathist_quantile_us(c->answer_hist, 0.99));
	pthread_rwlock_rdlock(state);
	for (uint32_t i = 0; i < v->ndoms; i++) {
		const struct viommu_dom *d = v->doms[i];
		struct iommu_stats s;

		if (d->bypass) {
			append(buf, len, &pos, "; domain %u: bypass, %u endpoints", d->id, d->nendpoints);
			continue;
		}
		iommu_domain_stats(d->d, &s);
		append(buf, len, &pos,
		       "; domain %u: %u endpoints, %llu mappings, %llu map / %llu unmap requests, "
		       "%llu translations, %llu faults",
		       d->id, d->nendpoints, (unsigned long long)s.mappings, (unsigned long long)s.map_requests,
		       (unsigned long long)s.unmap_requests, (unsigned long long)s.translations,
		       (unsigned long long)s.translate_faults);
	}
	for (unsigned int i = 0; i < v->neps; i++) {
		struct iotlb_stats s;

		iotlb_stats(&v->eps[i]->tlb, &s);
		tlb.hits += s.hits;
		tlb.misses += s.misses;
		tlb.stale_fills += s.stale_fills;
		tlb.dropped += s.dropped;
	}
	pthread_rwlock_unlock(state);
	append(buf, len, &pos, "; iotlb: %llu hits, %llu misses, %llu entries invalidated, %llu stale fills dropped",
	       (unsigned long long)tlb.hits, (unsigned long long)tlb.misses, (unsigned long long)tlb.dropped,
	       (unsigned long long)tlb.stale_fills);
	if (v->tlb_mode == VIOMMU_TLB_OFF)
		append(buf, len, &pos, " (MOAT_IOTLB=off: not used)");
	if (v->tlb_mode == VIOMMU_TLB_VERIFY)
		append(buf, len, &pos, "; MOAT_IOTLB=verify: %llu hits checked, %llu STALE (first at iova 0x%llx)",
		       (unsigned long long)ctr_get(&c->verified), (unsigned long long)ctr_get(&c->stale),
		       (unsigned long long)__atomic_load_n(&v->stale_iova, __ATOMIC_RELAXED));
}
