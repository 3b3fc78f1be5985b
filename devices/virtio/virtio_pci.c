#include "devices/virtio/virtio_pci.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vmm/msi.h"
#include "vmm/vm.h"

#define VIRTIO_PCI_VENDOR 0x1af4
#define VIRTIO_PCI_DEVICE_BASE 0x1040 /* + device id: modern-only devices */

/* Capability cfg_type values (VIRTIO 1.2, 4.1.4). */
#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_ISR_CFG 3
#define VIRTIO_PCI_CAP_DEVICE_CFG 4
#define VIRTIO_PCI_CAP_PCI_CFG 5

/* struct virtio_pci_common_cfg offsets. */
#define VPC_DFSELECT 0x00
#define VPC_DF 0x04
#define VPC_GFSELECT 0x08
#define VPC_GF 0x0c
#define VPC_MSIX 0x10
#define VPC_NUMQ 0x12
#define VPC_STATUS 0x14
#define VPC_CFGGEN 0x15
#define VPC_Q_SELECT 0x16
#define VPC_Q_SIZE 0x18
#define VPC_Q_MSIX 0x1a
#define VPC_Q_ENABLE 0x1c
#define VPC_Q_NOFF 0x1e
#define VPC_Q_DESCLO 0x20
#define VPC_Q_DESCHI 0x24
#define VPC_Q_AVAILLO 0x28
#define VPC_Q_AVAILHI 0x2c
#define VPC_Q_USEDLO 0x30
#define VPC_Q_USEDHI 0x34
#define VPC_Q_NDATA 0x38
#define VPC_Q_RESET 0x3a

#define ISR_QUEUE 0x1
#define ISR_CONFIG 0x2

/* The PCI configuration access capability's fields, relative to the capability. */
#define PCICFG_BAR 4
#define PCICFG_OFFSET 8
#define PCICFG_LENGTH 12
#define PCICFG_DATA 16

static struct virtio_pci *vp_of(struct pci_device *pd)
{
	return pd->ctx;
}

/* ------------------------------------------------------------------ interrupts */

static int vp_irq(void *ctx, enum virtio_irq_kind kind, unsigned int queue)
{
	struct virtio_pci *vp = ctx;
	uint16_t vec = kind == VIRTIO_IRQ_QUEUE ? vp->queue_vector[queue] : vp->config_vector;

	vp->isr |= kind == VIRTIO_IRQ_QUEUE ? ISR_QUEUE : ISR_CONFIG;
	if (!msix_enabled(&vp->msix)) {
		/* moat has no INTx: a driver that does not enable MSI-X gets no interrupts. */
		if (!vp->warned_intx) {
			vp->warned_intx = true;
			log_warn(&vp->vm->log, "virtio-%s: the guest driver did not enable MSI-X; moat has no INTx, so "
					       "this device cannot interrupt it",
				 vp->dev->ops->name);
		}
		return -ENOTSUP;
	}
	if (vec == VIRTIO_MSI_NO_VECTOR)
		return 0;
	return msix_notify(&vp->msix, vec);
}

static int vp_queue_eventfds(void *ctx, unsigned int queue, int *kick_fd, int *call_fd)
{
	struct virtio_pci *vp = ctx;
	uint16_t vec;

	if (queue >= vp->dev->nqueues)
		return -EINVAL;
	vec = vp->queue_vector[queue];
	*kick_fd = vp->worker.kick_fd[queue];
	/* The back end signals KVM directly; a masked vector's interrupt waits in the eventfd (vm_msi_set). */
	*call_fd = msix_enabled(&vp->msix) && vec != VIRTIO_MSI_NO_VECTOR ? vm_msi_irqfd(vp->vm, vp->msi_id[vec]) : -1;
	return 0;
}

static int vp_msix_route(void *ctx, unsigned int vec, uint64_t addr, uint32_t data, bool enable)
{
	struct virtio_pci *vp = ctx;

	return vm_msi_set(vp->vm, vp->msi_id[vec], addr, data, enable);
}

static int vp_msix_fire(void *ctx, unsigned int vec)
{
	struct virtio_pci *vp = ctx;

	return vm_msi_fire(vp->vm, vp->msi_id[vec]);
}

