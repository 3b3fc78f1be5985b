#include "devices/serial.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "devices/uart.h"
#include "vmm/vm.h"

struct serial {
	struct vm *vm;
	pthread_mutex_t lock;
	struct uart uart;
	unsigned int irq;
	int in_fd;          /* registered with the event loop, -1 when closed */
	/*
	 * Console input the UART's 64-byte FIFO cannot take yet. When it fills, input is paused
	 * (the fd stays registered with no events) rather than polled in a busy loop; a vCPU that
	 * drains it wakes the event loop through resume_efd.
	 */
	uint8_t pending[4096];
	size_t pend_head, pend_len;
	bool paused;
	int resume_efd;
};

/* Move pending input into the FIFO; called with the lock held. Returns true if input should resume. */
static bool serial_refill(struct serial *s)
{
	while (s->pend_len && uart_rx_space(&s->uart)) {
		size_t n = sizeof(s->pending) - s->pend_head;
		if (n > s->pend_len)
			n = s->pend_len;
		n = uart_receive(&s->uart, s->pending + s->pend_head, n);
		if (!n)
			break;
		s->pend_head = (s->pend_head + n) % sizeof(s->pending);
		s->pend_len -= n;
	}
	return s->paused && s->pend_len <= sizeof(s->pending) / 2;
}

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

	uint64_t one = 1;
	bool resume = false;

	pthread_mutex_lock(&s->lock);
	out[0] = uart_read(&s->uart, (unsigned int)offset);
	if (offset == 0 && s->pend_len)
		resume = serial_refill(s);
	if (resume)
		s->paused = false;
	pthread_mutex_unlock(&s->lock);
	if (resume && write(s->resume_efd, &one, sizeof(one)) < 0)
		log_warn(&s->vm->log, "serial: cannot wake the event loop to resume console input");
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
	uint8_t buf[sizeof(s->pending)];
	size_t room, tail;
	ssize_t n;
	bool full;

	pthread_mutex_lock(&s->lock);
	room = sizeof(s->pending) - s->pend_len;
	pthread_mutex_unlock(&s->lock);
	/* Only the event loop adds to pending, so room can only grow until we append. */
	n = room ? read(s->in_fd, buf, room) : 0;
	if (room && n <= 0) {
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			return;
		/* EOF or error on stdin: the guest just gets no more input. */
		event_loop_del(&s->vm->loop, s->in_fd);
		s->in_fd = -1;
		return;
	}
	pthread_mutex_lock(&s->lock);
	tail = (s->pend_head + s->pend_len) % sizeof(s->pending);
	for (ssize_t i = 0; i < n; i++)
		s->pending[(tail + (size_t)i) % sizeof(s->pending)] = buf[i];
	s->pend_len += (size_t)n;
	serial_refill(s);
	full = s->pend_len == sizeof(s->pending);
	if (full)
		s->paused = true;
	pthread_mutex_unlock(&s->lock);
	if (full && event_loop_mod(&s->vm->loop, s->in_fd, 0))
		log_warn(&s->vm->log, "serial: cannot pause console input");
}

static void serial_resume(void *ctx, uint32_t events)
{
	struct serial *s = ctx;
	uint64_t v;

	if (read(s->resume_efd, &v, sizeof(v)) < 0)
		return;
	if (s->in_fd >= 0 && event_loop_mod(&s->vm->loop, s->in_fd, EPOLLIN))
		log_warn(&s->vm->log, "serial: cannot resume console input");
}

static void serial_free(void *p)
{
	struct serial *s = p;

	if (s->resume_efd >= 0)
		close(s->resume_efd);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static int serial_create_on(struct vm *vm, struct bus *bus, uint64_t base, unsigned int irq)
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
	s->resume_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->resume_efd < 0) {
		r = -errno;
		serial_free(s);
		return r;
	}
	r = vm_add_cleanup(vm, serial_free, s);
	if (r) {
		serial_free(s);
		return r;
	}
	r = event_loop_add(&vm->loop, s->resume_efd, EPOLLIN, serial_resume, s);
	if (r)
		return r;
	vm->serial = s;
	r = bus_register(bus, base, 8, &serial_ops, s, "serial");
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


int serial_create(struct vm *vm, uint16_t port, unsigned int irq)
{
	return serial_create_on(vm, &vm->pio, port, irq);
}

int serial_create_mmio(struct vm *vm, uint64_t addr, unsigned int irq)
{
	return serial_create_on(vm, &vm->mmio, addr, irq);
}
