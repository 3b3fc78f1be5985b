#include "vmm/devices.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devices/net/tap.h"
#include "devices/pci/pci.h"
#include "devices/virtio/blk.h"
#include "devices/virtio/iommu.h"
#include "devices/virtio/net.h"
#include "devices/virtio/rng.h"
#include "devices/virtio/virtio_pci.h"
#include "vhost/iotlb.h"
#include "vhost/net.h"
#include "vmm/vm.h"

/*
 * The virtio-iommu, when there is one: it goes on the bus first, and each device behind it gets an
 * endpoint whose address space is the device's DMA path. The endpoint id is the device's BDF, known
 * once the device is on the bus.
 */
struct iommu_holder {
	struct virtio_iommu *iommu;
	struct vm *vm;
};

static void iommu_holder_free(void *p)
{
	struct iommu_holder *h = p;

	virtio_iommu_free(h->iommu);
	free(h);
}

/* A virtio device's queues in the report ("moat: stats: queues of virtio-net: queue 0: avail ..."). */
static void queue_stats(void *p, char *buf, size_t len)
{
	virtio_describe_queues(p, buf, len);
}

static void iommu_stats(void *p, char *buf, size_t len)
{
	virtio_iommu_stats(((struct iommu_holder *)p)->iommu, buf, len);
}

static int add_iommu(struct vm *vm, struct virtio_iommu **out, char *err, size_t errlen)
{
	struct iommu_holder *h = calloc(1, sizeof(*h));
	const struct viommu_config cfg = {
		.bypass = vm->cfg.iommu_bypass,
		.max_domains = 256,
		.max_mappings = 1u << 18,
		.max_table_bytes = 256ull << 20,
		.msi_start = arch_msi_window_start(),
		.msi_end = arch_msi_window_end(),
		.poll_us = vm->cfg.iommu_poll_us,
	};
	uint16_t bdf;
	int r;

	if (!h)
		return set_err(err, errlen, -ENOMEM, "out of memory adding virtio-iommu");
	h->vm = vm;
	r = virtio_iommu_new(&cfg, &vm->dma, &vm->mem, &h->iommu, err, errlen);
	if (r) {
		free(h);
		return r;
	}
	r = virtio_pci_add(vm, virtio_iommu_dev(h->iommu), iommu_holder_free, h, &bdf, err, errlen);
	if (!r)
		r = vm_add_stats(vm, "virtio-iommu", iommu_stats, h);
	if (!r)
		r = vm_add_stats(vm, "queues of virtio-iommu", queue_stats, virtio_iommu_dev(h->iommu));
	if (r)
		return r;
	vm->iommu_topo.present = true;
	vm->iommu_topo.iommu_bdf = bdf;
	*out = h->iommu;
	return 0;
}

/* The DMA path of a device: an IOMMU endpoint if it sits behind one, else guest memory directly. */
static int device_as(struct vm *vm, struct virtio_iommu *iommu, bool behind, struct viommu_endpoint **ep,
		     const struct dma_as **as, char *err, size_t errlen)
{
	int r;

	*ep = NULL;
	*as = &vm->dma;
	if (!iommu || !behind)
		return 0;
	if (vm->iommu_topo.nendpoints >= sizeof(vm->iommu_topo.endpoint_bdf) / sizeof(vm->iommu_topo.endpoint_bdf[0]))
		return set_err(err, errlen, -ENOSPC, "too many devices behind the virtio-iommu");
	r = virtio_iommu_endpoint_new(iommu, ep);
	if (r)
		return set_err(err, errlen, r, "cannot add an IOMMU endpoint: %s", strerror(-r));
	*as = virtio_iommu_endpoint_as(*ep);
	return 0;
}

/* After the device is on the bus: the endpoint's id is its BDF, and the firmware tables list it. */
static void endpoint_placed(struct vm *vm, struct virtio_dev *dev, struct viommu_endpoint *ep, uint16_t bdf)
{
	if (!ep)
		return;
	virtio_iommu_endpoint_set_id(ep, bdf);
	virtio_dev_require_access_platform(dev);
	vm->iommu_topo.endpoint_bdf[vm->iommu_topo.nendpoints++] = bdf;
}

/* A virtio-net device and the TAP behind it go together. */
struct net_pair {
	struct virtio_net *net;
	struct tap *tap;
	struct vm *vm;
};

static void net_pair_free(void *p)
{
	struct net_pair *np = p;

	virtio_net_free(np->net);
	tap_close(np->tap);
	free(np);
}

static void net_stats(void *p, char *buf, size_t len)
{
	struct net_pair *np = p;
	int n = snprintf(buf, len, "%s: ", tap_name(np->tap));

	if (n >= 0 && (size_t)n < len)
		virtio_net_stats(np->net, buf + n, len - (size_t)n);
}

static int net_offload(void *ctx, unsigned int tun_flags)
{
	return tap_set_offload(ctx, tun_flags);
}

