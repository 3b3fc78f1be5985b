/*
 * Host-KVM tests: tiny hand-written real-mode guests exercise the vCPU loop, port-I/O and
 * MMIO dispatch and the platform devices on this host's /dev/kvm (no Linux guest needed).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "devices/platform.h"
#include "devices/serial.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"

/* A guest that never stops must fail its test, not hang the suite. */
TestSuite(kvm, .timeout = 30);

#define CODE_ADDR 0x1000
#define RAM_SIZE  0x10000  /* 64 KiB; 0x20000.. is unbacked, so accesses there are MMIO exits */

struct recorder {
	uint8_t writes[64];
	unsigned int nwrites;
	uint64_t last_offset;
	uint8_t read_value;
};

static void rec_read(void *dev, uint64_t offset, void *data, unsigned int size)
{
	struct recorder *r = dev;

	memset(data, r->read_value, size);
	r->last_offset = offset;
}

static void rec_write(void *dev, uint64_t offset, const void *data, unsigned int size)
{
	struct recorder *r = dev;

	if (r->nwrites < sizeof(r->writes))
		r->writes[r->nwrites++] = *(const uint8_t *)data;
	r->last_offset = offset;
}

static const struct bus_ops rec_ops = { .read = rec_read, .write = rec_write };

static void setup_vm(struct vm *vm, const uint8_t *code, size_t len, int irqchip)
{
	char err[256];
	struct kvm_sregs sregs;
	struct kvm_regs regs = { .rip = CODE_ADDR, .rflags = 2 };

	vm_init(vm);
	log_init(&vm->log, LOG_ERROR, 2);
	cr_assert_eq(event_loop_init(&vm->loop), 0);
	cr_assert_eq(vm_open_kvm(vm, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(gm_add_region(&vm->mem, 0, RAM_SIZE), 0);
	cr_assert_eq(gm_alloc(&vm->mem), 0);
	cr_assert_eq(vm_map_memory(vm), 0);
	if (irqchip)
		cr_assert_eq(ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0), 0, "KVM_CREATE_IRQCHIP: %s", strerror(errno));
	cr_assert_eq(gm_write(&vm->mem, CODE_ADDR, code, len), 0);
	cr_assert_eq(vm_create_vcpus(vm, 1), 0);
	cr_assert_eq(ioctl(vm->vcpus[0].fd, KVM_GET_SREGS, &sregs), 0);
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	cr_assert_eq(ioctl(vm->vcpus[0].fd, KVM_SET_SREGS, &sregs), 0);
	cr_assert_eq(ioctl(vm->vcpus[0].fd, KVM_SET_REGS, &regs), 0);
}

Test(kvm, pio_out_and_in_reach_the_bus)
{
	/* out 0x10 'A','B'; in al,0x11; out 0x12,al; hlt */
	static const uint8_t code[] = {
		0xba, 0x10, 0x00, 0xb0, 'A', 0xee, 0xb0, 'B', 0xee, /* mov dx,0x10; mov al,'A'; out; mov al,'B'; out */
		0xba, 0x11, 0x00, 0xec,                             /* mov dx,0x11; in al,dx */
		0xba, 0x12, 0x00, 0xee,                             /* mov dx,0x12; out dx,al */
		0xf4,
	};
	struct vm vm;
	struct recorder rec = { .read_value = 0x5a };

	setup_vm(&vm, code, sizeof(code), 0);
	cr_assert_eq(bus_register(&vm.pio, 0x10, 3, &rec_ops, &rec, "rec"), 0);
	vcpu_run_loop(&vm.vcpus[0]);
	cr_assert_eq(vm_stop_reason(&vm), VM_STOP_POWEROFF, "stopped with %s", vm.stop_msg);
	cr_assert_eq(rec.nwrites, 3);
	cr_assert_eq(rec.writes[0], 'A');
	cr_assert_eq(rec.writes[1], 'B');
	cr_assert_eq(rec.writes[2], 0x5a, "IN did not return the device's value");
	cr_assert_eq(rec.last_offset, 2);
	vm_destroy(&vm);
}

Test(kvm, mmio_write_and_read_reach_the_bus)
{
	/* ds = 0x2000 (linear 0x20000, unbacked); mov [0x34], 0x77; mov al,[0x35]; out 0x12,al; hlt */
	static const uint8_t code[] = {
		0xb8, 0x00, 0x20, 0x8e, 0xd8,         /* mov ax,0x2000; mov ds,ax */
		0xb0, 0x77, 0xa2, 0x34, 0x00,         /* mov al,0x77; mov [0x34],al */
		0xa0, 0x35, 0x00,                     /* mov al,[0x35] */
		0xba, 0x12, 0x00, 0xee,               /* out 0x12, al */
		0xf4,
	};
	struct vm vm;
	struct recorder mmio = { .read_value = 0x42 };
	struct recorder pio = { 0 };

	setup_vm(&vm, code, sizeof(code), 0);
	cr_assert_eq(bus_register(&vm.mmio, 0x20000, 0x1000, &rec_ops, &mmio, "mmio"), 0);
	cr_assert_eq(bus_register(&vm.pio, 0x12, 1, &rec_ops, &pio, "pio"), 0);
	vcpu_run_loop(&vm.vcpus[0]);
	cr_assert_eq(vm_stop_reason(&vm), VM_STOP_POWEROFF, "stopped with %s", vm.stop_msg);
	cr_assert_eq(mmio.nwrites, 1);
	cr_assert_eq(mmio.writes[0], 0x77);
	cr_assert_eq(mmio.last_offset, 0x35);
	cr_assert_eq(pio.nwrites, 1);
	cr_assert_eq(pio.writes[0], 0x42);
	vm_destroy(&vm);
}

Test(kvm, unclaimed_port_reads_all_ones)
{
	static const uint8_t code[] = { 0xba, 0x34, 0x12, 0xec, 0xba, 0x12, 0x00, 0xee, 0xf4 };
	struct vm vm;
	struct recorder pio = { 0 };

	setup_vm(&vm, code, sizeof(code), 0);
	cr_assert_eq(bus_register(&vm.pio, 0x12, 1, &rec_ops, &pio, "pio"), 0);
	vcpu_run_loop(&vm.vcpus[0]);
	cr_assert_eq(pio.nwrites, 1);
	cr_assert_eq(pio.writes[0], 0xff);
	vm_destroy(&vm);
}

Test(kvm, serial_console_output_through_the_uart)
{
	/*
	 * Write "ok\n" to COM1's THR, then power off through the ACPI sleep register: with the
	 * in-kernel irqchip HLT never leaves KVM_RUN.
	 */
	static const uint8_t code[] = {
		0xba, 0xf8, 0x03, 0xb0, 'o', 0xee, 0xb0, 'k', 0xee, 0xb0, '\n', 0xee,
		0xba, 0x00, 0x06, 0xb0, 0x34, 0xee, 0xeb, 0xfe,
	};
	struct vm vm;
	int p[2];
	char buf[16] = "";

	cr_assert_eq(pipe(p), 0);
	setup_vm(&vm, code, sizeof(code), 1);
	vm.console_out = p[1];
	cr_assert_eq(serial_create(&vm, 0x3f8, 4), 0);
	cr_assert_eq(acpi_pm_create(&vm, 0x600, 0x601, 0x602, 1, 5), 0);
	vcpu_run_loop(&vm.vcpus[0]);
	cr_assert_eq(vm_stop_reason(&vm), VM_STOP_POWEROFF, "stopped with %s", vm.stop_msg);
	close(p[1]);
	cr_assert_eq(read(p[0], buf, sizeof(buf) - 1), 3);
	cr_assert_str_eq(buf, "ok\n");
	close(p[0]);
	vm_destroy(&vm);
}

static void run_port_write(uint16_t port, uint8_t value, enum vm_stop_reason want)
{
	const uint8_t code[] = {
		0xba, (uint8_t)port, (uint8_t)(port >> 8), 0xb0, value, 0xee, /* out port, value */
		0xeb, 0xfe,                                                 /* jmp $ (only a stop ends it) */
	};
	struct vm vm;

	setup_vm(&vm, code, sizeof(code), 0);
	cr_assert_eq(pvpanic_create(&vm, 0x505), 0);
	cr_assert_eq(acpi_pm_create(&vm, 0x600, 0x601, 0x602, 1, 5), 0);
	cr_assert_eq(i8042_reset_create(&vm, 0x64), 0);
	vcpu_run_loop(&vm.vcpus[0]);
	cr_assert_eq(vm_stop_reason(&vm), want, "port 0x%x value 0x%x: stopped with %d (%s)", port, value,
		     vm_stop_reason(&vm), vm.stop_msg);
	vm_destroy(&vm);
}

Test(kvm, pvpanic_write_stops_with_panic)
{
	run_port_write(0x505, 1, VM_STOP_PANIC);
}

Test(kvm, acpi_s5_sleep_stops_with_poweroff)
{
	run_port_write(0x600, (5 << 2) | 0x20, VM_STOP_POWEROFF);
}

Test(kvm, acpi_reset_register_stops_with_reboot)
{
	run_port_write(0x602, 1, VM_STOP_REBOOT);
}

Test(kvm, i8042_reset_stops_with_reboot)
{
	run_port_write(0x64, 0xfe, VM_STOP_REBOOT);
}

Test(kvm, stop_request_kicks_a_spinning_vcpu)
{
	static const uint8_t code[] = { 0xeb, 0xfe }; /* jmp $ */
	struct vm vm;
	sigset_t mask;

	/* As in main(): the kick signal is blocked everywhere but in vCPU threads. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	cr_assert_eq(vcpu_signal_setup(), 0);
	setup_vm(&vm, code, sizeof(code), 0);
	cr_assert_eq(vm_start_vcpus(&vm), 0);
	usleep(50 * 1000);
	cr_assert_eq(vm_stop_reason(&vm), VM_RUNNING);
	vm_request_stop(&vm, VM_STOP_TIMEOUT, "test");
	vm_stop_vcpus(&vm); /* must return: the vCPU leaves KVM_RUN */
	cr_assert_eq(vm_stop_reason(&vm), VM_STOP_TIMEOUT);
	vm_destroy(&vm);
}

struct word_rec {
	uint16_t value;
	int writes;
};

static void word_write(void *dev, uint64_t offset, const void *data, unsigned int size)
{
	struct word_rec *w = dev;

	w->value = 0;
	memcpy(&w->value, data, size < 2 ? size : 2);
	w->writes++;
}

static const struct bus_ops word_ops = { .write = word_write };

Test(kvm, console_input_beyond_the_fifo_pauses_and_resumes)
{
	/* Count bytes while LSR says data ready, report the count on port 0x12, power off. */
	static const uint8_t code[] = {
		0x31, 0xc9,             /* xor cx,cx */
		0xba, 0xfd, 0x03,       /* mov dx,0x3fd */
		0xec,                   /* L: in al,dx */
		0xa8, 0x01,             /* test al,1 */
		0x74, 0x0a,             /* jz done */
		0xba, 0xf8, 0x03, 0xec, /* mov dx,0x3f8; in al,dx */
		0x41,                   /* inc cx */
		0xba, 0xfd, 0x03,       /* mov dx,0x3fd */
		0xeb, 0xf1,             /* jmp L */
		0x89, 0xc8,             /* done: mov ax,cx */
		0xba, 0x12, 0x00, 0xef, /* out 0x12,ax */
		0xba, 0x00, 0x06, 0xb0, 0x34, 0xee, 0xeb, 0xfe,
	};
	static uint8_t input[5000];
	struct vm vm;
	struct word_rec count = { 0 };
	int p[2];
	char rest[8];

	cr_assert_eq(pipe(p), 0);
	memset(input, 'x', sizeof(input));
	cr_assert_eq(write(p[1], input, sizeof(input)), (ssize_t)sizeof(input));
	setup_vm(&vm, code, sizeof(code), 1);
	vm.console_in = p[0];
	cr_assert_eq(serial_create(&vm, 0x3f8, 4), 0);
	cr_assert_eq(acpi_pm_create(&vm, 0x600, 0x601, 0x602, 1, 5), 0);
	cr_assert_eq(bus_register(&vm.pio, 0x12, 2, &word_ops, &count, "count"), 0);
	/* The loop takes input until the FIFO (64) and the pending buffer (4096) are full, then pauses. */
	int passes = 0;
	while (event_loop_poll(&vm.loop, 0) > 0)
		cr_assert_lt(++passes, 10, "paused input must not keep the loop busy");
	vcpu_run_loop(&vm.vcpus[0]);
	cr_assert_eq(vm_stop_reason(&vm), VM_STOP_POWEROFF, "stopped with %s", vm.stop_msg);
	cr_assert_eq(count.writes, 1);
	cr_assert_eq(count.value, 4096 + 64, "the guest read %u bytes", count.value);
	/* Draining woke the loop (resume eventfd); the next pass reads the remaining 840 bytes. */
	cr_assert_geq(event_loop_poll(&vm.loop, 0), 1);
	cr_assert_geq(event_loop_poll(&vm.loop, 0), 1);
	cr_assert_eq(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
	cr_assert_eq(read(p[0], rest, sizeof(rest)), -1, "the pipe was drained into moat");
	close(p[1]);
	vm_destroy(&vm);
	close(p[0]);
}
