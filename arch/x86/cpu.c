#include "arch/x86/cpu.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "arch/x86/layout.h"
#include "vmm/memory.h"

#define CPUID_MAX_ENTRIES 256

int x86_cpuid_supported(int kvm_fd, struct kvm_cpuid2 **out)
{
	for (unsigned int n = CPUID_MAX_ENTRIES; n <= 4 * CPUID_MAX_ENTRIES; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
		if (!c)
			return -ENOMEM;
		c->nent = n;
		if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
			*out = c;
			return 0;
		}
		free(c);
		if (errno != E2BIG)
			return -errno;
	}
	return -E2BIG;
}

struct kvm_cpuid_entry2 *x86_cpuid_find(struct kvm_cpuid2 *c, uint32_t function, uint32_t index)
{
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		if (e->function != function)
			continue;
		if ((e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) && e->index != index)
			continue;
		return e;
	}
	return NULL;
}

static unsigned int order_base2(unsigned int n)
{
	unsigned int s = 0;

	while ((1u << s) < n)
		s++;
	return s;
}

static int is_amd(const struct kvm_cpuid2 *c)
{
	for (uint32_t i = 0; i < c->nent; i++) {
		const struct kvm_cpuid_entry2 *e = &c->entries[i];
		/* "AuthenticAMD" / "HygonGenuine" */
		if (e->function == 0)
			return (e->ebx == 0x68747541 && e->ecx == 0x444d4163 && e->edx == 0x69746e65) ||
			       (e->ebx == 0x6f677948 && e->ecx == 0x656e6975 && e->edx == 0x6e65476e);
	}
	return 0;
}

/*
 * Topology: one socket, ncpus cores, one thread per core; APIC id = vCPU index. Every leaf
 * that describes topology must agree, or Linux reports mismatches and may mis-size its masks.
 */
static void remove_leaf(struct kvm_cpuid2 *c, uint32_t function)
{
	uint32_t out = 0;

	for (uint32_t i = 0; i < c->nent; i++)
		if (c->entries[i].function != function)
			c->entries[out++] = c->entries[i];
	c->nent = out;
}

/* Leaf 0xb / 0x1f: level 0 = SMT (one thread per core), level 1 = core, level 2 ends the list. */
static void add_topology_leaf(struct kvm_cpuid2 *c, uint32_t function, unsigned int index, unsigned int ncpus)
{
	unsigned int core_bits = order_base2(ncpus);

	remove_leaf(c, function);
	for (uint32_t sub = 0; sub < 3; sub++) {
		struct kvm_cpuid_entry2 *e = &c->entries[c->nent++];

		memset(e, 0, sizeof(*e));
		e->function = function;
		e->index = sub;
		e->flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
		e->edx = index; /* x2APIC id */
		e->ecx = sub;
		if (sub == 0) {
			e->eax = 0;
			e->ebx = 1;
			e->ecx |= 1u << 8;
		} else if (sub == 1) {
			e->eax = core_bits;
			e->ebx = ncpus;
			e->ecx |= 2u << 8;
		}
	}
}

void x86_cpuid_patch(struct kvm_cpuid2 *c, unsigned int index, unsigned int ncpus, int tsc_deadline)
{
	unsigned int core_bits = order_base2(ncpus);
	int amd = is_amd(c);
	struct kvm_cpuid_entry2 *basic = x86_cpuid_find(c, 0, 0);
	uint32_t max_basic = basic ? basic->eax : 0;

	if (max_basic >= 0xb)
		add_topology_leaf(c, 0xb, index, ncpus);
	if (max_basic >= 0x1f)
		add_topology_leaf(c, 0x1f, index, ncpus);

	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];

		switch (e->function) {
		case 1:
			e->ebx = (index << 24) | ((ncpus > 1 ? ncpus : 1) << 16) | (8u << 8) | (e->ebx & 0xff);
			if (ncpus > 1)
				e->edx |= 1u << 28; /* HTT: the count in EBX[23:16] is valid */
			else
				e->edx &= ~(1u << 28);
			e->ecx |= 1u << 31; /* hypervisor present */
			if (tsc_deadline)
				e->ecx |= 1u << 24;
			break;
		case 4:
			/* Deterministic cache parameters (Intel): cores per package, sharing. */
			if ((e->eax & 0x1f) == 0)
				break;
			e->eax &= 0x3ff;
			e->eax |= (ncpus - 1) << 26;
			if (((e->eax >> 5) & 0x7) == 3)
				e->eax |= (ncpus - 1) << 14; /* L3 shared by all */
			break;
		case 6:
			/* No thermal/power management MSRs are emulated. */
			e->ecx &= ~1u; /* APERF/MPERF */
			break;
		case 0x80000001:
			if (amd) {
				if (ncpus > 1)
					e->ecx |= 1u << 1; /* CmpLegacy */
				else
					e->ecx &= ~(1u << 1);
			}
			break;
		case 0x80000008:
			if (amd)
				e->ecx = (core_bits << 12) | (ncpus - 1);
			break;
		case 0x8000001e:
			if (amd) {
				e->eax = index;    /* extended APIC id */
				e->ebx = index;    /* core id; threads per core - 1 = 0 */
				e->ecx = 0;        /* node 0, one node per processor */
			}
			break;
		}
	}
}

