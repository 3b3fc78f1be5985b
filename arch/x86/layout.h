/* x86_64 guest-physical memory map and platform constants. */
#ifndef MOAT_X86_LAYOUT_H
#define MOAT_X86_LAYOUT_H

#define X86_GDT_ADDR        0x500ull
#define X86_IDT_ADDR        0x520ull
#define X86_ZERO_PAGE_ADDR  0x7000ull    /* struct boot_params */
#define X86_BOOT_STACK      0x8ff0ull
#define X86_PML4_ADDR       0x9000ull
#define X86_PDPT_ADDR       0xa000ull
#define X86_PD_ADDR         0xb000ull    /* 4 pages: identity map of the low 4 GiB with 2 MiB pages */
#define X86_CMDLINE_ADDR    0x20000ull
#define X86_CMDLINE_MAX     0x10000ull
#define X86_EBDA_START      0x9fc00ull
#define X86_ACPI_START      0xe0000ull   /* RSDP and tables: the legacy BIOS scan area */
#define X86_ACPI_SIZE       0x20000ull
#define X86_HIGH_MEM_START  0x100000ull  /* 1 MiB */
#define X86_KERNEL_MIN_ADDR 0x1000000ull /* 16 MiB: where the bzImage prefers to run */

#define X86_MMIO_HOLE_START 0xc0000000ull /* 3 GiB: 32-bit MMIO below 4 GiB */
#define X86_MMIO_HOLE_END   0x100000000ull
#define X86_PCI_MMIO_START  0xc0000000ull /* the PCI host bridge's memory window: 512 MiB */
#define X86_PCI_MMIO_SIZE   0x20000000ull
#define X86_PCI_ECAM_START  0xe0000000ull /* ECAM for bus 0: 1 MiB */
#define X86_PCI_ECAM_SIZE   0x100000ull
#define X86_PCI_CF8_PORT    0xcf8
#define X86_PCI_IO_START    0x1000        /* the PCI host bridge's I/O window (I/O BARs): 4 Ki ports */
#define X86_PCI_IO_SIZE     0x1000
#define X86_MSI_FIRST_GSI   24            /* GSIs 0-23 are the IOAPIC's pins */
#define X86_TSS_ADDR        0xfffbd000ull
#define X86_IDENTITY_MAP    0xfffbc000ull
#define X86_IOAPIC_ADDR     0xfec00000ull
#define X86_LAPIC_ADDR      0xfee00000ull

#define X86_COM1_PORT       0x3f8
#define X86_COM1_IRQ        4
#define X86_PVPANIC_PORT    0x505
#define X86_I8042_CMD_PORT  0x64
#define X86_PM_SLEEP_CTL    0x600
#define X86_PM_SLEEP_STS    0x601
#define X86_PM_RESET        0x602
#define X86_PM_RESET_VALUE  0x1
#define X86_S5_SLP_TYP      5

#endif
