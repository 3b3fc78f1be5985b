#include "vhost/iotlb.h"

#include <errno.h>
#include <linux/vhost_types.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "vmm/lathist.h"
#include "vmm/sandbox.h"
#include "vmm/vm.h"

_Static_assert(sizeof(struct vhost_msg_v2) == 72, "the vhost IOTLB message v2 is 72 bytes");
_Static_assert(VHOST_ACCESS_RO == IOMMU_READ && VHOST_ACCESS_WO == IOMMU_WRITE,
	       "vhost access bits are the IOMMU's permission bits");

/* An UPDATE covers at most this much: the whole IOVA space the page tables translate. */
#define IOTLB_MAX_RUN (IOMMU_IOVA_LAST + 1)

static void add(uint64_t *c, uint64_t n)
{
	__atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double vhost_iotlb_quantile_us(const struct vhost_iotlb_counters *c, double q)
{
	return lathist_quantile_us(c->hist, q);
}

static int send_msg(struct vhost_iotlb *t, uint8_t type, uint64_t iova, uint64_t size, uint64_t uaddr,
		    unsigned int perm)
{
	struct vhost_msg_v2 m;
	uint64_t t0;
	ssize_t n;

	memset(&m, 0, sizeof(m));
	m.type = VHOST_IOTLB_MSG_V2;
	m.iotlb.iova = iova;
	m.iotlb.size = size;
	m.iotlb.uaddr = uaddr;
	m.iotlb.perm = (uint8_t)perm;
	m.iotlb.type = type;
	t0 = now_ns();
	do
		n = write(t->fd, &m, sizeof(m));
	while (n < 0 && errno == EINTR);
	if (n == (ssize_t)sizeof(m)) {
		/* Any thread writes (the IOMMU's, helpers, this one's): the histogram's adds are atomic. */
		add(&t->c.writes, 1);
		lathist_add(t->c.write_hist, now_ns() - t0);
		return 0;
	}
	add(&t->c.errors, 1);
	return n < 0 ? -errno : -EIO;
}

/* Write the held invalidations (none if the back end lost its IOTLB meanwhile: nothing left to drop). inv_lock held. */
static void flush_invalidations(struct vhost_iotlb *t)
{
	bool active = __atomic_load_n(&t->active, __ATOMIC_ACQUIRE);

	for (unsigned int i = 0; i < t->ninv && active; i++)
		if (!send_msg(t, VHOST_IOTLB_INVALIDATE, t->inv[i].iova, t->inv[i].end - t->inv[i].iova, 0, 0))
			add(&t->c.invalidations, 1);
	t->ninv = 0;
}

/*
 * Every UPDATE goes through here: an UPDATE overlapping a held invalidation (the range was unmapped and mapped
 * again in one batch) must not be wiped out by it later, so those are written first.
 */
static int send_update(struct vhost_iotlb *t, uint64_t iova, uint64_t len, uint64_t uaddr, unsigned int perm)
{
	int r;

	pthread_mutex_lock(&t->inv_lock);
	for (unsigned int i = 0; i < t->ninv; i++) {
		if (iova < t->inv[i].end && (t->inv[i].iova <= iova || t->inv[i].iova - iova < len)) {
			flush_invalidations(t);
			break;
		}
	}
	r = send_msg(t, VHOST_IOTLB_UPDATE, iova, len, uaddr, perm);
	pthread_mutex_unlock(&t->inv_lock);
	return r;
}

/* emit for resolve: called with the IOMMU's locks held, so the UPDATE lands before any later INVALIDATE. */
static int emit_update(void *arg, const struct viommu_run *run)
{
	struct vhost_iotlb *t = arg;
	int r = send_update(t, run->iova, run->len, (uint64_t)(uintptr_t)run->host, run->perm);

	if (!r)
		add(&t->c.updates, 1);
	return r;
}

void vhost_iotlb_invalidate(struct vhost_iotlb *t, uint64_t iova, uint64_t len)
{
	if (!__atomic_load_n(&t->active, __ATOMIC_ACQUIRE))
		return; /* no IOTLB in the back end yet: nothing cached to invalidate */
	if (!send_msg(t, VHOST_IOTLB_INVALIDATE, iova, len, 0, 0))
		add(&t->c.invalidations, 1);
}

/*
 * A guest UNMAP (or a whole endpoint change), under the domain's write lock. Inside a request batch it is held
 * and merged with adjacent ones (lazy-mode Linux sends a run of UNMAPs with one kick), so vhost takes its
 * queue locks once per merged range; the batch's end writes them before any request completes.
 */
static void on_unmapped(void *ctx, uint64_t iova, uint64_t len)
{
	struct vhost_iotlb *t = ctx;
	uint64_t end = len > UINT64_MAX - iova ? UINT64_MAX : iova + len;

	if (!__atomic_load_n(&t->active, __ATOMIC_ACQUIRE))
		return;
	pthread_mutex_lock(&t->inv_lock);
	if (!t->batch_depth || end == UINT64_MAX) {
		vhost_iotlb_invalidate(t, iova, len);
		pthread_mutex_unlock(&t->inv_lock);
		return;
	}
	for (unsigned int i = 0; i < t->ninv; i++) {
		struct vhost_iotlb_range *r = &t->inv[i];

		if (iova <= r->end && r->iova <= end) { /* overlapping or adjacent */
			r->iova = iova < r->iova ? iova : r->iova;
			r->end = end > r->end ? end : r->end;
			add(&t->c.inval_merged, 1);
			pthread_mutex_unlock(&t->inv_lock);
			return;
		}
	}
	if (t->ninv == VHOST_IOTLB_INV_BATCH)
		flush_invalidations(t);
	t->inv[t->ninv++] = (struct vhost_iotlb_range){ .iova = iova, .end = end };
	pthread_mutex_unlock(&t->inv_lock);
}

static void on_batch(void *ctx, bool begin)
{
	struct vhost_iotlb *t = ctx;

	pthread_mutex_lock(&t->inv_lock);
	if (begin) {
		t->batch_depth++;
	} else if (t->batch_depth && !--t->batch_depth) {
		flush_invalidations(t);
	}
	pthread_mutex_unlock(&t->inv_lock);
}

struct fill_arg {
	struct vhost_iotlb *t;
	uint64_t end;  /* where the pushed run ends */
	bool prefetch; /* counted as a prefetch, not a miss's update */
};

static int emit_fill(void *arg, const struct viommu_run *run)
{
	struct fill_arg *f = arg;
	int r = send_update(f->t, run->iova, run->len, (uint64_t)(uintptr_t)run->host, run->perm);

	if (r)
		return r;
	add(f->prefetch ? &f->t->c.prefetches : &f->t->c.updates, 1);
	f->end = run->iova + run->len;
	return 0;
}

/*
 * A guest MAP, under the domain's write lock on the IOMMU's (vCPU) thread.
 * SYNC: push it now; holding the write lock orders it before the INVALIDATE of any later UNMAP.
 * QUEUED (and SYNC for a MAP that is not one piece of RAM): queue it for the IOTLB thread, which resolves
 * the range again under the IOMMU's locks (a range unmapped in between is simply not pushed); the vCPU
 * never waits on vhost's locks then.
 */
static void on_mapped(void *ctx, uint64_t iova, uint64_t gpa, uint64_t len, unsigned int perm)
{
	struct vhost_iotlb *t = ctx;
	bool wake = false;

	perm &= IOMMU_READ | IOMMU_WRITE;
	if (!t->prefetch || !perm || !__atomic_load_n(&t->active, __ATOMIC_ACQUIRE))
		return;
	if (t->prefetch == VHOST_PREFETCH_SYNC && t->gm) {
		/* GUEST: [gpa, gpa+len) is the guest's MAP; gm_ptr accepts it only inside one RAM region. */
		void *host = gm_ptr(t->gm, gpa, len);

		if (host && !send_update(t, iova, len, (uint64_t)(uintptr_t)host, perm)) {
			add(&t->c.prefetches, 1);
			return;
		}
	}
	pthread_mutex_lock(&t->pf_lock);
	if (t->pf_count == VHOST_IOTLB_PREFETCH_QUEUE) {
		t->c.prefetch_dropped++; /* vhost will miss on it instead */
	} else {
		t->pf[(t->pf_head + t->pf_count) % VHOST_IOTLB_PREFETCH_QUEUE] =
			(struct vhost_iotlb_hint){ .iova = iova, .len = len, .perm = perm };
		wake = t->pf_count++ == 0;
	}
	pthread_mutex_unlock(&t->pf_lock);
	if (wake) {
		uint64_t one = 1;

		/* EAGAIN only when the counter is saturated, and then a wake-up is pending anyway. */
		if (write(t->pf_fd, &one, sizeof(one)) < 0)
			return;
	}
}

/*
 * Push one batch of what on_mapped queued, each range resolved again under the IOMMU's locks. Returns how
 * many; 0 when the queue is empty. One batch at a time, so that misses (a queue waiting) go first.
 */
#define PREFETCH_BATCH 16u

static unsigned int serve_prefetch(struct vhost_iotlb *t)
{
	struct vhost_iotlb_hint h[PREFETCH_BATCH];
	unsigned int n;

	pthread_mutex_lock(&t->pf_lock);
	n = t->pf_count < PREFETCH_BATCH ? t->pf_count : PREFETCH_BATCH;
	for (unsigned int i = 0; i < n; i++)
		h[i] = t->pf[(t->pf_head + i) % VHOST_IOTLB_PREFETCH_QUEUE];
	t->pf_head = (t->pf_head + n) % VHOST_IOTLB_PREFETCH_QUEUE;
	t->pf_count -= n;
	pthread_mutex_unlock(&t->pf_lock);
	for (unsigned int i = 0; i < n; i++) {
		uint64_t iova = h[i].iova, end = h[i].iova + h[i].len;

		while (iova < end) {
			struct fill_arg f = { .t = t, .end = 0, .prefetch = true };

			/* Gone already (unmapped, not RAM): nothing to push, and no fault: nobody accessed it. */
			if (t->resolve(t->resolve_ctx, iova, h[i].perm, end - (iova & ~(IOMMU_PAGE_SIZE - 1)), false,
				       emit_fill, &f) ||
			    f.end <= iova)
				break;
			iova = f.end;
		}
	}
	return n;
}

int vhost_iotlb_init(struct vhost_iotlb *t, int fd, vhost_iotlb_resolve_fn resolve, void *resolve_ctx, int prefetch)
{
	memset(t, 0, sizeof(*t));
	t->fd = fd;
	t->resolve = resolve;
	t->resolve_ctx = resolve_ctx;
	t->prefetch = prefetch;
	t->notifier =
		(struct iommu_notifier){ .unmapped = on_unmapped, .mapped = on_mapped, .batch = on_batch, .ctx = t };
	t->pf_fd = -1;
	pthread_mutex_init(&t->pf_lock, NULL);
	pthread_mutex_init(&t->inv_lock, NULL);
	t->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (t->stop_fd < 0)
		return -errno;
	t->pf_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	return t->pf_fd < 0 ? -errno : 0;
}

void vhost_iotlb_fini(struct vhost_iotlb *t)
{
	vhost_iotlb_stop(t);
	if (t->stop_fd >= 0)
		close(t->stop_fd);
	if (t->pf_fd >= 0)
		close(t->pf_fd);
	t->stop_fd = t->pf_fd = -1;
	pthread_mutex_destroy(&t->pf_lock);
	pthread_mutex_destroy(&t->inv_lock);
}

void vhost_iotlb_set_memory(struct vhost_iotlb *t, const struct guest_memory *gm)
{
	t->gm = gm;
}

const struct iommu_notifier *vhost_iotlb_notifier(struct vhost_iotlb *t)
{
	return &t->notifier;
}

void vhost_iotlb_set_active(struct vhost_iotlb *t, bool active)
{
	__atomic_store_n(&t->active, active, __ATOMIC_RELEASE);
}

int vhost_iotlb_fill(struct vhost_iotlb *t, uint64_t iova, uint64_t len, unsigned int perm)
{
	uint64_t end;

	if (!len || __builtin_add_overflow(iova, len, &end))
		return -EINVAL;
	while (iova < end) {
		struct fill_arg f = { .t = t, .end = 0 };
		/* Whole runs, not just the ring's bytes: the buffers the guest puts next to it hit too. */
		int r = t->resolve(t->resolve_ctx, iova, perm, IOTLB_MAX_RUN, true, emit_fill, &f);

		if (r)
			return r;
		if (f.end <= iova)
			return -EFAULT; /* a resolver that made no progress: never loop on it */
		iova = f.end;
	}
	return 0;
}

/* One miss: resolve it and answer with an UPDATE, or count the fault (the IOMMU reported it to the guest). */
static void serve_miss(struct vhost_iotlb *t, const struct vhost_iotlb_msg *m)
{
	uint64_t t0 = now_ns(), dt;
	unsigned int perm = m->perm & (IOMMU_READ | IOMMU_WRITE);
	int r;

	add(&t->c.misses, 1);
	/* GUEST: the IOVA comes from the guest's rings through vhost; resolve bounds it with the page table. */
	r = perm ? t->resolve(t->resolve_ctx, m->iova, perm, IOTLB_MAX_RUN, true, emit_update, t) : -EINVAL;
	if (r) {
		add(&t->c.faults, 1);
		if (t->vm && !t->warned) {
			t->warned = true;
			log_warn(&t->vm->log,
				 "%s: the device accessed IOVA 0x%llx (%s) that the guest has not mapped; the queue "
				 "stops until the driver resets the device (reported as an IOMMU fault; further faults "
				 "are only counted)",
				 t->name, (unsigned long long)m->iova, perm == IOMMU_WRITE ? "write" : "read");
		}
	}
	dt = now_ns() - t0;
	t->c.service_ns += dt;
	if (dt > t->c.service_max_ns)
		t->c.service_max_ns = dt;
	t->c.hist[lathist_bucket(dt)]++;
}

/* Answer every miss waiting on the fd. Returns how many messages were read, or -errno. */
static int serve_misses(struct vhost_iotlb *t)
{
	int n = 0;

	for (;;) {
		struct vhost_msg_v2 m;
		ssize_t got = read(t->fd, &m, sizeof(m));

		if (got < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? n : -errno;
		}
		if (got == 0)
			return n;
		n++;
		if (got != (ssize_t)sizeof(m) || m.type != VHOST_IOTLB_MSG_V2 || m.iotlb.type != VHOST_IOTLB_MISS) {
			add(&t->c.errors, 1);
			continue;
		}
		serve_miss(t, &m.iotlb);
	}
}

int vhost_iotlb_serve(struct vhost_iotlb *t)
{
	uint64_t cnt;
	int n = 0, r;
	unsigned int p;

	if (read(t->pf_fd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN)
		add(&t->c.errors, 1);
	/* Misses first (a queue is stopped until they are answered), then prefetches a batch at a time. */
	do {
		r = serve_misses(t);
		if (r < 0)
			return r;
		n += r;
		p = serve_prefetch(t);
		n += (int)p;
	} while (p);
	return n;
}

static void *iotlb_thread(void *arg)
{
	struct vhost_iotlb *t = arg;
	struct pollfd pfd[3] = { { .fd = t->fd, .events = POLLIN },
				 { .fd = t->stop_fd, .events = POLLIN },
				 { .fd = t->pf_fd, .events = POLLIN } };
	int r;

	/* Under the vhost allow-list already (sandbox_thread_start). */
	for (;;) {
		r = poll(pfd, 3, -1);
		if (r < 0 && errno != EINTR) {
			vm_request_stop(t->vm, VM_STOP_ERROR, "%s: poll failed: %s", t->name, strerror(errno));
			break;
		}
		if (pfd[1].revents)
			break;
		if (pfd[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
			vm_request_stop(t->vm, VM_STOP_ERROR, "%s: the vhost fd failed", t->name);
			break;
		}
		if (pfd[0].revents & POLLIN || pfd[2].revents & POLLIN) {
			r = vhost_iotlb_serve(t);
			if (r < 0) {
				vm_request_stop(t->vm, VM_STOP_ERROR, "%s: reading IOTLB misses failed: %s", t->name,
						strerror(-r));
				break;
			}
		}
	}
	return NULL;
}

int vhost_iotlb_start(struct vhost_iotlb *t, struct vm *vm, const char *name)
{
	int r;

	t->vm = vm;
	snprintf(t->name, sizeof(t->name), "%s", name);
	r = sandbox_thread_start(&t->thread, THREAD_VHOST, vm->cfg.seccomp, t->name, iotlb_thread, t);
	if (r) {
		vm_request_stop(vm, VM_STOP_ERROR,
				"%s: cannot start the thread under the seccomp sandbox: %s; rerun with --seccomp off to "
				"debug (this runs the guest unsandboxed)",
				t->name, strerror(-r));
		return r;
	}
	t->started = true;
	return 0;
}

void vhost_iotlb_stop(struct vhost_iotlb *t)
{
	uint64_t one = 1;

	if (!t->started)
		return;
	if (write(t->stop_fd, &one, sizeof(one)) < 0)
		return;
	pthread_join(t->thread, NULL);
	t->started = false;
}

void vhost_iotlb_counters(const struct vhost_iotlb *t, struct vhost_iotlb_counters *out)
{
	const uint64_t *src = (const uint64_t *)&t->c;
	uint64_t *dst = (uint64_t *)out;

	/* Every field is a uint64_t: read each one atomically, the thread keeps writing them. */
	for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

void vhost_iotlb_stats(const struct vhost_iotlb *t, char *buf, size_t len)
{
	struct vhost_iotlb_counters c;
	uint64_t served;

	vhost_iotlb_counters(t, &c);
	served = c.misses ? c.misses : 1;
	snprintf(buf, len,
		 "iotlb: %llu misses, %llu updates, %llu prefetched, %llu invalidations, %llu faults, %llu errors, "
		 "%llu prefetches dropped, %llu unmaps merged; "
		 "miss service p50 <= %.2f us, p99 <= %.2f us, mean %.1f us, max %.1f us; "
		 "%llu messages written, vhost took each in p50 <= %.2f us, p99 <= %.2f us",
		 (unsigned long long)c.misses, (unsigned long long)c.updates, (unsigned long long)c.prefetches,
		 (unsigned long long)c.invalidations, (unsigned long long)c.faults, (unsigned long long)c.errors,
		 (unsigned long long)c.prefetch_dropped, (unsigned long long)c.inval_merged,
		 vhost_iotlb_quantile_us(&c, 0.5), vhost_iotlb_quantile_us(&c, 0.99),
		 (double)c.service_ns / 1000.0 / (double)served, (double)c.service_max_ns / 1000.0,
		 (unsigned long long)c.writes, lathist_quantile_us(c.write_hist, 0.5),
		 lathist_quantile_us(c.write_hist, 0.99));
}
