#include "devices/platform.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/vm.h"

static void pvpanic_read(void *dev, uint64_t offset, void *data, unsigned int size)
{
	/* Advertise which events we understand; Linux only sends those. */
	memset(data, 0, size);
	*(uint8_t *)data = PVPANIC_PANICKED | PVPANIC_CRASH_LOADED;
}

static void pvpanic_write(void *dev, uint64_t offset, const void *data, unsigned int size)
{
	struct vm *vm = dev;
	uint8_t v = *(const uint8_t *)data;

	if (v & PVPANIC_PANICKED)
		vm_request_stop(vm, VM_STOP_PANIC, "guest kernel panicked");
	else if (v & PVPANIC_CRASH_LOADED)
		log_warn(&vm->log, "guest kernel crashed and is loading its crash kernel");
}

static const struct bus_ops pvpanic_ops = { .read = pvpanic_read, .write = pvpanic_write };

int pvpanic_create(struct vm *vm, uint16_t port)
{
	return bus_register(&vm->pio, port, 1, &pvpanic_ops, vm, "pvpanic");
}

int pvpanic_create_mmio(struct vm *vm, uint64_t addr, uint64_t size)
{
	return bus_register(&vm->mmio, addr, size, &pvpanic_ops, vm, "pvpanic-mmio");
}

struct acpi_pm {
	struct vm *vm;
	uint8_t reset_value;
	uint8_t s5_slp_typ;
};

#define SLP_EN        0x20
#define SLP_TYP_SHIFT 2
#define SLP_TYP_MASK  0x7

static void pm_sleep_write(void *dev, uint64_t offset, const void *data, unsigned int size)
{
	struct acpi_pm *pm = dev;
	uint8_t v = *(const uint8_t *)data;

	if (!(v & SLP_EN))
		return;
	if (((v >> SLP_TYP_SHIFT) & SLP_TYP_MASK) == pm->s5_slp_typ)
		vm_request_stop(pm->vm, VM_STOP_POWEROFF, "guest powered off");
	else
		log_warn(&pm->vm->log, "guest asked for sleep type %u, which moat does not implement; ignored",
			 (v >> SLP_TYP_SHIFT) & SLP_TYP_MASK);
}

static void pm_status_read(void *dev, uint64_t offset, void *data, unsigned int size)
{
	memset(data, 0, size);
}

static void pm_status_write(void *dev, uint64_t offset, const void *data, unsigned int size)
{
}

static void pm_reset_write(void *dev, uint64_t offset, const void *data, unsigned int size)
{
	struct acpi_pm *pm = dev;

	if (*(const uint8_t *)data == pm->reset_value)
		vm_request_stop(pm->vm, VM_STOP_REBOOT, "guest rebooted");
}

static const struct bus_ops pm_sleep_ops = { .read = pm_status_read, .write = pm_sleep_write };
static const struct bus_ops pm_status_ops = { .read = pm_status_read, .write = pm_status_write };
static const struct bus_ops pm_reset_ops = { .read = pm_status_read, .write = pm_reset_write };

int acpi_pm_create(struct vm *vm, uint16_t ctl_port, uint16_t sts_port, uint16_t reset_port,
		   uint8_t reset_value, uint8_t s5_slp_typ)
{
	struct acpi_pm *pm = calloc(1, sizeof(*pm));
	int r;

	if (!pm)
		return -ENOMEM;
	pm->vm = vm;
	pm->reset_value = reset_value;
	pm->s5_slp_typ = s5_slp_typ;
	r = vm_add_cleanup(vm, free, pm);
	if (r) {
		free(pm);
		return r;
	}
	r = bus_register(&vm->pio, ctl_port, 1, &pm_sleep_ops, pm, "acpi-sleep-control");
	if (!r)
		r = bus_register(&vm->pio, sts_port, 1, &pm_status_ops, pm, "acpi-sleep-status");
	if (!r)
		r = bus_register(&vm->pio, reset_port, 1, &pm_reset_ops, pm, "acpi-reset");
	return r;
}

static void i8042_read(void *dev, uint64_t offset, void *data, unsigned int size)
{
	/* Status: input and output buffers empty, so a reset command is accepted at once. */
	memset(data, 0, size);
}

static void i8042_write(void *dev, uint64_t offset, const void *data, unsigned int size)
{
	struct vm *vm = dev;

	if (*(const uint8_t *)data == 0xfe)
		vm_request_stop(vm, VM_STOP_REBOOT, "guest rebooted (i8042 reset)");
}

static const struct bus_ops i8042_ops = { .read = i8042_read, .write = i8042_write };

int i8042_reset_create(struct vm *vm, uint16_t cmd_port)
{
	return bus_register(&vm->pio, cmd_port, 1, &i8042_ops, vm, "i8042-reset");
}
