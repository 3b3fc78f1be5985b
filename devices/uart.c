#include "devices/uart.h"

#include <string.h>

enum {
	REG_DATA = 0, REG_IER = 1, REG_IIR_FCR = 2, REG_LCR = 3,
	REG_MCR = 4, REG_LSR = 5, REG_MSR = 6, REG_SCR = 7,
};

#define IER_RDI   0x01
#define IER_THRI  0x02
#define IER_RLSI  0x04
#define IER_MSI   0x08
#define IIR_NONE  0x01
#define IIR_MSI   0x00
#define IIR_THRI  0x02
#define IIR_RDI   0x04
#define IIR_RLSI  0x06
#define IIR_FIFO  0xc0
#define LCR_DLAB  0x80
#define MCR_DTR   0x01
#define MCR_RTS   0x02
#define MCR_OUT1  0x04
#define MCR_OUT2  0x08
#define MCR_LOOP  0x10
#define LSR_DR    0x01
#define LSR_OE    0x02
#define LSR_THRE  0x20
#define LSR_TEMT  0x40
#define MSR_DELTA 0x0f
#define MSR_CTS   0x10
#define MSR_DSR   0x20
#define MSR_RI    0x40
#define MSR_DCD   0x80
#define FCR_ENABLE   0x01
#define FCR_CLEAR_RX 0x02

void uart_init(struct uart *u, const struct uart_sink *sink)
{
	memset(u, 0, sizeof(*u));
	u->sink = *sink;
	/* A console with carrier: DCD, DSR and CTS asserted, as a connected terminal looks. */
	u->msr = MSR_DCD | MSR_DSR | MSR_CTS;
	u->dll = 0x0c; /* 9600 baud, what a reset 16550 reports */
}

static uint8_t uart_iir(const struct uart *u)
{
	uint8_t fifo = (u->fcr & FCR_ENABLE) ? IIR_FIFO : 0;

	if ((u->ier & IER_RLSI) && u->lsr_err)
		return IIR_RLSI | fifo;
	if ((u->ier & IER_RDI) && u->rx_count)
		return IIR_RDI | fifo;
	if ((u->ier & IER_THRI) && u->thre_pending)
		return IIR_THRI | fifo;
	if ((u->ier & IER_MSI) && (u->msr & MSR_DELTA))
		return IIR_MSI | fifo;
	return IIR_NONE | fifo;
}

static void uart_update_irq(struct uart *u)
{
	bool level = !(uart_iir(u) & IIR_NONE);

	if (level != u->irq_level) {
		u->irq_level = level;
		if (u->sink.irq)
			u->sink.irq(u->sink.ctx, level);
	}
}

static uint8_t uart_msr(const struct uart *u)
{
	uint8_t m;

	if (!(u->mcr & MCR_LOOP))
		return u->msr;
	/* Loopback: modem outputs feed back into the modem status inputs. */
	m = u->msr & MSR_DELTA;
	if (u->mcr & MCR_RTS)
		m |= MSR_CTS;
	if (u->mcr & MCR_DTR)
		m |= MSR_DSR;
	if (u->mcr & MCR_OUT1)
		m |= MSR_RI;
	if (u->mcr & MCR_OUT2)
		m |= MSR_DCD;
	return m;
}

static void uart_push_rx(struct uart *u, uint8_t b)
{
	if (u->rx_count == UART_FIFO_SIZE) {
		u->lsr_err |= LSR_OE;
		return;
	}
	u->rx[(u->rx_head + u->rx_count) % UART_FIFO_SIZE] = b;
	u->rx_count++;
}

uint8_t uart_read(struct uart *u, unsigned int offset)
{
	uint8_t v = 0;

	switch (offset) {
	case REG_DATA:
		if (u->lcr & LCR_DLAB)
			return u->dll;
		if (u->rx_count) {
			v = u->rx[u->rx_head];
			u->rx_head = (u->rx_head + 1) % UART_FIFO_SIZE;
			u->rx_count--;
		}
		break;
	case REG_IER:
		return (u->lcr & LCR_DLAB) ? u->dlm : u->ier;
	case REG_IIR_FCR:
		v = uart_iir(u);
		/* Reading IIR acknowledges a THR-empty interrupt when it is the one reported. */
		if ((v & 0x0f) == IIR_THRI)
			u->thre_pending = false;
		break;
	case REG_LCR:
		return u->lcr;
	case REG_MCR:
		return u->mcr;
	case REG_LSR:
		/* Transmission is instantaneous: THR and the shift register are always empty. */
		v = LSR_THRE | LSR_TEMT | u->lsr_err | (u->rx_count ? LSR_DR : 0);
		u->lsr_err = 0;
		break;
	case REG_MSR:
		v = uart_msr(u);
		u->msr &= (uint8_t)~MSR_DELTA;
		break;
	case REG_SCR:
		return u->scr;
	default:
		return 0xff;
	}
	uart_update_irq(u);
	return v;
}

void uart_write(struct uart *u, unsigned int offset, uint8_t value)
{
	switch (offset) {
	case REG_DATA:
		if (u->lcr & LCR_DLAB) {
			u->dll = value;
			return;
		}
		if (u->mcr & MCR_LOOP)
			uart_push_rx(u, value);
		else if (u->sink.out)
			u->sink.out(u->sink.ctx, &value, 1);
		/* The byte left at once, so the holding register is empty again. */
		u->thre_pending = true;
		break;
	case REG_IER:
		if (u->lcr & LCR_DLAB) {
			u->dlm = value;
			return;
		}
		/* Enabling THRI while THR is empty raises the interrupt, as on real parts. */
		if ((value & IER_THRI) && !(u->ier & IER_THRI))
			u->thre_pending = true;
		u->ier = value & 0x0f;
		break;
	case REG_IIR_FCR:
		if (value & FCR_CLEAR_RX) {
			u->rx_head = 0;
			u->rx_count = 0;
		}
		u->fcr = value & 0xc9;
		break;
	case REG_LCR:
		u->lcr = value;
		return;
	case REG_MCR:
		u->mcr = value & 0x1f;
		break;
	case REG_SCR:
		u->scr = value;
		return;
	default:
		return;
	}
	uart_update_irq(u);
}

size_t uart_rx_space(const struct uart *u)
{
	return UART_FIFO_SIZE - u->rx_count;
}

size_t uart_receive(struct uart *u, const uint8_t *buf, size_t len)
{
	size_t n = 0;

	if (u->mcr & MCR_LOOP)
		return 0;
	while (n < len && u->rx_count < UART_FIFO_SIZE)
		uart_push_rx(u, buf[n++]);
	uart_update_irq(u);
	return n;
}
