#include "vhost/net.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/vhost.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "devices/virtio/net.h"
#include "vhost/iotlb.h"
#include "vmm/log.h"
#include "vmm/memory.h"
#include "vmm/vm.h"

#define VHOST_NET_PATH "/dev/vhost-net"
#define VN_QUEUES 2u /* receiveq, transmitq */
#define VN_QUEUE_SIZE 256u

/* Ring and transport features that the kernel implements for us: offered only where vhost offers them. */
#define VN_KERNEL_FEATURES                                                                                      \
	(VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF) | VIRTIO_BIT(VIRTIO_RING_F_INDIRECT_DESC) |                          \
	 VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX) | VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_F_ACCESS_PLATFORM))

struct vhost_net {
	struct virtio_dev dev;
	uint8_t config[VIRTIO_NET_CFG_SIZE];
	int vfd;
	int tap_fd;
	uint64_t kernel_features; /* VHOST_GET_FEATURES */
	struct guest_memory *gm;
	struct viommu_endpoint *ep;
	int (*set_offload)(void *ctx, unsigned int tun_flags);
	void *offload_ctx;
	bool running; /* rings handed to vhost, the TAP set as back end */
	int err_fd[VN_QUEUES]; /* vhost signals a ring it could not process (VHOST_SET_VRING_ERR) */
	struct vhost_iotlb iotlb;
	uint64_t activations, ring_errors; /* under dev->lock; read racily by stats */
	struct vm *vm;
	char name[16];
};

static struct vhost_net *to_vn(struct virtio_dev *dev)
{
	return (struct vhost_net *)((char *)dev - offsetof(struct vhost_net, dev));
}

#define vn_warn(n, ...)                                       \
	do {                                                  \
		if ((n)->vm)                                  \
			log_warn(&(n)->vm->log, __VA_ARGS__); \
	} while (0)

static int vioctl(struct vhost_net *n, unsigned long req, const char *what, void *arg)
{
	int e;

	if (ioctl(n->vfd, req, arg) == 0)
		return 0;
	e = errno;
	vn_warn(n, "%s: %s failed: %s", n->name, what, strerror(e));
	return -e;
}

/* The ring's addresses for vhost: IOVAs pushed into its IOTLB, or host addresses from the memory table. */
static int ring_addr(struct vhost_net *n, bool platform, uint64_t iova, uint64_t len, unsigned int perm,
		     uint64_t *out)
{
	void *host;

	if (platform) {
		*out = iova;
		return vhost_iotlb_fill(&n->iotlb, iova, len, perm);
	}
	/* GUEST: the ring as the driver placed it; one host-contiguous run of RAM or refused. */
	host = dma_ptr(n->dev.as, iova, len, perm);
	if (!host)
		return -EFAULT;
	*out = (uint64_t)(uintptr_t)host;
	return 0;
}

static int setup_ring(struct vhost_net *n, unsigned int q, bool platform)
{
	struct virtio_queue *vq = &n->dev.queues[q];
	uint64_t num = vq->size;
	struct vhost_vring_state st = { .index = q, .num = vq->size };
	struct vhost_vring_addr a = { .index = q };
	struct vhost_vring_file f = { .index = q };
	uint64_t addr = 0;
	int kick, call, r;

	r = vioctl(n, VHOST_SET_VRING_NUM, "VHOST_SET_VRING_NUM", &st);
	st.num = 0;
	if (!r)
		r = vioctl(n, VHOST_SET_VRING_BASE, "VHOST_SET_VRING_BASE", &st);
	if (r)
		return r;
	/* Split ring sizes (2.7): descriptors, driver area with used_event, device area with avail_event. */
	r = ring_addr(n, platform, vq->desc, 16 * num, DMA_READ, &addr);
	a.desc_user_addr = addr;
	if (!r)
		r = ring_addr(n, platform, vq->avail, 6 + 2 * num, DMA_READ, &addr);
	a.avail_user_addr = addr;
	if (!r)
		r = ring_addr(n, platform, vq->used, 6 + 8 * num, DMA_WRITE, &addr);
	a.used_user_addr = addr;
	if (r) {
		vn_warn(n, "%s: queue %u's rings are not where the device may access them (%s)", n->name, q,
			strerror(-r));
		return r;
	}
	r = vioctl(n, VHOST_SET_VRING_ADDR, "VHOST_SET_VRING_ADDR", &a);
	if (r)
		return r;
	if (!n->dev.irq.queue_eventfds)
		return -ENOTSUP;
	r = n->dev.irq.queue_eventfds(n->dev.irq.ctx, q, &kick, &call);
	if (r)
		return r;
	f.fd = kick;
	r = vioctl(n, VHOST_SET_VRING_KICK, "VHOST_SET_VRING_KICK", &f);
	f.fd = call;
	if (!r)
		r = vioctl(n, VHOST_SET_VRING_CALL, "VHOST_SET_VRING_CALL", &f);
	return r;
}

