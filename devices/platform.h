/*
 * Small platform devices that end the guest's life: the pvpanic port (QEMU0001), the ACPI
 * hardware-reduced sleep/reset registers, and the i8042 reset line.
 */
#ifndef MOAT_PLATFORM_H
#define MOAT_PLATFORM_H

#include <stdint.h>

struct vm;

#define PVPANIC_PANICKED     0x1
#define PVPANIC_CRASH_LOADED 0x2

int pvpanic_create(struct vm *vm, uint16_t port) __attribute__((warn_unused_result));
/* The same as MMIO (device tree: qemu,pvpanic-mmio); only the first byte is meaningful. */
int pvpanic_create_mmio(struct vm *vm, uint64_t addr, uint64_t size) __attribute__((warn_unused_result));
/* sleep control at ctl_port, sleep status at sts_port, reset register at reset_port. */
int acpi_pm_create(struct vm *vm, uint16_t ctl_port, uint16_t sts_port, uint16_t reset_port,
		   uint8_t reset_value, uint8_t s5_slp_typ) __attribute__((warn_unused_result));
/* The i8042 command port: 0xfe pulses the CPU reset line. */
int i8042_reset_create(struct vm *vm, uint16_t cmd_port) __attribute__((warn_unused_result));

#endif
