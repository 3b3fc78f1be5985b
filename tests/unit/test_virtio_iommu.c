#include <criterion/criterion.h>
#include <endian.h>
#include <errno.h>
#include <linux/virtio_iommu.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "devices/virtio/iommu.h"
#include "devices/virtio/iommu_internal.h"
#include "devices/virtio/virtio.h"
#include "tests/unit/virtq_mock.h"
#include "vhost/iotlb.h"
#include "vmm/lathist.h"
/* After moat's headers: it brings <linux/virtio_ring.h>, whose macros virtqueue.h also defines. */
#include <linux/vhost_types.h>

/*
 * The device against a driver-side mock: requestq rings at VQM_DESC, eventq rings at VQM_DESC2,
 * one mock guest memory (R0, R1 back to back, a hole, R2). Endpoint DMA targets R1 and R2, which
 * the mock never allocates from.
 */

#define RQ 0u
#define EQ 1u
#define EP_A 8u  /* 00:01.0 */
#define EP_B 16u /* 00:02.0 */
#define EP_C 24u /* 00:03.0 */
#define NEP 3
#define IOVA 0x100000000ull
#define K4 0x1000ull
#define MSI_S 0xfee00000ull
#define MSI_E 0xfeefffffull
#define R VIRTIO_IOMMU_MAP_F_READ
#define W VIRTIO_IOMMU_MAP_F_WRITE
#define RW (R | W)
#define F(x) VIRTIO_BIT(VIRTIO_IOMMU_F_##x)
#define S(x) VIRTIO_IOMMU_S_##x
#define TAIL 4u
#define PROBE_W (512u + TAIL)
#define FA VIRTIO_IOMMU_FAULT_F_ADDRESS

static const struct viommu_config def_cfg = {
	.bypass = false,
	.max_domains = 4,
	.max_mappings = 8,
	.max_table_bytes = 64ull << 20,
	.msi_start = MSI_S,
	.msi_end = MSI_E,
};

struct tio {
	struct vqm rq, eq;
	struct virtio_iommu *v;
	struct virtio_dev *dev;
	struct viommu_endpoint *ep[NEP];
	const struct dma_as *as[NEP];
	int irq_queue[2], irq_config;
};

static int fake_irq(void *ctx, enum virtio_irq_kind kind, unsigned int queue)
{
	struct tio *t = ctx;

	if (kind == VIRTIO_IRQ_CONFIG)
		t->irq_config++;
	else
		t->irq_queue[queue]++;
	return 0;
}

static void tio_create(struct tio *t, const struct viommu_config *cfg)
{
	static const uint32_t ids[NEP] = { EP_A, EP_B, EP_C };
	char err[256] = "";

	memset(t, 0, sizeof(*t));
	vqm_init(&t->rq, 256);
	vqm_init_shared(&t->eq, &t->rq, 64, VQM_DESC2);
	cr_assert_eq(virtio_iommu_new(cfg ? cfg : &def_cfg, &t->rq.as, &t->rq.gm, &t->v, err, sizeof(err)), 0, "%s",
		     err);
	t->dev = virtio_iommu_dev(t->v);
	t->dev->irq = (struct virtio_irq){ .fn = fake_irq, .ctx = t };
	for (unsigned int i = 0; i < NEP; i++) {
		cr_assert_eq(virtio_iommu_endpoint_new(t->v, &t->ep[i]), 0);
		virtio_iommu_endpoint_set_id(t->ep[i], ids[i]);
		t->as[i] = virtio_iommu_endpoint_as(t->ep[i]);
	}
}

/* 3.1.1 up to DRIVER_OK with every offered feature but `drop`, both queues enabled. */
static void tio_start(struct tio *t, uint64_t drop)
{
	struct virtio_dev *d = t->dev;
	struct vqm *q[2] = { &t->rq, &t->eq };
	uint8_t st = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;

	cr_assert_eq(virtio_set_status(d, VIRTIO_STATUS_ACKNOWLEDGE), 0);
	cr_assert_eq(virtio_set_status(d, st), 0);
	cr_assert_eq(virtio_set_driver_features(d, d->device_features & ~drop), 0);
	st |= VIRTIO_STATUS_FEATURES_OK;
	cr_assert_eq(virtio_set_status(d, st), 0);
	for (unsigned int i = 0; i < 2; i++) {
		cr_assert_eq(virtio_queue_set_addr(d, i, q[i]->desc, q[i]->avail, q[i]->used), 0);
		cr_assert_eq(virtio_queue_enable(d, i), 0);
	}
	cr_assert_eq(virtio_set_status(d, st | VIRTIO_STATUS_DRIVER_OK), 0);
}

/* After a device reset the driver starts its rings over (descriptors are not reused anyway). */
static void tio_restart_rings(struct tio *t)
{
	struct vqm *q[2] = { &t->rq, &t->eq };

	for (unsigned int i = 0; i < 2; i++) {
		vqm_set_avail_idx(q[i], 0);
		memset(vqm_host(q[i], q[i]->used, VIRTQ_USED_BYTES(q[i]->size)), 0, VIRTQ_USED_BYTES(q[i]->size));
	}
}

static void tio_up(struct tio *t, const struct viommu_config *cfg, uint64_t drop)
{
	tio_create(t, cfg);
	tio_start(t, drop);
}

static void tio_down(struct tio *t)
{
	virtio_iommu_free(t->v);
	vqm_fini(&t->rq);
}

/* ------------------------------------------------------------------ driver side */

/*
 * One request chain: rlen readable bytes from rd, then wlen writable bytes (prefilled with 0xa5 so
 * that untouched bytes show). Kicks, checks it completed, copies the writable part to w; used len.
 */
static uint32_t send_raw(struct tio *t, const void *rd, uint32_t rlen, uint32_t wlen, uint8_t *w)
{
	struct vqm_buf b[2];
	uint16_t before = vqm_used_idx(&t->rq), head;
	unsigned int n = 0;
	uint32_t id, used;

	if (rlen)
		b[n++] = (struct vqm_buf){ 0, rlen, false };
	if (wlen)
		b[n++] = (struct vqm_buf){ 0, wlen, true };
	head = vqm_chain(&t->rq, b, n);
	if (rlen)
		memcpy(vqm_host(&t->rq, b[0].addr, rlen), rd, rlen);
	if (wlen)
		memset(vqm_host(&t->rq, b[n - 1].addr, wlen), 0xa5, wlen);
	vqm_publish(&t->rq, head);
	/* As the transport does: the kick is handled with the device lock held (polling drops it between looks). */
	pthread_mutex_lock(&t->dev->lock);
	virtio_queue_notify(t->dev, RQ);
	pthread_mutex_unlock(&t->dev->lock);
	cr_assert_eq(vqm_used_idx(&t->rq), (uint16_t)(before + 1), "the request completed");
	vqm_used_elem(&t->rq, before, &id, &used);
	cr_assert_eq(id, head);
	if (wlen && w)
		memcpy(w, vqm_host(&t->rq, b[n - 1].addr, wlen), wlen);
	return used;
}

/* A request with the usual 4-byte writable tail: its status. */
static uint8_t req(struct tio *t, const void *r, uint32_t rlen)
{
	uint8_t w[TAIL];
	uint32_t used = send_raw(t, r, rlen, TAIL, w);

	cr_assert_eq(used, TAIL, "the whole tail is used (used len %u)", used);
	cr_assert(w[1] == 0 && w[2] == 0 && w[3] == 0, "tail reserved bytes are zero");
	return w[0];
}

static struct virtio_iommu_req_attach attach_req(uint32_t dom, uint32_t ep, uint32_t flags)
{
	return (struct virtio_iommu_req_attach){ .head.type = VIRTIO_IOMMU_T_ATTACH,
						 .domain = htole32(dom),
						 .endpoint = htole32(ep),
						 .flags = htole32(flags) };
}

static uint8_t attach(struct tio *t, uint32_t dom, uint32_t ep, uint32_t flags)
{
	struct virtio_iommu_req_attach r = attach_req(dom, ep, flags);

	return req(t, &r, offsetof(struct virtio_iommu_req_attach, tail));
}

static uint8_t detach(struct tio *t, uint32_t dom, uint32_t ep)
{
	struct virtio_iommu_req_detach r = { .head.type = VIRTIO_IOMMU_T_DETACH,
					     .domain = htole32(dom),
					     .endpoint = htole32(ep) };

	return req(t, &r, offsetof(struct virtio_iommu_req_detach, tail));
}

static struct virtio_iommu_req_map map_req(uint32_t dom, uint64_t start, uint64_t end, uint64_t phys, uint32_t flags)
{
	return (struct virtio_iommu_req_map){ .head.type = VIRTIO_IOMMU_T_MAP,
					      .domain = htole32(dom),
					      .virt_start = htole64(start),
					      .virt_end = htole64(end),
					      .phys_start = htole64(phys),
					      .flags = htole32(flags) };
}

static uint8_t map(struct tio *t, uint32_t dom, uint64_t start, uint64_t end, uint64_t phys, uint32_t flags)
{
	struct virtio_iommu_req_map r = map_req(dom, start, end, phys, flags);

	return req(t, &r, offsetof(struct virtio_iommu_req_map, tail));
}

static uint8_t unmap(struct tio *t, uint32_t dom, uint64_t start, uint64_t end)
{
	struct virtio_iommu_req_unmap r = { .head.type = VIRTIO_IOMMU_T_UNMAP,
					    .domain = htole32(dom),
					    .virt_start = htole64(start),
					    .virt_end = htole64(end) };

	return req(t, &r, offsetof(struct virtio_iommu_req_unmap, tail));
}

/* PROBE with wlen writable bytes; the used length, the writable part in w. */
static uint32_t probe(struct tio *t, uint32_t ep, uint32_t wlen, uint8_t *w)
{
	struct virtio_iommu_req_probe r = { .head.type = VIRTIO_IOMMU_T_PROBE, .endpoint = htole32(ep) };

	return send_raw(t, &r, sizeof(r), wlen, w);
}

/* ------------------------------------------------------------------ endpoint side */

static int tr(struct tio *t, unsigned int ep, uint64_t iova, uint64_t len, unsigned int perm, void **host,
	      uint64_t *run)
{
	return dma_translate(t->as[ep], iova, len, perm, host, run);
}

static void expect_tr(struct tio *t, unsigned int ep, uint64_t iova, uint64_t len, unsigned int perm,
		      uint64_t gpa, uint64_t run)
{
	void *host = NULL;
	uint64_t r = 0;
	int err = tr(t, ep, iova, len, perm, &host, &r);

	cr_assert_eq(err, 0, "translate %#llx: %d", (unsigned long long)iova, err);
	cr_assert_eq(host, vqm_host(&t->rq, gpa, 1), "iova %#llx lands at gpa %#llx", (unsigned long long)iova,
		     (unsigned long long)gpa);
	cr_assert_eq(r, run, "run %#llx, want %#llx", (unsigned long long)r, (unsigned long long)run);
}

static void expect_no_tr(struct tio *t, unsigned int ep, uint64_t iova, unsigned int perm)
{
	void *host;
	uint64_t r;

	cr_assert_eq(tr(t, ep, iova, 8, perm, &host, &r), -EFAULT, "iova %#llx must not translate",
		     (unsigned long long)iova);
}

/* What the worker does when the fault eventfd fires. */
static void fault_event(struct tio *t)
{
	struct virtio_backend_fd fds[VIRTIO_MAX_BACKEND_FDS];

	cr_assert_eq(t->dev->ops->backend_fds(t->dev, fds, VIRTIO_MAX_BACKEND_FDS), 1);
	cr_assert_eq(fds[0].events, EPOLLIN);
	fds[0].fn(t->dev, EPOLLIN);
}

static bool fault_fd_ready(struct tio *t)
{
	struct virtio_backend_fd fds[VIRTIO_MAX_BACKEND_FDS];
	struct pollfd p;

	cr_assert_eq(t->dev->ops->backend_fds(t->dev, fds, VIRTIO_MAX_BACKEND_FDS), 1);
	p = (struct pollfd){ .fd = fds[0].fd, .events = POLLIN };
	return poll(&p, 1, 0) == 1;
}

static uint64_t add_evbuf(struct tio *t, uint32_t len)
{
	struct vqm_buf b = { 0, len, true };
	uint16_t head = vqm_chain(&t->eq, &b, 1);

	memset(vqm_host(&t->eq, b.addr, len), 0xa5, len);
	vqm_publish(&t->eq, head);
	return b.addr;
}

static void expect_event(struct tio *t, uint16_t i, uint64_t buf, uint8_t reason, uint32_t flags, uint32_t ep,
			 uint64_t addr)
{
	struct virtio_iommu_fault f;
	uint32_t id, len;

	cr_assert_gt(vqm_used_idx(&t->eq), i, "event %u posted", i);
	vqm_used_elem(&t->eq, i, &id, &len);
	cr_assert_eq(len, sizeof(f));
	memcpy(&f, vqm_host(&t->eq, buf, sizeof(f)), sizeof(f));
	cr_assert_eq(f.reason, reason);
	cr_assert(f.reserved[0] == 0 && f.reserved[1] == 0 && f.reserved[2] == 0);
	cr_assert_eq(le32toh(f.flags), flags, "flags %#x, want %#x", le32toh(f.flags), flags);
	cr_assert_eq(le32toh(f.endpoint), ep);
	cr_assert_eq(le64toh(f.address), addr);
}

static void stats_have(struct tio *t, const char *want)
{
	char buf[2048];

	virtio_iommu_stats(t->v, buf, sizeof(buf));
	cr_assert_not_null(strstr(buf, want), "stats '%s' should say '%s'", buf, want);
}

static void stats_lack(struct tio *t, const char *unwanted)
{
	char buf[2048];

	virtio_iommu_stats(t->v, buf, sizeof(buf));
	cr_assert_null(strstr(buf, unwanted), "stats '%s' should not say '%s'", buf, unwanted);
}

/* A subscriber that logs its calls and when they came relative to request completion. */
#define CALLS_MAX 16
struct sub {
	struct tio *t;
	struct iommu_notifier n;
	unsigned int nun, nmap;
	uint64_t un_iova[CALLS_MAX], un_len[CALLS_MAX];
	uint16_t un_used_idx[CALLS_MAX]; /* requestq used->idx when called */
	uint64_t map_iova, map_gpa, map_len;
	unsigned int map_perm;
};

static void sub_unmapped(void *ctx, uint64_t iova, uint64_t len)
{
	struct sub *s = ctx;

	cr_assert_lt(s->nun, CALLS_MAX);
	s->un_iova[s->nun] = iova;
	s->un_len[s->nun] = len;
	s->un_used_idx[s->nun] = vqm_used_idx(&s->t->rq);
	s->nun++;
}

