#include "tests/kvm/vpci_driver.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <linux/kvm.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "devices/pci/msix.h"
#include "devices/pci/pci.h"
#include "vmm/devices.h"

#define HEAP_START 0x100000ull

void vpd_vm_create(struct vm *vm, const struct vm_config *cfg)
{
	char err[512];

	vm_init(vm);
	vm->cfg = *cfg;
	log_init(&vm->log, LOG_ERROR, 2);
	cr_assert_eq(event_loop_init(&vm->loop), 0);
	cr_assert_eq(vm_open_kvm(vm, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(gm_add_region(&vm->mem, 0, VPD_RAM_SIZE), 0);
	cr_assert_eq(gm_alloc(&vm->mem), 0);
	cr_assert_eq(vm_map_memory(vm), 0);
	/* irqfds and MSI routes need the in-kernel irqchip. */
	cr_assert_eq(ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0), 0, "KVM_CREATE_IRQCHIP: %s", strerror(errno));
	dma_as_init_identity(&vm->dma, &vm->mem);
	cr_assert_eq(arch_add_devices(vm, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(vm_add_virtio_devices(vm, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(vm_start_devices(vm), 0);
}

static uint32_t raw_cfg_read(struct vm *vm, unsigned int slot, uint32_t off, unsigned int size)
{
	uint32_t v = 0;

	pci_config_read(vm->pci, slot, 0, off, &v, size);
	return v;
}

uint32_t vpd_cfg_read(struct vpd *d, uint32_t off, unsigned int size)
{
	return raw_cfg_read(d->vm, d->slot, off, size);
}

void vpd_cfg_write(struct vpd *d, uint32_t off, uint32_t val, unsigned int size)
{
	pci_config_write(d->vm->pci, d->slot, 0, off, &val, size);
}

uint64_t vpd_bar_read(struct vpd *d, uint32_t off, unsigned int size)
{
	uint64_t v = 0;

	pci_window_read(d->vm->pci, d->bar + off - d->vm->pci->mmio_base, &v, size);
	return v;
}

void vpd_bar_write(struct vpd *d, uint32_t off, uint64_t val, unsigned int size)
{
	pci_window_write(d->vm->pci, d->bar + off - d->vm->pci->mmio_base, &val, size);
}

void vpd_kick(struct vpd *d, unsigned int q)
{
	uint16_t v = (uint16_t)q;

	if (d->notify_io)
		pci_io_write(d->vm->pci, d->notify_port + d->notify + q * d->notify_mult - d->vm->pci->io_base, &v, 2);
	else
		vpd_bar_write(d, d->notify + q * d->notify_mult, q, 2);
}

void vpd_find(struct vpd *d, struct vm *vm, uint32_t device_id)
{
	memset(d, 0, sizeof(*d));
	d->vm = vm;
	d->heap = HEAP_START;
	for (unsigned int s = 0; s < PCI_MAX_DEVICES; s++)
		if (raw_cfg_read(vm, s, 0, 4) == (0x1af4u | (0x1040u + device_id) << 16)) {
			d->slot = s;
			break;
		}
	cr_assert_neq(d->slot, 0, "no virtio device %u on the bus", device_id);
	d->bar = (vpd_cfg_read(d, PCI_BAR0, 4) & ~0xfull) | (uint64_t)vpd_cfg_read(d, PCI_BAR0 + 4, 4) << 32;
	/* Walk the capability list as a driver does. */
	bool have_notify = false, have_common = false;
	for (uint8_t p = (uint8_t)vpd_cfg_read(d, PCI_CAPABILITY_LIST, 1); p; p = (uint8_t)vpd_cfg_read(d, p + 1, 1)) {
		uint8_t id = (uint8_t)vpd_cfg_read(d, p, 1);
		if (id == PCI_CAP_ID_MSIX) {
			d->msix_table = vpd_cfg_read(d, p + 4, 4) & ~7u;
			continue;
		}
		if (id != PCI_CAP_ID_VNDR)
			continue;
		uint8_t type = (uint8_t)vpd_cfg_read(d, p + 3, 1);
		uint32_t off = vpd_cfg_read(d, p + 8, 4);
		switch (type) {
		case 1: d->common = off; have_common = true; break;
		case 2:
			/* The first one, as Linux picks it: the port one where there is one. */
			if (have_notify)
				break;
			have_notify = true;
			d->notify = off;
			d->notify_mult = vpd_cfg_read(d, p + 16, 4);
			d->notify_io = vpd_cfg_read(d, PCI_BAR0 + 4 * vpd_cfg_read(d, p + 4, 1), 4) & PCI_BAR_IO;
			if (d->notify_io)
				d->notify_port = vpd_cfg_read(d, PCI_BAR0 + 4 * vpd_cfg_read(d, p + 4, 1), 4) & ~3u;
			break;
		case 3: d->isr = off; break;
		case 4: d->devcfg = off; break;
		}
	}
	cr_assert(have_common && have_notify, "no common or notify capability found");
}

void vpd_msix_enable(struct vpd *d)
{
	uint8_t p;

	for (unsigned int v = 0; v < VPD_MAX_QUEUES + 1; v++) {
		vpd_bar_write(d, d->msix_table + v * 16, 0xfee00000u, 4);
		vpd_bar_write(d, d->msix_table + v * 16 + 4, 0, 4);
		vpd_bar_write(d, d->msix_table + v * 16 + 8, 0x40 + v, 4);
		vpd_bar_write(d, d->msix_table + v * 16 + 12, 0, 4);
	}
	for (p = (uint8_t)vpd_cfg_read(d, PCI_CAPABILITY_LIST, 1); p; p = (uint8_t)vpd_cfg_read(d, p + 1, 1))
		if (vpd_cfg_read(d, p, 1) == PCI_CAP_ID_MSIX)
			break;
	cr_assert_neq(p, 0, "no MSI-X capability");
	vpd_cfg_write(d, p + 2, MSIX_FLAGS_ENABLE, 2);
}

uint8_t vpd_status(struct vpd *d)
{
	return (uint8_t)vpd_bar_read(d, d->common + 0x14, 1);
}

bool vpd_negotiate(struct vpd *d, uint64_t features)
{
	uint64_t offered;

	features |= 1ull << 32;
	vpd_bar_write(d, d->common + 0x14, 0, 1);
	cr_assert_eq(vpd_status(d), 0, "reset reads back 0");
	vpd_bar_write(d, d->common + 0x14, 1, 1);
	vpd_bar_write(d, d->common + 0x14, 3, 1);
	vpd_bar_write(d, d->common + 0x00, 0, 4);
	offered = vpd_bar_read(d, d->common + 0x04, 4);
	vpd_bar_write(d, d->common + 0x00, 1, 4);
	offered |= vpd_bar_read(d, d->common + 0x04, 4) << 32;
	cr_assert(offered & (1ull << 32), "VERSION_1 offered");
	vpd_bar_write(d, d->common + 0x08, 0, 4);
	vpd_bar_write(d, d->common + 0x0c, (uint32_t)features, 4);
	vpd_bar_write(d, d->common + 0x08, 1, 4);
	vpd_bar_write(d, d->common + 0x0c, (uint32_t)(features >> 32), 4);
	vpd_bar_write(d, d->common + 0x14, 0xb, 1);
	vpd_bar_write(d, d->common + 0x10, 0, 2); /* config changes on vector 0 */
	return vpd_status(d) & 0x8;
}

uint64_t vpd_alloc(struct vpd *d, uint64_t len)
{
	uint64_t a = (d->heap + 4095) & ~4095ull;

	d->heap = a + len;
	cr_assert(d->heap <= VPD_RAM_SIZE, "test guest memory exhausted");
	return a;
}

void *vpd_host(struct vpd *d, uint64_t gpa, uint64_t len)
{
	void *p = gm_ptr(&d->vm->mem, gpa, len);

	cr_assert_not_null(p);
	return p;
}

void vpd_queue_setup(struct vpd *d, unsigned int q, uint16_t size)
{
	struct vpd_queue *vq = &d->q[q];

	vq->size = size;
	vq->desc = vpd_alloc(d, 16ull * size);
	vq->avail = vpd_alloc(d, 6 + 2ull * size);
	vq->used = vpd_alloc(d, 6 + 8ull * size);
	vpd_bar_write(d, d->common + 0x16, q, 2);
	vpd_bar_write(d, d->common + 0x18, size, 2);
	vpd_bar_write(d, d->common + 0x1a, q + 1, 2);
	cr_assert_eq(vpd_bar_read(d, d->common + 0x1a, 2), q + 1, "vector accepted");
	vpd_bar_write(d, d->common + 0x20, vq->desc, 8);
	vpd_bar_write(d, d->common + 0x28, vq->avail, 8);
	vpd_bar_write(d, d->common + 0x30, vq->used, 8);
	vpd_bar_write(d, d->common + 0x1c, 1, 2);
}

void vpd_driver_ok(struct vpd *d)
{
	vpd_bar_write(d, d->common + 0x14, 0xf, 1);
}

uint16_t vpd_submit(struct vpd *d, unsigned int q, const uint64_t *addr, const uint32_t *len, const bool *write,
		    unsigned int n)
{
	struct vpd_queue *vq = &d->q[q];
	uint16_t head = vq->next_desc;
	uint8_t *desc = vpd_host(d, vq->desc, 16ull * vq->size);
	uint16_t *avail = vpd_host(d, vq->avail, 6 + 2ull * vq->size);

	for (unsigned int i = 0; i < n; i++) {
		uint16_t idx = (uint16_t)((head + i) % vq->size);
		uint16_t flags = (uint16_t)((write[i] ? 2 : 0) | (i + 1 < n ? 1 : 0));
		uint16_t next = (uint16_t)((idx + 1) % vq->size);

		memcpy(desc + 16 * idx, &addr[i], 8);
		memcpy(desc + 16 * idx + 8, &len[i], 4);
		memcpy(desc + 16 * idx + 12, &flags, 2);
		memcpy(desc + 16 * idx + 14, &next, 2);
	}
	vq->next_desc = (uint16_t)((head + n) % vq->size);
	avail[2 + vq->avail_idx % vq->size] = head;
	__atomic_store_n(&avail[1], (uint16_t)(vq->avail_idx + 1), __ATOMIC_RELEASE);
	vq->avail_idx++;
	vpd_kick(d, q);
	return head;
}

static void sleep_ms(unsigned int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

uint16_t vpd_wait_used(struct vpd *d, unsigned int q, uint16_t idx, unsigned int ms)
{
	uint16_t *used = vpd_host(d, d->q[q].used, 4);
	uint16_t seen = 0;

	for (unsigned int t = 0; t <= ms; t++) {
		seen = __atomic_load_n(&used[1], __ATOMIC_ACQUIRE);
		if (seen == idx)
			break;
		sleep_ms(1);
	}
	return seen;
}

void vpd_used_elem(struct vpd *d, unsigned int q, uint16_t i, uint32_t *id, uint32_t *len)
{
	uint8_t *used = vpd_host(d, d->q[q].used, 6 + 8ull * d->q[q].size);

	memcpy(id, used + 4 + 8 * (i % d->q[q].size), 4);
	memcpy(len, used + 8 + 8 * (i % d->q[q].size), 4);
}

bool vpd_wait_status(struct vpd *d, uint8_t bits, unsigned int ms)
{
	for (unsigned int t = 0; t <= ms; t++) {
		if ((vpd_status(d) & bits) == bits)
			return true;
		sleep_ms(1);
	}
	return false;
}