static int add_net(struct vm *vm, struct virtio_iommu *iommu, const struct net_config *cfg, char *err,
		   size_t errlen)
{
	struct net_pair *np = calloc(1, sizeof(*np));
	struct viommu_endpoint *ep;
	const struct dma_as *as;
	uint16_t bdf;
	int r;

	if (!np)
		return set_err(err, errlen, -ENOMEM, "out of memory adding virtio-net");
	np->vm = vm;
	r = device_as(vm, iommu, cfg->iommu != NET_IOMMU_OFF, &ep, &as, err, errlen);
	if (!r)
		r = tap_open(cfg, &np->tap, err, errlen);
	if (!r)
		r = virtio_net_new(tap_fd(np->tap), cfg, as, net_offload, np->tap, &np->net, err, errlen);
	if (r) {
		net_pair_free(np);
		return r;
	}
	log_info(&vm->log, "virtio-net on TAP %s%s", tap_name(np->tap), ep ? ", behind the virtio-iommu" : "");
	r = virtio_pci_add(vm, virtio_net_dev(np->net), net_pair_free, np, &bdf, err, errlen);
	if (!r)
		endpoint_placed(vm, virtio_net_dev(np->net), ep, bdf);
	if (!r)
		r = vm_add_stats(vm, "virtio-net", net_stats, np);
	if (!r)
		r = vm_add_stats(vm, "queues of virtio-net", queue_stats, virtio_net_dev(np->net));
	return r;
}

/* vhost-net: the device, the TAP it hands to the kernel, and the IOTLB thread started with the guest. */
struct vhost_holder {
	struct vhost_net *vn;
	struct tap *tap;
};

static void vhost_holder_free(void *p)
{
	struct vhost_holder *h = p;

	vhost_net_free(h->vn);
	tap_close(h->tap);
	free(h);
}

static void vhost_stats(void *p, char *buf, size_t len)
{
	struct vhost_holder *h = p;
	int n = snprintf(buf, len, "%s: ", tap_name(h->tap));

	if (n >= 0 && (size_t)n < len)
		vhost_net_stats(h->vn, buf + n, len - (size_t)n);
}

static int vhost_start(void *p)
{
	return vhost_net_start(((struct vhost_holder *)p)->vn);
}

static const struct bus_ops ecam_ops = { .read = pci_ecam_read, .write = pci_ecam_write };
static const struct bus_ops window_ops = { .read = pci_window_read, .write = pci_window_write };

static void pci_host_free(void *p)
{
	pci_bus_fini(p);
	free(p);
}

int vm_add_pci_host(struct vm *vm, uint64_t ecam_base, uint64_t ecam_size, uint64_t mmio_base, uint64_t mmio_size,
		    void (*reset_request)(void *vm))
{
	struct pci_bus *bus = malloc(sizeof(*bus));
	int r;

	if (!bus)
		return -ENOMEM;
	pci_bus_init(bus, mmio_base, mmio_size);
	bus->reset_request = reset_request;
	bus->reset_ctx = vm;
	r = vm_add_cleanup(vm, pci_host_free, bus);
	if (r) {
		pci_host_free(bus);
		return r;
	}
	vm->pci = bus;
	r = bus_register(&vm->mmio, ecam_base, ecam_size, &ecam_ops, bus, "pci-ecam");
	if (!r)
		r = bus_register(&vm->mmio, mmio_base, mmio_size, &window_ops, bus, "pci-window");
	return r;
}

/* iotlb-prefetch= to the vhost IOTLB's mode; "on" and the default are the mode bench/net.sh chose (README). */
static int vhost_prefetch_mode(int opt)
{
	switch (opt) {
	case NET_PREFETCH_OFF:
		return VHOST_PREFETCH_OFF;
	case NET_PREFETCH_QUEUE:
		return VHOST_PREFETCH_QUEUED;
	case NET_PREFETCH_SYNC:
		return VHOST_PREFETCH_SYNC;
	default:
		return VHOST_PREFETCH_SYNC;
	}
}