static const struct msix_ops vp_msix_ops = {
	.route = vp_msix_route,
	.fire = vp_msix_fire,
};

/* ------------------------------------------------------------------ common configuration */

static void transport_reset(struct virtio_pci *vp)
{
	vp->dev_feature_sel = vp->drv_feature_sel = 0;
	vp->queue_sel = 0;
	vp->config_vector = VIRTIO_MSI_NO_VECTOR;
	for (unsigned int q = 0; q < VIRTIO_MAX_QUEUES; q++) {
		vp->queue_vector[q] = VIRTIO_MSI_NO_VECTOR;
		vp->queue_addr[q][0] = vp->queue_addr[q][1] = vp->queue_addr[q][2] = 0;
	}
	vp->isr = 0;
}

static struct virtio_queue *selected(struct virtio_pci *vp)
{
	return vp->queue_sel < vp->dev->nqueues ? &vp->dev->queues[vp->queue_sel] : NULL;
}

static uint32_t common_read(struct virtio_pci *vp, uint32_t off)
{
	struct virtio_dev *dev = vp->dev;
	struct virtio_queue *q = selected(vp);
	unsigned int qs = vp->queue_sel;

	switch (off) {
	case VPC_DFSELECT:
		return vp->dev_feature_sel;
	case VPC_DF:
		return vp->dev_feature_sel < 2 ? (uint32_t)(dev->device_features >> (32 * vp->dev_feature_sel)) : 0;
	case VPC_GFSELECT:
		return vp->drv_feature_sel;
	case VPC_GF:
		return vp->drv_feature_sel < 2 ? (uint32_t)(dev->driver_features >> (32 * vp->drv_feature_sel)) : 0;
	case VPC_MSIX:
		return vp->config_vector;
	case VPC_NUMQ:
		return dev->nqueues;
	case VPC_STATUS:
		return dev->status;
	case VPC_CFGGEN:
		return (uint8_t)dev->config_generation;
	case VPC_Q_SELECT:
		return vp->queue_sel;
	case VPC_Q_SIZE:
		return q ? q->size : 0;
	case VPC_Q_MSIX:
		return q ? vp->queue_vector[qs] : VIRTIO_MSI_NO_VECTOR;
	case VPC_Q_ENABLE:
		return q ? q->enabled : 0;
	case VPC_Q_NOFF:
		return q ? qs : 0;
	case VPC_Q_DESCLO:
	case VPC_Q_AVAILLO:
	case VPC_Q_USEDLO:
		return q ? (uint32_t)vp->queue_addr[qs][(off - VPC_Q_DESCLO) / 8] : 0;
	case VPC_Q_DESCHI:
	case VPC_Q_AVAILHI:
	case VPC_Q_USEDHI:
		return q ? (uint32_t)(vp->queue_addr[qs][(off - VPC_Q_DESCHI) / 8] >> 32) : 0;
	default:
		return 0;
	}
}

/* A vector the driver may name: one of the MSI-X table's, or NO_VECTOR. Others read back as NO_VECTOR (4.1.5.1.2). */
static uint16_t vector_ok(const struct virtio_pci *vp, uint32_t v)
{
	return v < vp->msix.nvec ? (uint16_t)v : VIRTIO_MSI_NO_VECTOR;
}

static void queue_enable(struct virtio_pci *vp, unsigned int qs)
{
	struct virtio_dev *dev = vp->dev;
	const uint64_t *a = vp->queue_addr[qs];
	int r = virtio_queue_set_addr(dev, qs, a[0], a[1], a[2]);

	if (!r)
		r = virtio_queue_enable(dev, qs);
	if (r) {
		/* The driver gave unusable rings: it learns through NEEDS_RESET, the guest log through us. */
		log_warn(&vp->vm->log, "virtio-%s: queue %u refused (%s): desc 0x%llx driver 0x%llx device 0x%llx",
			 dev->ops->name, qs, strerror(-r), (unsigned long long)a[0], (unsigned long long)a[1],
			 (unsigned long long)a[2]);
		virtio_set_needs_reset(dev);
	}
}