static void sub_mapped(void *ctx, uint64_t iova, uint64_t gpa, uint64_t len, unsigned int perm)
{
	struct sub *s = ctx;

	s->nmap++;
	s->map_iova = iova;
	s->map_gpa = gpa;
	s->map_len = len;
	s->map_perm = perm;
}

static void sub_init(struct sub *s, struct tio *t, unsigned int ep)
{
	memset(s, 0, sizeof(*s));
	s->t = t;
	s->n = (struct iommu_notifier){ .unmapped = sub_unmapped, .mapped = sub_mapped, .ctx = s };
	cr_assert_eq(virtio_iommu_endpoint_notifier(t->ep[ep], &s->n), 0);
}

/* ------------------------------------------------------------------ device and config */

Test(virtio_iommu, identity_and_features)
{
	struct tio t;

	tio_create(&t, NULL);
	cr_assert_eq(t.dev->device_id, 23);
	cr_assert_str_eq(t.dev->ops->name, "iommu");
	cr_assert_eq(t.dev->nqueues, 2);
	cr_assert_eq(t.dev->queues[RQ].max_size, 256);
	cr_assert_eq(t.dev->queues[EQ].max_size, 64);
	cr_assert_eq(t.dev->device_features,
		     VIRTIO_BIT(VIRTIO_F_VERSION_1) | F(INPUT_RANGE) | F(DOMAIN_RANGE) | F(MAP_UNMAP) |
			     F(BYPASS_CONFIG) | F(PROBE) | VIRTIO_BIT(VIRTIO_RING_F_INDIRECT_DESC) |
			     VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX),
		     "neither MMIO nor the superseded BYPASS");
	tio_down(&t);
	virtio_iommu_free(NULL);
}

Test(virtio_iommu, bad_configs_are_refused)
{
	struct viommu_config c = def_cfg;
	struct guest_memory gm;
	struct dma_as as;
	struct virtio_iommu *v = NULL;
	char err[256];

	gm_init(&gm);
	dma_as_init_identity(&as, &gm);
	c.max_domains = 0;
	cr_assert_eq(virtio_iommu_new(&c, &as, &gm, &v, err, sizeof(err)), -EINVAL);
	cr_assert_not_null(strstr(err, "max_domains"), "%s", err);
	c.max_domains = 65537;
	cr_assert_eq(virtio_iommu_new(&c, &as, &gm, &v, err, sizeof(err)), -EINVAL);
	c = def_cfg;
	c.max_mappings = 0;
	cr_assert_eq(virtio_iommu_new(&c, &as, &gm, &v, err, sizeof(err)), -EINVAL);
	c = def_cfg;
	c.max_table_bytes = 100;
	cr_assert_eq(virtio_iommu_new(&c, &as, &gm, &v, err, sizeof(err)), -EINVAL);
	cr_assert_null(v);
}

Test(virtio_iommu, config_space)
{
	struct tio t;
	struct virtio_iommu_config c;
	uint8_t b[8];
	uint64_t v64;

	tio_up(&t, NULL, 0);
	cr_assert_eq(t.dev->ops->config_read(t.dev, 0, &c, sizeof(c)), 0);
	cr_assert_eq(le64toh(c.page_size_mask), ~0xfffull, "4 KiB granule, every larger size");
	cr_assert_eq(le64toh(c.input_range.start), 0);
	cr_assert_eq(le64toh(c.input_range.end), (1ull << 48) - 1);
	cr_assert_eq(le32toh(c.domain_range.start), 0);
	cr_assert_eq(le32toh(c.domain_range.end), 0xffff);
	cr_assert_eq(le32toh(c.probe_size), 512);
	cr_assert_eq(c.bypass, 0);
	cr_assert(c.reserved[0] == 0 && c.reserved[1] == 0 && c.reserved[2] == 0);
	/* Partial reads see the same bytes. */
	cr_assert_eq(t.dev->ops->config_read(t.dev, 16, &v64, 8), 0);
	cr_assert_eq(le64toh(v64), (1ull << 48) - 1);
	/* Out of range (and an off+len that would wrap): refused, zeros. */
	memset(b, 0xff, sizeof(b));
	cr_assert_eq(t.dev->ops->config_read(t.dev, 36, b, 8), -EINVAL);
	cr_assert_eq(b[0] | b[7], 0);
	cr_assert_eq(t.dev->ops->config_read(t.dev, UINT32_MAX, b, 2), -EINVAL);
	cr_assert_eq(t.dev->ops->config_read(t.dev, 40, b, 1), -EINVAL);
	cr_assert_eq(t.dev->ops->config_read(t.dev, 40, b, 0), 0);
	tio_down(&t);

	struct viommu_config on = def_cfg;

	on.bypass = true;
	tio_up(&t, &on, 0);
	cr_assert_eq(t.dev->ops->config_read(t.dev, 36, b, 1), 0);
	cr_assert_eq(b[0], 1, "initial bypass from the VMM's config");
	tio_down(&t);
}

static uint8_t read_bypass(struct tio *t)
{
	uint8_t b = 0xee;

	cr_assert_eq(t->dev->ops->config_read(t->dev, 36, &b, 1), 0);
	return b;
}

Test(virtio_iommu, bypass_writes)
{
	struct tio t;
	uint8_t one = 1, two = 2, zero = 0;
	uint8_t four[4] = { 1, 0xff, 0xff, 0xff };
	uint64_t mask = 0;

	/* Not negotiated: writes are ignored. */
	tio_up(&t, NULL, F(BYPASS_CONFIG));
	cr_assert_eq(t.dev->ops->config_write(t.dev, 36, &one, 1), 0);
	cr_assert_eq(read_bypass(&t), 0);
	tio_down(&t);

	tio_create(&t, NULL);
	/* Before FEATURES_OK the features are not final: ignored too. */
	cr_assert_eq(t.dev->ops->config_write(t.dev, 36, &one, 1), 0);
	cr_assert_eq(read_bypass(&t), 0);
	tio_start(&t, 0);
	cr_assert_eq(t.dev->ops->config_write(t.dev, 36, &one, 1), 0);
	cr_assert_eq(read_bypass(&t), 1);
	cr_assert_eq(t.dev->ops->config_write(t.dev, 36, &two, 1), 0);
	cr_assert_eq(read_bypass(&t), 1, "only 0 or 1 are taken");
	cr_assert_eq(t.dev->ops->config_write(t.dev, 36, &zero, 1), 0);
	cr_assert_eq(read_bypass(&t), 0);
	cr_assert_eq(t.dev->ops->config_write(t.dev, 36, four, 4), 0, "a wider write covering bypass");
	cr_assert_eq(read_bypass(&t), 1);
	/* Other fields are read-only; out of range is refused. */
	cr_assert_eq(t.dev->ops->config_write(t.dev, 0, &zero, 1), 0);
	cr_assert_eq(t.dev->ops->config_read(t.dev, 0, &mask, 8), 0);
	cr_assert_eq(le64toh(mask), ~0xfffull);
	cr_assert_eq(t.dev->ops->config_write(t.dev, 40, &zero, 1), -EINVAL);
	cr_assert_eq(t.dev->ops->config_write(t.dev, UINT32_MAX, &zero, 1), -EINVAL);
	tio_down(&t);
}

/* ------------------------------------------------------------------ good paths */

Test(virtio_iommu, attach_map_translate_unmap)
{
	struct tio t;
	uint8_t data[16] = "through the mmu";
	uint8_t back[16];

	tio_up(&t, NULL, 0);
	expect_no_tr(&t, 0, VQM_R2, DMA_READ); /* blocked before attach (bypass 0) */
	cr_assert_eq(attach(&t, 1, EP_A, 0), S(OK));
	cr_assert_eq(map(&t, 1, IOVA, IOVA + 0xffff, VQM_R2, RW), S(OK));
	expect_tr(&t, 0, IOVA, 0x10000, DMA_READ, VQM_R2, 0x10000);
	expect_tr(&t, 0, IOVA + 0x1234, 0x100, DMA_READ | DMA_WRITE, VQM_R2 + 0x1234, 0x100);
	cr_assert_eq(dma_write(t.as[0], IOVA + 0x800, data, sizeof(data)), 0);
	cr_assert_eq(memcmp(vqm_host(&t.rq, VQM_R2 + 0x800, sizeof(data)), data, sizeof(data)), 0);
	cr_assert_eq(dma_read(t.as[0], IOVA + 0x800, back, sizeof(back)), 0);
	cr_assert_eq(memcmp(back, data, sizeof(data)), 0);
	expect_no_tr(&t, 1, IOVA, DMA_READ); /* B is not in the domain */
	expect_no_tr(&t, 0, IOVA + 0x10000, DMA_READ);

	cr_assert_eq(unmap(&t, 1, IOVA, IOVA + 0xffff), S(OK));
	/* The UNMAP completed: nothing of it may translate any more. */
	expect_no_tr(&t, 0, IOVA, DMA_READ);
	expect_no_tr(&t, 0, IOVA + 0xfff8, DMA_WRITE);
	cr_assert_gt(t.irq_queue[RQ], 0, "the driver was interrupted");
	stats_have(&t, "domain 1: 1 endpoints, 0 mappings, 1 map / 1 unmap requests");
	tio_down(&t);
}

Test(virtio_iommu, run_clipped_where_host_memory_stops_being_contiguous)
{
	struct tio t;
	void *host;
	uint64_t run;

	tio_up(&t, NULL, 0);
	cr_assert_eq(attach(&t, 1, EP_A, 0), S(OK));
	/* Contiguous in IOVA and GPA, but the GPA range crosses from R0 into R1: two host runs. */
	cr_assert_eq(map(&t, 1, IOVA, IOVA + 2 * K4 - 1, VQM_R1 - K4, RW), S(OK));
	expect_tr(&t, 0, IOVA + 0x10, 2 * K4 - 0x10, DMA_WRITE, VQM_R1 - K4 + 0x10, K4 - 0x10);
	expect_tr(&t, 0, IOVA + K4, K4, DMA_WRITE, VQM_R1, K4);
	/* Mapped into the hole after R1: the IOMMU allows it, but it is not RAM. No fault is reported. */
	cr_assert_eq(map(&t, 1, IOVA + 0x100000, IOVA + 0x100000 + K4 - 1, VQM_HOLE, RW), S(OK));
	cr_assert_eq(tr(&t, 0, IOVA + 0x100000, 8, DMA_READ, &host, &run), -EFAULT);
	cr_assert_not(fault_fd_ready(&t));
	stats_have(&t, "1 DMA outside RAM");
	tio_down(&t);
}

Test(virtio_iommu, permissions)
{
	struct tio t;
	uint64_t buf = 0;

	tio_up(&t, NULL, 0);
	cr_assert_eq(attach(&t, 1, EP_A, 0), S(OK));
	cr_assert_eq(map(&t, 1, IOVA, IOVA + K4 - 1, VQM_R2, R), S(OK));
	cr_assert_eq(map(&t, 1, IOVA + K4, IOVA + 2 * K4 - 1, VQM_R2 + K4, W), S(OK));
	cr_assert_eq(map(&t, 1, IOVA + 2 * K4, IOVA + 3 * K4 - 1, VQM_R2 + 2 * K4, 0), S(OK));
	buf = add_evbuf(&t, 24);
	expect_tr(&t, 0, IOVA, K4, DMA_READ, VQM_R2, K4);
	expect_no_tr(&t, 0, IOVA + 8, DMA_WRITE);
	expect_tr(&t, 0, IOVA + K4, K4, DMA_WRITE, VQM_R2 + K4, K4);
	expect_no_tr(&t, 0, IOVA + 2 * K4, DMA_READ);
	/* The first refusal went out as an event; the others were dropped for want of buffers. */
	fault_event(&t);
	expect_event(&t, 0, buf, VIRTIO_IOMMU_FAULT_R_MAPPING, VIRTIO_IOMMU_FAULT_F_WRITE | FA, EP_A, IOVA + 8);
	stats_have(&t, "faults: 2, 1 reported, 1 dropped");
	tio_down(&t);
}

Test(virtio_iommu, bypass_config_and_bypass_domains)
{
	struct viommu_config c = def_cfg;
	struct tio t;
	uint8_t zero = 0;
	struct sub s;

	c.bypass = true;
	tio_up(&t, &c, 0);
	sub_init(&s, &t, 1);
	/* Unattached endpoints bypass: identity over guest memory, clipped to the region. */
	expect_tr(&t, 1, VQM_R2 + 0x10, 0x100, DMA_WRITE, VQM_R2 + 0x10, 0x100);
	expect_tr(&t, 1, VQM_R1 - 8, 64, DMA_READ, VQM_R1 - 8, 8);
	/* Attached endpoints do not. */
	cr_assert_eq(attach(&t, 1, EP_A, 0), S(OK));
	expect_no_tr(&t, 0, VQM_R2, DMA_READ);
	/* The driver turns bypass off: unattached endpoints are blocked, their caches flushed. */
	cr_assert_eq(t.dev->ops->config_write(t.dev, 36, &zero, 1), 0);
	expect_no_tr(&t, 1, VQM_R2, DMA_READ);
	cr_assert_eq(s.nun, 1);
	cr_assert_eq(s.un_len[0], UINT64_MAX);

	/* A bypass domain (ATTACH_F_BYPASS): identity, and no MAP/UNMAP on it. */
	cr_assert_eq(attach(&t, 7, EP_B, VIRTIO_IOMMU_ATTACH_F_BYPASS), S(OK));
	expect_tr(&t, 1, VQM_R2, 0x20, DMA_READ, VQM_R2, 0x20);
	cr_assert_eq(map(&t, 7, IOVA, IOVA + K4 - 1, VQM_R2, RW), S(INVAL));
	cr_assert_eq(unmap(&t, 7, IOVA, IOVA + K4 - 1), S(INVAL));
	/* The flag must agree with the domain's kind. */
	cr_assert_eq(attach(&t, 7, EP_C, 0), S(INVAL));
	cr_assert_eq(attach(&t, 1, EP_C, VIRTIO_IOMMU_ATTACH_F_BYPASS), S(INVAL));
	cr_assert_eq(attach(&t, 7, EP_C, VIRTIO_IOMMU_ATTACH_F_BYPASS), S(OK));
	stats_have(&t, "domain 7: bypass, 2 endpoints");
	cr_assert_eq(detach(&t, 7, EP_B), S(OK));
	expect_no_tr(&t, 1, VQM_R2, DMA_READ);
	tio_down(&t);
}

