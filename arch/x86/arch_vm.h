/* x86-specific parts of struct vm and struct vcpu. */
#ifndef MOAT_X86_ARCH_VM_H
#define MOAT_X86_ARCH_VM_H

#include <stdint.h>

struct kvm_cpuid2;

struct arch_vm {
	struct kvm_cpuid2 *cpuid;  /* KVM_GET_SUPPORTED_CPUID, patched per vCPU */
	uint64_t kernel_entry;     /* 64-bit entry point */
	uint64_t rsdp_addr;
};

struct arch_vcpu {
	int unused;
};

#endif
