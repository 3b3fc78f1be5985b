/*
 * ACPI table layouts (ACPI 6.5 chapter 5.2). Packed and byte-aligned, so a pointer
 * into any byte buffer is valid; multi-byte fields are little-endian.
 */
#ifndef MOAT_X86_ACPI_TABLES_H
#define MOAT_X86_ACPI_TABLES_H

#include <stdint.h>

#define ACPI_PACKED __attribute__((packed))

struct acpi_rsdp {
	char signature[8];          /* "RSD PTR " */
	uint8_t checksum;           /* first 20 bytes (the ACPI 1.0 part) */
	char oem_id[6];
	uint8_t revision;           /* 2: ACPI 2.0+ layout with XSDT */
	uint32_t rsdt_address;
	uint32_t length;            /* 36 */
	uint64_t xsdt_address;
	uint8_t extended_checksum;  /* all 36 bytes */
	uint8_t reserved[3];
} ACPI_PACKED;

struct acpi_header {
	char signature[4];
	uint32_t length;            /* whole table, header included */
	uint8_t revision;
	uint8_t checksum;           /* whole table sums to zero */
	char oem_id[6];
	char oem_table_id[8];
	uint32_t oem_revision;
	char creator_id[4];
	uint32_t creator_revision;
} ACPI_PACKED;

/* Generic Address Structure */
struct acpi_gas {
	uint8_t space_id;
	uint8_t bit_width;
	uint8_t bit_offset;
	uint8_t access_size;        /* 1 byte, 2 word, 3 dword, 4 qword */
	uint64_t address;
} ACPI_PACKED;

#define ACPI_GAS_SYSTEM_MEMORY 0
#define ACPI_GAS_SYSTEM_IO     1
#define ACPI_GAS_ACCESS_BYTE   1

struct acpi_fadt {
	struct acpi_header header;
	uint32_t firmware_ctrl;
	uint32_t dsdt;
	uint8_t reserved0;
	uint8_t preferred_pm_profile;
	uint16_t sci_int;
	uint32_t smi_cmd;
	uint8_t acpi_enable;
	uint8_t acpi_disable;
	uint8_t s4bios_req;
	uint8_t pstate_cnt;
	uint32_t pm1a_evt_blk;
	uint32_t pm1b_evt_blk;
	uint32_t pm1a_cnt_blk;
	uint32_t pm1b_cnt_blk;
	uint32_t pm2_cnt_blk;
	uint32_t pm_tmr_blk;
	uint32_t gpe0_blk;
	uint32_t gpe1_blk;
	uint8_t pm1_evt_len;
	uint8_t pm1_cnt_len;
	uint8_t pm2_cnt_len;
	uint8_t pm_tmr_len;
	uint8_t gpe0_blk_len;
	uint8_t gpe1_blk_len;
	uint8_t gpe1_base;
	uint8_t cst_cnt;
	uint16_t p_lvl2_lat;
	uint16_t p_lvl3_lat;
	uint16_t flush_size;
	uint16_t flush_stride;
	uint8_t duty_offset;
	uint8_t duty_width;
	uint8_t day_alrm;
	uint8_t mon_alrm;
	uint8_t century;
	uint16_t iapc_boot_arch;
	uint8_t reserved1;
	uint32_t flags;
	struct acpi_gas reset_reg;
	uint8_t reset_value;
	uint16_t arm_boot_arch;
	uint8_t minor_version;
	uint64_t x_firmware_ctrl;
	uint64_t x_dsdt;
	struct acpi_gas x_pm1a_evt_blk;
	struct acpi_gas x_pm1b_evt_blk;
	struct acpi_gas x_pm1a_cnt_blk;
	struct acpi_gas x_pm1b_cnt_blk;
	struct acpi_gas x_pm2_cnt_blk;
	struct acpi_gas x_pm_tmr_blk;
	struct acpi_gas x_gpe0_blk;
	struct acpi_gas x_gpe1_blk;
	struct acpi_gas sleep_control_reg;
	struct acpi_gas sleep_status_reg;
	uint64_t hypervisor_vendor_id;
} ACPI_PACKED;

/* FADT flags */
#define ACPI_FADT_PWR_BUTTON     (1u << 4)   /* no fixed-feature power button */
#define ACPI_FADT_SLP_BUTTON     (1u << 5)   /* no fixed-feature sleep button */
#define ACPI_FADT_RESET_REG_SUP  (1u << 10)
#define ACPI_FADT_HW_REDUCED     (1u << 20)

