#include <criterion/criterion.h>
#include <string.h>

#include "devices/uart.h"

struct sink_state {
	uint8_t out[256];
	size_t nout;
	int irq_changes;
	bool level;
};

static void s_irq(void *ctx, bool level)
{
	struct sink_state *s = ctx;

	s->irq_changes++;
	s->level = level;
}

static void s_out(void *ctx, const uint8_t *buf, size_t len)
{
	struct sink_state *s = ctx;

	memcpy(s->out + s->nout, buf, len);
	s->nout += len;
}

static struct uart u;
static struct sink_state st;

static void setup(void)
{
	struct uart_sink sink = { .irq = s_irq, .out = s_out, .ctx = &st };

	memset(&st, 0, sizeof(st));
	uart_init(&u, &sink);
}

TestSuite(uart, .init = setup);

enum { THR = 0, IER = 1, IIR = 2, FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7 };

Test(uart, transmit_goes_to_the_sink)
{
	uart_write(&u, THR, 'h');
	uart_write(&u, THR, 'i');
	cr_assert_eq(st.nout, 2);
	cr_assert_eq(memcmp(st.out, "hi", 2), 0);
	cr_assert_eq(uart_read(&u, LSR) & 0x60, 0x60, "THR and transmitter always empty");
}

Test(uart, divisor_latch_does_not_transmit)
{
	uart_write(&u, LCR, 0x80);
	uart_write(&u, THR, 0x01);
	uart_write(&u, IER, 0x00);
	cr_assert_eq(uart_read(&u, THR), 0x01);
	cr_assert_eq(uart_read(&u, IER), 0x00);
	uart_write(&u, LCR, 0x03);
	cr_assert_eq(st.nout, 0);
	cr_assert_eq(uart_read(&u, LCR), 0x03);
}

Test(uart, scratch_register)
{
	uart_write(&u, SCR, 0x5a);
	cr_assert_eq(uart_read(&u, SCR), 0x5a);
}

Test(uart, thre_interrupt_when_enabled_and_cleared_by_iir_read)
{
	cr_assert_eq(uart_read(&u, IIR) & 0x0f, 0x01, "no interrupt at reset");
	uart_write(&u, IER, 0x02);
	cr_assert(st.level, "enabling THRI with an empty THR raises the line");
	cr_assert_eq(uart_read(&u, IIR) & 0x0f, 0x02);
	cr_assert_not(st.level, "reading IIR acknowledged THRE");
	cr_assert_eq(uart_read(&u, IIR) & 0x0f, 0x01);
	uart_write(&u, THR, 'x');
	cr_assert(st.level, "a transmitted byte empties THR again");
}

Test(uart, receive_data_interrupt_and_fifo)
{
	const uint8_t in[] = "abc";

	uart_write(&u, IER, 0x01);
	cr_assert_not(st.level);
	cr_assert_eq(uart_receive(&u, in, 3), 3);
	cr_assert(st.level);
	cr_assert_eq(uart_read(&u, IIR) & 0x0f, 0x04);
	cr_assert_eq(uart_read(&u, LSR) & 0x01, 0x01);
	cr_assert_eq(uart_read(&u, THR), 'a');
	cr_assert_eq(uart_read(&u, THR), 'b');
	cr_assert_eq(uart_read(&u, THR), 'c');
	cr_assert_eq(uart_read(&u, LSR) & 0x01, 0);
	cr_assert_not(st.level, "drained FIFO drops the line");
}

Test(uart, fifo_overflow_sets_overrun_not_memory)
{
	uint8_t big[UART_FIFO_SIZE + 10];

	memset(big, 'z', sizeof(big));
	cr_assert_eq(uart_receive(&u, big, sizeof(big)), UART_FIFO_SIZE);
	cr_assert_eq(uart_rx_space(&u), 0);
}

Test(uart, fifo_reports_16550a)
{
	uart_write(&u, FCR, 0x07);
	cr_assert_eq(uart_read(&u, IIR) & 0xc0, 0xc0, "FIFO-enabled bits, as Linux's autoconfig expects");
}

Test(uart, loopback_mirrors_modem_lines)
{
	/* Linux's 8250 probe: MCR = LOOP | OUT2 | RTS must read back MSR status 0x90. */
	uart_write(&u, MCR, 0x10 | 0x0a);
	cr_assert_eq(uart_read(&u, MSR) & 0xf0, 0x90);
	uart_write(&u, THR, 'q');
	cr_assert_eq(st.nout, 0, "loopback does not transmit");
	cr_assert_eq(uart_read(&u, THR), 'q');
	uart_write(&u, MCR, 0x00);
	cr_assert_eq(uart_read(&u, MSR) & 0xf0, 0xb0, "carrier, DSR and CTS when connected");
}

Test(uart, out_of_range_offsets)
{
	cr_assert_eq(uart_read(&u, 8), 0xff);
	uart_write(&u, 9, 0x12);
	cr_assert_eq(st.nout, 0);
}