#define PDE_PRESENT 0x1ull
#define PDE_RW      0x2ull
#define PDE_PS      0x80ull

int x86_setup_boot_tables(const struct guest_memory *gm)
{
	/* null, null, code64 (0x10), data (0x18), TSS (0x20): the selectors Linux's boot protocol wants. */
	static const uint64_t gdt[] = {
		0, 0, 0x00af9b000000ffffull, 0x00cf93000000ffffull, 0x008f8b000000ffffull,
	};
	uint64_t *pml4 = gm_ptr(gm, X86_PML4_ADDR, 4096);
	uint64_t *pdpt = gm_ptr(gm, X86_PDPT_ADDR, 4096);
	uint64_t *pd = gm_ptr(gm, X86_PD_ADDR, 4 * 4096);
	int r;

	if (!pml4 || !pdpt || !pd)
		return -EFAULT;
	r = gm_write(gm, X86_GDT_ADDR, gdt, sizeof(gdt));
	if (!r)
		r = gm_write(gm, X86_IDT_ADDR, &(uint64_t){ 0 }, sizeof(uint64_t));
	if (r)
		return r;
	memset(pml4, 0, 4096);
	memset(pdpt, 0, 4096);
	pml4[0] = X86_PDPT_ADDR | PDE_PRESENT | PDE_RW;
	for (unsigned int i = 0; i < 4; i++)
		pdpt[i] = (X86_PD_ADDR + i * 4096ull) | PDE_PRESENT | PDE_RW;
	for (unsigned int i = 0; i < 4 * 512; i++)
		pd[i] = ((uint64_t)i << 21) | PDE_PRESENT | PDE_RW | PDE_PS;
	return 0;
}

static struct kvm_segment seg(uint16_t sel, uint8_t type, uint8_t s, uint8_t l, uint8_t db)
{
	struct kvm_segment sg = {
		.base = 0, .limit = 0xffffffff, .selector = sel, .type = type, .present = 1,
		.dpl = 0, .db = db, .s = s, .l = l, .g = 1,
	};
	return sg;
}

void x86_boot_sregs(struct kvm_sregs *sregs)
{
	struct kvm_segment data = seg(0x18, 0x3, 1, 0, 1);

	sregs->cs = seg(0x10, 0xb, 1, 1, 0);
	sregs->ds = sregs->es = sregs->fs = sregs->gs = sregs->ss = data;
	sregs->tr = seg(0x20, 0xb, 0, 0, 0);
	sregs->tr.limit = 0xfffff;
	sregs->tr.g = 0;
	sregs->ldt = seg(0, 0x2, 0, 0, 0);
	sregs->ldt.limit = 0xffff;
	sregs->ldt.g = 0;
	sregs->gdt.base = X86_GDT_ADDR;
	sregs->gdt.limit = 5 * 8 - 1;
	sregs->idt.base = X86_IDT_ADDR;
	sregs->idt.limit = 7;
	sregs->cr0 = 0x1 /* PE */ | 0x10 /* ET */ | 0x80000000u /* PG */;
	sregs->cr3 = X86_PML4_ADDR;
	sregs->cr4 = 0x20; /* PAE */
	sregs->efer = 0x100 /* LME */ | 0x400 /* LMA */;
}

void x86_boot_regs(struct kvm_regs *regs, uint64_t entry, uint64_t boot_params)
{
	memset(regs, 0, sizeof(*regs));
	regs->rflags = 0x2;
	regs->rip = entry;
	regs->rsi = boot_params;
	regs->rsp = X86_BOOT_STACK;
	regs->rbp = X86_BOOT_STACK;
}

#define MSR_IA32_SYSENTER_CS  0x174
#define MSR_IA32_SYSENTER_ESP 0x175
#define MSR_IA32_SYSENTER_EIP 0x176
#define MSR_STAR              0xc0000081
#define MSR_LSTAR             0xc0000082
#define MSR_CSTAR             0xc0000083
#define MSR_SYSCALL_MASK      0xc0000084
#define MSR_KERNEL_GS_BASE    0xc0000102
#define MSR_IA32_TSC          0x10
#define MSR_IA32_MISC_ENABLE  0x1a0
#define MSR_MTRR_DEF_TYPE     0x2ff

