/*
 * Host-KVM tests of vm_msi: an MSI source's irqfd written while its vector is masked (as vhost does, not
 * knowing about masks) must reach the guest once the vector is unmasked, like the PCI pending bit, and
 * never while it is masked. Seen in the vCPU's local APIC (IRR), with an in-kernel irqchip.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <linux/kvm.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "vmm/msi.h"
#include "vmm/vm.h"

#ifdef __x86_64__

TestSuite(msi, .timeout = 30);

#define APIC_SVR        0xf0
#define APIC_SVR_ENABLE 0x100u
#define APIC_IRR        0x200
#define MSI_ADDR        0xfee00000ull /* physical destination APIC ID 0 */
#define VECTOR          0x45u

struct rig {
	struct vm vm;
	int vcpu_fd;
	unsigned int id;
	int irqfd;
};

static uint32_t apic_reg(const struct kvm_lapic_state *s, unsigned int off)
{
	uint32_t v;

	memcpy(&v, s->regs + off, sizeof(v));
	return v;
}

static bool irr_has(struct rig *r, unsigned int vector)
{
	struct kvm_lapic_state s;

	cr_assert_eq(ioctl(r->vcpu_fd, KVM_GET_LAPIC, &s), 0, "KVM_GET_LAPIC: %s", strerror(errno));
	return apic_reg(&s, APIC_IRR + 0x10 * (vector / 32)) & (1u << (vector % 32));
}

/* KVM injects an irqfd from a work item: poll for up to 2 s. */
static bool irr_arrives(struct rig *r, unsigned int vector)
{
	for (int i = 0; i < 200; i++) {
		if (irr_has(r, vector))
			return true;
		nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000 * 1000 }, NULL);
	}
	return false;
}

static void rig_up(struct rig *r)
{
	struct kvm_lapic_state s;
	char err[512];
	uint32_t svr;

	memset(r, 0, sizeof(*r));
	vm_init(&r->vm);
	log_init(&r->vm.log, LOG_ERROR, 2);
	cr_assert_eq(event_loop_init(&r->vm.loop), 0);
	cr_assert_eq(vm_open_kvm(&r->vm, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(ioctl(r->vm.vm_fd, KVM_CREATE_IRQCHIP, 0), 0, "KVM_CREATE_IRQCHIP: %s", strerror(errno));
	r->vcpu_fd = ioctl(r->vm.vm_fd, KVM_CREATE_VCPU, 0);
	cr_assert_geq(r->vcpu_fd, 0, "KVM_CREATE_VCPU: %s", strerror(errno));
	/* A local APIC accepts fixed interrupts only when software-enabled. */
	cr_assert_eq(ioctl(r->vcpu_fd, KVM_GET_LAPIC, &s), 0);
	svr = apic_reg(&s, APIC_SVR) | APIC_SVR_ENABLE | 0xff;
	memcpy(s.regs + APIC_SVR, &svr, sizeof(svr));
	cr_assert_eq(ioctl(r->vcpu_fd, KVM_SET_LAPIC, &s), 0, "KVM_SET_LAPIC: %s", strerror(errno));
	cr_assert_eq(vm_msi_alloc(&r->vm, 0, &r->id), 0);
	r->irqfd = vm_msi_irqfd(&r->vm, r->id);
	cr_assert_geq(r->irqfd, 0);
}

static void rig_down(struct rig *r)
{
	close(r->vcpu_fd);
	vm_destroy(&r->vm);
}

static void signal_irqfd(struct rig *r)
{
	uint64_t one = 1;

	cr_assert_eq(write(r->irqfd, &one, sizeof(one)), (ssize_t)sizeof(one));
}

Test(msi, routed_irqfd_reaches_the_apic)
{
	struct rig r;

	rig_up(&r);
	cr_assert_eq(vm_msi_set(&r.vm, r.id, MSI_ADDR, VECTOR, true), 0);
	cr_assert_not(irr_has(&r, VECTOR));
	signal_irqfd(&r);
	cr_assert(irr_arrives(&r, VECTOR), "the routed irqfd's interrupt never reached the APIC");
	rig_down(&r);
}

Test(msi, masked_irqfd_stays_pending)
{
	struct rig r;

	rig_up(&r);
	cr_assert_eq(vm_msi_set(&r.vm, r.id, MSI_ADDR, VECTOR, true), 0);
	/* The guest masks the vector; the back end signals anyway. */
	cr_assert_eq(vm_msi_set(&r.vm, r.id, MSI_ADDR, VECTOR, false), 0);
	signal_irqfd(&r);
	nanosleep(&(struct timespec){ .tv_nsec = 200 * 1000 * 1000 }, NULL);
	cr_assert_not(irr_has(&r, VECTOR), "an interrupt went through a masked vector");
	/* Unmasked (here with a new vector, as an affinity change would do): the held interrupt arrives. */
	cr_assert_eq(vm_msi_set(&r.vm, r.id, MSI_ADDR, VECTOR + 1, true), 0);
	cr_assert(irr_arrives(&r, VECTOR + 1), "the interrupt signalled while masked was lost");
	cr_assert_not(irr_has(&r, VECTOR));
	rig_down(&r);
}

Test(msi, signal_before_the_first_route_waits_for_it)
{
	struct rig r;

	rig_up(&r);
	signal_irqfd(&r);
	nanosleep(&(struct timespec){ .tv_nsec = 100 * 1000 * 1000 }, NULL);
	cr_assert_eq(vm_msi_set(&r.vm, r.id, MSI_ADDR, VECTOR, true), 0);
	cr_assert(irr_arrives(&r, VECTOR), "an interrupt signalled before the vector was routed was lost");
	rig_down(&r);
}

#endif
