/* arm64 guest-physical memory map (close to QEMU's "virt" machine) and platform constants. */
#ifndef MOAT_ARM64_LAYOUT_H
#define MOAT_ARM64_LAYOUT_H

#define ARM64_GIC_DIST_BASE    0x08000000ull /* GICv3 distributor: 64 KiB */
#define ARM64_GIC_DIST_SIZE    0x10000ull
#define ARM64_GIC_ITS_BASE     0x08080000ull /* ITS: control frame + translation frame, 128 KiB */
#define ARM64_GIC_ITS_SIZE     0x20000ull
#define ARM64_GITS_TRANSLATER  (ARM64_GIC_ITS_BASE + 0x10040ull) /* where MSIs are written */
#define ARM64_GIC_REDIST_BASE  0x080a0000ull /* redistributors: 128 KiB per vCPU, up to 64 vCPUs */
#define ARM64_GIC_REDIST_SIZE  0x20000ull    /* per vCPU */
#define ARM64_GIC_NR_IRQS      128u          /* SGIs/PPIs (32) + 96 SPIs */
#define ARM64_GIC_MAINT_PPI    9u

#define ARM64_UART_BASE        0x09000000ull /* 16550A, byte registers */
#define ARM64_UART_SIZE        0x8ull
#define ARM64_UART_SPI         1u
#define ARM64_UART_CLOCK       1843200u
#define ARM64_PVPANIC_BASE     0x09010000ull /* qemu,pvpanic-mmio */
#define ARM64_PVPANIC_SIZE     0x2ull

#define ARM64_PCI_MMIO_BASE    0x10000000ull /* the PCI host bridge's memory window: 256 MiB */
#define ARM64_PCI_MMIO_SIZE    0x10000000ull
#define ARM64_PCI_ECAM_BASE    0x30000000ull /* ECAM for bus 0: 1 MiB */
#define ARM64_PCI_ECAM_SIZE    0x100000ull

#define ARM64_RAM_BASE         0x40000000ull
#define ARM64_RAM_MAX          (0x10000000000ull - ARM64_RAM_BASE) /* a 40-bit IPA space */
#define ARM64_FDT_MAX          0x200000ull   /* the boot protocol's limit: 2 MiB */

#define ARM64_MSI_FIRST_GSI    128u          /* GSIs for MSIs, above the vGIC's default SPI routes (GSI n = SPI n) */

#endif