static int setup_msrs(int vcpu_fd)
{
	static const struct { uint32_t index; uint64_t data; } init[] = {
		{ MSR_IA32_SYSENTER_CS, 0 }, { MSR_IA32_SYSENTER_ESP, 0 }, { MSR_IA32_SYSENTER_EIP, 0 },
		{ MSR_STAR, 0 }, { MSR_CSTAR, 0 }, { MSR_KERNEL_GS_BASE, 0 }, { MSR_SYSCALL_MASK, 0 },
		{ MSR_LSTAR, 0 }, { MSR_IA32_TSC, 0 },
		{ MSR_IA32_MISC_ENABLE, 1 /* fast strings */ },
		{ MSR_MTRR_DEF_TYPE, (1u << 11) | 6 /* MTRRs on, default write-back */ },
	};
	const unsigned int n = sizeof(init) / sizeof(init[0]);
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[sizeof(init) / sizeof(init[0])];
	} msrs;
	int r;

	memset(&msrs, 0, sizeof(msrs));
	msrs.hdr.nmsrs = n;
	for (unsigned int i = 0; i < n; i++) {
		msrs.e[i].index = init[i].index;
		msrs.e[i].data = init[i].data;
	}
	r = ioctl(vcpu_fd, KVM_SET_MSRS, &msrs);
	if (r < 0)
		return -errno;
	/* KVM stops at the first MSR it refuses; the boot MSRs are all architectural. */
	return (unsigned int)r == n ? 0 : -EINVAL;
}

#define APIC_LVT0       0x350
#define APIC_LVT1       0x360
#define APIC_MODE_NMI    0x4
#define APIC_MODE_EXTINT 0x7

static void lvt_set_mode(struct kvm_lapic_state *l, unsigned int reg, uint32_t mode)
{
	uint32_t v;

	memcpy(&v, &l->regs[reg], 4);
	v = (v & ~0x700u) | (mode << 8);
	memcpy(&l->regs[reg], &v, 4);
}

static int setup_lapic(int vcpu_fd)
{
	struct kvm_lapic_state l;

	if (ioctl(vcpu_fd, KVM_GET_LAPIC, &l) < 0)
		return -errno;
	/* Virtual wire: LINT0 takes the 8259's interrupts, LINT1 NMIs. */
	lvt_set_mode(&l, APIC_LVT0, APIC_MODE_EXTINT);
	lvt_set_mode(&l, APIC_LVT1, APIC_MODE_NMI);
	return ioctl(vcpu_fd, KVM_SET_LAPIC, &l) < 0 ? -errno : 0;
}

int x86_vcpu_setup(int kvm_fd, int vcpu_fd, const struct kvm_cpuid2 *supported, unsigned int index,
		   unsigned int ncpus, int is_bsp, uint64_t entry, uint64_t boot_params)
{
	size_t sz = sizeof(*supported) + supported->nent * sizeof(supported->entries[0]);
	struct kvm_cpuid2 *c = malloc(sz + X86_CPUID_EXTRA * sizeof(supported->entries[0]));
	int tsc_deadline = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_DEADLINE_TIMER) > 0;
	int r;

	if (!c)
		return -ENOMEM;
	memcpy(c, supported, sz);
	x86_cpuid_patch(c, index, ncpus, tsc_deadline);
	r = ioctl(vcpu_fd, KVM_SET_CPUID2, c) < 0 ? -errno : 0;
	free(c);
	if (r)
		return r;
	r = setup_msrs(vcpu_fd);
	if (r)
		return r;
	r = setup_lapic(vcpu_fd);
	if (r)
		return r;
	{
		struct kvm_fpu fpu;
		memset(&fpu, 0, sizeof(fpu));
		fpu.fcw = 0x37f;
		fpu.mxcsr = 0x1f80;
		if (ioctl(vcpu_fd, KVM_SET_FPU, &fpu) < 0)
			return -errno;
	}
	if (!is_bsp)
		return 0; /* APs wait for INIT/SIPI in the in-kernel LAPIC */
	{
		struct kvm_sregs sregs;
		struct kvm_regs regs;

		if (ioctl(vcpu_fd, KVM_GET_SREGS, &sregs) < 0)
			return -errno;
		x86_boot_sregs(&sregs);
		if (ioctl(vcpu_fd, KVM_SET_SREGS, &sregs) < 0)
			return -errno;
		x86_boot_regs(&regs, entry, boot_params);
		if (ioctl(vcpu_fd, KVM_SET_REGS, &regs) < 0)
			return -errno;
	}
	return 0;
}
