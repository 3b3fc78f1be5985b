/*
 * Host-KVM tests of the arm64 arch code (arch/arm64/arch.c) on a real arm64 KVM. Tiny hand-assembled
 * AArch64 guests are packed into an arm64 Linux Image and run as moat runs a kernel: vm_create() (memory
 * map, vGICv3 + ITS, platform devices, Image and device tree, PSCI vCPUs) and vm_run() (vCPU threads).
 * They check the vGIC and ITS, vCPU 0's boot state, the PSCI calls that end a guest and the stop reason
 * each maps to, MMIO dispatch, the UART's interrupt line, and a secondary vCPU started with PSCI CPU_ON.
 *
 * A plain program with its own small harness: Debian has no static Criterion for arm64 (libnanomsg-dev:arm64
 * ships no .a) and the arm64 test bed's L1 runs static programs only. Each test runs in a forked child, one
 * at a time (KVM VMs created at once have oopsed the emulated L1); the parent prints one line per test.
 *
 *   kvm-tests [NAME...]   run every test, or the named ones; "PASS name (Xs)" or "FAIL name: reason" each,
 *                         then "N passed, N failed"; exits 1 if a test failed
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "arch/arm64/boot.h"
#include "arch/arm64/layout.h"
#include "tests/kvm-arm64/a64.h"
#include "vmm/msi.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"

/* ------------------------------------------------------------------ harness */

#define GUEST_TIMEOUT_S 20 /* a guest that does not stop is stopped (VM_STOP_TIMEOUT) and its test fails */
#define TEST_TIMEOUT_S  60 /* a test stuck in moat itself is killed */

static int fail_fd = -1; /* the child's end of the pipe its failure reason goes through */

static void __attribute__((noreturn, format(printf, 4, 5)))
fail(const char *file, int line, const char *expr, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	int n;

	n = snprintf(msg, sizeof(msg), "%s:%d: %s: ", file, line, expr);
	va_start(ap, fmt);
	if (n > 0 && (size_t)n < sizeof(msg))
		vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
	va_end(ap);
	if (write(fail_fd, msg, strlen(msg)) < 0)
		fprintf(stderr, "%s\n", msg);
	_exit(1);
}

