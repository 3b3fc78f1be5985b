/* The virtio devices the user asked for, put on the VM's PCI bus. */
#ifndef MOAT_DEVICES_H
#define MOAT_DEVICES_H

#include <stddef.h>
#include <stdint.h>

struct vm;

/*
 * The PCI host bridge every arch has: a bus with ECAM for bus 0 at [ecam_base, +ecam_size) and the memory
 * window at [mmio_base, +mmio_size), both on the VM's MMIO bus, as vm->pci (freed with the VM). reset_request
 * gets the VM when the guest resets through the bridge. The arch adds what else it decodes (x86: 0xcf8). -errno.
 */
int vm_add_pci_host(struct vm *vm, uint64_t ecam_base, uint64_t ecam_size, uint64_t mmio_base, uint64_t mmio_size,
		    void (*reset_request)(void *vm)) __attribute__((warn_unused_result));

/* --disk, --net, --rng: open the back ends, build the devices, plug them in. -errno with err set. */
int vm_add_virtio_devices(struct vm *vm, char *err, size_t errlen) __attribute__((warn_unused_result));

#endif