/* FADT IAPC_BOOT_ARCH */
#define ACPI_IAPC_LEGACY_DEVICES (1u << 0)
#define ACPI_IAPC_8042           (1u << 1)
#define ACPI_IAPC_VGA_NOT_PRESENT (1u << 2)
#define ACPI_IAPC_MSI_NOT_SUPPORTED (1u << 3)
#define ACPI_IAPC_PCIE_ASPM_CONTROLS (1u << 4)
#define ACPI_IAPC_CMOS_RTC_NOT_PRESENT (1u << 5)

struct acpi_madt {
	struct acpi_header header;
	uint32_t lapic_address;
	uint32_t flags;
} ACPI_PACKED;

#define ACPI_MADT_PCAT_COMPAT 1u

struct acpi_madt_entry {
	uint8_t type;
	uint8_t length;
} ACPI_PACKED;

#define ACPI_MADT_TYPE_LAPIC  0
#define ACPI_MADT_TYPE_IOAPIC 1

struct acpi_madt_lapic {
	uint8_t type;               /* 0 */
	uint8_t length;             /* 8 */
	uint8_t processor_uid;
	uint8_t apic_id;
	uint32_t flags;
} ACPI_PACKED;

#define ACPI_MADT_LAPIC_ENABLED 1u

struct acpi_madt_ioapic {
	uint8_t type;               /* 1 */
	uint8_t length;             /* 12 */
	uint8_t ioapic_id;
	uint8_t reserved;
	uint32_t address;
	uint32_t gsi_base;
} ACPI_PACKED;

_Static_assert(sizeof(struct acpi_rsdp) == 36, "RSDP");
_Static_assert(sizeof(struct acpi_header) == 36, "SDT header");
_Static_assert(sizeof(struct acpi_gas) == 12, "GAS");
_Static_assert(sizeof(struct acpi_fadt) == 276, "FADT revision 6");
/* MCFG: PCI Express memory-mapped configuration space (PCI Firmware 3.2, 4.1.2). */
struct acpi_mcfg {
	struct acpi_header header;
	uint8_t reserved[8];
} ACPI_PACKED;

struct acpi_mcfg_alloc {
	uint64_t base_address;
	uint16_t segment;
	uint8_t start_bus;
	uint8_t end_bus;
	uint32_t reserved;
} ACPI_PACKED;

/* VIOT: Virtual I/O Translation Table (ACPI 6.5, 5.2.32): which endpoints sit behind which virtio-iommu. */
struct acpi_viot {
	struct acpi_header header;
	uint16_t node_count;
	uint16_t node_offset;   /* of the first node, from the start of the table */
	uint8_t reserved[8];
} ACPI_PACKED;

#define ACPI_VIOT_NODE_PCI_RANGE 1
#define ACPI_VIOT_NODE_VIRTIO_IOMMU_PCI 3

struct acpi_viot_pci_range {
	uint8_t type;
	uint8_t reserved0;
	uint16_t length;
	uint32_t endpoint_start; /* endpoint id of bdf_start; the ids the guest gives the IOMMU */
	uint16_t segment_start;
	uint16_t segment_end;
	uint16_t bdf_start;
	uint16_t bdf_end;
	uint16_t output_node;    /* offset of the IOMMU node in the table */
	uint8_t reserved[6];
} ACPI_PACKED;

struct acpi_viot_virtio_iommu_pci {
	uint8_t type;
	uint8_t reserved0;
	uint16_t length;
	uint16_t segment;
	uint16_t bdf;
	uint8_t reserved[8];
} ACPI_PACKED;

_Static_assert(sizeof(struct acpi_viot) == 48, "VIOT");
_Static_assert(sizeof(struct acpi_viot_pci_range) == 24, "VIOT PCI range");
_Static_assert(sizeof(struct acpi_viot_virtio_iommu_pci) == 16, "VIOT virtio-iommu PCI");
_Static_assert(sizeof(struct acpi_mcfg) == 44, "MCFG");
_Static_assert(sizeof(struct acpi_mcfg_alloc) == 16, "MCFG allocation");
_Static_assert(sizeof(struct acpi_madt) == 44, "MADT");
_Static_assert(sizeof(struct acpi_madt_lapic) == 8, "MADT LAPIC");
_Static_assert(sizeof(struct acpi_madt_ioapic) == 12, "MADT IOAPIC");

#endif