Test(virtio_iommu, attach_moves_and_last_detach_destroys)
{
	struct tio t;
	struct sub s;

	tio_up(&t, NULL, 0);
	sub_init(&s, &t, 0);
	cr_assert_eq(attach(&t, 1, EP_A, 0), S(OK));
	cr_assert_eq(s.nun, 1, "subscriber told of the domain change");
	cr_assert_eq(s.un_iova[0], 0);
	cr_assert_eq(s.un_len[0], UINT64_MAX);
	cr_assert_eq(attach(&t, 1, EP_A, 0), S(OK), "attaching again to the same domain is fine");
	cr_assert_eq(s.nun, 1, "and changes nothing");
	cr_assert_eq(attach(&t, 1, EP_B, 0), S(OK));
	cr_assert_eq(map(&t, 1, IOVA, IOVA + K4 - 1, VQM_R2, RW), S(OK));
	cr_assert_eq(s.nmap, 1, "MAP forwarded to the subscriber");
	cr_assert_eq(s.map_iova, IOVA);
	cr_assert_eq(s.map_gpa, VQM_R2);
	cr_assert_eq(s.map_len, K4);
	cr_assert_eq(s.map_perm, RW);
	expect_tr(&t, 1, IOVA, K4, DMA_READ, VQM_R2, K4);

	/* A moves to domain 2: domain 1 lives on for B, A sees only domain 2. */
	cr_assert_eq(attach(&t, 2, EP_A, 0), S(OK));
	cr_assert_eq(s.nun, 2);
	expect_no_tr(&t, 0, IOVA, DMA_READ);
	expect_tr(&t, 1, IOVA, K4, DMA_READ, VQM_R2, K4);
	/* Domain 1 mappings no longer reach A's subscriber. */
	cr_assert_eq(unmap(&t, 1, IOVA, IOVA + K4 - 1), S(OK));
	cr_assert_eq(s.nun, 2);
	cr_assert_eq(map(&t, 1, IOVA, IOVA + K4 - 1, VQM_R2, RW), S(OK));

	/* B's detach empties domain 1: it is destroyed with its mappings. */
	cr_assert_eq(detach(&t, 1, EP_B), S(OK));
	stats_lack(&t, "domain 1:");
	cr_assert_eq(map(&t, 1, IOVA, IOVA + K4 - 1, VQM_R2, RW), S(NOENT));
	cr_assert_eq(attach(&t, 1, EP_B, 0), S(OK), "the id can be reused");
	expect_no_tr(&t, 1, IOVA, DMA_READ); /* a fresh domain: no old mapping came back */
	/* ATTACH of A's last domain's only endpoint elsewhere destroys it too. */
	cr_assert_eq(attach(&t, 1, EP_A, 0), S(OK));
	stats_lack(&t, "domain 2:");
	stats_have(&t, "domain 1: 2 endpoints");
	tio_down(&t);
}

Test(virtio_iommu, unmap_reaches_subscribers_before_completing)
{
	struct tio t;
	struct sub s;
	uint16_t before;

	tio_up(&t, NULL, 0);
	cr_assert_eq(attach(&t, 1, EP_A, 0), S(OK));
	sub_init(&s, &t, 0);
	cr_assert_eq(map(&t, 1, IOVA, IOVA + K4 - 1, VQM_R2, RW), S(OK));
	cr_assert_eq(map(&t, 1, IOVA + K4, IOVA + 3 * K4 - 1, VQM_R2 + K4, R), S(OK));
	before = vqm_used_idx(&t.rq);
	cr_assert_eq(unmap(&t, 1, 0, IOVA + 0x100000), S(OK));
	cr_assert_eq(s.nun, 1, "adjacent mappings go out as one range");
	cr_assert_eq(s.un_iova[0], IOVA);
	cr_assert_eq(s.un_len[0], 3 * K4);
	cr_assert_eq(s.un_used_idx[0], before, "the subscriber heard before the request completed");
	expect_no_tr(&t, 0, IOVA + K4, DMA_READ);
	tio_down(&t);
}

Test(virtio_iommu, probe)
{
	struct tio t;
	uint8_t w[PROBE_W + 100];
	struct virtio_iommu_probe_resv_mem m;

	tio_up(&t, NULL, 0);
	cr_assert_eq(probe(&t, EP_B, PROBE_W, w), PROBE_W);
	memcpy(&m, w, sizeof(m));
	cr_assert_eq(le16toh(m.head.type), VIRTIO_IOMMU_PROBE_T_RESV_MEM);
	cr_assert_eq(le16toh(m.head.length), 20, "length excludes the property header");
	cr_assert_eq(m.subtype, VIRTIO_IOMMU_RESV_MEM_T_MSI);
	cr_assert(m.reserved[0] == 0 && m.reserved[1] == 0 && m.reserved[2] == 0);
	cr_assert_eq(le64toh(m.start), MSI_S);
	cr_assert_eq(le64toh(m.end), MSI_E);
	for (unsigned int i = sizeof(m); i < 512; i++)
		cr_assert_eq(w[i], 0, "byte %u: the rest is zeros (NONE ends the list)", i);
	cr_assert_eq(w[512], S(OK));
	cr_assert(w[513] == 0 && w[514] == 0 && w[515] == 0);

	/* Unknown endpoint: NOENT, every writable byte written (Linux checks used == writable length). */
	cr_assert_eq(probe(&t, 99, PROBE_W, w), PROBE_W);
	for (unsigned int i = 0; i < 512; i++)
		cr_assert_eq(w[i], 0, "no property for an endpoint that does not exist");
	cr_assert_eq(w[512], S(NOENT));

	/* Fewer than probe_size bytes of properties: INVAL and no property. */
	cr_assert_eq(probe(&t, EP_A, 100, w), 100);
	for (unsigned int i = 0; i < 96; i++)
		cr_assert_eq(w[i], 0);
	cr_assert_eq(w[96], S(INVAL));

	/* More room than the type has: the tail's place is unknown, the buffers go back unwritten. */
	cr_assert_eq(probe(&t, EP_A, PROBE_W + 100, w), 0);
	cr_assert_eq(w[0], 0xa5);
	cr_assert_eq(w[PROBE_W + 99], 0xa5);
	tio_down(&t);

	/* No MSI window configured: an empty list. */
	struct viommu_config c = def_cfg;

	c.msi_start = 1;
	c.msi_end = 0;
	tio_up(&t, &c, 0);
	cr_assert_eq(probe(&t, EP_A, PROBE_W, w), PROBE_W);
	for (unsigned int i = 0; i < 512; i++)
		cr_assert_eq(w[i], 0);
	cr_assert_eq(w[512], S(OK));
	/* ... and then nothing is reserved for MAP. */
	cr_assert_eq(attach(&t, 1, EP_A, 0), S(OK));
	cr_assert_eq(map(&t, 1, MSI_S, MSI_S + K4 - 1, VQM_R2, RW), S(OK));
	tio_down(&t);
}

/* ------------------------------------------------------------------ bad requests */

Test(virtio_iommu, unparsable_requests_come_back_unwritten)
{
	struct tio t;
	struct virtio_iommu_req_attach a = attach_req(1, EP_A, 0);
	struct virtio_iommu_req_map m = map_req(1, IOVA, IOVA + K4 - 1, VQM_R2, RW);
	uint8_t big[64] = { VIRTIO_IOMMU_T_ATTACH };
	uint8_t w[16];

	tio_up(&t, NULL, 0);
	/* No writable part, or one too small for a tail: nowhere to put a status. */
	cr_assert_eq(send_raw(&t, &a, 20, 0, NULL), 0);
	cr_assert_eq(send_raw(&t, &a, 20, 3, w), 0);
	cr_assert_eq(w[0] & w[1] & w[2], 0xa5, "untouched");
	/* Not even a type. */
	cr_assert_eq(send_raw(&t, &a, 2, 4, w), 0);
	cr_assert_eq(w[0], 0xa5);
	/* 5.13.6.2: a type not recognised is not written, used length 0. */
	a.head.type = 0;
	cr_assert_eq(send_raw(&t, &a, 20, 4, w), 0);
	a.head.type = 6;
	cr_assert_eq(send_raw(&t, &a, 20, 4, w), 0);
	a.head.type = 0xff;
	cr_assert_eq(send_raw(&t, &a, 20, 4, w), 0);
	cr_assert_eq(w[0] & w[3], 0xa5);
	/* A MAP with more writable room than a tail. */
	cr_assert_eq(send_raw(&t, &m, 36, 8, w), 0);
	stats_have(&t, "0 map, 0 unmap, 0 probe, 7 unparsable");
	cr_assert(virtio_dev_live(t.dev), "none of this is a reason to stop");

	/* Readable part too short for the type, tail present: INVAL, nothing done. */
	a = attach_req(1, EP_A, 0);
	cr_assert_eq(req(&t, &a, 12), S(INVAL));
	cr_assert_eq(map(&t, 1, IOVA, IOVA + K4 - 1, VQM_R2, RW), S(NOENT), "the short ATTACH did nothing");
	/* Longer than the type: the extra readable bytes are ignored. */
	memcpy(big, &a, 20);
	cr_assert_eq(req(&t, big, sizeof(big)), S(OK));
	cr_assert_eq(req(&t, &m, 30), S(INVAL));
	tio_down(&t);
}

Test(virtio_iommu, requests_for_features_not_negotiated)
{
	struct tio t;
	struct virtio_iommu_req_map m = map_req(1, IOVA, IOVA + K4 - 1, VQM_R2, RW);
	uint8_t w[PROBE_W];

	tio_up(&t, NULL, F(MAP_UNMAP) | F(PROBE) | F(BYPASS_CONFIG));
	cr_assert_eq(attach(&t, 1, EP_A, 0), S(OK));
	cr_assert_eq(send_raw(&t, &m, 36, 4, w), 0, "MAP without MAP_UNMAP is not recognised");
	cr_assert_eq(w[0], 0xa5);
	cr_assert_eq(probe(&t, EP_A, PROBE_W, w), 0, "PROBE without PROBE likewise");
	cr_assert_eq(attach(&t, 2, EP_B, VIRTIO_IOMMU_ATTACH_F_BYPASS), S(INVAL),
		     "ATTACH_F_BYPASS is an unknown flag without BYPASS_CONFIG");
	tio_down(&t);
}

Test(virtio_iommu, bad_attach)
{
	struct tio t;
	struct virtio_iommu_req_attach a = attach_req(1, EP_A, 0);

	tio_up(&t, NULL, 0);
	a.reserved[3] = 1;
	cr_assert_eq(req(&t, &a, 20), S(INVAL), "reserved not zero: MUST INVAL");
	cr_assert_eq(attach(&t, 1, EP_A, 2), S(INVAL), "unknown flag");
	cr_assert_eq(attach(&t, 1, EP_A, 0x80000000u), S(INVAL));
	cr_assert_eq(attach(&t, 1, 99, 0), S(NOENT));
	cr_assert_eq(attach(&t, 0x10000, EP_A, 0), S(RANGE), "beyond domain_range");
	cr_assert_eq(attach(&t, UINT32_MAX, EP_A, 0), S(RANGE));
	stats_lack(&t, "domain");
	cr_assert_eq(attach(&t, 0xffff, EP_A, 0), S(OK), "the last id of the range is fine");
	cr_assert_eq(attach(&t, 0, EP_B, 0), S(OK), "and so is the first");
	tio_down(&t);
}

Test(virtio_iommu, domain_cap_is_nomem)
{
	struct viommu_config c = def_cfg;
	struct tio t;

	c.max_domains = 2;
	tio_up(&t, &c, 0);
	cr_assert_eq(attach(&t, 1, EP_A, 0), S(OK));
	cr_assert_eq(attach(&t, 2, EP_B, 0), S(OK));
	cr_assert_eq(attach(&t, 3, EP_C, 0), S(NOMEM));
	expect_no_tr(&t, 2, VQM_R2, DMA_READ);
	cr_assert_eq(attach(&t, 1, EP_C, 0), S(OK), "an existing domain takes more endpoints");
	cr_assert_eq(attach(&t, 3, EP_C, 0), S(NOMEM), "C leaving domain 1 does not empty it");
	cr_assert_eq(attach(&t, 3, EP_B, 0), S(OK), "B leaving domain 2 frees its slot");
	stats_lack(&t, "domain 2:");
	stats_have(&t, "domain 3: 1 endpoints");
	tio_down(&t);
}

Test(virtio_iommu, bad_detach)
{
	struct tio t;

	tio_up(&t, NULL, 0);
	cr_assert_eq(attach(&t, 1, EP_A, 0), S(OK));
	cr_assert_eq(detach(&t, 1, 99), S(NOENT));
	cr_assert_eq(detach(&t, 0x10000, EP_A), S(RANGE));
	cr_assert_eq(detach(&t, 2, EP_A), S(INVAL), "A is not in domain 2");
	cr_assert_eq(detach(&t, 1, EP_B), S(INVAL), "B is in no domain");
	stats_have(&t, "domain 1: 1 endpoints");
	cr_assert_eq(detach(&t, 1, EP_A), S(OK));
	cr_assert_eq(detach(&t, 1, EP_A), S(INVAL), "twice");
	tio_down(&t);
}

Test(virtio_iommu, bad_map)
{
	struct tio t;

	tio_up(&t, NULL, 0);
	cr_assert_eq(map(&t, 1, IOVA, IOVA + K4 - 1, VQM_R2, RW), S(NOENT), "no such domain");
	cr_assert_eq(map(&t, 0x10000, IOVA, IOVA + K4 - 1, VQM_R2, RW), S(RANGE));
	cr_assert_eq(attach(&t, 1, EP_A, 0), S(OK));
	cr_assert_eq(map(&t, 1, IOVA, IOVA + K4 - 1, VQM_R2, RW | VIRTIO_IOMMU_MAP_F_MMIO), S(INVAL),
		     "MMIO was not offered");
	cr_assert_eq(map(&t, 1, IOVA, IOVA + K4 - 1, VQM_R2, 8), S(INVAL));
	cr_assert_eq(map(&t, 1, IOVA + 0x10, IOVA + K4 - 1, VQM_R2, RW), S(RANGE), "virt_start unaligned");
	cr_assert_eq(map(&t, 1, IOVA, IOVA + K4 - 2, VQM_R2, RW), S(RANGE), "virt_end + 1 unaligned");
	cr_assert_eq(map(&t, 1, IOVA, IOVA + K4 - 1, VQM_R2 + 8, RW), S(RANGE), "phys_start unaligned");
	cr_assert_eq(map(&t, 1, IOVA + K4, IOVA - 1, VQM_R2, RW), S(INVAL), "end before start");
	cr_assert_eq(map(&t, 1, 1ull << 48, (1ull << 48) + K4 - 1, VQM_R2, RW), S(RANGE), "beyond input_range");
	cr_assert_eq(map(&t, 1, (1ull << 48) - K4, (1ull << 48) + K4 - 1, VQM_R2, RW), S(RANGE), "straddling it");
	cr_assert_eq(map(&t, 1, 0, UINT64_MAX, 0, RW), S(RANGE), "the whole 64-bit space");
	cr_assert_eq(map(&t, 1, IOVA, IOVA + 2 * K4 - 1, UINT64_MAX - K4 + 1, RW), S(RANGE), "phys range wraps");
	cr_assert_eq(map(&t, 1, MSI_E + 1 - K4, MSI_E + K4, VQM_R2, RW), S(INVAL), "overlaps the MSI window");
	stats_have(&t, "domain 1: 1 endpoints, 0 mappings");

	cr_assert_eq(map(&t, 1, IOVA, IOVA + 4 * K4 - 1, VQM_R2, RW), S(OK));
	cr_assert_eq(map(&t, 1, IOVA + 3 * K4, IOVA + 5 * K4 - 1, VQM_R2, RW), S(INVAL), "overlap");
	cr_assert_eq(map(&t, 1, IOVA - K4, IOVA, VQM_R2, RW), S(RANGE), "unaligned end comes first");
	cr_assert_eq(map(&t, 1, IOVA - K4, IOVA + K4 - 1, VQM_R2, RW), S(INVAL), "overlap from below");
	cr_assert_eq(map(&t, 1, IOVA + K4, IOVA + 2 * K4 - 1, VQM_R2, RW), S(INVAL), "inside");
	expect_tr(&t, 0, IOVA, 4 * K4, DMA_READ, VQM_R2, 4 * K4);
	stats_have(&t, "domain 1: 1 endpoints, 1 mappings");
	tio_down(&t);
}

