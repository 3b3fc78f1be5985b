/*
 * The arm64 guest's device tree, built with libfdt from a plain description of the machine.
 * Pure (no KVM, no struct vm), so it is unit-tested on any build host.
 */
#ifndef MOAT_ARM64_FDT_H
#define MOAT_ARM64_FDT_H

#include <stddef.h>
#include <stdint.h>

#define ARM64_FDT_MAX_CPUS      64u
#define ARM64_FDT_MAX_ENDPOINTS 32u

/* Phandles of the nodes others point at. */
enum {
	ARM64_PHANDLE_GIC = 1,
	ARM64_PHANDLE_ITS = 2,
	ARM64_PHANDLE_IOMMU = 3,
};

struct arm64_fdt_region {
	uint64_t base, size;
};

struct arm64_machine {
	unsigned int ncpus;                 /* 1..ARM64_FDT_MAX_CPUS; cpu n has MPIDR affinity n */
	struct arm64_fdt_region ram;
	struct arm64_fdt_region gic_dist;
	struct arm64_fdt_region gic_redist; /* all vCPUs' redistributors, contiguous */
	struct arm64_fdt_region gic_its;    /* size 0: no ITS (and no msi-map) */
	struct arm64_fdt_region uart;       /* 16550A with byte registers */
	unsigned int uart_spi;
	uint32_t uart_clock;
	struct arm64_fdt_region pvpanic;    /* size 0: none */
	struct arm64_fdt_region pci_ecam;   /* size 0: no PCI (bus 0 only) */
	struct arm64_fdt_region pci_mmio;   /* 32-bit memory window, identity-mapped */
	const char *bootargs;
	uint64_t initrd_start, initrd_size; /* size 0: no initrd */
	/* The virtio-iommu (a PCI function) and the BDFs it translates: iommu-map lists exactly those. */
	int has_iommu;
	uint16_t iommu_bdf;
	uint16_t endpoint_bdf[ARM64_FDT_MAX_ENDPOINTS];
	unsigned int nendpoints;
};

/* Write the packed device tree into buf[0..len). Returns its size, or -EINVAL (bad description) / -ENOSPC. */
long arm64_fdt_build(const struct arm64_machine *m, void *buf, size_t len) __attribute__((warn_unused_result));

#endif
