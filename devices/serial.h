/* The 16550 console: the pure UART model wired to a port range, an IRQ line and the console fds. */
#ifndef MOAT_SERIAL_H
#define MOAT_SERIAL_H

#include <stdint.h>

struct vm;

int serial_create(struct vm *vm, uint16_t port, unsigned int irq) __attribute__((warn_unused_result));

#endif
