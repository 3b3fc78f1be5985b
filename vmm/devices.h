/* The virtio devices the user asked for, put on the VM's PCI bus. */
#ifndef MOAT_DEVICES_H
#define MOAT_DEVICES_H

#include <stddef.h>

struct vm;

/* --disk, --net, --rng: open the back ends, build the devices, plug them in. -errno with err set. */
int vm_add_virtio_devices(struct vm *vm, char *err, size_t errlen) __attribute__((warn_unused_result));

#endif