static int add_vhost_net(struct vm *vm, struct virtio_iommu *iommu, const struct net_config *cfg, char *err,
			 size_t errlen)
{
	struct vhost_holder *h = calloc(1, sizeof(*h));
	struct viommu_endpoint *ep;
	const struct dma_as *as;
	uint16_t bdf;
	int r;

	if (!h)
		return set_err(err, errlen, -ENOMEM, "out of memory adding vhost-net");
	r = device_as(vm, iommu, cfg->iommu != NET_IOMMU_OFF, &ep, &as, err, errlen);
	if (!r)
		r = tap_open(cfg, &h->tap, err, errlen);
	if (!r) {
		const struct vhost_net_params p = {
			.vm = vm,
			.cfg = cfg,
			.tap_fd = tap_fd(h->tap),
			.gm = &vm->mem,
			.as = as,
			.ep = ep,
			.prefetch = vhost_prefetch_mode(cfg->prefetch),
			.set_offload = net_offload,
			.offload_ctx = h->tap,
		};
		r = vhost_net_new(&p, &h->vn, err, errlen);
	}
	if (r) {
		vhost_holder_free(h);
		return r;
	}
	log_info(&vm->log, "vhost-net on TAP %s%s", tap_name(h->tap),
		 !ep ? ""
		 : vhost_prefetch_mode(cfg->prefetch) == VHOST_PREFETCH_SYNC   ? ", behind the virtio-iommu (IOTLB prefetch sync)"
		 : vhost_prefetch_mode(cfg->prefetch) == VHOST_PREFETCH_QUEUED ? ", behind the virtio-iommu (IOTLB prefetch queued)"
									       : ", behind the virtio-iommu (IOTLB prefetch off)");
	r = virtio_pci_add(vm, vhost_net_dev(h->vn), vhost_holder_free, h, &bdf, err, errlen);
	if (!r)
		endpoint_placed(vm, vhost_net_dev(h->vn), ep, bdf);
	if (!r)
		r = vm_add_start(vm, vhost_start, h);
	if (!r)
		r = vm_add_stats(vm, "vhost-net", vhost_stats, h);
	return r;
}

struct blk_holder {
	struct virtio_blk *blk;
	struct vm *vm;
	const char *path;
};

static void blk_holder_free(void *p)
{
	struct blk_holder *h = p;

	virtio_blk_free(h->blk);
	free(h);
}

static void blk_stats(void *p, char *buf, size_t len)
{
	struct blk_holder *h = p;
	int n = snprintf(buf, len, "%s: ", h->path);

	if (n >= 0 && (size_t)n < len)
		virtio_blk_stats(h->blk, buf + n, len - (size_t)n);
}

static int add_disk(struct vm *vm, struct virtio_iommu *iommu, const struct blk_config *cfg, char *err,
		    size_t errlen)
{
	struct blk_holder *h = calloc(1, sizeof(*h));
	struct viommu_endpoint *ep;
	const struct dma_as *as;
	uint16_t bdf;
	int r;

	if (!h)
		return set_err(err, errlen, -ENOMEM, "out of memory adding virtio-blk");
	h->vm = vm;
	h->path = cfg->path;
	r = device_as(vm, iommu, cfg->iommu != BLK_IOMMU_OFF, &ep, &as, err, errlen);
	if (r) {
		free(h);
		return r;
	}
	err[0] = '\0';
	r = virtio_blk_new(cfg, as, &h->blk, err, errlen);
	if (r) {
		free(h);
		return r;
	}
	/* Success may come with a warning (an image size rounded down to whole sectors). */
	if (err[0]) {
		log_warn(&vm->log, "%s", err);
		err[0] = '\0';
	}
	r = virtio_pci_add(vm, virtio_blk_dev(h->blk), blk_holder_free, h, &bdf, err, errlen);
	if (!r)
		endpoint_placed(vm, virtio_blk_dev(h->blk), ep, bdf);
	if (!r)
		r = vm_add_stats(vm, "virtio-blk", blk_stats, h);
	if (!r)
		r = vm_add_stats(vm, "queues of virtio-blk", queue_stats, virtio_blk_dev(h->blk));
	return r;
}

static void rng_free(void *p)
{
	virtio_rng_free(p);
}

static int add_rng(struct vm *vm, struct virtio_iommu *iommu, char *err, size_t errlen)
{
	struct virtio_rng *rng;
	struct viommu_endpoint *ep;
	const struct dma_as *as;
	uint16_t bdf;
	int r = device_as(vm, iommu, true, &ep, &as, err, errlen);

	if (!r)
		r = virtio_rng_new(as, &rng, err, errlen);
	if (r)
		return r;
	r = virtio_pci_add(vm, virtio_rng_dev(rng), rng_free, rng, &bdf, err, errlen);
	if (!r)
		endpoint_placed(vm, virtio_rng_dev(rng), ep, bdf);
	return r;
}

int vm_add_virtio_devices(struct vm *vm, char *err, size_t errlen)
{
	struct virtio_iommu *iommu = NULL;
	int r = 0;

	if ((vm->cfg.ndisks || vm->cfg.nnets || vm->cfg.rng || vm->cfg.iommu) && !vm->pci)
		return set_err(err, errlen, -ENOTSUP, "this machine type has no PCI bus for virtio devices");
	if (vm->cfg.iommu)
		r = add_iommu(vm, &iommu, err, errlen);
	for (unsigned int i = 0; i < vm->cfg.nnets && !r; i++)
		r = vm->cfg.nets[i].vhost ? add_vhost_net(vm, iommu, &vm->cfg.nets[i], err, errlen)
					  : add_net(vm, iommu, &vm->cfg.nets[i], err, errlen);
	for (unsigned int i = 0; i < vm->cfg.ndisks && !r; i++)
		r = add_disk(vm, iommu, &vm->cfg.disks[i], err, errlen);
	if (!r && vm->cfg.rng)
		r = add_rng(vm, iommu, err, errlen);
	return r;
}
