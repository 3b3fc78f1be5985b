/* x86 vCPU state at boot: CPUID with topology, MSRs, long-mode registers, LAPIC LINTs. */
#ifndef MOAT_X86_CPU_H
#define MOAT_X86_CPU_H

#include <stdint.h>

#include <linux/kvm.h>

struct guest_memory;

/* Fetch KVM_GET_SUPPORTED_CPUID (caller frees). */
int x86_cpuid_supported(int kvm_fd, struct kvm_cpuid2 **out) __attribute__((warn_unused_result));
/*
 * Patch a copy of the supported table for vCPU `index` of `ncpus` (topology, APIC id). Pure.
 * The table must have room for X86_CPUID_EXTRA more entries than c->nent: the extended
 * topology leaves (0xb, 0x1f) are rebuilt whole, since KVM may report only some sub-leaves.
 */
#define X86_CPUID_EXTRA 8
void x86_cpuid_patch(struct kvm_cpuid2 *c, unsigned int index, unsigned int ncpus, int tsc_deadline);
struct kvm_cpuid_entry2 *x86_cpuid_find(struct kvm_cpuid2 *c, uint32_t function, uint32_t index);

/* Write the GDT, an empty IDT and identity page tables for the first 4 GiB into guest memory. */
int x86_setup_boot_tables(const struct guest_memory *gm) __attribute__((warn_unused_result));
/* Long-mode registers for the 64-bit boot protocol entry. */
void x86_boot_sregs(struct kvm_sregs *sregs);
void x86_boot_regs(struct kvm_regs *regs, uint64_t entry, uint64_t boot_params);

/* Per-vCPU: CPUID, MSRs, FPU, LAPIC; BSP also gets registers for the entry point. */
int x86_vcpu_setup(int kvm_fd, int vcpu_fd, const struct kvm_cpuid2 *supported, unsigned int index,
		   unsigned int ncpus, int is_bsp, uint64_t entry, uint64_t boot_params)
	__attribute__((warn_unused_result));

#endif