Test(virtio_iommu, mapping_and_table_caps_are_nomem)
{
	struct viommu_config c = def_cfg;
	struct tio t;

	c.max_mappings = 3;
	c.max_table_bytes = 4 * IOMMU_PT_TABLE_BYTES;
	tio_up(&t, &c, 0);
	cr_assert_eq(attach(&t, 1, EP_A, 0), S(OK));
	cr_assert_eq(attach(&t, 2, EP_B, 0), S(OK));
	for (unsigned int i = 0; i < 3; i++)
		cr_assert_eq(map(&t, 1, IOVA + i * K4, IOVA + (i + 1) * K4 - 1, VQM_R2, R), S(OK));
	cr_assert_eq(map(&t, 1, IOVA + 3 * K4, IOVA + 4 * K4 - 1, VQM_R2, R), S(NOMEM), "mapping cap");
	cr_assert_eq(unmap(&t, 1, IOVA, IOVA + K4 - 1), S(OK));
	cr_assert_eq(map(&t, 1, IOVA + 3 * K4, IOVA + 4 * K4 - 1, VQM_R2, R), S(OK), "room again");
	/* Root and three levels down to one 4 KiB leaf fill the budget; 512 GiB away needs three more. */
	cr_assert_eq(map(&t, 2, IOVA, IOVA + K4 - 1, VQM_R2, R), S(OK));
	cr_assert_eq(map(&t, 2, 1ull << 39, (1ull << 39) + K4 - 1, VQM_R2, R), S(NOMEM), "table bytes");
	expect_no_tr(&t, 1, 1ull << 39, DMA_READ);
	stats_have(&t, "domain 2: 1 endpoints, 1 mappings");
	tio_down(&t);
}

Test(virtio_iommu, bad_unmap)
{
	struct tio t;
	struct virtio_iommu_req_unmap u = { .head.type = VIRTIO_IOMMU_T_UNMAP,
					    .domain = htole32(1),
					    .virt_start = htole64(IOVA),
					    .virt_end = htole64(IOVA + 2 * K4 - 1),
					    .reserved = { 0, 0, 1, 0 } };

	tio_up(&t, NULL, 0);
	cr_assert_eq(unmap(&t, 1, IOVA, IOVA + K4 - 1), S(NOENT));
	cr_assert_eq(unmap(&t, 0x10000, IOVA, IOVA + K4 - 1), S(RANGE));
	cr_assert_eq(attach(&t, 1, EP_A, 0), S(OK));
	cr_assert_eq(map(&t, 1, IOVA, IOVA + 2 * K4 - 1, VQM_R2, RW), S(OK));
	cr_assert_eq(req(&t, &u, 28), S(INVAL), "reserved not zero");
	expect_tr(&t, 0, IOVA, 2 * K4, DMA_READ, VQM_R2, 2 * K4); /* and nothing was removed */
	cr_assert_eq(unmap(&t, 1, IOVA, IOVA + K4 - 1), S(RANGE), "would split the mapping");
	cr_assert_eq(unmap(&t, 1, IOVA + K4, IOVA + 3 * K4 - 1), S(RANGE), "from the middle");
	expect_tr(&t, 0, IOVA, 2 * K4, DMA_READ, VQM_R2, 2 * K4);
	cr_assert_eq(unmap(&t, 1, IOVA + K4, IOVA), S(INVAL), "end before start");
	cr_assert_eq(unmap(&t, 1, 0, 1ull << 48), S(RANGE), "beyond input_range");
	cr_assert_eq(unmap(&t, 1, 0, 0xfff), S(OK), "nothing mapped there is fine (example 1)");
	cr_assert_eq(unmap(&t, 1, 0, (1ull << 48) - 1), S(OK), "the whole range (example 6)");
	expect_no_tr(&t, 0, IOVA, DMA_READ);
	tio_down(&t);
}

/* ------------------------------------------------------------------ faults and events */

Test(virtio_iommu, fault_events)
{
	struct tio t;
	uint64_t b0, b1, small, b2;
	void *host;
	uint64_t run;

	tio_up(&t, NULL, 0);
	cr_assert_not(fault_fd_ready(&t));
	b0 = add_evbuf(&t, 24);
	/* Not attached, bypass off: a DOMAIN fault, the worker is woken. */
	cr_assert_eq(tr(&t, 2, 0x5000, 8, DMA_READ, &host, &run), -EFAULT);
	cr_assert(fault_fd_ready(&t), "the fault eventfd is signalled");
	fault_event(&t);
	cr_assert_not(fault_fd_ready(&t), "and drained");
	expect_event(&t, 0, b0, VIRTIO_IOMMU_FAULT_R_DOMAIN, VIRTIO_IOMMU_FAULT_F_READ | FA, EP_C, 0x5000);
	cr_assert_eq(t.irq_queue[EQ], 1);

	/* Attached, unmapped: MAPPING; a read-write access reports both flags. */
	cr_assert_eq(attach(&t, 1, EP_B, 0), S(OK));
	small = add_evbuf(&t, 16);
	b1 = add_evbuf(&t, 64);
	cr_assert_eq(tr(&t, 1, IOVA + 0x123, 4, DMA_READ | DMA_WRITE, &host, &run), -EFAULT);
	fault_event(&t);
	cr_assert_eq(vqm_used_idx(&t.eq), 3, "a buffer too small went back unused, the next took the report");
	{
		uint32_t id, len;

		vqm_used_elem(&t.eq, 1, &id, &len);
		cr_assert_eq(len, 0);
		cr_assert_eq(*(uint8_t *)vqm_host(&t.eq, small, 1), 0xa5);
	}
	expect_event(&t, 2, b1, VIRTIO_IOMMU_FAULT_R_MAPPING,
		     VIRTIO_IOMMU_FAULT_F_READ | VIRTIO_IOMMU_FAULT_F_WRITE | FA, EP_B, IOVA + 0x123);
	cr_assert_eq(*(uint8_t *)vqm_host(&t.eq, b1 + 24, 1), 0xa5, "nothing written past the report");

	/* No buffer: dropped, not kept for later. */
	cr_assert_eq(tr(&t, 1, IOVA, 4, DMA_WRITE, &host, &run), -EFAULT);
	fault_event(&t);
	cr_assert_eq(vqm_used_idx(&t.eq), 3);
	b2 = add_evbuf(&t, 24);
	fault_event(&t); /* a spurious wake-up posts nothing */
	cr_assert_eq(vqm_used_idx(&t.eq), 3);
	cr_assert_eq(tr(&t, 1, IOVA + K4, 4, DMA_WRITE, &host, &run), -EFAULT);
	fault_event(&t);
	expect_event(&t, 3, b2, VIRTIO_IOMMU_FAULT_R_MAPPING, VIRTIO_IOMMU_FAULT_F_WRITE | FA, EP_B, IOVA + K4);
	stats_have(&t, "faults: 4, 3 reported, 1 dropped");
	tio_down(&t);
}

Test(virtio_iommu, fault_queue_is_bounded)
{
	struct tio t;
	uint64_t first = 0;
	void *host;
	uint64_t run;

	tio_up(&t, NULL, 0);
	for (unsigned int i = 0; i < 64; i++) {
		uint64_t a = add_evbuf(&t, 24);

		if (!i)
			first = a;
	}
	/* The same fault repeated: each is reported, up to the queue's bound. */
	for (unsigned int i = 0; i < 70; i++)
		cr_assert_eq(tr(&t, 0, 0x7000, 8, DMA_WRITE, &host, &run), -EFAULT);
	fault_event(&t);
	cr_assert_eq(vqm_used_idx(&t.eq), 64);
	expect_event(&t, 0, first, VIRTIO_IOMMU_FAULT_R_DOMAIN, VIRTIO_IOMMU_FAULT_F_WRITE | FA, EP_A, 0x7000);
	cr_assert_eq(t.irq_queue[EQ], 1, "one interrupt for the batch");
	stats_have(&t, "faults: 70, 64 reported, 6 dropped");
	tio_down(&t);
}

Test(virtio_iommu, faults_before_driver_ok_are_dropped)
{
	struct tio t;
	void *host;
	uint64_t run;

	tio_create(&t, NULL);
	cr_assert_eq(tr(&t, 0, 0x7000, 8, DMA_WRITE, &host, &run), -EFAULT);
	cr_assert(fault_fd_ready(&t));
	fault_event(&t);
	cr_assert_not(fault_fd_ready(&t), "read even when not live: the fd is level-triggered");
	stats_have(&t, "faults: 1, 0 reported, 1 dropped");
	tio_down(&t);
}

/* ------------------------------------------------------------------ endpoints, reset, queues */

Test(virtio_iommu, endpoints)
{
	struct tio t;
	struct viommu_endpoint *e, *more;
	struct sub s[5];
	struct iommu_notifier none = { .ctx = NULL };

	tio_up(&t, NULL, 0);
	cr_assert_eq(virtio_iommu_endpoint_new(t.v, &e), 0);
	cr_assert_eq(attach(&t, 1, 32, 0), S(NOENT), "no id yet: invisible");
	virtio_iommu_endpoint_set_id(e, 32);
	cr_assert_eq(attach(&t, 1, 32, 0), S(OK));
	cr_assert_eq(virtio_iommu_endpoint_notifier(e, &none), -EINVAL);
	cr_assert_eq(virtio_iommu_endpoint_notifier(e, NULL), -EINVAL);
	for (unsigned int i = 0; i < 4; i++) {
		s[i] = (struct sub){ .t = &t };
		s[i].n = (struct iommu_notifier){ .unmapped = sub_unmapped, .ctx = &s[i] };
		cr_assert_eq(virtio_iommu_endpoint_notifier(e, &s[i].n), 0);
	}
	cr_assert_eq(virtio_iommu_endpoint_notifier(e, &s[0].n), -EEXIST);
	s[4] = (struct sub){ .t = &t };
	s[4].n = (struct iommu_notifier){ .unmapped = sub_unmapped, .ctx = &s[4] };
	cr_assert_eq(virtio_iommu_endpoint_notifier(e, &s[4].n), -ENOSPC);
	cr_assert_eq(detach(&t, 1, 32), S(OK));
	for (unsigned int i = 0; i < 4; i++)
		cr_assert_eq(s[i].nun, 1, "every subscriber is told");
	/* 256 endpoints at most (3 + 1 exist). */
	for (unsigned int i = 4; i < 256; i++)
		cr_assert_eq(virtio_iommu_endpoint_new(t.v, &more), 0);
	cr_assert_eq(virtio_iommu_endpoint_new(t.v, &more), -ENOSPC);
	tio_down(&t);
}

Test(virtio_iommu, reset)
{
	struct viommu_config c = def_cfg;
	struct tio t;
	struct sub s;
	uint8_t one = 1;
	void *host;
	uint64_t run;

	tio_up(&t, &c, 0);
	sub_init(&s, &t, 0);
	cr_assert_eq(attach(&t, 1, EP_A, 0), S(OK));
	cr_assert_eq(attach(&t, 2, EP_B, 0), S(OK));
	cr_assert_eq(map(&t, 1, IOVA, IOVA + K4 - 1, VQM_R2, RW), S(OK));
	cr_assert_eq(tr(&t, 2, 0x9000, 8, DMA_READ, &host, &run), -EFAULT); /* a fault left queued */
	cr_assert_eq(virtio_set_status(t.dev, 0), 0);
	stats_lack(&t, "domain");
	stats_have(&t, "faults: 1, 0 reported, 1 dropped");
	cr_assert_eq(s.nun, 2, "the subscriber dropped everything at reset");
	cr_assert_eq(s.un_len[1], UINT64_MAX);
	expect_no_tr(&t, 0, IOVA, DMA_READ);

	/* Up again: bypass set by the driver survives the next device reset (5.13.4.2). */
	tio_restart_rings(&t);
	tio_start(&t, 0);
	cr_assert_eq(map(&t, 1, IOVA, IOVA + K4 - 1, VQM_R2, RW), S(NOENT), "domains are gone");
	cr_assert_eq(t.dev->ops->config_write(t.dev, 36, &one, 1), 0);
	cr_assert_eq(attach(&t, 1, EP_A, 0), S(OK));
	virtio_reset(t.dev);
	cr_assert_eq(read_bypass(&t), 1);
	expect_tr(&t, 0, VQM_R2, 8, DMA_READ, VQM_R2, 8); /* detached, so bypassing */
	tio_down(&t);
}

Test(virtio_iommu, batch_and_broken_chain)
{
	struct tio t;
	struct virtio_iommu_req_attach a = attach_req(1, EP_A, 0);
	struct vqm_buf b[2] = { { 0, 20, false }, { 0, 4, true } };
	uint16_t h;

	tio_up(&t, NULL, VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX));
	for (unsigned int i = 0; i < 3; i++) {
		b[0].addr = b[1].addr = 0;
		h = vqm_chain(&t.rq, b, 2);
		a.endpoint = htole32(i == 0 ? EP_A : i == 1 ? EP_B : EP_C);
		memcpy(vqm_host(&t.rq, b[0].addr, 20), &a, 20);
		vqm_publish(&t.rq, h);
	}
	virtio_queue_notify(t.dev, RQ);
	cr_assert_eq(vqm_used_idx(&t.rq), 3);
	cr_assert_eq(t.irq_queue[RQ], 1, "one interrupt per batch");
	stats_have(&t, "domain 1: 3 endpoints");

	/* A descriptor pointing into the hole: the queue is broken until a reset. */
	vqm_set_desc(&t.rq, t.rq.next_desc, VQM_HOLE, 20, 0, 0);
	vqm_publish(&t.rq, t.rq.next_desc++);
	virtio_queue_notify(t.dev, RQ);
	cr_assert(t.dev->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
	cr_assert_eq(t.irq_config, 1);
	tio_down(&t);
}

