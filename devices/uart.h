/*
 * 16550A UART model. Pure: register reads/writes in, bytes and interrupt-line changes
 * out through injected callbacks, so it is unit-testable without KVM. Not thread-safe:
 * the caller serialises access (devices/serial.c holds a lock).
 */
#ifndef MOAT_UART_H
#define MOAT_UART_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UART_FIFO_SIZE 64
#define UART_NREGS 8

struct uart_sink {
	void (*irq)(void *ctx, bool level);                      /* interrupt line changed */
	void (*out)(void *ctx, const uint8_t *buf, size_t len);  /* bytes the guest transmitted */
	void *ctx;
};

struct uart {
	uint8_t ier, lcr, mcr, lsr_err, msr, scr, dll, dlm, fcr;
	bool thre_pending;   /* THR-empty interrupt latched, cleared by an IIR read or a THR write */
	bool irq_level;
	uint8_t rx[UART_FIFO_SIZE];
	unsigned int rx_head, rx_count;
	struct uart_sink sink;
};

void uart_init(struct uart *u, const struct uart_sink *sink);
uint8_t uart_read(struct uart *u, unsigned int offset);
void uart_write(struct uart *u, unsigned int offset, uint8_t value);
/* Queue received bytes; returns how many fit. */
size_t uart_receive(struct uart *u, const uint8_t *buf, size_t len);
size_t uart_rx_space(const struct uart *u);

#endif
