/*
 * kvm-hold: keep one idle KVM VM alive until killed.
 *
 * KVM toggles static keys when the first VM is created and the last one destroyed, and (x86) when the
 * last vCPU whose local APIC is software-disabled enables it: every L2 boot does that. Under QEMU's
 * multi-threaded emulation the code patching behind a toggle occasionally oopses the test bed's L1
 * kernel (an int3 left in kvm_arch_vcpu_ioctl_run or __schedule). Holding one VM for the whole L1
 * session, on x86 with an in-kernel irqchip and one vCPU that never runs (its APIC stays disabled),
 * keeps those counts above zero, so later VMs never hit the transitions.
 *
 *   kvm-hold              create the VM, then detach into the background; exits 0 once the VM exists
 *   kvm-hold --foreground create the VM and sleep in the foreground
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int foreground = argc > 1 && strcmp(argv[1], "--foreground") == 0;
	int kvm, vm, api;
	pid_t pid;

	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0) {
		fprintf(stderr, "kvm-hold: cannot open /dev/kvm: %s\n", strerror(errno));
		return 1;
	}
	api = ioctl(kvm, KVM_GET_API_VERSION, 0);
	if (api != KVM_API_VERSION) {
		fprintf(stderr, "kvm-hold: unexpected KVM API version %d\n", api);
		return 1;
	}
	do
		vm = ioctl(kvm, KVM_CREATE_VM, 0);
	while (vm < 0 && errno == EINTR);
	if (vm < 0) {
		fprintf(stderr, "kvm-hold: KVM_CREATE_VM failed: %s\n", strerror(errno));
		return 1;
	}
#ifdef __x86_64__
	if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0) {
		fprintf(stderr, "kvm-hold: KVM_CREATE_IRQCHIP failed: %s\n", strerror(errno));
		return 1;
	}
	if (ioctl(vm, KVM_CREATE_VCPU, 0) < 0) {
		fprintf(stderr, "kvm-hold: KVM_CREATE_VCPU failed: %s\n", strerror(errno));
		return 1;
	}
#endif

	if (!foreground) {
		pid = fork();
		if (pid < 0) {
			fprintf(stderr, "kvm-hold: fork failed: %s\n", strerror(errno));
			return 1;
		}
		if (pid > 0)
			return 0; /* the child holds the VM */
		setsid();
		int null = open("/dev/null", O_RDWR);
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
			dup2(null, 2);
			if (null > 2)
				close(null);
		}
	}
	for (;;)
		pause();
}