/* The test fails, saying fmt, unless cond holds. */
#define CHECK(cond, ...)                                               \
	do {                                                           \
		if (!(cond))                                           \
			fail(__FILE__, __LINE__, #cond, __VA_ARGS__);  \
	} while (0)

struct test {
	const char *name;
	void (*fn)(void);
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Run t in a child; print its line; true if it passed. */
static bool run_test(const struct test *t)
{
	char why[1024];
	double t0 = now_s();
	int p[2], status = 0;
	ssize_t n = 0, got;
	pid_t pid;

	if (pipe(p) < 0) {
		printf("FAIL %s: pipe: %s\n", t->name, strerror(errno));
		return false;
	}
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		printf("FAIL %s: fork: %s\n", t->name, strerror(errno));
		close(p[0]);
		close(p[1]);
		return false;
	}
	if (pid == 0) {
		close(p[0]);
		fail_fd = p[1];
		alarm(TEST_TIMEOUT_S);
		t->fn();
		_exit(0);
	}
	close(p[1]);
	while (n < (ssize_t)sizeof(why) - 1 && (got = read(p[0], why + n, sizeof(why) - 1 - (size_t)n)) != 0) {
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			break;
		n += got;
	}
	why[n] = '\0';
	close(p[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && !n) {
		printf("PASS %s (%.1fs)\n", t->name, now_s() - t0);
		return true;
	}
	if (n)
		printf("FAIL %s: %s\n", t->name, why);
	else if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
		printf("FAIL %s: still running after %d s; killed\n", t->name, TEST_TIMEOUT_S);
	else if (WIFSIGNALED(status))
		printf("FAIL %s: killed by signal %d (%s)\n", t->name, WTERMSIG(status), strsignal(WTERMSIG(status)));
	else
		printf("FAIL %s: exit status %d with no reason given\n", t->name, WEXITSTATUS(status));
	return false;
}

/* ------------------------------------------------------------------ guests */

/*
 * The guest is an arm64 Linux Image: a 64-byte header whose first word branches past it, the guest's code
 * at IMG_CODE and a secondary vCPU's entry at IMG_SECONDARY. text_offset 0: it runs from the start of RAM.
 */
#define IMG_CODE        0x40u
#define IMG_SECONDARY   0x1000u
#define IMG_SIZE        0x2000u
#define GUEST_ENTRY     (ARM64_RAM_BASE + IMG_CODE)
#define GUEST_SECONDARY (ARM64_RAM_BASE + IMG_SECONDARY)
#define RAM_SIZE        (8ull << 20) /* the Image, and the device tree in the last 2 MiB-aligned 2 MiB */

/* A device the tests add at a hole of moat's arm64 memory map (layout.h), and a hole with nothing. */
#define REC_BASE  0x0a000000ull
#define REC_SIZE  0x1000u
#define HOLE_BASE 0x0b000000ull

#define PSCI_AFFINITY_INFO  0xc4000004u /* SMC64 */
#define PSCI_CPU_ON         0xc4000003u /* SMC64 */
#define PSCI_SYSTEM_OFF     0x84000008u
#define PSCI_SYSTEM_RESET   0x84000009u
#define PSCI_SYSTEM_RESET2  0xc4000012u /* SMC64; PSCI 1.1 */
#define PSCI_AFF_OFF        1

#define GICD_ISPENDR1 0x204u /* pending bits of INTIDs 32-63: SPI n is bit n */

struct guest {
	const uint32_t *code;
	size_t nwords;
	const uint32_t *secondary; /* NULL: none */
	size_t nsecondary;
	unsigned int cpus;
	bool rng;        /* add a virtio-rng: MSI-X sources allocated before the vGIC is initialised */
	int console_out; /* the UART's output; -1: discard */
};

/* What the guest stores to REC_BASE + offset lands in mem and the log; its loads read mem back. */
struct recorder {
	pthread_mutex_t lock;
	uint8_t mem[REC_SIZE];
	struct {
		uint64_t offset, value;
		unsigned int size;
	} log[32];
	unsigned int nwrites;
};

static void rec_read(void *dev, uint64_t offset, void *data, unsigned int size)
{
	struct recorder *r = dev;

	/* bus_find() keeps [offset, offset + size) inside the range. */
	pthread_mutex_lock(&r->lock);
	memcpy(data, r->mem + offset, size);
	pthread_mutex_unlock(&r->lock);
}

static void rec_write(void *dev, uint64_t offset, const void *data, unsigned int size)
{
	struct recorder *r = dev;

	pthread_mutex_lock(&r->lock);
	memcpy(r->mem + offset, data, size);
	if (r->nwrites < sizeof(r->log) / sizeof(r->log[0])) {
		r->log[r->nwrites].offset = offset;
		r->log[r->nwrites].size = size;
		r->log[r->nwrites].value = 0;
		memcpy(&r->log[r->nwrites].value, data, size);
	}
	r->nwrites++;
	pthread_mutex_unlock(&r->lock);
}

static const struct bus_ops rec_ops = { .read = rec_read, .write = rec_write };

static uint64_t rec_u64(struct recorder *r, unsigned int offset)
{
	uint64_t v;

	pthread_mutex_lock(&r->lock);
	memcpy(&v, r->mem + offset, sizeof(v));
	pthread_mutex_unlock(&r->lock);
	return v;
}

static uint32_t rec_u32(struct recorder *r, unsigned int offset)
{
	return (uint32_t)rec_u64(r, offset);
}

static const char *reason_name(enum vm_stop_reason r)
{
	static const char *const names[] = { "running", "poweroff", "reboot", "panic",
					     "crash", "timeout", "signal", "error" };

	return (unsigned int)r < sizeof(names) / sizeof(names[0]) ? names[r] : "?";
}

/* Build the guest's Image and the VM from it as moat does, then add the recorder (rec may be NULL). */
static void boot(struct vm *vm, const struct guest *g, struct recorder *rec)
{
	static uint8_t img[IMG_SIZE];
	char path[] = "/tmp/moat-kvm-arm64.XXXXXX";
	struct vm_config cfg = {
		.kernel = path,
		.cmdline = "",
		.cpus = g->cpus ? g->cpus : 1,
		.mem_size = RAM_SIZE,
		.log_level = LOG_ERROR,
		.seccomp = SECCOMP_OFF,
		.rng = g->rng,
	};
	uint32_t b = A64_B(IMG_CODE), magic = ARM64_IMAGE_MAGIC;
	uint64_t text_offset = 0, image_size = IMG_SIZE;
	char err[512];
	int fd, r;

	CHECK(g->nwords * 4 <= IMG_SECONDARY - IMG_CODE, "guest code too long");
	CHECK(g->nsecondary * 4 <= IMG_SIZE - IMG_SECONDARY, "secondary code too long");
	memset(img, 0, sizeof(img));
	memcpy(img, &b, 4); /* b .+0x40: over the header, to the code */
	memcpy(img + 8, &text_offset, 8);
	memcpy(img + 16, &image_size, 8);
	memcpy(img + 56, &magic, 4);
	memcpy(img + IMG_CODE, g->code, g->nwords * 4);
	if (g->secondary)
		memcpy(img + IMG_SECONDARY, g->secondary, g->nsecondary * 4);
	fd = mkstemp(path);
	CHECK(fd >= 0, "mkstemp %s: %s", path, strerror(errno));
	CHECK(write(fd, img, sizeof(img)) == (ssize_t)sizeof(img), "cannot write the guest Image");
	close(fd);

	vm_init(vm);
	vm->console_out = g->console_out;
	r = vm_create(vm, &cfg, err, sizeof(err));
	unlink(path);
	CHECK(r == 0, "vm_create: %s", err);
	if (rec) {
		memset(rec, 0, sizeof(*rec));
		pthread_mutex_init(&rec->lock, NULL);
		CHECK(bus_register(&vm->mmio, REC_BASE, REC_SIZE, &rec_ops, rec, "recorder") == 0, "bus_register");
	}
}

static void on_guest_timeout(void *ctx, uint32_t events)
{
	vm_request_stop(ctx, VM_STOP_TIMEOUT, "the guest did not stop by itself");
}

/* vm_run(), as moat's main() does, with a timer that stops a guest that does not stop after secs. */
static void run(struct vm *vm, int secs)
{
	struct itimerspec its = { .it_value = { .tv_sec = secs } };
	int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);

	CHECK(tfd >= 0, "timerfd_create: %s", strerror(errno));
	CHECK(timerfd_settime(tfd, 0, &its, NULL) == 0, "timerfd_settime: %s", strerror(errno));
	CHECK(event_loop_add(&vm->loop, tfd, EPOLLIN, on_guest_timeout, vm) == 0, "event_loop_add");
	vm_run(vm);
	event_loop_del(&vm->loop, tfd);
	close(tfd);
}

#define GUEST(c)     .code = (c), .nwords = sizeof(c) / sizeof((c)[0])
#define SECONDARY(c) .secondary = (c), .nsecondary = sizeof(c) / sizeof((c)[0])

/* The VM stopped for reason want. */
#define CHECK_STOP(vm, want)                                                                              \
	do {                                                                                              \
		if (vm_stop_reason(vm) != (want))                                                         \
			fail(__FILE__, __LINE__, "stop reason", "%s (%s), not %s",                        \
			     reason_name(vm_stop_reason(vm)), (vm)->stop_msg, reason_name(want));         \
	} while (0)

/* ------------------------------------------------------------------ tests */

static uint64_t get_attr(int fd, uint32_t group, uint64_t attr, unsigned int size)
{
	uint64_t v = 0;
	struct kvm_device_attr a = { .group = group, .attr = attr, .addr = (uint64_t)(uintptr_t)&v };

	CHECK(ioctl(fd, KVM_GET_DEVICE_ATTR, &a) == 0, "KVM_GET_DEVICE_ATTR group %u attr %llu: %s", group,
	      (unsigned long long)attr, strerror(errno));
	return size == 4 ? (uint32_t)v : v;
}

/*
 * arch_vm_init() creates and places the vGICv3 and the ITS, and the last arch_vcpu_init() initialises them
 * and connects the MSI irqfds that had to wait for that (virtio-rng's MSI-X vectors, allocated with the
 * device). An MSI route carrying the requester id then goes into KVM.
 */
static void test_gic_and_its(void)
{
	static const uint32_t code[] = { A64_B_SELF }; /* never run */
	struct guest g = { GUEST(code), .cpus = 2, .rng = true, .console_out = -1 };
	uint64_t dist, redist, its, nr_irqs;
	struct vm vm;

	boot(&vm, &g, NULL);
	CHECK(vm.arch.have_gic && vm.arch.have_its, "gic %d its %d", vm.arch.have_gic, vm.arch.have_its);
	CHECK(fcntl(vm.arch.gic_fd, F_GETFD) >= 0 && fcntl(vm.arch.its_fd, F_GETFD) >= 0, "device fds not open");
	dist = get_attr(vm.arch.gic_fd, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_V3_ADDR_TYPE_DIST, 8);
	redist = get_attr(vm.arch.gic_fd, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_V3_ADDR_TYPE_REDIST, 8);
	its = get_attr(vm.arch.its_fd, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_ITS_ADDR_TYPE, 8);
	CHECK(dist == ARM64_GIC_DIST_BASE, "the distributor is at 0x%llx", (unsigned long long)dist);
	CHECK(redist == ARM64_GIC_REDIST_BASE, "the redistributors are at 0x%llx", (unsigned long long)redist);
	CHECK(its == ARM64_GIC_ITS_BASE, "the ITS is at 0x%llx", (unsigned long long)its);
	nr_irqs = get_attr(vm.arch.gic_fd, KVM_DEV_ARM_VGIC_GRP_NR_IRQS, 0, 4);
	CHECK(nr_irqs == ARM64_GIC_NR_IRQS, "the vGIC has %llu interrupts", (unsigned long long)nr_irqs);
	CHECK(vm.msi_devid, "MSI routes would not carry the requester id the ITS needs");
	CHECK(vm.msi.n > 0, "virtio-rng allocated no MSI source");
	for (unsigned int i = 0; i < vm.msi.n; i++) {
		CHECK(vm.msi.routes[i].connected && !vm.msi.routes[i].irqfd_pending,
		      "MSI source %u's irqfd is not connected after the vGIC was initialised", i);
		CHECK(vm.msi.routes[i].devid != 0, "MSI source %u has no requester id", i);
	}
	CHECK(vm_msi_set(&vm, 0, ARM64_GITS_TRANSLATER, 0, true) == 0, "KVM refused an ITS route");
	CHECK(vm_msi_fire(&vm, 0) == 0, "the irqfd write failed");
	vm_destroy(&vm);
}

/* x0 = fn, x1 = arg, x2 = 0; hvc #0. If the call returns, report x0 (a PSCI error) at REC+0 and spin. */
#define PSCI_GUEST(fn, arg)                                                                      \
	{                                                                                        \
		A64_MOVZ(9, REC_BASE >> 16, 1), /* movz x9, #0x0a00, lsl #16: the recorder */    \
		A64_MOV32(0, fn),               /* movz x0, #lo; movk x0, #hi, lsl #16: fn */    \
		A64_MOVZ(1, arg, 0),            /* movz x1, #arg */                              \
		A64_MOVZ(2, 0, 0),              /* movz x2, #0 */                                \
		A64_HVC0,                       /* hvc #0 */                                     \
		A64_STR_X(0, 9, 0),             /* str x0, [x9] */                               \
		A64_B_SELF,                     /* b . */                                        \
	}

static void run_psci(const uint32_t *code, size_t nwords, enum vm_stop_reason want, const char *msg_has)
{
	struct guest g = { .code = code, .nwords = nwords, .console_out = -1 };
	struct recorder rec;
	struct vm vm;

	boot(&vm, &g, &rec);
	run(&vm, GUEST_TIMEOUT_S);
	CHECK(rec.nwrites == 0, "the PSCI call returned %lld", (long long)rec_u64(&rec, 0));
	CHECK_STOP(&vm, want);
	CHECK(strstr(vm.stop_msg, msg_has), "the stop message '%s' does not say '%s'", vm.stop_msg, msg_has);
	vm_destroy(&vm);
}

static void test_psci_system_off(void)
{
	static const uint32_t code[] = PSCI_GUEST(PSCI_SYSTEM_OFF, 0);

	run_psci(code, sizeof(code) / 4, VM_STOP_POWEROFF, "powered off");
}

static void test_psci_system_reset(void)
{
	static const uint32_t code[] = PSCI_GUEST(PSCI_SYSTEM_RESET, 0);

	run_psci(code, sizeof(code) / 4, VM_STOP_REBOOT, "rebooted");
}

/* x1 = 0: SYSTEM_WARM_RESET, what a guest with reboot=panic_warm makes on a panic. */
static void test_psci_system_reset2_warm(void)
{
	static const uint32_t code[] = PSCI_GUEST(PSCI_SYSTEM_RESET2, 0);

	run_psci(code, sizeof(code) / 4, VM_STOP_PANIC, "SYSTEM_RESET2");
}

/* vCPU 0 starts at the Image's entry with the boot protocol's registers and state. */
static void test_vcpu0_boot_state(void)
{
	static const uint32_t code[] = {
		A64_MOVZ(9, REC_BASE >> 16, 1), /* movz x9, #0x0a00, lsl #16: the recorder */
		A64_STR_X(0, 9, 0x00),          /* str x0, [x9]: the device tree's address */
		A64_STR_X(1, 9, 0x08),          /* str x1, [x9, #8] */
		A64_STR_X(2, 9, 0x10),          /* str x2, [x9, #16] */
		A64_STR_X(3, 9, 0x18),          /* str x3, [x9, #24] */
		A64_LDR_W(4, 0, 0),             /* ldr w4, [x0]: the device tree's magic */
		A64_STR_W(4, 9, 0x20),          /* str w4, [x9, #32] */
		A64_MRS_CURRENTEL(5),           /* mrs x5, CurrentEL */
		A64_STR_X(5, 9, 0x28),          /* str x5, [x9, #40] */
		A64_MRS_DAIF(6),                /* mrs x6, DAIF */
		A64_STR_X(6, 9, 0x30),          /* str x6, [x9, #48] */
		A64_ADR_SELF(7),                /* adr x7, . (word 11: GUEST_ENTRY + 44) */
		A64_STR_X(7, 9, 0x38),          /* str x7, [x9, #56] */
		A64_MOV32(0, PSCI_SYSTEM_OFF),  /* x0 = SYSTEM_OFF */
		A64_HVC0,                       /* hvc #0 */
		A64_B_SELF,                     /* b . */
	};
	struct guest g = { GUEST(code), .console_out = -1 };
	uint64_t fdt = (ARM64_RAM_BASE + RAM_SIZE - ARM64_FDT_MAX) & ~(ARM64_FDT_MAX - 1);
	struct recorder rec;
	struct vm vm;

	boot(&vm, &g, &rec);
	run(&vm, GUEST_TIMEOUT_S);
	CHECK_STOP(&vm, VM_STOP_POWEROFF);
	CHECK(rec.nwrites == 8, "%u stores reached the recorder, not 8", rec.nwrites);
	CHECK(vm.arch.fdt_addr == fdt, "device tree at 0x%llx", (unsigned long long)vm.arch.fdt_addr);
	CHECK(rec_u64(&rec, 0x00) == fdt, "x0 = 0x%llx, not the device tree's address",
	      (unsigned long long)rec_u64(&rec, 0x00));
	CHECK(rec_u64(&rec, 0x08) == 0 && rec_u64(&rec, 0x10) == 0 && rec_u64(&rec, 0x18) == 0,
	      "x1-x3 = 0x%llx 0x%llx 0x%llx", (unsigned long long)rec_u64(&rec, 0x08),
	      (unsigned long long)rec_u64(&rec, 0x10), (unsigned long long)rec_u64(&rec, 0x18));
	CHECK(rec_u32(&rec, 0x20) == 0xedfe0dd0u, "[x0] = 0x%08x, not the device tree magic d00dfeed (big-endian)",
	      rec_u32(&rec, 0x20));
	CHECK(rec_u64(&rec, 0x28) == 1u << 2, "CurrentEL = 0x%llx, not EL1", (unsigned long long)rec_u64(&rec, 0x28));
	CHECK(rec_u64(&rec, 0x30) == 0x3c0, "DAIF = 0x%llx, not D, A, I and F masked",
	      (unsigned long long)rec_u64(&rec, 0x30));
	CHECK(rec_u64(&rec, 0x38) == GUEST_ENTRY + 11 * 4, "adr x7, . gave 0x%llx, not 0x%llx: not started at the "
	      "Image's entry", (unsigned long long)rec_u64(&rec, 0x38), (unsigned long long)GUEST_ENTRY + 11 * 4);
	vm_destroy(&vm);
}

/* Stores and loads of each size reach the device at their offsets; a load from a hole reads all ones. */
static void test_mmio_reaches_the_bus(void)
{
	static const uint32_t code[] = {
		A64_MOVZ(9, REC_BASE >> 16, 1),   /* movz x9, #0x0a00, lsl #16: the recorder */
		A64_MOV32(1, 0x12345678),         /* movz x1, #0x5678; movk x1, #0x1234, lsl #16 */
		A64_STR_W(1, 9, 0x08),            /* str w1, [x9, #8] */
		A64_STRB(1, 9, 0x11),             /* strb w1, [x9, #17] */
		A64_LDR_X(2, 9, 0x40),            /* ldr x2, [x9, #64]: the value the test put there */
		A64_STR_X(2, 9, 0x28),            /* str x2, [x9, #40] */
		A64_LDRB(3, 9, 0x41),             /* ldrb w3, [x9, #65] */
		A64_STR_W(3, 9, 0x30),            /* str w3, [x9, #48] */
		A64_MOVZ(10, HOLE_BASE >> 16, 1), /* movz x10, #0x0b00, lsl #16: nothing there */
		A64_LDR_W(4, 10, 0),              /* ldr w4, [x10] */
		A64_STR_W(4, 9, 0x38),            /* str w4, [x9, #56] */
		A64_MOV32(0, PSCI_SYSTEM_OFF),    /* x0 = SYSTEM_OFF */
		A64_HVC0,                         /* hvc #0 */
		A64_B_SELF,                       /* b . */
	};
	static const struct {
		uint64_t offset, value;
		unsigned int size;
	} want[] = {
		{ 0x08, 0x12345678, 4 }, { 0x11, 0x78, 1 }, { 0x28, 0x1122334455667788ull, 8 },
		{ 0x30, 0x77, 4 },       { 0x38, 0xffffffff, 4 },
	};
	const uint64_t stored = 0x1122334455667788ull;
	struct guest g = { GUEST(code), .console_out = -1 };
	struct recorder rec;
	struct vm vm;

	boot(&vm, &g, &rec);
	memcpy(rec.mem + 0x40, &stored, sizeof(stored));
	run(&vm, GUEST_TIMEOUT_S);
	CHECK_STOP(&vm, VM_STOP_POWEROFF);
	CHECK(rec.nwrites == sizeof(want) / sizeof(want[0]), "%u stores reached the device, not %zu", rec.nwrites,
	      sizeof(want) / sizeof(want[0]));
	for (unsigned int i = 0; i < rec.nwrites; i++)
		CHECK(rec.log[i].offset == want[i].offset && rec.log[i].size == want[i].size &&
			      rec.log[i].value == want[i].value,
		      "store %u: offset 0x%llx size %u value 0x%llx; expected offset 0x%llx size %u value 0x%llx", i,
		      (unsigned long long)rec.log[i].offset, rec.log[i].size, (unsigned long long)rec.log[i].value,
		      (unsigned long long)want[i].offset, want[i].size, (unsigned long long)want[i].value);
	CHECK(vm.vcpus[0].exits_mmio == 8, "%llu MMIO exits, not 8", (unsigned long long)vm.vcpus[0].exits_mmio);
	vm_destroy(&vm);
}

/*
 * arch_add_devices(): the UART prints on the console, raises its SPI (seen pending in the guest's own
 * distributor once THR-empty interrupts are enabled), and a write to pvpanic stops the guest as a panic.
 */
static void test_uart_spi_and_pvpanic(void)
{
	static const uint32_t code[] = {
		A64_MOVZ(9, ARM64_UART_BASE >> 16, 1),     /* movz x9, #0x0900, lsl #16: the UART */
		A64_MOVZ(10, ARM64_GIC_DIST_BASE >> 16, 1), /* movz x10, #0x0800, lsl #16: the distributor */
		A64_MOVZ(11, REC_BASE >> 16, 1),           /* movz x11, #0x0a00, lsl #16: the recorder */
		A64_MOVZ(1, 'o', 0),                       /* movz x1, #'o' */
		A64_STRB(1, 9, 0),                         /* strb w1, [x9]: THR */
		A64_MOVZ(1, 'k', 0),                       /* movz x1, #'k' */
		A64_STRB(1, 9, 0),                         /* strb w1, [x9] */
		A64_MOVZ(1, '\n', 0),                      /* movz x1, #'\n' */
		A64_STRB(1, 9, 0),                         /* strb w1, [x9] */
		A64_LDR_W(2, 10, GICD_ISPENDR1),           /* ldr w2, [x10, #0x204]: GICD_ISPENDR1 */
		A64_STR_W(2, 11, 0),                       /* str w2, [x11] */
		A64_MOVZ(1, 2, 0),                         /* movz x1, #2: IER.ETBEI (THR empty) */
		A64_STRB(1, 9, 1),                         /* strb w1, [x9, #1]: IER */
		A64_LDR_W(2, 10, GICD_ISPENDR1),           /* ldr w2, [x10, #0x204] */
		A64_STR_W(2, 11, 4),                       /* str w2, [x11, #4] */
		A64_MOVZ(12, ARM64_PVPANIC_BASE >> 16, 1), /* movz x12, #0x0901, lsl #16: pvpanic */
		A64_MOVZ(1, 1, 0),                         /* movz x1, #1: PVPANIC_PANICKED */
		A64_STRB(1, 12, 0),                        /* strb w1, [x12] */
		A64_B_SELF,                                /* b . */
	};
	struct guest g = { GUEST(code) };
	struct recorder rec;
	struct vm vm;
	char out[16] = "";
	int p[2];

	CHECK(pipe(p) == 0, "pipe: %s", strerror(errno));
	g.console_out = p[1];
	boot(&vm, &g, &rec);
	run(&vm, GUEST_TIMEOUT_S);
	CHECK_STOP(&vm, VM_STOP_PANIC);
	close(p[1]);
	CHECK(read(p[0], out, sizeof(out) - 1) == 3 && strcmp(out, "ok\n") == 0, "the console got '%s'", out);
	CHECK(rec.nwrites == 2, "%u stores reached the recorder, not 2", rec.nwrites);
	CHECK(!(rec_u32(&rec, 0) & (1u << ARM64_UART_SPI)), "the UART's SPI was pending before IER enabled it "
	      "(ISPENDR1 0x%08x)", rec_u32(&rec, 0));
	CHECK(rec_u32(&rec, 4) & (1u << ARM64_UART_SPI),
	      "the UART's SPI %u is not pending in the guest's distributor (ISPENDR1 0x%08x)", ARM64_UART_SPI,
	      rec_u32(&rec, 4));
	close(p[0]);
	vm_destroy(&vm);
}

/*
 * vCPU 1 waits powered off; vCPU 0 starts it with PSCI CPU_ON (entry, context id); vCPU 1 reports and
 * powers the VM off once vCPU 0 has reported (it polls the flag vCPU 0 stores last).
 */
static void test_psci_cpu_on(void)
{
	static const uint32_t code[] = {
		A64_MOVZ(9, REC_BASE >> 16, 1),         /* movz x9, #0x0a00, lsl #16: the recorder */
		A64_MOV32(0, PSCI_AFFINITY_INFO),       /* x0 = AFFINITY_INFO */
		A64_MOVZ(1, 1, 0),                      /* movz x1, #1: MPIDR of vCPU 1 */
		A64_MOVZ(2, 0, 0),                      /* movz x2, #0: affinity level 0 */
		A64_HVC0,                               /* hvc #0 */
		A64_STR_X(0, 9, 0x00),                  /* str x0, [x9] */
		A64_MOV32(0, PSCI_CPU_ON),              /* x0 = CPU_ON */
		A64_MOVZ(1, 1, 0),                      /* movz x1, #1: target MPIDR */
		A64_MOV32(2, GUEST_SECONDARY),          /* movz x2, #0x1000; movk x2, #0x4000, lsl #16: entry */
		A64_MOVZ(3, 0xbeef, 0),                 /* movz x3, #0xbeef: context id */
		A64_HVC0,                               /* hvc #0 */
		A64_STR_X(0, 9, 0x08),                  /* str x0, [x9, #8] */
		A64_MOVZ(1, 1, 0),                      /* movz x1, #1 */
		A64_STR_X(1, 9, 0x10),                  /* str x1, [x9, #16]: vCPU 0 is done */
		A64_B_SELF,                             /* b . */
	};
	static const uint32_t secondary[] = {
		A64_MOVZ(9, REC_BASE >> 16, 1), /* movz x9, #0x0a00, lsl #16 */
		A64_STR_X(0, 9, 0x18),          /* str x0, [x9, #24]: the context id */
		A64_MRS_MPIDR(1),               /* mrs x1, MPIDR_EL1 */
		A64_STR_X(1, 9, 0x20),          /* str x1, [x9, #32] */
		A64_LDR_X(2, 9, 0x10),          /* 1: ldr x2, [x9, #16] */
		A64_CBZ_X(2, -4),               /* cbz x2, 1b */
		A64_MOV32(0, PSCI_SYSTEM_OFF),  /* x0 = SYSTEM_OFF */
		A64_HVC0,                       /* hvc #0 */
		A64_B_SELF,                     /* b . */
	};
	struct guest g = { GUEST(code), SECONDARY(secondary), .cpus = 2, .console_out = -1 };
	struct recorder rec;
	struct vm vm;

	boot(&vm, &g, &rec);
	run(&vm, GUEST_TIMEOUT_S);
	/* What the vCPUs reported first: it says more than a stop that never came. */
	CHECK(rec_u64(&rec, 0x00) == PSCI_AFF_OFF, "AFFINITY_INFO of vCPU 1 before CPU_ON = %lld, not OFF",
	      (long long)rec_u64(&rec, 0x00));
	CHECK(rec_u64(&rec, 0x08) == 0, "CPU_ON returned %lld", (long long)rec_u64(&rec, 0x08));
	CHECK(rec_u64(&rec, 0x18) == 0xbeef, "vCPU 1 got context id 0x%llx in x0",
	      (unsigned long long)rec_u64(&rec, 0x18));
	CHECK((rec_u64(&rec, 0x20) & 0xffffff) == 1, "vCPU 1 ran with MPIDR 0x%llx",
	      (unsigned long long)rec_u64(&rec, 0x20));
	CHECK(vm.vcpus[1].exits_mmio >= 3, "vCPU 1 made %llu MMIO exits", (unsigned long long)vm.vcpus[1].exits_mmio);
	CHECK_STOP(&vm, VM_STOP_POWEROFF);
	vm_destroy(&vm);
}

/* A stop request from the main thread reaches a vCPU thread spinning in the guest (the kick signal). */
static void test_stop_request_kicks_a_spinning_vcpu(void)
{
	static const uint32_t code[] = { A64_B_SELF }; /* b . */
	struct guest g = { GUEST(code), .console_out = -1 };
	double t0;
	struct vm vm;

	boot(&vm, &g, NULL);
	t0 = now_s();
	run(&vm, 1);
	CHECK_STOP(&vm, VM_STOP_TIMEOUT);
	CHECK(now_s() - t0 < 10, "vm_run took %.1f s to stop the vCPU", now_s() - t0);
	vm_destroy(&vm);
}

static const struct test tests[] = {
	{ "gic_and_its", test_gic_and_its },
	{ "vcpu0_boot_state", test_vcpu0_boot_state },
	{ "psci_system_off_stops_with_poweroff", test_psci_system_off },
	{ "psci_system_reset_stops_with_reboot", test_psci_system_reset },
	{ "psci_system_reset2_warm_stops_with_panic", test_psci_system_reset2_warm },
	{ "mmio_reaches_the_bus", test_mmio_reaches_the_bus },
	{ "uart_spi_and_pvpanic", test_uart_spi_and_pvpanic },
	{ "psci_cpu_on_starts_vcpu1", test_psci_cpu_on },
	{ "stop_request_kicks_a_spinning_vcpu", test_stop_request_kicks_a_spinning_vcpu },
};

int main(int argc, char **argv)
{
	unsigned int ntests = sizeof(tests) / sizeof(tests[0]), passed = 0, failed = 0;
	sigset_t mask;

	for (int a = 1; a < argc; a++) {
		unsigned int i = 0;

		while (i < ntests && strcmp(argv[a], tests[i].name))
			i++;
		if (i == ntests) {
			fprintf(stderr, "kvm-tests: no test named '%s'; the tests are:\n", argv[a]);
			for (i = 0; i < ntests; i++)
				fprintf(stderr, "  %s\n", tests[i].name);
			return 2;
		}
	}
	/* As in moat's main(): the kick signal is blocked everywhere but in vCPU threads. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	if (vcpu_signal_setup()) {
		fprintf(stderr, "kvm-tests: cannot install the vCPU kick handler: %s\n", strerror(errno));
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (unsigned int i = 0; i < ntests; i++) {
		bool named = argc == 1;

		for (int a = 1; a < argc && !named; a++)
			named = !strcmp(argv[a], tests[i].name);
		if (!named)
			continue;
		if (run_test(&tests[i]))
			passed++;
		else
			failed++;
	}
	printf("%u passed, %u failed\n", passed, failed);
	return failed ? 1 : 0;
}