/* ------------------------------------------------------------------ concurrency */

struct racer {
	struct tio *t;
	int stop, running;
	unsigned long ok, refused;
	const char *bad;
};

/* Another device's worker: translating all the time while the IOMMU's thread changes domains. */
static void *race_translate(void *arg)
{
	struct racer *r = arg;
	void *want = vqm_host(&r->t->rq, VQM_R2, 1);

	__atomic_store_n(&r->running, 1, __ATOMIC_RELEASE);
	while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
		void *host;
		uint64_t run;
		int err = dma_translate(r->t->as[0], IOVA, K4, DMA_READ, &host, &run);

		if (!err && (host != want || run != K4))
			r->bad = "a translation that is neither the mapping nor a refusal";
		else if (err && err != -EFAULT)
			r->bad = "an unexpected error";
		if (err)
			r->refused++;
		else
			r->ok++;
	}
	return NULL;
}

Test(virtio_iommu, translations_race_domain_changes)
{
	struct tio t;
	struct racer r = { .t = &t };
	pthread_t th;

	tio_up(&t, NULL, 0);
	cr_assert_eq(pthread_create(&th, NULL, race_translate, &r), 0);
	while (!__atomic_load_n(&r.running, __ATOMIC_ACQUIRE))
		sched_yield();
	/* 4 requests a round, 2 descriptors each: 30 rounds fit the mock's 256 descriptors. */
	for (unsigned int i = 0; i < 30; i++) {
		cr_assert_eq(attach(&t, 1 + i % 2, EP_A, 0), S(OK));
		cr_assert_eq(map(&t, 1 + i % 2, IOVA, IOVA + K4 - 1, VQM_R2, RW), S(OK));
		cr_assert_eq(unmap(&t, 1 + i % 2, IOVA, IOVA + K4 - 1), S(OK));
		cr_assert_eq(map(&t, 1 + i % 2, IOVA, IOVA + K4 - 1, VQM_R2, RW), S(OK));
	}
	__atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE);
	cr_assert_eq(pthread_join(th, NULL), 0);
	cr_assert_null(r.bad, "%s", r.bad);
	cr_assert_gt(r.ok + r.refused, 0);
	expect_tr(&t, 0, IOVA, K4, DMA_READ, VQM_R2, K4);
	tio_down(&t);
}

/* ------------------------------------------------------------------ vhost device IOTLB */

/*
 * The vhost IOTLB service (vhost/iotlb.c) against real endpoints: the "vhost fd" is one end of a
 * SOCK_SEQPACKET socketpair carrying struct vhost_msg_v2; the test plays the kernel on the other end.
 */
struct vt {
	struct tio t;
	struct vhost_iotlb io;
	int fd[2]; /* [0] moat's end, [1] the fake vhost */
};

static int vt_resolve(void *ctx, uint64_t iova, unsigned int perm, uint64_t max_len, bool report,
		      int (*emit)(void *arg, const struct viommu_run *run), void *arg)
{
	return virtio_iommu_endpoint_resolve(ctx, iova, perm, max_len, report, emit, arg);
}

static void vt_up(struct vt *v, const struct viommu_config *cfg, int prefetch)
{
	tio_up(&v->t, cfg, 0);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, v->fd), 0);
	cr_assert_eq(vhost_iotlb_init(&v->io, v->fd[0], vt_resolve, v->t.ep[0], prefetch), 0);
	cr_assert_eq(virtio_iommu_endpoint_notifier(v->t.ep[0], vhost_iotlb_notifier(&v->io)), 0);
	vhost_iotlb_set_active(&v->io, true);
}

static void vt_down(struct vt *v)
{
	vhost_iotlb_fini(&v->io);
	close(v->fd[0]);
	close(v->fd[1]);
	tio_down(&v->t);
}

/* What vhost would queue on a miss. */
static void vt_miss(struct vt *v, uint64_t iova, unsigned int perm)
{
	struct vhost_msg_v2 m = { .type = VHOST_IOTLB_MSG_V2 };

	m.iotlb.iova = iova;
	m.iotlb.perm = (uint8_t)perm;
	m.iotlb.type = VHOST_IOTLB_MISS;
	cr_assert_eq(write(v->fd[1], &m, sizeof(m)), (ssize_t)sizeof(m));
}

/* The next message moat wrote, or false if there is none. */
static bool vt_next(struct vt *v, struct vhost_iotlb_msg *out)
{
	struct vhost_msg_v2 m;
	ssize_t n = read(v->fd[1], &m, sizeof(m));

	if (n < 0 && errno == EAGAIN)
		return false;
	cr_assert_eq(n, (ssize_t)sizeof(m), "moat writes whole 72-byte messages");
	cr_assert_eq(m.type, VHOST_IOTLB_MSG_V2);
	*out = m.iotlb;
	return true;
}

static void vt_expect(struct vt *v, uint8_t type, uint64_t iova, uint64_t size, uint64_t gpa, uint8_t perm)
{
	struct vhost_iotlb_msg m;

	cr_assert(vt_next(v, &m), "a message (type %u iova %#llx) was written", type, (unsigned long long)iova);
	cr_assert_eq(m.type, type, "type %u, want %u", m.type, type);
	cr_assert_eq(m.iova, iova, "iova %#llx, want %#llx", (unsigned long long)m.iova, (unsigned long long)iova);
	cr_assert_eq(m.size, size, "size %#llx, want %#llx", (unsigned long long)m.size, (unsigned long long)size);
	if (type == VHOST_IOTLB_UPDATE) {
		cr_assert_eq(m.uaddr, (uint64_t)(uintptr_t)vqm_host(&v->t.rq, gpa, 1), "uaddr is gpa %#llx's host address",
			     (unsigned long long)gpa);
		cr_assert_eq(m.perm, perm, "perm %u, want %u", m.perm, perm);
	}
}

static void vt_expect_none(struct vt *v)
{
	struct vhost_iotlb_msg m;

	cr_assert_not(vt_next(v, &m), "no message expected, got type %u iova %#llx", m.type,
		      (unsigned long long)m.iova);
}

Test(vhost_iotlb, miss_answered_with_the_merged_run)
{
	struct vt v;
	struct vhost_iotlb_counters c;

	vt_up(&v, NULL, false);
	cr_assert_eq(attach(&v.t, 1, EP_A, 0), S(OK));
	vt_expect(&v, VHOST_IOTLB_INVALIDATE, 0, UINT64_MAX, 0, 0);
	/* Two adjacent RW mappings contiguous in GPA, then a read-only one: one run of 3 pages. */
	cr_assert_eq(map(&v.t, 1, IOVA, IOVA + K4 - 1, VQM_R2, RW), S(OK));
	cr_assert_eq(map(&v.t, 1, IOVA + K4, IOVA + 3 * K4 - 1, VQM_R2 + K4, RW), S(OK));
	cr_assert_eq(map(&v.t, 1, IOVA + 3 * K4, IOVA + 4 * K4 - 1, VQM_R2 + 3 * K4, R), S(OK));
	vt_miss(&v, IOVA + 0x10, VHOST_ACCESS_RO);
	cr_assert_eq(vhost_iotlb_serve(&v.io), 1);
	/* The whole RW run from the missed page, with the mapping's permissions (more than the miss asked). */
	vt_expect(&v, VHOST_IOTLB_UPDATE, IOVA, 3 * K4, VQM_R2, VHOST_ACCESS_RW);
	/* A miss in the middle of a page starts the entry at that page. */
	vt_miss(&v, IOVA + 2 * K4 + 0x7ff, VHOST_ACCESS_WO);
	cr_assert_eq(vhost_iotlb_serve(&v.io), 1);
	vt_expect(&v, VHOST_IOTLB_UPDATE, IOVA + 2 * K4, K4, VQM_R2 + 2 * K4, VHOST_ACCESS_RW);
	vt_miss(&v, IOVA + 3 * K4, VHOST_ACCESS_RO);
	cr_assert_eq(vhost_iotlb_serve(&v.io), 1);
	vt_expect(&v, VHOST_IOTLB_UPDATE, IOVA + 3 * K4, K4, VQM_R2 + 3 * K4, VHOST_ACCESS_RO);
	vt_expect_none(&v);
	vhost_iotlb_counters(&v.io, &c);
	cr_assert_eq(c.misses, 3);
	cr_assert_eq(c.updates, 3);
	cr_assert_eq(c.faults, 0);
	cr_assert_gt(vhost_iotlb_quantile_us(&c, 0.5), 0);
	/* Every message written is timed: the attach's INVALIDATE and the three UPDATEs. */
	cr_assert_eq(c.writes, 4);
	cr_assert_gt(lathist_quantile_us(c.write_hist, 0.5), 0);
	{
		char line[1024];

		vhost_iotlb_stats(&v.io, line, sizeof(line));
		cr_assert(strstr(line, "3 misses, 3 updates") && strstr(line, "4 messages written, vhost took each in p50 <= "),
			  "stats line: %s", line);
	}
	vt_down(&v);
}

Test(vhost_iotlb, run_stops_where_host_memory_does)
{
	struct vt v;

	vt_up(&v, NULL, false);
	cr_assert_eq(attach(&v.t, 1, EP_A, 0), S(OK));
	vt_expect(&v, VHOST_IOTLB_INVALIDATE, 0, UINT64_MAX, 0, 0);
	/* Contiguous in IOVA and GPA across the R0/R1 boundary: two host runs, so two entries. */
	cr_assert_eq(map(&v.t, 1, IOVA, IOVA + 2 * K4 - 1, VQM_R1 - K4, RW), S(OK));
	vt_miss(&v, IOVA + 8, VHOST_ACCESS_RW);
	vt_miss(&v, IOVA + K4 + 8, VHOST_ACCESS_RW);
	cr_assert_eq(vhost_iotlb_serve(&v.io), 2);
	vt_expect(&v, VHOST_IOTLB_UPDATE, IOVA, K4, VQM_R1 - K4, VHOST_ACCESS_RW);
	vt_expect(&v, VHOST_IOTLB_UPDATE, IOVA + K4, K4, VQM_R1, VHOST_ACCESS_RW);
	vt_down(&v);
}

Test(vhost_iotlb, refused_misses_are_faults_and_get_no_entry)
{
	struct vt v;
	struct vhost_iotlb_counters c;
	uint64_t buf;

	vt_up(&v, NULL, false);
	buf = add_evbuf(&v.t, sizeof(struct virtio_iommu_fault));
	/* Not attached, bypass off: blocked. */
	vt_miss(&v, IOVA, VHOST_ACCESS_RO);
	cr_assert_eq(vhost_iotlb_serve(&v.io), 1);
	vt_expect_none(&v);
	fault_event(&v.t);
	expect_event(&v.t, 0, buf, VIRTIO_IOMMU_FAULT_R_DOMAIN, R | FA, EP_A, IOVA);
	cr_assert_eq(attach(&v.t, 1, EP_A, 0), S(OK));
	vt_expect(&v, VHOST_IOTLB_INVALIDATE, 0, UINT64_MAX, 0, 0); /* the endpoint changed domain */
	cr_assert_eq(map(&v.t, 1, IOVA, IOVA + K4 - 1, VQM_R2, R), S(OK));
	buf = add_evbuf(&v.t, sizeof(struct virtio_iommu_fault));
	/* A write to a read-only mapping, and a read of an unmapped IOVA. */
	vt_miss(&v, IOVA + 0x40, VHOST_ACCESS_WO);
	vt_miss(&v, IOVA + K4, VHOST_ACCESS_RO);
	/* Garbage: a message type vhost never sends to user space. */
	{
		struct vhost_msg_v2 m = { .type = VHOST_IOTLB_MSG_V2 };

		m.iotlb.type = VHOST_IOTLB_UPDATE;
		cr_assert_eq(write(v.fd[1], &m, sizeof(m)), (ssize_t)sizeof(m));
		m.type = 7;
		cr_assert_eq(write(v.fd[1], &m, sizeof(m)), (ssize_t)sizeof(m));
		cr_assert_eq(write(v.fd[1], &m, 10), 10);
	}
	cr_assert_eq(vhost_iotlb_serve(&v.io), 5);
	vt_expect_none(&v);
	fault_event(&v.t);
	expect_event(&v.t, 1, buf, VIRTIO_IOMMU_FAULT_R_MAPPING, W | FA, EP_A, IOVA + 0x40);
	vhost_iotlb_counters(&v.io, &c);
	cr_assert_eq(c.misses, 3);
	cr_assert_eq(c.faults, 3);
	cr_assert_eq(c.updates, 0);
	cr_assert_eq(c.errors, 3, "three unusable messages counted");
	vt_down(&v);
}

Test(vhost_iotlb, bypass_gives_the_whole_region)
{
	struct viommu_config cfg = def_cfg;
	struct vt v;

	cfg.bypass = true;
	vt_up(&v, &cfg, false);
	vt_miss(&v, VQM_R2 + 0x1234, VHOST_ACCESS_WO);
	cr_assert_eq(vhost_iotlb_serve(&v.io), 1);
	vt_expect(&v, VHOST_IOTLB_UPDATE, VQM_R2 + 0x1000, VQM_R2_SIZE - 0x1000, VQM_R2 + 0x1000, VHOST_ACCESS_RW);
	/* The hole is not RAM: refused, without a fault event (the IOMMU allowed it). */
	vt_miss(&v, VQM_HOLE, VHOST_ACCESS_RO);
	cr_assert_eq(vhost_iotlb_serve(&v.io), 1);
	vt_expect_none(&v);
	cr_assert_not(fault_fd_ready(&v.t));
	vt_down(&v);
}

/* Registered after the IOTLB's notifier: sees what vhost had been told when the notifiers ran. */
struct order_probe {
	struct vt *v;
	struct iommu_notifier n;
	unsigned int calls;
	bool invalidate_was_written;
	uint16_t used_idx;
};

static void probe_unmapped(void *ctx, uint64_t iova, uint64_t len)
{
	struct order_probe *p = ctx;

	p->calls++;
}

/* Subscribed after the IOTLB: its batch end runs after the IOTLB's, still before the requests complete. */
static void probe_batch(void *ctx, bool begin)
{
	struct order_probe *p = ctx;
	struct vhost_msg_v2 m;

	if (begin)
		return;
	p->used_idx = vqm_used_idx(&p->v->t.rq);
	p->invalidate_was_written = recv(p->v->fd[1], &m, sizeof(m), MSG_PEEK | MSG_DONTWAIT) == (ssize_t)sizeof(m) &&
				    m.iotlb.type == VHOST_IOTLB_INVALIDATE;
}

