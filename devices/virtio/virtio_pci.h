/*
 * Modern virtio-pci transport (VIRTIO 1.2, 4.1): one 64-bit memory BAR holding the common, ISR,
 * device-specific and notify structures plus the MSI-X table, described by vendor capabilities.
 * Where the bus has an I/O window (x86), a small I/O BAR holds a second notify structure, listed
 * first so Linux kicks with port writes: a port write exits with its port and value in hand, while
 * an MMIO write makes KVM decode the instruction (about 10 us more per kick in the nested test bed,
 * bench/exitcost.c). Queue notifications are KVM ioeventfds that wake the device's worker;
 * interrupts are MSI-X vectors delivered through irqfds. Written once for every device: the device
 * never sees it.
 */
#ifndef MOAT_VIRTIO_PCI_H
#define MOAT_VIRTIO_PCI_H

#include <stddef.h>
#include <stdint.h>

#include "devices/pci/msix.h"
#include "devices/pci/pci.h"
#include "devices/virtio/virtio.h"
#include "devices/virtio/worker.h"

struct vm;

/* BAR 0 layout. */
#define VPCI_COMMON_OFF 0x0000u
#define VPCI_COMMON_LEN 0x0040u
#define VPCI_ISR_OFF 0x1000u
#define VPCI_ISR_LEN 0x0004u
#define VPCI_DEVCFG_OFF 0x2000u
#define VPCI_DEVCFG_LEN 0x1000u
#define VPCI_NOTIFY_OFF 0x3000u
#define VPCI_NOTIFY_MULT 4u
#define VPCI_MSIX_TABLE_OFF 0x4000u
#define VPCI_MSIX_PBA_OFF 0x5000u
#define VPCI_BAR_SIZE 0x8000u
/* The I/O BAR (BAR 2, after the 64-bit BAR 0): queue q's notify port is at 2 * q. */
#define VPCI_IO_BAR 2u
#define VPCI_IO_NOTIFY_MULT 2u

#define VIRTIO_MSI_NO_VECTOR 0xffffu

struct virtio_pci {
	struct pci_device pci;
	struct virtio_dev *dev;
	struct vm *vm;
	struct virtio_worker worker;
	struct msix msix;
	unsigned int msi_id[VIRTIO_MAX_QUEUES + 1]; /* KVM MSI source per vector */
	uint32_t dev_feature_sel, drv_feature_sel;
	uint16_t queue_sel;
	uint16_t config_vector;
	uint16_t queue_vector[VIRTIO_MAX_QUEUES];
	uint64_t queue_addr[VIRTIO_MAX_QUEUES][3]; /* desc, driver, device as written */
	uint8_t isr;
	uint64_t notify_base;  /* where the notify structure decodes now; 0: not mapped */
	uint64_t notify_port;  /* where the I/O notify structure decodes now; 0: not mapped (or none) */
	uint8_t pcicfg_cap;    /* config offset of the PCI configuration access capability */
	bool warned_intx;
};

/*
 * Put dev on the VM's PCI bus behind the modern transport and give it a worker (started by vm_run).
 * The transport owns dev from here: free_dev(p) frees it with the VM after the worker stops, also
 * when this fails. *bdf (if not NULL) gets the function's bus/device/function number. -errno with err set.
 */
int virtio_pci_add(struct vm *vm, struct virtio_dev *dev, void (*free_dev)(void *p), void *p, uint16_t *bdf,
		   char *err, size_t errlen) __attribute__((warn_unused_result));

#endif
