/* arm64-specific parts of struct vm and struct vcpu. */
#ifndef MOAT_ARM64_ARCH_VM_H
#define MOAT_ARM64_ARCH_VM_H

#include <stdbool.h>
#include <stdint.h>

struct arch_vm {
	int gic_fd;               /* KVM device fds; valid when have_gic / have_its */
	int its_fd;
	bool have_gic, have_its;
	uint32_t vcpu_target;     /* KVM_ARM_PREFERRED_TARGET */
	uint64_t kernel_entry;
	uint64_t fdt_addr;
};

struct arch_vcpu {
	int unused;
};

#endif