static void stop_rings(struct vhost_net *n)
{
	for (unsigned int q = 0; q < VN_QUEUES; q++) {
		struct vhost_vring_file f = { .index = q, .fd = -1 };
		struct vhost_vring_state st = { .index = q };

		/* Errors are logged; the rings are the guest's to reset, nothing here can make it worse. */
		(void)vioctl(n, VHOST_NET_SET_BACKEND, "VHOST_NET_SET_BACKEND (detach)", &f);
		(void)vioctl(n, VHOST_GET_VRING_BASE, "VHOST_GET_VRING_BASE", &st);
	}
	n->running = false;
}

static int vn_activate(struct virtio_dev *dev)
{
	struct vhost_net *n = to_vn(dev);
	uint64_t f = dev->driver_features & VN_KERNEL_FEATURES;
	bool platform = f & VIRTIO_BIT(VIRTIO_F_ACCESS_PLATFORM);
	int r = 0;

	n->activations++;
	if (platform) {
		uint64_t bf = 1ull << VHOST_BACKEND_F_IOTLB_MSG_V2;

		r = vioctl(n, VHOST_SET_BACKEND_FEATURES, "VHOST_SET_BACKEND_FEATURES", &bf);
	}
	if (!r)
		r = vioctl(n, VHOST_SET_FEATURES, "VHOST_SET_FEATURES", &f);
	if (r)
		return r;
	/* A fresh, empty IOTLB now exists in vhost: from here on every UNMAP must reach it. */
	vhost_iotlb_set_active(&n->iotlb, platform);
	if (n->set_offload) {
		r = n->set_offload(n->offload_ctx, virtio_net_tun_offloads(dev->driver_features));
		if (r) {
			vn_warn(n, "%s: cannot set the TAP's offloads: %s", n->name, strerror(-r));
			return r;
		}
	}
	for (unsigned int q = 0; q < VN_QUEUES && !r; q++)
		if (dev->queues[q].enabled)
			r = setup_ring(n, q, platform);
	/* Misses for the rings are answered by the IOTLB thread while SET_BACKEND checks them. */
	for (unsigned int q = 0; q < VN_QUEUES && !r; q++) {
		struct vhost_vring_file bf = { .index = q, .fd = n->tap_fd };

		if (dev->queues[q].enabled)
			r = vioctl(n, VHOST_NET_SET_BACKEND, "VHOST_NET_SET_BACKEND", &bf);
	}
	if (r) {
		stop_rings(n);
		return r;
	}
	n->running = true;
	return 0;
}

static void vn_reset(struct virtio_dev *dev)
{
	struct vhost_net *n = to_vn(dev);

	if (n->running || n->activations)
		stop_rings(n);
	/* The driver forgets its mappings with its rings: vhost must not keep translating them. */
	vhost_iotlb_invalidate(&n->iotlb, 0, UINT64_MAX);
}

static void vn_queue_notify(struct virtio_dev *dev, unsigned int queue)
{
	/* Kicks are vhost's (ops.kicks_elsewhere): the transport writes the eventfd vhost polls. */
}

static int vn_config_read(struct virtio_dev *dev, uint32_t off, void *buf, uint32_t len)
{
	return virtio_net_config_read(to_vn(dev)->config, off, buf, len);
}

static int vn_config_write(struct virtio_dev *dev, uint32_t off, const void *buf, uint32_t len)
{
	/* Read-only fields, as in moat's own virtio-net. */
	return off > VIRTIO_NET_CFG_SIZE || len > VIRTIO_NET_CFG_SIZE - off ? -EINVAL : 0;
}

/*
 * vhost gave up on a ring (a malformed descriptor chain, a buffer outside guest memory): the queue has
 * stopped, so the driver must learn that the device needs a reset. On the worker, under dev->lock.
 */
