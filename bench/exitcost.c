/*
 * What one guest write to a device register costs on this host's KVM, by kind of exit: a port write
 * (OUT) or an MMIO write, answered in moat's userspace (an exit from KVM_RUN) or by a KVM ioeventfd
 * (no exit to userspace). A real-mode guest writes N times to the same register and halts; the
 * figure is the wall time per write. Run it where a guest can run (the nested test bed:
 * tools/testbed/run-l1.sh -- build/bench/exitcost [N]).
 *
 * Why it matters: every virtio queue kick and every virtio-iommu request is one such write. x86
 * virtio-pci devices list a port notify structure first (devices/virtio/virtio_pci.h) because the
 * port write is the cheaper exit: KVM gets the port and value from the exit itself, while an MMIO
 * write has it fetch and decode the guest's instruction.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define RAM_SIZE 0x10000u
#define CODE_ADDR 0x1000u
#define PORT 0x5000u
#define MMIO_ADDR 0x20000u /* beyond RAM: an MMIO exit */

enum kind { PIO_USER, MMIO_USER, PIO_EVENTFD, MMIO_EVENTFD, NKINDS };
static const char *const kind_name[NKINDS] = { "port write, to userspace", "MMIO write, to userspace",
					      "port write, ioeventfd", "MMIO write, ioeventfd" };

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "exitcost: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* mov cx, n; mov dx, PORT; mov ax, MMIO_ADDR >> 4; mov ds, ax; 1: (out dx, ax | mov [0], ax); loop 1b; hlt */
static size_t guest_code(uint8_t *c, enum kind k, uint16_t n)
{
	size_t i = 0, loop;

	c[i++] = 0xb9, c[i++] = (uint8_t)n, c[i++] = (uint8_t)(n >> 8);
	c[i++] = 0xba, c[i++] = (uint8_t)PORT, c[i++] = (uint8_t)(PORT >> 8);
	c[i++] = 0xb8, c[i++] = (uint8_t)(MMIO_ADDR >> 4), c[i++] = (uint8_t)(MMIO_ADDR >> 12);
	c[i++] = 0x8e, c[i++] = 0xd8;
	loop = i;
	if (k == PIO_USER || k == PIO_EVENTFD) {
		c[i++] = 0xef;
	} else {
		c[i++] = 0xa3, c[i++] = 0, c[i++] = 0;
	}
	c[i] = 0xe2, c[i + 1] = (uint8_t)(loop - (i + 2));
	i += 2;
	c[i++] = 0xf4;
	return i;
}

static double run_kind(int kvm, enum kind k, uint16_t n, long *user_exits)
{
	int vm = ioctl(kvm, KVM_CREATE_VM, 0), vcpu, efd = -1, sz;
	uint8_t *mem = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct kvm_userspace_memory_region r = { .memory_size = RAM_SIZE, .userspace_addr = (uintptr_t)mem };
	struct kvm_regs regs = { .rip = CODE_ADDR, .rflags = 2 };
	struct kvm_sregs sregs;
	struct kvm_run *run;
	double t0, t;

	if (vm < 0 || mem == MAP_FAILED || ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) < 0)
		die("cannot set up a VM");
	guest_code(mem + CODE_ADDR, k, n);
	if (k == PIO_EVENTFD || k == MMIO_EVENTFD) {
		struct kvm_ioeventfd io = { .addr = k == PIO_EVENTFD ? PORT : MMIO_ADDR, .len = 2,
					    .flags = k == PIO_EVENTFD ? KVM_IOEVENTFD_FLAG_PIO : 0 };

		efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		io.fd = efd;
		if (efd < 0 || ioctl(vm, KVM_IOEVENTFD, &io) < 0)
			die("KVM_IOEVENTFD");
	}
	vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	sz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (vcpu < 0 || sz < 0)
		die("cannot create a vCPU");
	run = mmap(NULL, (size_t)sz, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED || ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
		die("cannot map the vCPU");
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0 || ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
		die("cannot set the vCPU's registers");
	*user_exits = 0;
	t0 = now();
	for (;;) {
		if (ioctl(vcpu, KVM_RUN, 0) < 0 && errno != EINTR)
			die("KVM_RUN");
		if (run->exit_reason == KVM_EXIT_HLT)
			break;
		if (run->exit_reason != KVM_EXIT_IO && run->exit_reason != KVM_EXIT_MMIO) {
			fprintf(stderr, "exitcost: unexpected exit %u\n", run->exit_reason);
			exit(1);
		}
		++*user_exits;
	}
	t = now() - t0;
	munmap(run, (size_t)sz);
	close(vcpu);
	if (efd >= 0)
		close(efd);
	close(vm);
	munmap(mem, RAM_SIZE);
	return t;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? strtol(argv[1], NULL, 10) : 5000, exits;
	int kvm;

	if (n < 1 || n > 65535) {
		fprintf(stderr, "usage: %s [WRITES (1-65535, default 5000)]\n", argv[0]);
		return 2;
	}
	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		die("/dev/kvm");
	printf("exitcost: %ld writes per kind\n", n);
	for (int k = 0; k < NKINDS; k++) {
		double t = run_kind(kvm, (enum kind)k, (uint16_t)n, &exits);

		printf("  %-26s %8.2f us per write (%ld exits to userspace)\n", kind_name[k], t * 1e6 / (double)n, exits);
	}
	return 0;
}
