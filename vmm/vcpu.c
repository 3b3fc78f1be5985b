#include "vmm/vcpu.h"

#include "vmm/sandbox.h"

#include <errno.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define VCPU_KICK_SIGNAL SIGUSR1

static void kick_handler(int sig)
{
	(void)sig;
}

int vcpu_signal_setup(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = kick_handler; /* no SA_RESTART: KVM_RUN must return EINTR */
	sigemptyset(&sa.sa_mask);
	return sigaction(VCPU_KICK_SIGNAL, &sa, NULL) < 0 ? -errno : 0;
}

static void handle_io(struct vcpu *vcpu)
{
	struct kvm_run *run = vcpu->run;
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	unsigned int size = run->io.size;

	for (uint32_t i = 0; i < run->io.count; i++, data += size) {
		if (run->io.direction == KVM_EXIT_IO_OUT)
			bus_write(&vcpu->vm->pio, run->io.port, data, size);
		else
			bus_read(&vcpu->vm->pio, run->io.port, data, size);
	}
}

static void handle_mmio(struct vcpu *vcpu)
{
	struct kvm_run *run = vcpu->run;
	unsigned int len = run->mmio.len;

	if (len > sizeof(run->mmio.data))
		return;
	if (run->mmio.is_write)
		bus_write(&vcpu->vm->mmio, run->mmio.phys_addr, run->mmio.data, len);
	else
		bus_read(&vcpu->vm->mmio, run->mmio.phys_addr, run->mmio.data, len);
}

static void handle_system_event(struct vcpu *vcpu)
{
	struct vm *vm = vcpu->vm;

	switch (vcpu->run->system_event.type) {
	case KVM_SYSTEM_EVENT_SHUTDOWN:
		vm_request_stop(vm, VM_STOP_POWEROFF, "guest powered off");
		break;
	case KVM_SYSTEM_EVENT_RESET: {
		const char *what = NULL;

		if (arch_reset_reason(vcpu->run, &what) == VM_STOP_PANIC)
			vm_request_stop(vm, VM_STOP_PANIC, "guest kernel panicked (%s)", what);
		else
			vm_request_stop(vm, VM_STOP_REBOOT, "guest rebooted");
		break;
	}
	case KVM_SYSTEM_EVENT_CRASH:
		vm_request_stop(vm, VM_STOP_PANIC, "guest crashed (vCPU %u)", vcpu->id);
		break;
	default:
		log_warn(&vm->log, "vCPU %u: ignoring system event %u", vcpu->id, vcpu->run->system_event.type);
	}
}

void vcpu_run_loop(struct vcpu *vcpu)
{
	struct vm *vm = vcpu->vm;
	struct kvm_run *run = vcpu->run;

	if (vcpu->id == 0)
		log_debug(&vm->log, "vCPU 0: first KVM_RUN at %.3f ms after start",
			  (double)(log_now_ns() - vm->log.start_ns) / 1e6);
	while (vm_stop_reason(vm) == VM_RUNNING) {
		if (ioctl(vcpu->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				run->immediate_exit = 0;
				continue;
			}
			vm_request_stop(vm, VM_STOP_ERROR, "vCPU %u: KVM_RUN failed: %s", vcpu->id, strerror(errno));
			break;
		}
		switch (run->exit_reason) {
		case KVM_EXIT_IO:
			vcpu->exits_io++;
			handle_io(vcpu);
			break;
		case KVM_EXIT_MMIO:
			vcpu->exits_mmio++;
			handle_mmio(vcpu);
			break;
		case KVM_EXIT_INTR:
			vcpu->exits_other++;
			break;
		case KVM_EXIT_HLT:
			vm_request_stop(vm, VM_STOP_POWEROFF, "vCPU %u halted", vcpu->id);
			break;
		case KVM_EXIT_SHUTDOWN: {
			char where[256];

			arch_vcpu_describe(vcpu, where, sizeof(where));
			vm_request_stop(vm, VM_STOP_CRASH, "vCPU %u: triple fault (guest crashed) at %s", vcpu->id,
					where[0] ? where : "an unknown place");
			break;
		}
		case KVM_EXIT_SYSTEM_EVENT:
			handle_system_event(vcpu);
			break;
		case KVM_EXIT_FAIL_ENTRY:
			vm_request_stop(vm, VM_STOP_ERROR, "vCPU %u: KVM could not enter the guest (reason 0x%llx)",
					vcpu->id,
					(unsigned long long)run->fail_entry.hardware_entry_failure_reason);
			break;
		case KVM_EXIT_INTERNAL_ERROR:
			vm_request_stop(vm, VM_STOP_ERROR,
					"vCPU %u: KVM internal error (suberror %u%s); this host's KVM cannot run "
					"this guest",
					vcpu->id, run->internal.suberror,
					run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION ? ", emulation failure"
											       : "");
			break;
		default:
			vm_request_stop(vm, VM_STOP_ERROR, "vCPU %u: unexpected KVM exit %u", vcpu->id,
					run->exit_reason);
		}
	}
	/* A guest that stopped making progress: say where each vCPU was when the --timeout took it. */
	if (vm_stop_reason(vm) == VM_STOP_TIMEOUT) {
		char where[256];

		arch_vcpu_describe(vcpu, where, sizeof(where));
		if (where[0])
			log_warn(&vm->log, "vCPU %u was at %s when the --timeout stopped it", vcpu->id, where);
	}
}

/* Runs under the vCPU allow-list already (sandbox_thread_start). */
static void *vcpu_thread(void *arg)
{
	struct vcpu *vcpu = arg;
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, VCPU_KICK_SIGNAL);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	vcpu_run_loop(vcpu);
	return NULL;
}

int vcpu_start(struct vcpu *vcpu)
{
	char name[16];
	int r;

	snprintf(name, sizeof(name), "moat-vcpu%u", vcpu->id);
	r = sandbox_thread_start(&vcpu->thread, THREAD_VCPU, vcpu->vm->cfg.seccomp, name, vcpu_thread, vcpu);
	if (r) {
		vm_request_stop(vcpu->vm, VM_STOP_ERROR,
				"vCPU %u: cannot start its thread under the seccomp sandbox: %s; rerun with --seccomp "
				"off to debug (this runs the guest unsandboxed)",
				vcpu->id, strerror(-r));
		return r;
	}
	vcpu->started = true;
	return 0;
}

void vcpu_kick(struct vcpu *vcpu)
{
	if (!vcpu->started)
		return;
	/* immediate_exit covers a kick that lands just before the thread enters KVM_RUN. */
	__atomic_store_n(&vcpu->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	pthread_kill(vcpu->thread, VCPU_KICK_SIGNAL);
}

void vcpu_join(struct vcpu *vcpu)
{
	if (!vcpu->started)
		return;
	pthread_join(vcpu->thread, NULL);
	vcpu->started = false;
}
