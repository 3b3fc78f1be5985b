#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "arch/x86/cpu.h"

/* A small "supported" table shaped like what KVM returns on an AMD host: leaf 0xb has only sub-leaf 0. */
static struct kvm_cpuid2 *table(void)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + (8 + X86_CPUID_EXTRA) * sizeof(c->entries[0]));
	struct kvm_cpuid_entry2 e[] = {
		{ .function = 0, .eax = 0xd, .ebx = 0x68747541, .ecx = 0x444d4163, .edx = 0x69746e65 },
		{ .function = 1, .eax = 0x60fb1, .ebx = 0x800, .edx = 0x0f8bfbfd },
		{ .function = 0xb, .index = 0, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .ebx = 1, .ecx = 0x100 },
		{ .function = 0x80000000, .eax = 0x8000001e },
		{ .function = 0x80000008, .ecx = 0 },
		{ .function = 0x8000001e },
	};

	memcpy(c->entries, e, sizeof(e));
	c->nent = sizeof(e) / sizeof(e[0]);
	return c;
}

Test(cpuid, leaf1_apic_id_count_and_htt)
{
	struct kvm_cpuid2 *c = table();
	struct kvm_cpuid_entry2 *e;

	x86_cpuid_patch(c, 3, 4, 1);
	e = x86_cpuid_find(c, 1, 0);
	cr_assert_eq(e->ebx >> 24, 3, "initial APIC id");
	cr_assert_eq((e->ebx >> 16) & 0xff, 4, "logical processors per package");
	cr_assert(e->edx & (1u << 28), "HTT set when the count is meaningful");
	cr_assert(e->ecx & (1u << 31), "hypervisor bit");
	cr_assert(e->ecx & (1u << 24), "TSC deadline");
	free(c);
}

Test(cpuid, leaf_b_is_complete_for_n_cpus)
{
	for (unsigned int n = 1; n <= 8; n++) {
		struct kvm_cpuid2 *c = table();
		struct kvm_cpuid_entry2 *smt, *core, *end;
		unsigned int bits = 0;

		while ((1u << bits) < n)
			bits++;
		x86_cpuid_patch(c, n - 1, n, 0);
		smt = x86_cpuid_find(c, 0xb, 0);
		core = x86_cpuid_find(c, 0xb, 1);
		end = x86_cpuid_find(c, 0xb, 2);
		cr_assert(smt && core && end, "n=%u: sub-leaves 0..2 present", n);
		cr_assert_eq((smt->ecx >> 8) & 0xff, 1, "SMT level");
		cr_assert_eq(smt->eax & 0x1f, 0);
		cr_assert_eq(smt->ebx, 1);
		cr_assert_eq((core->ecx >> 8) & 0xff, 2, "core level");
		cr_assert_eq(core->eax & 0x1f, bits, "n=%u: package shift", n);
		cr_assert_eq(core->ebx, n);
		cr_assert_eq((end->ecx >> 8) & 0xff, 0, "list ends");
		cr_assert_eq(core->edx, n - 1, "x2APIC id");
		free(c);
	}
}

Test(cpuid, amd_core_count_leaves)
{
	struct kvm_cpuid2 *c = table();
	struct kvm_cpuid_entry2 *e;

	x86_cpuid_patch(c, 2, 4, 0);
	e = x86_cpuid_find(c, 0x80000008, 0);
	cr_assert_eq(e->ecx & 0xff, 3, "NC = cores - 1");
	cr_assert_eq((e->ecx >> 12) & 0xf, 2, "APIC id bits for cores");
	e = x86_cpuid_find(c, 0x8000001e, 0);
	cr_assert_eq(e->eax, 2);
	cr_assert_eq((e->ebx >> 8) & 0xff, 0, "one thread per core");
	free(c);
}