/* Queue a request without kicking (several make one batch); returns its head. */
static uint16_t queue_req(struct tio *t, const void *r, uint32_t rlen)
{
	struct vqm_buf b[2] = { { 0, rlen, false }, { 0, TAIL, true } };
	uint16_t head = vqm_chain(&t->rq, b, 2);

	memcpy(vqm_host(&t->rq, b[0].addr, rlen), r, rlen);
	vqm_publish(&t->rq, head);
	return head;
}

static void queue_unmap(struct tio *t, uint32_t dom, uint64_t start, uint64_t end)
{
	struct virtio_iommu_req_unmap r = { .head.type = VIRTIO_IOMMU_T_UNMAP,
					    .domain = htole32(dom),
					    .virt_start = htole64(start),
					    .virt_end = htole64(end) };

	queue_req(t, &r, offsetof(struct virtio_iommu_req_unmap, tail));
}

static void queue_map(struct tio *t, uint32_t dom, uint64_t start, uint64_t end, uint64_t phys, uint32_t flags)
{
	struct virtio_iommu_req_map r = map_req(dom, start, end, phys, flags);

	queue_req(t, &r, offsetof(struct virtio_iommu_req_map, tail));
}

Test(vhost_iotlb, unmap_invalidates_before_the_request_completes)
{
	struct vt v;
	struct order_probe p = { .v = &v };
	uint16_t before;

	vt_up(&v, NULL, false);
	p.n = (struct iommu_notifier){ .unmapped = probe_unmapped, .batch = probe_batch, .ctx = &p };
	cr_assert_eq(virtio_iommu_endpoint_notifier(v.t.ep[0], &p.n), 0);
	cr_assert_eq(attach(&v.t, 1, EP_A, 0), S(OK));
	vt_expect(&v, VHOST_IOTLB_INVALIDATE, 0, UINT64_MAX, 0, 0);
	cr_assert_eq(map(&v.t, 1, IOVA, IOVA + K4 - 1, VQM_R2, RW), S(OK));
	cr_assert_eq(map(&v.t, 1, IOVA + K4, IOVA + 2 * K4 - 1, VQM_R2 + K4, RW), S(OK));
	vt_miss(&v, IOVA, VHOST_ACCESS_RO);
	cr_assert_eq(vhost_iotlb_serve(&v.io), 1);
	vt_expect(&v, VHOST_IOTLB_UPDATE, IOVA, 2 * K4, VQM_R2, VHOST_ACCESS_RW);
	before = vqm_used_idx(&v.t.rq);
	p.calls = 0;
	cr_assert_eq(unmap(&v.t, 1, IOVA + K4, IOVA + 2 * K4 - 1), S(OK));
	cr_assert_eq(p.calls, 1);
	cr_assert(p.invalidate_was_written, "INVALIDATE was on the vhost fd at the end of the batch");
	cr_assert_eq(p.used_idx, before, "... and the UNMAP had not completed yet");
	vt_expect(&v, VHOST_IOTLB_INVALIDATE, IOVA + K4, K4, 0, 0);
	/* DETACH: everything goes. */
	cr_assert_eq(detach(&v.t, 1, EP_A), S(OK));
	vt_expect(&v, VHOST_IOTLB_INVALIDATE, 0, UINT64_MAX, 0, 0);
	vt_expect_none(&v);
	vt_down(&v);
}

Test(vhost_iotlb, unmaps_of_one_batch_are_merged)
{
	struct vt v;
	struct order_probe p = { .v = &v };
	struct vhost_iotlb_counters c;
	uint16_t before;

	vt_up(&v, NULL, VHOST_PREFETCH_OFF);
	p.n = (struct iommu_notifier){ .unmapped = probe_unmapped, .batch = probe_batch, .ctx = &p };
	cr_assert_eq(virtio_iommu_endpoint_notifier(v.t.ep[0], &p.n), 0);
	cr_assert_eq(attach(&v.t, 1, EP_A, 0), S(OK));
	vt_expect(&v, VHOST_IOTLB_INVALIDATE, 0, UINT64_MAX, 0, 0);
	for (unsigned int i = 0; i < 4; i++)
		cr_assert_eq(map(&v.t, 1, IOVA + i * K4, IOVA + (i + 1) * K4 - 1, VQM_R2 + i * K4, RW), S(OK));
	cr_assert_eq(map(&v.t, 1, IOVA + 0x10000, IOVA + 0x10000 + K4 - 1, VQM_R2, RW), S(OK));
	vt_expect_none(&v);
	/* One kick: three adjacent UNMAPs (out of order) and one elsewhere. */
	before = vqm_used_idx(&v.t.rq);
	queue_unmap(&v.t, 1, IOVA + K4, IOVA + 2 * K4 - 1);
	queue_unmap(&v.t, 1, IOVA + 0x10000, IOVA + 0x10000 + K4 - 1);
	queue_unmap(&v.t, 1, IOVA, IOVA + K4 - 1);
	queue_unmap(&v.t, 1, IOVA + 2 * K4, IOVA + 3 * K4 - 1);
	virtio_queue_notify(v.t.dev, RQ);
	cr_assert_eq(vqm_used_idx(&v.t.rq), (uint16_t)(before + 4));
	cr_assert(p.invalidate_was_written, "the merged INVALIDATEs were written before the batch completed");
	cr_assert_eq(p.used_idx, before);
	vt_expect(&v, VHOST_IOTLB_INVALIDATE, IOVA, 3 * K4, 0, 0);
	vt_expect(&v, VHOST_IOTLB_INVALIDATE, IOVA + 0x10000, K4, 0, 0);
	vt_expect_none(&v);
	vhost_iotlb_counters(&v.io, &c);
	cr_assert_eq(c.inval_merged, 2);
	/* Outside a batch (a single request's batch still ends before completion): one each, at once. */
	cr_assert_eq(unmap(&v.t, 1, IOVA + 3 * K4, IOVA + 4 * K4 - 1), S(OK));
	vt_expect(&v, VHOST_IOTLB_INVALIDATE, IOVA + 3 * K4, K4, 0, 0);
	vt_expect_none(&v);
	vt_down(&v);
}

Test(vhost_iotlb, update_after_unmap_in_one_batch_survives)
{
	struct vt v;

	vt_up(&v, NULL, VHOST_PREFETCH_SYNC);
	vhost_iotlb_set_memory(&v.io, v.t.rq.mem ? &v.t.rq.mem->gm : &v.t.rq.gm);
	cr_assert_eq(attach(&v.t, 1, EP_A, 0), S(OK));
	vt_expect(&v, VHOST_IOTLB_INVALIDATE, 0, UINT64_MAX, 0, 0);
	cr_assert_eq(map(&v.t, 1, IOVA, IOVA + K4 - 1, VQM_R2, R), S(OK));
	vt_expect(&v, VHOST_IOTLB_UPDATE, IOVA, K4, VQM_R2, VHOST_ACCESS_RO);
	/* UNMAP then MAP of the same IOVA in one kick: the held INVALIDATE must go before the new UPDATE. */
	queue_unmap(&v.t, 1, IOVA, IOVA + K4 - 1);
	queue_map(&v.t, 1, IOVA, IOVA + K4 - 1, VQM_R2 + K4, RW);
	virtio_queue_notify(v.t.dev, RQ);
	vt_expect(&v, VHOST_IOTLB_INVALIDATE, IOVA, K4, 0, 0);
	vt_expect(&v, VHOST_IOTLB_UPDATE, IOVA, K4, VQM_R2 + K4, VHOST_ACCESS_RW);
	vt_expect_none(&v);
	vt_down(&v);
}

Test(vhost_iotlb, nothing_is_sent_before_the_backend_has_an_iotlb)
{
	struct vt v;
	struct vhost_iotlb_counters c;

	vt_up(&v, NULL, true);
	vhost_iotlb_set_active(&v.io, false);
	cr_assert_eq(attach(&v.t, 1, EP_A, 0), S(OK));
	cr_assert_eq(map(&v.t, 1, IOVA, IOVA + K4 - 1, VQM_R2, RW), S(OK));
	cr_assert_eq(unmap(&v.t, 1, IOVA, IOVA + K4 - 1), S(OK));
	vt_expect_none(&v);
	vhost_iotlb_counters(&v.io, &c);
	cr_assert_eq(c.invalidations + c.prefetches + c.errors, 0);
	vt_down(&v);
}

Test(vhost_iotlb, prefetch_pushes_maps)
{
	struct vt v;
	struct vhost_iotlb_counters c;

	vt_up(&v, NULL, true);
	cr_assert_eq(attach(&v.t, 1, EP_A, 0), S(OK));
	vt_expect(&v, VHOST_IOTLB_INVALIDATE, 0, UINT64_MAX, 0, 0);
	cr_assert_eq(map(&v.t, 1, IOVA, IOVA + 2 * K4 - 1, VQM_R2, R), S(OK));
	/* Queued for the IOTLB thread, not written by the IOMMU's (vCPU) thread. */
	vt_expect_none(&v);
	cr_assert_eq(vhost_iotlb_serve(&v.io), 1);
	vt_expect(&v, VHOST_IOTLB_UPDATE, IOVA, 2 * K4, VQM_R2, VHOST_ACCESS_RO);
	/* Across the R0/R1 boundary: one UPDATE per host run. */
	cr_assert_eq(map(&v.t, 1, IOVA + 0x10000, IOVA + 0x10000 + 2 * K4 - 1, VQM_R1 - K4, RW), S(OK));
	/* Not RAM: nothing to push (a miss there will be refused). */
	cr_assert_eq(map(&v.t, 1, IOVA + 0x20000, IOVA + 0x20000 + K4 - 1, VQM_HOLE, RW), S(OK));
	/* Mapped and unmapped again before the thread got to it: nothing pushed, and no fault reported. */
	cr_assert_eq(map(&v.t, 1, IOVA + 0x30000, IOVA + 0x30000 + K4 - 1, VQM_R2, RW), S(OK));
	cr_assert_eq(unmap(&v.t, 1, IOVA + 0x30000, IOVA + 0x30000 + K4 - 1), S(OK));
	vt_expect(&v, VHOST_IOTLB_INVALIDATE, IOVA + 0x30000, K4, 0, 0);
	cr_assert_eq(vhost_iotlb_serve(&v.io), 3);
	vt_expect(&v, VHOST_IOTLB_UPDATE, IOVA + 0x10000, K4, VQM_R1 - K4, VHOST_ACCESS_RW);
	vt_expect(&v, VHOST_IOTLB_UPDATE, IOVA + 0x10000 + K4, K4, VQM_R1, VHOST_ACCESS_RW);
	vt_expect_none(&v);
	cr_assert_not(fault_fd_ready(&v.t));
	vhost_iotlb_counters(&v.io, &c);
	cr_assert_eq(c.prefetches, 3);
	cr_assert_eq(c.misses, 0);
	cr_assert_eq(c.faults, 0);
	vt_down(&v);
}

Test(vhost_iotlb, sync_prefetch_pushes_on_the_mapping_thread)
{
	struct vt v;
	struct vhost_iotlb_counters c;

	vt_up(&v, NULL, VHOST_PREFETCH_SYNC);
	vhost_iotlb_set_memory(&v.io, v.t.rq.mem ? &v.t.rq.mem->gm : &v.t.rq.gm);
	cr_assert_eq(attach(&v.t, 1, EP_A, 0), S(OK));
	vt_expect(&v, VHOST_IOTLB_INVALIDATE, 0, UINT64_MAX, 0, 0);
	/* Written while the MAP is handled, before it completes: vhost cannot miss on it. */
	cr_assert_eq(map(&v.t, 1, IOVA, IOVA + 2 * K4 - 1, VQM_R2, R), S(OK));
	vt_expect(&v, VHOST_IOTLB_UPDATE, IOVA, 2 * K4, VQM_R2, VHOST_ACCESS_RO);
	vt_expect_none(&v);
	/* Not one piece of RAM (across R0/R1, or not RAM): left to the IOTLB thread, which splits or drops it. */
	cr_assert_eq(map(&v.t, 1, IOVA + 0x10000, IOVA + 0x10000 + 2 * K4 - 1, VQM_R1 - K4, RW), S(OK));
	cr_assert_eq(map(&v.t, 1, IOVA + 0x20000, IOVA + 0x20000 + K4 - 1, VQM_HOLE, RW), S(OK));
	vt_expect_none(&v);
	cr_assert_eq(vhost_iotlb_serve(&v.io), 2);
	vt_expect(&v, VHOST_IOTLB_UPDATE, IOVA + 0x10000, K4, VQM_R1 - K4, VHOST_ACCESS_RW);
	vt_expect(&v, VHOST_IOTLB_UPDATE, IOVA + 0x10000 + K4, K4, VQM_R1, VHOST_ACCESS_RW);
	vt_expect_none(&v);
	/* The UNMAP's INVALIDATE still comes before the UNMAP completes. */
	cr_assert_eq(unmap(&v.t, 1, IOVA, IOVA + 2 * K4 - 1), S(OK));
	vt_expect(&v, VHOST_IOTLB_INVALIDATE, IOVA, 2 * K4, 0, 0);
	vt_expect_none(&v);
	cr_assert_not(fault_fd_ready(&v.t));
	vhost_iotlb_counters(&v.io, &c);
	cr_assert_eq(c.prefetches, 3);
	cr_assert_eq(c.misses, 0);
	vt_down(&v);
}

Test(vhost_iotlb, prefetch_queue_is_bounded)
{
	struct vt v;
	struct vhost_iotlb_counters c;

	vt_up(&v, NULL, true);
	cr_assert_eq(attach(&v.t, 1, EP_A, 0), S(OK));
	vt_expect(&v, VHOST_IOTLB_INVALIDATE, 0, UINT64_MAX, 0, 0);
	/* More MAP notifications than the queue holds (straight from the notifier: the mock ring is small). */
	for (unsigned int i = 0; i < VHOST_IOTLB_PREFETCH_QUEUE + 10; i++)
		vhost_iotlb_notifier(&v.io)->mapped(&v.io, IOVA + i * K4, VQM_R2, K4, RW);
	vhost_iotlb_counters(&v.io, &c);
	cr_assert_eq(c.prefetch_dropped, 10);
	cr_assert_eq(vhost_iotlb_serve(&v.io), (int)VHOST_IOTLB_PREFETCH_QUEUE);
	vt_expect_none(&v); /* nothing is mapped there: nothing pushed, no fault */
	cr_assert_not(fault_fd_ready(&v.t));
	vt_down(&v);
}