static void common_write(struct virtio_pci *vp, uint32_t off, uint32_t val)
{
	struct virtio_dev *dev = vp->dev;
	struct virtio_queue *q = selected(vp);
	unsigned int qs = vp->queue_sel;
	uint64_t f;
	int r;

	switch (off) {
	case VPC_DFSELECT:
		vp->dev_feature_sel = val;
		break;
	case VPC_GFSELECT:
		vp->drv_feature_sel = val;
		break;
	case VPC_GF:
		if (vp->drv_feature_sel >= 2)
			break;
		f = dev->driver_features;
		f &= ~(0xffffffffull << (32 * vp->drv_feature_sel));
		f |= (uint64_t)val << (32 * vp->drv_feature_sel);
		/* Refused outside DRIVER..FEATURES_OK: the driver sees it when FEATURES_OK does not stick. */
		if (virtio_set_driver_features(dev, f))
			log_debug(&vp->vm->log, "virtio-%s: driver features written in status 0x%x, ignored",
				  dev->ops->name, dev->status);
		break;
	case VPC_MSIX:
		vp->config_vector = vector_ok(vp, val);
		break;
	case VPC_STATUS:
		r = virtio_set_status(dev, (uint8_t)val);
		if (val == 0)
			transport_reset(vp);
		else if (r && r != -ENOTSUP)
			log_debug(&vp->vm->log, "virtio-%s: status 0x%x refused (%s), status stays 0x%x",
				  dev->ops->name, val, strerror(-r), dev->status);
		break;
	case VPC_Q_SELECT:
		vp->queue_sel = (uint16_t)val;
		break;
	case VPC_Q_SIZE:
		if (q && virtio_queue_set_size(dev, qs, val))
			log_debug(&vp->vm->log, "virtio-%s: queue %u size %u refused", dev->ops->name, qs, val);
		break;
	case VPC_Q_MSIX:
		if (q)
			vp->queue_vector[qs] = vector_ok(vp, val);
		break;
	case VPC_Q_ENABLE:
		/* Only 1 is meaningful; a queue is disabled by a device reset. */
		if (q && val == 1 && !q->enabled)
			queue_enable(vp, qs);
		break;
	case VPC_Q_DESCLO:
	case VPC_Q_AVAILLO:
	case VPC_Q_USEDLO:
		if (q && !q->enabled) {
			uint64_t *a = &vp->queue_addr[qs][(off - VPC_Q_DESCLO) / 8];
			*a = (*a & ~0xffffffffull) | val;
		}
		break;
	case VPC_Q_DESCHI:
	case VPC_Q_AVAILHI:
	case VPC_Q_USEDHI:
		if (q && !q->enabled) {
			uint64_t *a = &vp->queue_addr[qs][(off - VPC_Q_DESCHI) / 8];
			*a = (*a & 0xffffffffull) | ((uint64_t)val << 32);
		}
		break;
	default:
		break; /* read-only fields and queue_reset (RING_RESET is not offered) */
	}
}

/* Field width of each common register: accesses of another width are ignored (4.1.3.1). */
static unsigned int common_width(uint32_t off)
{
	switch (off) {
	case VPC_DFSELECT: case VPC_DF: case VPC_GFSELECT: case VPC_GF:
	case VPC_Q_DESCLO: case VPC_Q_DESCHI: case VPC_Q_AVAILLO: case VPC_Q_AVAILHI:
	case VPC_Q_USEDLO: case VPC_Q_USEDHI:
		return 4;
	case VPC_STATUS: case VPC_CFGGEN:
		return 1;
	case VPC_MSIX: case VPC_NUMQ: case VPC_Q_SELECT: case VPC_Q_SIZE: case VPC_Q_MSIX:
	case VPC_Q_ENABLE: case VPC_Q_NOFF: case VPC_Q_NDATA: case VPC_Q_RESET:
		return 2;
	default:
		return 0;
	}
}

/* ------------------------------------------------------------------ BAR 0 */

