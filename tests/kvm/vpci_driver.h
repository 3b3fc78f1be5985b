/*
 * A virtio-pci driver for host-KVM tests: it plays the guest against moat's real PCI bus, transport,
 * worker threads and device models, with rings in the VM's real guest memory, but no vCPU. Register
 * accesses go straight to the bus handlers a vCPU exit would reach.
 */
#ifndef MOAT_TEST_VPCI_DRIVER_H
#define MOAT_TEST_VPCI_DRIVER_H

#include <stdbool.h>
#include <stdint.h>

#include "vmm/vm.h"

#define VPD_RAM_SIZE (16ull << 20)
#define VPD_MAX_QUEUES 4

struct vpd_queue {
	uint16_t size;
	uint64_t desc, avail, used;
	uint16_t avail_idx; /* driver's next avail index */
	uint16_t next_desc;
};

struct vpd {
	struct vm *vm;
	unsigned int slot;
	uint64_t bar;                    /* BAR 0 guest-physical address */
	uint32_t common, notify, isr, devcfg; /* offsets in BAR 0 from the capabilities */
	uint32_t notify_mult;
	bool notify_io;                  /* the first notify structure (the one drivers use) is in an I/O BAR */
	uint32_t notify_port;            /* that I/O BAR's port */
	uint32_t msix_table;
	struct vpd_queue q[VPD_MAX_QUEUES];
	uint64_t heap;                   /* bump allocator in guest memory for rings and buffers */
};

/* A VM with RAM, the platform devices and PCI host, and cfg's virtio devices, their workers started. */
void vpd_vm_create(struct vm *vm, const struct vm_config *cfg);
/* Find the virtio function of device id `device_id` and read its capabilities. */
void vpd_find(struct vpd *d, struct vm *vm, uint32_t device_id);

uint32_t vpd_cfg_read(struct vpd *d, uint32_t off, unsigned int size);
void vpd_cfg_write(struct vpd *d, uint32_t off, uint32_t val, unsigned int size);
uint64_t vpd_bar_read(struct vpd *d, uint32_t off, unsigned int size);
void vpd_bar_write(struct vpd *d, uint32_t off, uint64_t val, unsigned int size);

/* Enable MSI-X with every vector unmasked (address 0xfee00000, data 0x40 + vector). */
void vpd_msix_enable(struct vpd *d);
/* Reset, ACKNOWLEDGE, DRIVER, offer `features` (VERSION_1 added); true if FEATURES_OK stuck. */
bool vpd_negotiate(struct vpd *d, uint64_t features);
/* Lay out queue q of `size` entries in guest memory and enable it with MSI-X vector q + 1. */
void vpd_queue_setup(struct vpd *d, unsigned int q, uint16_t size);
void vpd_driver_ok(struct vpd *d);
uint8_t vpd_status(struct vpd *d);

/* Guest memory for buffers. */
uint64_t vpd_alloc(struct vpd *d, uint64_t len);
void *vpd_host(struct vpd *d, uint64_t gpa, uint64_t len);
/* Notify queue q through the notify structure a driver uses (the exit path: a vCPU's write reaching moat). */
void vpd_kick(struct vpd *d, unsigned int q);
/* Publish a chain of n buffers (addr, len, device-writable) on queue q and kick it; returns the head. */
uint16_t vpd_submit(struct vpd *d, unsigned int q, const uint64_t *addr, const uint32_t *len, const bool *write,
		    unsigned int n);
/* Wait up to ms for queue q's used index to reach idx; returns the used index seen. */
uint16_t vpd_wait_used(struct vpd *d, unsigned int q, uint16_t idx, unsigned int ms);
void vpd_used_elem(struct vpd *d, unsigned int q, uint16_t i, uint32_t *id, uint32_t *len);
/* Wait up to ms for status bits to appear. */
bool vpd_wait_status(struct vpd *d, uint8_t bits, unsigned int ms);

#endif