Test(vhost_iotlb, fill_covers_a_ring_or_fails)
{
	struct vt v;

	vt_up(&v, NULL, false);
	cr_assert_eq(attach(&v.t, 1, EP_A, 0), S(OK));
	vt_expect(&v, VHOST_IOTLB_INVALIDATE, 0, UINT64_MAX, 0, 0);
	cr_assert_eq(map(&v.t, 1, IOVA, IOVA + K4 - 1, VQM_R2, RW), S(OK));
	cr_assert_eq(map(&v.t, 1, IOVA + K4, IOVA + 2 * K4 - 1, VQM_R2 + 4 * K4, RW), S(OK));
	/* A ring over two mappings that are not contiguous in GPA: two entries. */
	cr_assert_eq(vhost_iotlb_fill(&v.io, IOVA + 0x800, K4, VHOST_ACCESS_WO), 0);
	vt_expect(&v, VHOST_IOTLB_UPDATE, IOVA, K4, VQM_R2, VHOST_ACCESS_RW);
	vt_expect(&v, VHOST_IOTLB_UPDATE, IOVA + K4, K4, VQM_R2 + 4 * K4, VHOST_ACCESS_RW);
	/* Running off the end of what is mapped: refused after what could be pushed. */
	cr_assert_eq(vhost_iotlb_fill(&v.io, IOVA + K4, 2 * K4, VHOST_ACCESS_RO), -EFAULT);
	vt_expect(&v, VHOST_IOTLB_UPDATE, IOVA + K4, K4, VQM_R2 + 4 * K4, VHOST_ACCESS_RW);
	vt_expect_none(&v);
	cr_assert_eq(vhost_iotlb_fill(&v.io, IOVA, 0, VHOST_ACCESS_RO), -EINVAL);
	cr_assert_eq(vhost_iotlb_fill(&v.io, UINT64_MAX - 8, 16, VHOST_ACCESS_RO), -EINVAL);
	vt_down(&v);
}

Test(vhost_iotlb, latency_quantiles)
{
	struct vhost_iotlb_counters c;

	memset(&c, 0, sizeof(c));
	cr_assert_eq(vhost_iotlb_quantile_us(&c, 0.5), 0, "no misses, no latency");
	c.hist[0] = 98;                      /* under 1 us */
	c.hist[lathist_bucket(19999)] = 2;   /* [16, 20) us */
	cr_assert_float_eq(vhost_iotlb_quantile_us(&c, 0.5), 1.0, 1e-9);
	cr_assert_float_eq(vhost_iotlb_quantile_us(&c, 0.99), 20.0, 1e-9);
	cr_assert_float_eq(vhost_iotlb_quantile_us(&c, 1.0), 20.0, 1e-9);
}

/* Four buckets per octave, bounds exact at whole quarter microseconds; beyond 2^20 us, the last bucket. */
Test(vhost_iotlb, latency_buckets)
{
	static const struct {
		uint64_t ns;
		double upper_us;
	} cases[] = {
		{ 0, 1.0 },        { 999, 1.0 },      { 1000, 1.25 },     { 1249, 1.25 },     { 1250, 1.5 },
		{ 1999, 2.0 },     { 2000, 2.5 },     { 3999, 4.0 },      { 4000, 5.0 },      { 15999, 16.0 },
		{ 16000, 20.0 },   { 19999, 20.0 },   { 20000, 24.0 },    { 24000, 28.0 },    { 31999, 32.0 },
		{ 512000, 640.0 }, { 1048575999, 1048576.0 },
	};
	uint64_t h[LATHIST_BUCKETS];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(h, 0, sizeof(h));
		h[lathist_bucket(cases[i].ns)] = 1;
		cr_assert_float_eq(lathist_quantile_us(h, 0.5), cases[i].upper_us, 1e-9, "%llu ns: bucket up to %.2f us, want %.2f",
				   (unsigned long long)cases[i].ns, lathist_quantile_us(h, 0.5), cases[i].upper_us);
	}
	/* Far beyond the range: the last bucket, never past the array. */
	cr_assert_eq(lathist_bucket(UINT64_MAX), LATHIST_BUCKETS - 1);
	cr_assert_eq(lathist_bucket(4000000000000ull), LATHIST_BUCKETS - 1);
}

/* ------------------------------------------------------------------ the endpoints' IOTLB */

/* The IOTLB counters from the stats line, summed over the endpoints. */
static void tlb_counts(struct tio *t, unsigned long long *hits, unsigned long long *misses)
{
	char buf[1024];
	const char *p;

	virtio_iommu_stats(t->v, buf, sizeof(buf));
	p = strstr(buf, "iotlb: ");
	cr_assert_not_null(p, "stats '%s' have the iotlb", buf);
	cr_assert_eq(sscanf(p, "iotlb: %llu hits, %llu misses", hits, misses), 2, "%s", p);
}

/* The driver's requests are synchronous: once they completed, their descriptors and buffers may be reused. */
static void rq_recycle(struct tio *t)
{
	t->rq.next_desc = 0;
	t->rq.data_next = VQM_DATA;
}

Test(virtio_iommu, iotlb_hits_after_a_walk_and_unmap_drops_only_what_it_covers)
{
	struct tio t;
	unsigned long long h0, m0, h1, m1;

	tio_up(&t, NULL, 0);
	cr_assert_eq(attach(&t, 1, EP_A, 0), S(OK));
	cr_assert_eq(map(&t, 1, IOVA, IOVA + K4 - 1, VQM_R2, RW), S(OK));
	cr_assert_eq(map(&t, 1, IOVA + 0x10000, IOVA + 0x10000 + K4 - 1, VQM_R2 + 0x8000, RW), S(OK));
	tlb_counts(&t, &h0, &m0);
	/* A ring index, then the ring entries after it in the same page: one walk. */
	expect_tr(&t, 0, IOVA + 2, 2, DMA_READ, VQM_R2 + 2, 2);
	expect_tr(&t, 0, IOVA + 4, 64, DMA_READ, VQM_R2 + 4, 64);
	expect_tr(&t, 0, IOVA, 2, DMA_READ, VQM_R2, 2);
	expect_tr(&t, 0, IOVA + 0x10000 + 0x100, 0x2000, DMA_READ, VQM_R2 + 0x8100, K4 - 0x100);
	expect_tr(&t, 0, IOVA + 0x10000, 8, DMA_READ, VQM_R2 + 0x8000, 8);
	tlb_counts(&t, &h1, &m1);
	cr_assert_eq(m1 - m0, 2, "one miss per mapping (%llu)", m1 - m0);
	cr_assert_eq(h1 - h0, 3, "the other accesses hit (%llu)", h1 - h0);

	/* UNMAP of the second mapping: it no longer translates, the first still hits. */
	cr_assert_eq(unmap(&t, 1, IOVA + 0x10000, IOVA + 0x10000 + K4 - 1), S(OK));
	expect_no_tr(&t, 0, IOVA + 0x10000, DMA_READ);
	tlb_counts(&t, &h0, &m0);
	expect_tr(&t, 0, IOVA + 0x10, 8, DMA_READ, VQM_R2 + 0x10, 8);
	tlb_counts(&t, &h1, &m1);
	cr_assert_eq(h1 - h0, 1, "the mapping the UNMAP did not cover is still cached");
	cr_assert_eq(m1, m0);
	stats_have(&t, "iotlb: ");
	tio_down(&t);
}

Test(virtio_iommu, iotlb_forgets_everything_when_the_endpoint_changes_domain)
{
	struct tio t;

	tio_up(&t, NULL, 0);
	cr_assert_eq(attach(&t, 1, EP_A, 0), S(OK));
	cr_assert_eq(attach(&t, 2, EP_B, 0), S(OK));
	cr_assert_eq(map(&t, 1, IOVA, IOVA + K4 - 1, VQM_R2, RW), S(OK));
	cr_assert_eq(map(&t, 2, IOVA, IOVA + K4 - 1, VQM_R2 + 0x8000, RW), S(OK));
	expect_tr(&t, 0, IOVA, 8, DMA_READ, VQM_R2, 8);
	expect_tr(&t, 0, IOVA, 8, DMA_READ, VQM_R2, 8);
	/* The same IOVA means another page in domain 2. */
	cr_assert_eq(attach(&t, 2, EP_A, 0), S(OK));
	expect_tr(&t, 0, IOVA, 8, DMA_READ, VQM_R2 + 0x8000, 8);
	cr_assert_eq(detach(&t, 2, EP_A), S(OK));
	expect_no_tr(&t, 0, IOVA, DMA_READ);
	/* Bypass on: unattached endpoints see guest memory as is, and off again: blocked. */
	cr_assert_eq(attach(&t, 3, EP_A, VIRTIO_IOMMU_ATTACH_F_BYPASS), S(OK));
	expect_tr(&t, 0, VQM_R2 + 0x10, 8, DMA_READ, VQM_R2 + 0x10, 8);
	expect_tr(&t, 0, VQM_R2 + 0x10, 8, DMA_READ, VQM_R2 + 0x10, 8);
	cr_assert_eq(detach(&t, 3, EP_A), S(OK));
	expect_no_tr(&t, 0, VQM_R2 + 0x10, DMA_READ);
	tio_down(&t);
}

Test(virtio_iommu, iotlb_follows_permission_downgrade_and_upgrade)
{
	struct tio t;

	tio_up(&t, NULL, 0);
	cr_assert_eq(attach(&t, 1, EP_A, 0), S(OK));
	/* Downgrade: a writable page cached for writing, remapped read-only at the same address. */
	cr_assert_eq(map(&t, 1, IOVA, IOVA + K4 - 1, VQM_R2, RW), S(OK));
	expect_tr(&t, 0, IOVA, 8, DMA_WRITE, VQM_R2, 8);
	expect_tr(&t, 0, IOVA + 8, 8, DMA_READ | DMA_WRITE, VQM_R2 + 8, 8);
	cr_assert_eq(unmap(&t, 1, IOVA, IOVA + K4 - 1), S(OK));
	cr_assert_eq(map(&t, 1, IOVA, IOVA + K4 - 1, VQM_R2, R), S(OK));
	expect_no_tr(&t, 0, IOVA, DMA_WRITE);
	expect_tr(&t, 0, IOVA, 8, DMA_READ, VQM_R2, 8);
	expect_no_tr(&t, 0, IOVA + 16, DMA_WRITE);
	/* Upgrade: the read-only entry does not serve a write; after the remap, the write goes through. */
	cr_assert_eq(unmap(&t, 1, IOVA, IOVA + K4 - 1), S(OK));
	cr_assert_eq(map(&t, 1, IOVA, IOVA + K4 - 1, VQM_R2 + 0x8000, RW), S(OK));
	expect_tr(&t, 0, IOVA, 8, DMA_WRITE, VQM_R2 + 0x8000, 8);
	expect_tr(&t, 0, IOVA, 8, DMA_READ, VQM_R2 + 0x8000, 8);
	tio_down(&t);
}

/* phase (round k, n = 4k + 4): n mapped to target k % 2, n+1 unmapping, n+2 unmapped, n-1 mapping. */
struct churn {
	struct tio *t;
	uint32_t phase;
	int stop, running;
	unsigned long mapped_ok, unmapped_ok;
	const char *bad;
};

static void churn_bad(struct churn *c, const char *why)
{
	__atomic_store_n(&c->bad, why, __ATOMIC_RELAXED);
}

/* A device worker translating and reading through its IOTLB while the IOMMU's thread churns mappings. */
static void *churn_reader(void *arg)
{
	struct churn *c = arg;
	void *want[2] = { vqm_host(&c->t->rq, VQM_R2, 1), vqm_host(&c->t->rq, VQM_R2 + 0x8000, 1) };

	__atomic_store_n(&c->running, 1, __ATOMIC_RELEASE);
	while (!__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE)) {
		uint32_t p1 = __atomic_load_n(&c->phase, __ATOMIC_SEQ_CST), p2;
		unsigned int s = dma_begin(c->t->as[0]);
		uint64_t run = 0;
		void *host = NULL;
		int err = dma_translate(c->t->as[0], IOVA + 0x40, 8, DMA_READ, &host, &run);
		uint8_t seen = err ? 0 : *(volatile uint8_t *)host;

		dma_end(c->t->as[0], s);
		p2 = __atomic_load_n(&c->phase, __ATOMIC_SEQ_CST);
		if (p1 != p2)
			continue;
		if (p1 % 4 == 0) {
			unsigned int k = p1 / 4 - 1;

			if (err || host != (uint8_t *)want[k % 2] + 0x40 || seen != 0x10 + k % 2)
				churn_bad(c, "a translation while mapped that is not the live mapping");
			c->mapped_ok++;
		} else if (p1 % 4 == 2) {
			if (!err)
				churn_bad(c, "a translation after the UNMAP completed");
			c->unmapped_ok++;
		}
	}
	return NULL;
}

Test(virtio_iommu, iotlb_lookups_race_map_and_unmap)
{
	struct tio t;
	struct churn c = { .t = &t, .phase = 2 };
	unsigned long long hits, misses;
	pthread_t th;

	tio_up(&t, NULL, 0);
	memset(vqm_host(&t.rq, VQM_R2, K4), 0x10, K4);
	memset(vqm_host(&t.rq, VQM_R2 + 0x8000, K4), 0x11, K4);
	cr_assert_eq(attach(&t, 1, EP_A, 0), S(OK));
	cr_assert_eq(pthread_create(&th, NULL, churn_reader, &c), 0);
	while (!__atomic_load_n(&c.running, __ATOMIC_ACQUIRE))
		sched_yield();
	for (uint32_t k = 0; k < 600 && !__atomic_load_n(&c.bad, __ATOMIC_RELAXED); k++) {
		rq_recycle(&t);
		__atomic_store_n(&c.phase, 4 * k + 3, __ATOMIC_SEQ_CST);
		cr_assert_eq(map(&t, 1, IOVA, IOVA + K4 - 1, k % 2 ? VQM_R2 + 0x8000 : VQM_R2, R), S(OK));
		__atomic_store_n(&c.phase, 4 * k + 4, __ATOMIC_SEQ_CST);
		for (unsigned int i = 0; i < 200; i++)
			__asm__ __volatile__("" ::: "memory");
		sched_yield();
		__atomic_store_n(&c.phase, 4 * k + 5, __ATOMIC_SEQ_CST);
		cr_assert_eq(unmap(&t, 1, IOVA, IOVA + K4 - 1), S(OK));
		__atomic_store_n(&c.phase, 4 * k + 6, __ATOMIC_SEQ_CST);
		sched_yield();
	}
	__atomic_store_n(&c.stop, 1, __ATOMIC_RELEASE);
	cr_assert_eq(pthread_join(th, NULL), 0);
	cr_assert_null(c.bad, "%s", c.bad);
	cr_assert_gt(c.mapped_ok, 0, "the reader translated while mapped");
	cr_assert_gt(c.unmapped_ok, 0, "the reader tried while unmapped");
	tlb_counts(&t, &hits, &misses);
	cr_assert_gt(hits, 0, "the reader hit its IOTLB");
	tio_down(&t);
}