static void bar0_read(struct virtio_pci *vp, uint64_t off, void *data, unsigned int size)
{
	uint32_t v = 0;

	memset(data, 0, size);
	if (off < VPCI_COMMON_OFF + VPCI_COMMON_LEN) {
		uint32_t o = (uint32_t)(off - VPCI_COMMON_OFF);
		if (common_width(o) == size) {
			v = common_read(vp, o);
			memcpy(data, &v, size);
		} else if (size == 8 && common_width(o) == 4 && common_width(o + 4) == 4) {
			uint32_t w[2] = { common_read(vp, o), common_read(vp, o + 4) };
			memcpy(data, w, 8);
		}
	} else if (off >= VPCI_ISR_OFF && off < VPCI_ISR_OFF + VPCI_ISR_LEN) {
		/* Reading the ISR acknowledges it. */
		if (off == VPCI_ISR_OFF) {
			*(uint8_t *)data = vp->isr;
			vp->isr = 0;
		}
	} else if (off >= VPCI_DEVCFG_OFF && off < VPCI_DEVCFG_OFF + VPCI_DEVCFG_LEN) {
		/* GUEST: the device bounds off/len against its own config size. */
		if (vp->dev->ops->config_read)
			(void)vp->dev->ops->config_read(vp->dev, (uint32_t)(off - VPCI_DEVCFG_OFF), data, size);
	} else if (off >= VPCI_MSIX_TABLE_OFF && off < VPCI_MSIX_PBA_OFF) {
		msix_table_read(&vp->msix, off - VPCI_MSIX_TABLE_OFF, data, size);
	} else if (off >= VPCI_MSIX_PBA_OFF && off < VPCI_MSIX_PBA_OFF + 8) {
		msix_pba_read(&vp->msix, off - VPCI_MSIX_PBA_OFF, data, size);
	}
}

/* A queue notification that reached moat: the device serves kicks inline, or KVM's ioeventfd did not take it. */
static void queue_kick(struct virtio_pci *vp, unsigned int q)
{
	if (vp->dev->ops->notify_inline)
		virtio_queue_notify(vp->dev, q);
	else
		virtio_worker_kick(&vp->worker, q);
}

static void bar0_write(struct virtio_pci *vp, uint64_t off, const void *data, unsigned int size)
{
	uint32_t v = 0;

	if (off < VPCI_COMMON_OFF + VPCI_COMMON_LEN) {
		uint32_t o = (uint32_t)(off - VPCI_COMMON_OFF);
		if (common_width(o) == size) {
			memcpy(&v, data, size);
			common_write(vp, o, v);
		} else if (size == 8 && common_width(o) == 4 && common_width(o + 4) == 4) {
			uint32_t w[2];
			memcpy(w, data, 8);
			common_write(vp, o, w[0]);
			common_write(vp, o + 4, w[1]);
		}
	} else if (off >= VPCI_DEVCFG_OFF && off < VPCI_DEVCFG_OFF + VPCI_DEVCFG_LEN) {
		if (vp->dev->ops->config_write)
			(void)vp->dev->ops->config_write(vp->dev, (uint32_t)(off - VPCI_DEVCFG_OFF), data, size);
	} else if (off >= VPCI_NOTIFY_OFF && off < VPCI_NOTIFY_OFF + VPCI_NOTIFY_MULT * vp->dev->nqueues) {
		queue_kick(vp, (unsigned int)(off - VPCI_NOTIFY_OFF) / VPCI_NOTIFY_MULT);
	} else if (off >= VPCI_MSIX_TABLE_OFF && off < VPCI_MSIX_PBA_OFF) {
		msix_table_write(&vp->msix, off - VPCI_MSIX_TABLE_OFF, data, size);
	}
}

static void vp_bar_read(struct pci_device *pd, unsigned int bar, uint64_t off, void *data, unsigned int size)
{
	struct virtio_pci *vp = vp_of(pd);

	if (bar == VPCI_IO_BAR) {
		memset(data, 0, size); /* the notify structure is write-only */
		return;
	}
	pthread_mutex_lock(&vp->dev->lock);
	bar0_read(vp, off, data, size);
	pthread_mutex_unlock(&vp->dev->lock);
}

