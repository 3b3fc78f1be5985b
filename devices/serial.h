/* The 16550 console: the pure UART model wired to a port range, an IRQ line and the console fds. */
#ifndef MOAT_SERIAL_H
#define MOAT_SERIAL_H

#include <stdint.h>

struct vm;

/* irq is what vm_set_irq_line() takes on this arch. */
int serial_create(struct vm *vm, uint16_t port, unsigned int irq) __attribute__((warn_unused_result));
/* The same UART as 8 byte-wide registers in MMIO at addr (device tree: ns16550a, reg-shift 0). */
int serial_create_mmio(struct vm *vm, uint64_t addr, unsigned int irq) __attribute__((warn_unused_result));

#endif