/* ------------------------------------------------------------------ read-side sections */

struct copier {
	const struct dma_as *as;
	uint64_t iova;
	int got, done;
};

/* A device worker in the middle of a slow copy: translated, then writes 100 ms later. */
static void *slow_copy(void *arg)
{
	struct copier *c = arg;
	unsigned int s = dma_begin(c->as);
	void *host;
	uint64_t run;

	if (dma_translate(c->as, c->iova, 8, DMA_WRITE, &host, &run) == 0) {
		__atomic_store_n(&c->got, 1, __ATOMIC_RELEASE);
		usleep(100 * 1000);
		memset(host, 0x5a, 8);
		__atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);
	} else {
		__atomic_store_n(&c->got, -1, __ATOMIC_RELEASE);
	}
	dma_end(c->as, s);
	return NULL;
}

static void start_slow_copy(pthread_t *th, struct copier *c)
{
	cr_assert_eq(pthread_create(th, NULL, slow_copy, c), 0);
	while (!__atomic_load_n(&c->got, __ATOMIC_ACQUIRE))
		sched_yield();
	cr_assert_eq(c->got, 1, "the copier translated");
}

Test(virtio_iommu, unmap_waits_for_a_copy_in_flight)
{
	struct tio t;
	struct copier c = { 0 };
	pthread_t th;

	tio_up(&t, NULL, 0);
	c = (struct copier){ .as = t.as[0], .iova = IOVA + 0x100 };
	cr_assert_eq(attach(&t, 1, EP_A, 0), S(OK));
	cr_assert_eq(map(&t, 1, IOVA, IOVA + K4 - 1, VQM_R2, RW), S(OK));
	start_slow_copy(&th, &c);
	cr_assert_eq(unmap(&t, 1, IOVA, IOVA + K4 - 1), S(OK));
	cr_assert_eq(__atomic_load_n(&c.done, __ATOMIC_ACQUIRE), 1, "the copy ended before the UNMAP completed");
	cr_assert_eq(pthread_join(th, NULL), 0);
	expect_no_tr(&t, 0, IOVA, DMA_WRITE);
	tio_down(&t);
}

Test(virtio_iommu, detach_waits_for_a_copy_in_flight_and_other_endpoints_do_not_wait)
{
	struct tio t;
	struct copier c;
	pthread_t th;
	unsigned int s;

	tio_up(&t, NULL, 0);
	c = (struct copier){ .as = t.as[0], .iova = IOVA + 0x100 };
	cr_assert_eq(attach(&t, 1, EP_A, 0), S(OK));
	cr_assert_eq(attach(&t, 2, EP_B, 0), S(OK));
	cr_assert_eq(map(&t, 1, IOVA, IOVA + K4 - 1, VQM_R2, RW), S(OK));
	cr_assert_eq(map(&t, 2, IOVA, IOVA + K4 - 1, VQM_R2 + 0x8000, RW), S(OK));
	/* B's own section stays open throughout: requests about A's domain do not wait for it. */
	s = dma_begin(t.as[1]);
	start_slow_copy(&th, &c);
	cr_assert_eq(detach(&t, 1, EP_A), S(OK));
	cr_assert_eq(__atomic_load_n(&c.done, __ATOMIC_ACQUIRE), 1, "the copy ended before the DETACH completed");
	cr_assert_eq(pthread_join(th, NULL), 0);
	dma_end(t.as[1], s);
	tio_down(&t);
}

/* ------------------------------------------------------------------ polling (cfg.poll_us) */

struct poll_driver {
	struct tio *t;
	bool event_idx;
	uint16_t head;      /* the MAP request it made available */
	uint64_t status;    /* its tail, 0xa5... until written */
	int saw_kicks_off;  /* the device had asked for no notifications when it published */
	int completed;
};

static bool kicks_off_now(struct poll_driver *d)
{
	struct vqm *rq = &d->t->rq;

	if (d->event_idx) /* the driver kicks when its new idx passes avail_event: one behind means never */
		return vqm_avail_event(rq) == (uint16_t)(rq->avail_idx - 1);
	return le16toh(*(volatile uint16_t *)vqm_host(rq, rq->used, 2)) & VRING_USED_F_NO_NOTIFY;
}

/* A driver on another vCPU: once the device polls, it makes a MAP available and never kicks. */
static void *poll_driver_thread(void *arg)
{
	struct poll_driver *d = arg;
	struct tio *t = d->t;
	struct virtio_iommu_req_map m = map_req(1, IOVA, IOVA + K4 - 1, VQM_R1, RW);
	struct vqm_buf b[2] = { { 0, sizeof(m) - TAIL, false }, { 0, TAIL, true } };
	uint16_t before;

	for (int i = 0; i < 5000 && !kicks_off_now(d); i++)
		usleep(1000);
	d->saw_kicks_off = kicks_off_now(d);
	before = vqm_used_idx(&t->rq);
	d->head = vqm_chain(&t->rq, b, 2);
	memcpy(vqm_host(&t->rq, b[0].addr, b[0].len), &m, b[0].len);
	memset(vqm_host(&t->rq, b[1].addr, TAIL), 0xa5, TAIL);
	vqm_publish(&t->rq, d->head);
	for (int i = 0; i < 5000 && vqm_used_idx(&t->rq) == before; i++)
		usleep(1000);
	d->completed = vqm_used_idx(&t->rq) != before;
	d->status = *(uint8_t *)vqm_host(&t->rq, b[1].addr, 1);
	return NULL;
}

static void polling_case(bool event_idx)
{
	struct viommu_config cfg = def_cfg;
	struct tio t;
	struct poll_driver d = { .t = &t, .event_idx = event_idx };
	struct virtio_iommu_req_attach a = attach_req(1, EP_A, 0);
	struct vqm_buf b[2] = { { 0, sizeof(a) - TAIL, false }, { 0, TAIL, true } };
	pthread_t th;
	uint16_t head;
	void *host;
	uint64_t run;

	cfg.poll_us = 100000; /* the device waits up to 100 ms for the next request */
	tio_up(&t, &cfg, event_idx ? 0 : VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX));
	/* As Linux allocates its rings: zeroed (the mock fills guest memory with a pattern). */
	*(uint16_t *)vqm_host(&t.rq, t.rq.used, 2) = 0;
	cr_assert_not(kicks_off_now(&d));
	cr_assert_eq(pthread_create(&th, NULL, poll_driver_thread, &d), 0);
	/* The kick: the device serves ATTACH, then polls; the MAP comes in meanwhile without one. */
	head = vqm_chain(&t.rq, b, 2);
	memcpy(vqm_host(&t.rq, b[0].addr, b[0].len), &a, b[0].len);
	memset(vqm_host(&t.rq, b[1].addr, TAIL), 0xa5, TAIL);
	vqm_publish(&t.rq, head);
	pthread_mutex_lock(&t.dev->lock);
	virtio_queue_notify(t.dev, RQ);
	pthread_mutex_unlock(&t.dev->lock);
	cr_assert_eq(pthread_join(th, NULL), 0);
	cr_assert_eq(vqm_used_idx(&t.rq), 2, "one kick, two requests served");
	cr_assert_eq(*(uint8_t *)vqm_host(&t.rq, b[1].addr, 1), S(OK), "ATTACH");
	cr_assert(d.saw_kicks_off, "the device asked the driver not to notify while it polled");
	cr_assert(d.completed, "the MAP made available without a kick was served");
	cr_assert_eq(d.status, S(OK));
	cr_assert_eq(tr(&t, 0, IOVA, 8, DMA_WRITE, &host, &run), 0, "the polled MAP took effect");
	cr_assert_eq(host, vqm_host(&t.rq, VQM_R1, 8));
	cr_assert_not(kicks_off_now(&d), "notifications are back on once the device stopped polling");
	if (event_idx)
		cr_assert_eq(vqm_avail_event(&t.rq), t.rq.avail_idx, "a kick is asked for the next request");
	stats_have(&t, "polling: 1 spells, 1 requests taken without a kick (0 by other device threads) in ");
	/* One look found the MAP: its gap and answer times are in the report, each within a bucket's bounds. */
	stats_have(&t, " us after the look before, answered p50 <= ");
	stats_have(&t, "1 attach, 0 detach, 1 map");
	tio_down(&t);
}

Test(virtio_iommu, polling_takes_requests_made_without_a_kick, .timeout = 30)
{
	polling_case(true);
}

Test(virtio_iommu, polling_without_event_idx_uses_the_used_flag, .timeout = 30)
{
	polling_case(false);
}

Test(virtio_iommu, polling_off_serves_only_kicked_requests)
{
	struct tio t;

	tio_up(&t, NULL, 0);
	cr_assert_eq(attach(&t, 1, EP_A, 0), S(OK));
	cr_assert_eq(vqm_avail_event(&t.rq), t.rq.avail_idx, "a kick is asked for every request");
	stats_have(&t, "polling: 0 spells, 0 requests taken without a kick (0 by other device threads)");
	tio_down(&t);
}

/*
 * Another device's thread between two of its requests (dma_help on its address space) serves the
 * requests a polling spell waits for, and only during one: outside a spell the guest kicks.
 */
Test(virtio_iommu, other_device_threads_help_only_while_polling)
{
	struct tio t;
	struct virtio_iommu_req_map m = map_req(1, IOVA, IOVA + K4 - 1, VQM_R1, RW);
	struct vqm_buf b[2] = { { 0, sizeof(m) - TAIL, false }, { 0, TAIL, true } };
	uint16_t before, head;
	void *host;
	uint64_t run;

	tio_up(&t, NULL, 0);
	cr_assert_eq(attach(&t, 1, EP_A, 0), S(OK));
	before = vqm_used_idx(&t.rq);
	/* A MAP made available without a kick, as a driver does while the device polls. */
	head = vqm_chain(&t.rq, b, 2);
	memcpy(vqm_host(&t.rq, b[0].addr, b[0].len), &m, b[0].len);
	memset(vqm_host(&t.rq, b[1].addr, TAIL), 0xa5, TAIL);
	vqm_publish(&t.rq, head);
	dma_help(t.as[1]);
	cr_assert_eq(vqm_used_idx(&t.rq), before, "no spell: the device's own thread answers the kick, not a helper");
	__atomic_store_n(&t.v->polling, true, __ATOMIC_RELAXED);
	/* B is not in the MAP's domain: any endpoint's thread may serve the queue. */
	dma_help(t.as[1]);
	cr_assert_eq(vqm_used_idx(&t.rq), (uint16_t)(before + 1), "the helper served the waiting MAP");
	cr_assert_eq(*(uint8_t *)vqm_host(&t.rq, b[1].addr, 1), S(OK));
	cr_assert_eq(tr(&t, 0, IOVA, 8, DMA_WRITE, &host, &run), 0, "the MAP took effect");
	dma_help(t.as[1]);
	cr_assert_eq(vqm_used_idx(&t.rq), (uint16_t)(before + 1), "nothing more to serve");
	stats_have(&t, "1 requests taken without a kick (1 by other device threads)");
	__atomic_store_n(&t.v->polling, false, __ATOMIC_RELAXED);
	tio_down(&t);
}

struct poll_resetter {
	struct tio *t;
	int done;
};

static void *poll_reset_thread(void *arg)
{
	struct poll_resetter *r = arg;
	struct poll_driver d = { .t = r->t, .event_idx = true };

	for (int i = 0; i < 5000 && !kicks_off_now(&d); i++)
		usleep(1000);
	/* A vCPU writing status 0 takes the device lock, which the polling thread drops between looks. */
	pthread_mutex_lock(&r->t->dev->lock);
	cr_assert_eq(virtio_set_status(r->t->dev, 0), 0);
	pthread_mutex_unlock(&r->t->dev->lock);
	r->done = 1;
	return NULL;
}

Test(virtio_iommu, polling_ends_when_the_driver_resets_the_device, .timeout = 30)
{
	struct viommu_config cfg = def_cfg;
	struct tio t;
	struct poll_resetter r = { .t = &t };
	pthread_t th;

	cfg.poll_us = VIOMMU_POLL_MAX_US;
	tio_up(&t, &cfg, 0);
	cr_assert_eq(pthread_create(&th, NULL, poll_reset_thread, &r), 0);
	cr_assert_eq(attach(&t, 1, EP_A, 0), S(OK)); /* returns once the reset ended the spell */
	cr_assert_eq(pthread_join(th, NULL), 0);
	cr_assert(r.done);
	cr_assert_eq(t.dev->status, 0);
	tio_down(&t);
}

Test(virtio_iommu, poll_time_is_bounded)
{
	struct viommu_config cfg = def_cfg;
	struct virtio_iommu *v = NULL;
	struct vqm q;
	char err[256];

	vqm_init(&q, 16);
	cfg.poll_us = VIOMMU_POLL_MAX_US + 1;
	cr_assert_eq(virtio_iommu_new(&cfg, &q.as, &q.gm, &v, err, sizeof(err)), -EINVAL);
	cr_assert_not_null(strstr(err, "poll time"), "%s", err);
	vqm_fini(&q);
}

/* ------------------------------------------------------------------ MOAT_IOTLB (debugging switch) */

static void iotlb_mode_case(const char *mode, const char *want)
{
	struct tio t;

	cr_assert_eq(setenv("MOAT_IOTLB", mode, 1), 0);
	tio_up(&t, NULL, 0);
	unsetenv("MOAT_IOTLB");
	cr_assert_eq(attach(&t, 1, EP_A, 0), S(OK));
	cr_assert_eq(map(&t, 1, IOVA, IOVA + 0xffff, VQM_R2, RW), S(OK));
	for (int i = 0; i < 4; i++)
		expect_tr(&t, 0, IOVA + 0x100 * i, 0x100, DMA_READ, VQM_R2 + 0x100 * i, 0x100);
	cr_assert_eq(unmap(&t, 1, IOVA, IOVA + 0xffff), S(OK));
	expect_no_tr(&t, 0, IOVA, DMA_READ);
	stats_have(&t, want);
	tio_down(&t);
}

Test(virtio_iommu, iotlb_verify_checks_every_hit_against_the_page_table)
{
	iotlb_mode_case("verify", "iotlb: 3 hits, 2 misses");
	iotlb_mode_case("verify", "MOAT_IOTLB=verify: 3 hits checked, 0 STALE");
}

Test(virtio_iommu, iotlb_off_walks_every_time)
{
	iotlb_mode_case("off", "iotlb: 0 hits, 0 misses");
	iotlb_mode_case("off", "(MOAT_IOTLB=off: not used)");
}