static void vp_bar_write(struct pci_device *pd, unsigned int bar, uint64_t off, const void *data, unsigned int size)
{
	struct virtio_pci *vp = vp_of(pd);

	pthread_mutex_lock(&vp->dev->lock);
	if (bar == VPCI_IO_BAR) {
		/* GUEST: off < the BAR size (the bus checked); only a queue's own port counts. */
		if (!(off % VPCI_IO_NOTIFY_MULT) && off / VPCI_IO_NOTIFY_MULT < vp->dev->nqueues)
			queue_kick(vp, (unsigned int)(off / VPCI_IO_NOTIFY_MULT));
	} else {
		bar0_write(vp, off, data, size);
	}
	pthread_mutex_unlock(&vp->dev->lock);
}

/* Queue notify addresses follow the BARs: KVM signals the kick eventfds without an exit to moat. */
static void set_ioeventfds(struct virtio_pci *vp, uint64_t base, bool io, bool assign)
{
	if (vp->dev->ops->notify_inline)
		return; /* kicks exit to the vCPU thread on purpose */
	for (unsigned int q = 0; q < vp->dev->nqueues; q++) {
		struct kvm_ioeventfd ev = {
			.addr = io ? base + VPCI_IO_NOTIFY_MULT * q : base + VPCI_NOTIFY_OFF + VPCI_NOTIFY_MULT * q,
			.len = 2,
			.fd = vp->worker.kick_fd[q],
			.flags = (assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN) | (io ? KVM_IOEVENTFD_FLAG_PIO : 0),
		};
		if (ioctl(vp->vm->vm_fd, KVM_IOEVENTFD, &ev) < 0)
			log_warn(&vp->vm->log, "virtio-%s: cannot %s the queue %u %s ioeventfd: %s (kicks take the slow path)",
				 vp->dev->ops->name, assign ? "register" : "remove", q, io ? "port" : "MMIO",
				 strerror(errno));
	}
}

static void vp_bar_mapped(struct pci_device *pd, unsigned int bar, uint64_t addr, bool mapped)
{
	struct virtio_pci *vp = vp_of(pd);
	bool io = bar == VPCI_IO_BAR;
	uint64_t *at = io ? &vp->notify_port : &vp->notify_base;

	pthread_mutex_lock(&vp->dev->lock);
	if (*at)
		set_ioeventfds(vp, *at, io, false);
	*at = 0;
	if (mapped) {
		set_ioeventfds(vp, addr, io, true);
		*at = addr;
	}
	pthread_mutex_unlock(&vp->dev->lock);
}

/* The PCI configuration access capability: a window into BAR 0 through config space. */
static bool pcicfg_window(struct virtio_pci *vp, uint32_t *off, unsigned int *len)
{
	struct pci_device *pd = &vp->pci;
	uint8_t c = vp->pcicfg_cap;

	*off = pci_cfg_get(pd, c + PCICFG_OFFSET, 4);
	*len = pci_cfg_get(pd, c + PCICFG_LENGTH, 4);
	/* GUEST: bar, offset and length are the driver's: BAR 0 only, 1/2/4 bytes, aligned, inside the BAR. */
	return pd->cfg[c + PCICFG_BAR] == 0 && (*len == 1 || *len == 2 || *len == 4) && !(*off & (*len - 1)) &&
	       *off < VPCI_BAR_SIZE;
}

static bool touches(uint32_t off, unsigned int size, uint32_t start, unsigned int len)
{
	return off < start + len && start < off + size;
}

static void vp_config_written(struct pci_device *pd, uint32_t off, unsigned int size)
{
	struct virtio_pci *vp = vp_of(pd);
	uint32_t woff;
	unsigned int wlen;

	pthread_mutex_lock(&vp->dev->lock);
	msix_config_written(&vp->msix, off, size);
	if (touches(off, size, vp->pcicfg_cap + PCICFG_DATA, 4) && pcicfg_window(vp, &woff, &wlen))
		bar0_write(vp, woff, &pd->cfg[vp->pcicfg_cap + PCICFG_DATA], wlen);
	pthread_mutex_unlock(&vp->dev->lock);
}