static void vn_ring_error(struct virtio_dev *dev, uint32_t events)
{
	struct vhost_net *n = to_vn(dev);

	for (unsigned int q = 0; q < VN_QUEUES; q++) {
		uint64_t cnt;

		if (read(n->err_fd[q], &cnt, sizeof(cnt)) != sizeof(cnt))
			continue;
		n->ring_errors++;
		if (!virtio_dev_live(dev))
			continue;
		vn_warn(n, "%s: the kernel could not process queue %u (a malformed ring or a buffer outside guest "
			   "memory); the device needs a reset",
			n->name, q);
		virtio_set_needs_reset(dev);
	}
}

static unsigned int vn_backend_fds(struct virtio_dev *dev, struct virtio_backend_fd *out, unsigned int max)
{
	struct vhost_net *n = to_vn(dev);
	unsigned int k = 0;

	for (unsigned int q = 0; q < VN_QUEUES && k < max; q++)
		out[k++] = (struct virtio_backend_fd){ .fd = n->err_fd[q], .events = EPOLLIN, .fn = vn_ring_error };
	return k;
}

static const struct virtio_dev_ops vn_ops = {
	.name = "vhost-net",
	.activate = vn_activate,
	.reset = vn_reset,
	.queue_notify = vn_queue_notify,
	.config_read = vn_config_read,
	.config_write = vn_config_write,
	.backend_fds = vn_backend_fds,
	.kicks_elsewhere = true,
};

static int resolve_ep(void *ctx, uint64_t iova, unsigned int perm, uint64_t max_len, bool report,
		      int (*emit)(void *arg, const struct viommu_run *run), void *arg)
{
	return virtio_iommu_endpoint_resolve(ctx, iova, perm, max_len, report, emit, arg);
}

