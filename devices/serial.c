#include "devices/serial.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "devices/uart.h"
#include "vmm/vm.h"

struct serial {
	struct vm *vm;
	pthread_mutex_t lock;
	struct uart uart;
	unsigned int irq;
	int in_fd;          /* registered with the event loop, -1 when closed or paused */
};

static void serial_irq(void *ctx, bool level)
{
	struct serial *s = ctx;

	if (vm_set_irq_line(s->vm, s->irq, level))
		log_warn(&s->vm->log, "serial: cannot set IRQ %u", s->irq);
}

static void serial_out(void *ctx, const uint8_t *buf, size_t len)
{
	struct serial *s = ctx;

	if (s->vm->console_out < 0)
		return;
	while (len) {
		ssize_t n = write(s->vm->console_out, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return; /* console gone: drop output rather than stall the guest */
		buf += n;
		len -= (size_t)n;
	}
}

static void serial_pio_read(void *dev, uint64_t offset, void *data, unsigned int size)
{
	struct serial *s = dev;
	uint8_t *out = data;

	pthread_mutex_lock(&s->lock);
	out[0] = uart_read(&s->uart, (unsigned int)offset);
	pthread_mutex_unlock(&s->lock);
	for (unsigned int i = 1; i < size; i++)
		out[i] = 0xff;
}

static void serial_pio_write(void *dev, uint64_t offset, const void *data, unsigned int size)
{
	struct serial *s = dev;

	pthread_mutex_lock(&s->lock);
	uart_write(&s->uart, (unsigned int)offset, *(const uint8_t *)data);
	pthread_mutex_unlock(&s->lock);
}

static const struct bus_ops serial_ops = {
	.read = serial_pio_read,
	.write = serial_pio_write,
};

static void serial_input(void *ctx, uint32_t events)
{
	struct serial *s = ctx;
	uint8_t buf[UART_FIFO_SIZE];
	size_t room;
	ssize_t n;

	pthread_mutex_lock(&s->lock);
	room = uart_rx_space(&s->uart);
	pthread_mutex_unlock(&s->lock);
	if (room == 0)
		return; /* the guest has not drained the FIFO yet; level-triggered epoll retries */
	n = read(s->in_fd, buf, room);
	if (n <= 0) {
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			return;
		/* EOF or error on stdin: the guest just gets no more input. */
		event_loop_del(&s->vm->loop, s->in_fd);
		s->in_fd = -1;
		return;
	}
	pthread_mutex_lock(&s->lock);
	uart_receive(&s->uart, buf, (size_t)n);
	pthread_mutex_unlock(&s->lock);
}

int serial_create(struct vm *vm, uint16_t port, unsigned int irq)
{
	struct serial *s = calloc(1, sizeof(*s));
	struct uart_sink sink = { .irq = serial_irq, .out = serial_out };
	int r;

	if (!s)
		return -ENOMEM;
	s->vm = vm;
	s->irq = irq;
	s->in_fd = -1;
	sink.ctx = s;
	pthread_mutex_init(&s->lock, NULL);
	uart_init(&s->uart, &sink);
	r = vm_add_cleanup(vm, free, s);
	if (r) {
		free(s);
		return r;
	}
	vm->serial = s;
	r = bus_register(&vm->pio, port, 8, &serial_ops, s, "serial");
	if (r)
		return r;
	if (vm->console_in >= 0) {
		r = event_loop_add(&vm->loop, vm->console_in, EPOLLIN, serial_input, s);
		/* stdin may be a regular file or /dev/null, which epoll refuses: no input then. */
		if (r == 0)
			s->in_fd = vm->console_in;
		else if (r != -EPERM)
			return r;
	}
	return 0;
}