static void vp_config_reading(struct pci_device *pd, uint32_t off, unsigned int size)
{
	struct virtio_pci *vp = vp_of(pd);
	uint32_t woff;
	unsigned int wlen;

	if (!touches(off, size, vp->pcicfg_cap + PCICFG_DATA, 4))
		return;
	pthread_mutex_lock(&vp->dev->lock);
	if (pcicfg_window(vp, &woff, &wlen))
		bar0_read(vp, woff, &pd->cfg[vp->pcicfg_cap + PCICFG_DATA], wlen);
	pthread_mutex_unlock(&vp->dev->lock);
}

static const struct pci_device_ops vp_pci_ops = {
	.bar_read = vp_bar_read,
	.bar_write = vp_bar_write,
	.bar_mapped = vp_bar_mapped,
	.config_written = vp_config_written,
	.config_reading = vp_config_reading,
};

/* ------------------------------------------------------------------ construction */

/* struct virtio_pci_cap after cap_vndr/cap_next: cap_len, cfg_type, bar, id, padding[2], offset, length. */
static int add_virtio_cap(struct pci_device *pd, uint8_t type, uint8_t bar, uint32_t off, uint32_t len,
			  const void *extra, unsigned int extra_len)
{
	uint8_t body[18 + 4] = { 0 };
	unsigned int cap_len = 16 + extra_len;

	body[0] = (uint8_t)cap_len;
	body[1] = type;
	body[2] = bar;
	memcpy(&body[6], &off, 4);
	memcpy(&body[10], &len, 4);
	if (extra_len)
		memcpy(&body[14], extra, extra_len);
	return pci_device_add_cap(pd, PCI_CAP_ID_VNDR, body, cap_len);
}

static uint32_t class_of(uint32_t device_id)
{
	switch (device_id) {
	case 1:
		return 0x020000; /* network controller, Ethernet */
	case 2:
		return 0x010000; /* mass storage, SCSI (what virtio-blk has always used) */
	case 23:
		return 0x088000; /* system peripheral, other (the IOMMU) */
	default:
		return 0x00ff00; /* unclassified */
	}
}

struct vp_cleanup {
	struct virtio_pci *vp;
	void (*free_dev)(void *p);
	void *p;
};

static void vp_destroy(void *arg)
{
	struct vp_cleanup *c = arg;

	virtio_worker_fini(&c->vp->worker);
	if (c->free_dev)
		c->free_dev(c->p);
	free(c->vp);
	free(c);
}

static int vp_start(void *arg)
{
	struct vp_cleanup *c = arg;

	return virtio_worker_start(&c->vp->worker);
}