static int open_vhost(struct vhost_net *n, char *err, size_t errlen)
{
	n->vfd = open(VHOST_NET_PATH, O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (n->vfd >= 0)
		return 0;
	switch (errno) {
	case ENOENT:
	case ENODEV:
		return set_err(err, errlen, -errno,
			       "--net vhost=on: %s does not exist; load the kernel module (modprobe vhost_net) or "
			       "use moat's own virtio-net (vhost=off)",
			       VHOST_NET_PATH);
	case EACCES:
	case EPERM:
		return set_err(err, errlen, -errno,
			       "--net vhost=on: no permission to open %s; run moat as root or give your user "
			       "read-write access to it",
			       VHOST_NET_PATH);
	default:
		return set_err(err, errlen, -errno, "--net vhost=on: cannot open %s: %s", VHOST_NET_PATH,
			       strerror(errno));
	}
}

static int set_mem_table(struct vhost_net *n, char *err, size_t errlen)
{
	const struct guest_memory *gm = n->gm;
	struct vhost_memory *m = calloc(1, sizeof(*m) + gm->nregions * sizeof(m->regions[0]));
	int r = 0;

	if (!m)
		return set_err(err, errlen, -ENOMEM, "vhost-net: out of memory");
	m->nregions = gm->nregions;
	for (unsigned int i = 0; i < gm->nregions; i++)
		m->regions[i] = (struct vhost_memory_region){ .guest_phys_addr = gm->regions[i].gpa,
							      .memory_size = gm->regions[i].size,
							      .userspace_addr = (uint64_t)(uintptr_t)gm->regions[i].host };
	if (ioctl(n->vfd, VHOST_SET_MEM_TABLE, m) < 0)
		r = set_err(err, errlen, -errno, "vhost-net: VHOST_SET_MEM_TABLE failed: %s", strerror(errno));
	free(m);
	return r;
}

int vhost_net_new(const struct vhost_net_params *p, struct vhost_net **out, char *err, size_t errlen)
{
	static const uint16_t sizes[VN_QUEUES] = { VN_QUEUE_SIZE, VN_QUEUE_SIZE };
	struct vhost_net *n = calloc(1, sizeof(*n));
	uint64_t offered, bf = 0;
	int r;

	if (!n)
		return set_err(err, errlen, -ENOMEM, "vhost-net: out of memory");
	n->vfd = -1;
	n->iotlb.stop_fd = -1;
	n->err_fd[0] = n->err_fd[1] = -1;
	n->tap_fd = p->tap_fd;
	n->gm = p->gm;
	n->ep = p->ep;
	n->set_offload = p->set_offload;
	n->offload_ctx = p->offload_ctx;
	n->vm = p->vm;
	snprintf(n->name, sizeof(n->name), "vhost-net");
	r = virtio_net_config_init(n->config, p->cfg, 1, err, errlen);
	if (!r)
		r = open_vhost(n, err, errlen);
	if (!r && ioctl(n->vfd, VHOST_SET_OWNER) < 0)
		r = set_err(err, errlen, -errno, "vhost-net: VHOST_SET_OWNER failed: %s", strerror(errno));
	if (!r && ioctl(n->vfd, VHOST_GET_FEATURES, &n->kernel_features) < 0)
		r = set_err(err, errlen, -errno, "vhost-net: VHOST_GET_FEATURES failed: %s", strerror(errno));
	if (!r && !(n->kernel_features & VIRTIO_BIT(VIRTIO_F_VERSION_1)))
		r = set_err(err, errlen, -ENOTSUP, "vhost-net: this kernel's vhost-net lacks VIRTIO_F_VERSION_1; "
			    "use vhost=off");
	if (!r && p->ep) {
		if (!(n->kernel_features & VIRTIO_BIT(VIRTIO_F_ACCESS_PLATFORM)) ||
		    ioctl(n->vfd, VHOST_GET_BACKEND_FEATURES, &bf) < 0 || !(bf & (1ull << VHOST_BACKEND_F_IOTLB_MSG_V2)))
			r = set_err(err, errlen, -ENOTSUP,
				    "vhost-net: this kernel's vhost-net cannot translate through an IOMMU (no "
				    "ACCESS_PLATFORM or IOTLB messages v2); use vhost=off or iommu=off on this --net");
	}
	if (!r)
		r = set_mem_table(n, err, errlen);
	for (unsigned int q = 0; q < VN_QUEUES && !r; q++) {
		struct vhost_vring_file f = { .index = q };

		n->err_fd[q] = f.fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (f.fd < 0 || ioctl(n->vfd, VHOST_SET_VRING_ERR, &f) < 0)
			r = set_err(err, errlen, -errno, "vhost-net: cannot set up queue %u's error eventfd: %s", q,
				    strerror(errno));
	}
	if (!r) {
		r = vhost_iotlb_init(&n->iotlb, n->vfd, resolve_ep, p->ep, p->prefetch);
		vhost_iotlb_set_memory(&n->iotlb, p->gm);
		if (r)
			set_err(err, errlen, r, "vhost-net: cannot set up the IOTLB: %s", strerror(-r));
	}
	if (!r && p->ep) {
		r = virtio_iommu_endpoint_notifier(p->ep, vhost_iotlb_notifier(&n->iotlb));
		if (r)
			set_err(err, errlen, r, "vhost-net: cannot subscribe to the IOMMU: %s", strerror(-r));
	}
	if (r) {
		vhost_net_free(n);
		return r;
	}
	/* What moat offers: its virtio-net features, the ring ones only where the kernel implements them. */
	offered = (virtio_net_features() & ~VN_KERNEL_FEATURES) |
		  (virtio_net_features() & VN_KERNEL_FEATURES & n->kernel_features);
	r = virtio_dev_init(&n->dev, &vn_ops, VIRTIO_ID_NET, offered, VN_QUEUES, sizes, p->as, (struct virtio_irq){ 0 });
	if (r) {
		vhost_net_free(n);
		return set_err(err, errlen, r, "vhost-net: cannot set up the device: %s", strerror(-r));
	}
	*out = n;
	return 0;
}

struct virtio_dev *vhost_net_dev(struct vhost_net *n)
{
	return &n->dev;
}

int vhost_net_start(struct vhost_net *n)
{
	if (!n->ep || !n->vm)
		return 0;
	return vhost_iotlb_start(&n->iotlb, n->vm, "moat-vhost");
}

void vhost_net_free(struct vhost_net *n)
{
	if (!n)
		return;
	vhost_iotlb_fini(&n->iotlb);
	if (n->dev.ops)
		virtio_dev_fini(&n->dev);
	if (n->vfd >= 0)
		close(n->vfd);
	for (unsigned int q = 0; q < VN_QUEUES; q++)
		if (n->err_fd[q] >= 0)
			close(n->err_fd[q]);
	free(n);
}

void vhost_net_stats(const struct vhost_net *n, char *buf, size_t len)
{
	int k = snprintf(buf, len, "vhost %s, %llu activations, %llu ring errors", n->running ? "running" : "stopped",
			 (unsigned long long)n->activations, (unsigned long long)n->ring_errors);

	if (n->ep && k >= 0 && (size_t)k + 2 < len) {
		buf[k] = ',';
		buf[k + 1] = ' ';
		vhost_iotlb_stats(&n->iotlb, buf + k + 2, len - (size_t)k - 2);
	}
}