int virtio_pci_add(struct vm *vm, struct virtio_dev *dev, void (*free_dev)(void *p), void *p, uint16_t *bdf,
		   char *err, size_t errlen)
{
	struct virtio_pci *vp = calloc(1, sizeof(*vp));
	struct vp_cleanup *c = calloc(1, sizeof(*c));
	const char *name = dev->ops->name ? dev->ops->name : "dev";
	unsigned int nvec = dev->nqueues + 1;
	uint32_t mult = VPCI_NOTIFY_MULT, zero = 0;
	int r, off;

	if (!vp || !c || vm_add_cleanup(vm, vp_destroy, c)) {
		free(vp);
		free(c);
		if (free_dev)
			free_dev(p);
		return set_err(err, errlen, -ENOMEM, "out of memory adding virtio-%s", name);
	}
	c->vp = vp;
	c->free_dev = free_dev;
	c->p = p;
	vp->dev = dev;
	vp->vm = vm;
	transport_reset(vp);
	dev->irq = (struct virtio_irq){ .fn = vp_irq, .queue_eventfds = vp_queue_eventfds, .ctx = vp };

	r = virtio_worker_init(&vp->worker, vm, dev, name);
	if (r)
		return set_err(err, errlen, r, "cannot set up the virtio-%s worker: %s", name, strerror(-r));

	pci_device_init(&vp->pci, VIRTIO_PCI_VENDOR, (uint16_t)(VIRTIO_PCI_DEVICE_BASE + dev->device_id),
			class_of(dev->device_id), 1, VIRTIO_PCI_VENDOR, (uint16_t)dev->device_id, &vp_pci_ops, vp);
	r = pci_device_add_bar(&vp->pci, 0, VPCI_BAR_SIZE, true);
	if (!r && (r = add_virtio_cap(&vp->pci, VIRTIO_PCI_CAP_COMMON_CFG, 0, VPCI_COMMON_OFF, VPCI_COMMON_LEN, NULL,
				      0)) > 0)
		r = add_virtio_cap(&vp->pci, VIRTIO_PCI_CAP_ISR_CFG, 0, VPCI_ISR_OFF, VPCI_ISR_LEN, NULL, 0);
	if (r > 0)
		r = add_virtio_cap(&vp->pci, VIRTIO_PCI_CAP_DEVICE_CFG, 0, VPCI_DEVCFG_OFF, VPCI_DEVCFG_LEN, NULL, 0);
	/* Drivers use the first notify structure they can map (Linux does): the port one, where there is one. */
	if (r > 0 && vm->pci->io_size) {
		uint32_t io_len = VPCI_IO_NOTIFY_MULT * dev->nqueues, io_size = 4, io_mult = VPCI_IO_NOTIFY_MULT;

		while (io_size < io_len)
			io_size *= 2;
		r = pci_device_add_io_bar(&vp->pci, VPCI_IO_BAR, io_size);
		if (!r)
			r = add_virtio_cap(&vp->pci, VIRTIO_PCI_CAP_NOTIFY_CFG, VPCI_IO_BAR, 0, io_len, &io_mult, 4);
	}
	if (r > 0)
		r = add_virtio_cap(&vp->pci, VIRTIO_PCI_CAP_NOTIFY_CFG, 0, VPCI_NOTIFY_OFF, VPCI_NOTIFY_MULT * dev->nqueues,
				   &mult, 4);
	if (r > 0) {
		off = add_virtio_cap(&vp->pci, VIRTIO_PCI_CAP_PCI_CFG, 0, 0, 0, &zero, 4);
		r = off;
		if (off > 0) {
			vp->pcicfg_cap = (uint8_t)off;
			pci_wmask_set(&vp->pci, off + PCICFG_BAR, 0xff, 1);
			pci_wmask_set(&vp->pci, off + PCICFG_OFFSET, 0xffffffffu, 4);
			pci_wmask_set(&vp->pci, off + PCICFG_LENGTH, 0xffffffffu, 4);
			pci_wmask_set(&vp->pci, off + PCICFG_DATA, 0xffffffffu, 4);
		}
	}
	if (r > 0)
		r = msix_init(&vp->msix, &vp->pci, nvec, 0, VPCI_MSIX_TABLE_OFF, VPCI_MSIX_PBA_OFF, &vp_msix_ops, vp);
	if (r < 0)
		return set_err(err, errlen, r, "cannot build the PCI function of virtio-%s: %s", name, strerror(-r));
	for (unsigned int v = 0; v < nvec; v++) {
		r = vm_msi_alloc(vm, 0, &vp->msi_id[v]);
		if (r)
			return set_err(err, errlen, r, "cannot set up MSI-X for virtio-%s: %s", name, strerror(-r));
	}
	r = pci_bus_add(vm->pci, &vp->pci);
	if (r)
		return set_err(err, errlen, r, "no room on the PCI bus for virtio-%s (at most %u devices)", name,
			       PCI_MAX_DEVICES - 1);
	/* The MSI requester id, for arches that need it, is the function's BDF. */
	for (unsigned int v = 0; v < nvec; v++)
		vm->msi.routes[vp->msi_id[v]].devid = vp->pci.slot << 3;
	r = vm_add_start(vm, vp_start, c);
	if (r)
		return set_err(err, errlen, r, "out of memory adding virtio-%s", name);
	log_debug(&vm->log, "virtio-%s at 00:%02x.0, BAR0 0x%llx", name, vp->pci.slot,
		  (unsigned long long)vp->pci.bar[0].addr);
	if (bdf)
		*bdf = (uint16_t)(vp->pci.slot << 3);
	return 0;
}
