/*
 * Hardware-reduced ACPI tables for x86 guests: RSDP, XSDT, FADT, MADT, DSDT.
 *
 * Layout inside the caller's buffer: RSDP (16-byte aligned so the legacy
 * 0xE0000-0xFFFFF scan finds it), XSDT, DSDT, then the tables the XSDT lists.
 */
#include "arch/x86/acpi.h"
#include "arch/x86/layout.h"
#include "arch/x86/acpi_tables.h"
#include "vmm/aml.h"

#include <endian.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#define ACPI_OEM_ID       "MOAT  "
#define ACPI_OEM_TABLE_ID "MOATVM  "
#define ACPI_CREATOR_ID   "MOAT"
#define ACPI_OEM_REVISION 1
#define ACPI_CREATOR_REVISION 1

struct acpi_ctx {
	const struct acpi_config *cfg;
	uint8_t *buf;
	size_t len;
	size_t pos;
	uint64_t gpa;        /* guest-physical address of buf[0] */
	uint64_t dsdt_gpa;
};

/* Carves size zeroed bytes aligned to align in guest-physical terms; NULL if out of room. */
static void *ctx_alloc(struct acpi_ctx *c, size_t size, size_t align, uint64_t *gpa)
{
	size_t pad = (size_t)(-(c->gpa + c->pos) & (align - 1));
	void *p;

	if (pad > c->len - c->pos || size > c->len - c->pos - pad)
		return NULL;
	memset(c->buf + c->pos, 0, pad);
	c->pos += pad;
	p = c->buf + c->pos;
	memset(p, 0, size);
	*gpa = c->gpa + c->pos;
	c->pos += size;
	return p;
}

static uint8_t checksum(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint8_t sum = 0;

	while (len--)
		sum += *b++;
	return (uint8_t)-sum;
}

/* Fills the header of a table already written at h and makes it sum to zero. */
static void finish_table(struct acpi_header *h, const char sig[4], uint32_t len, uint8_t rev)
{
	memcpy(h->signature, sig, 4);
	h->length = htole32(len);
	h->revision = rev;
	memcpy(h->oem_id, ACPI_OEM_ID, 6);
	memcpy(h->oem_table_id, ACPI_OEM_TABLE_ID, 8);
	h->oem_revision = htole32(ACPI_OEM_REVISION);
	memcpy(h->creator_id, ACPI_CREATOR_ID, 4);
	h->creator_revision = htole32(ACPI_CREATOR_REVISION);
	h->checksum = 0;
	h->checksum = checksum(h, len);
}

static struct acpi_gas io_gas8(uint16_t port)
{
	return (struct acpi_gas){
		.space_id = ACPI_GAS_SYSTEM_IO,
		.bit_width = 8,
		.access_size = ACPI_GAS_ACCESS_BYTE,
		.address = htole64(port),
	};
}

static int build_dsdt_aml(struct aml *a, const struct acpi_config *cfg)
{
	aml_scope(a, "\\_SB");

	aml_device(a, "COM1");
	aml_name_eisaid(a, "_HID", "PNP0501");
	aml_name_integer(a, "_UID", 0);
	aml_name(a, "_CRS");
	aml_resource_template(a);
	aml_io(a, true, cfg->uart_port, cfg->uart_port, 1, 8);
	aml_irq_noflags(a, cfg->uart_irq);
	aml_end(a);
	aml_end(a);

	/* QEMU's pvpanic ISA device id; Linux's pvpanic-mmio driver matches it via ACPI. */
	aml_device(a, "PEVT");
	aml_name_string(a, "_HID", "QEMU0001");
	aml_name(a, "_CRS");
	aml_resource_template(a);
	aml_io(a, true, cfg->pvpanic_port, cfg->pvpanic_port, 1, 1);
	aml_end(a);
	aml_method(a, "_STA", 0, false);
	aml_return_integer(a, 0x0f);   /* present, enabled, shown, functioning */
	aml_end(a);
	aml_end(a);

	if (cfg->pci_ecam_base) {
		/* The PCIe host bridge: bus 0, the config ports, and the memory window its BARs live in. */
		aml_device(a, "PCI0");
		aml_name_eisaid(a, "_HID", "PNP0A08");
		aml_name_eisaid(a, "_CID", "PNP0A03");
		aml_name_integer(a, "_SEG", 0);
		aml_name_integer(a, "_BBN", 0);
		aml_name_integer(a, "_UID", 0);
		aml_name(a, "_CRS");
		aml_resource_template(a);
		aml_word_addr(a, &(struct aml_addr_space){ .type = AML_ADDR_BUS,
							   .flags = AML_ADDR_MIN_FIXED | AML_ADDR_MAX_FIXED,
							   .min = 0, .max = 0, .length = 1 });
		aml_io(a, true, cfg->pci_cf8_port, cfg->pci_cf8_port, 1, 8);
		if (cfg->pci_io_size)
			aml_word_addr(a, &(struct aml_addr_space){ .type = AML_ADDR_IO,
								   .flags = AML_ADDR_MIN_FIXED | AML_ADDR_MAX_FIXED,
								   .type_flags = AML_IO_ENTIRE_RANGE,
								   .min = cfg->pci_io_base,
								   .max = (uint32_t)cfg->pci_io_base + cfg->pci_io_size - 1,
								   .length = cfg->pci_io_size });
		aml_dword_addr(a, &(struct aml_addr_space){ .type = AML_ADDR_MEMORY,
							    .flags = AML_ADDR_MIN_FIXED | AML_ADDR_MAX_FIXED,
							    .type_flags = AML_MEM_RW | AML_MEM_NONCACHEABLE,
							    .min = cfg->pci_mmio_base,
							    .max = (uint64_t)cfg->pci_mmio_base + cfg->pci_mmio_size - 1,
							    .length = cfg->pci_mmio_size });
		aml_end(a);
		aml_end(a);

		/* Linux uses ECAM only where the firmware says the range is reserved (a motherboard resource). */
		aml_device(a, "MRES");
		aml_name_eisaid(a, "_HID", "PNP0C02");
		aml_name_integer(a, "_UID", 1);
		aml_name(a, "_CRS");
		aml_resource_template(a);
		aml_memory32_fixed(a, false, (uint32_t)cfg->pci_ecam_base, 1u << 20);
		aml_end(a);
		aml_end(a);
	}

	aml_end(a);   /* \_SB */

	/*
	 * ACPICA accepts a package of one or more integers for \_Sx_: with two, SLP_TYPa is
	 * element 0 and SLP_TYPb element 1. HW-reduced sleep only uses SLP_TYPa, written
	 * as (SLP_TYPa << 2) | SLP_EN(0x20) to SLEEP_CONTROL_REG.
	 */
	aml_name(a, "\\_S5_");
	aml_package(a);
	aml_integer(a, cfg->s5_slp_typ);
	aml_integer(a, 0);
	aml_end(a);

	return aml_finish(a);
}

static int build_dsdt(struct acpi_ctx *c)
{
	struct acpi_header *h;
	struct aml a;
	int err;

	h = ctx_alloc(c, sizeof(*h), 8, &c->dsdt_gpa);
	if (!h)
		return -ENOSPC;
	/* The AML goes straight after the header, bounded by what is left of the buffer. */
	aml_init(&a, c->buf + c->pos, c->len - c->pos);
	err = build_dsdt_aml(&a, c->cfg);
	if (err)
		return err;
	c->pos += aml_len(&a);
	finish_table(h, "DSDT", sizeof(*h) + aml_len(&a), 2 /* 64-bit AML integers */);
	return 0;
}

static int build_fadt(struct acpi_ctx *c, uint64_t *gpa)
{
	const struct acpi_config *cfg = c->cfg;
	struct acpi_fadt *f = ctx_alloc(c, sizeof(*f), 8, gpa);

	if (!f)
		return -ENOSPC;
	/*
	 * Hardware-reduced: no PM1/GPE blocks, no SCI, no FACS. Sleep and reset go through
	 * the SLEEP_CONTROL/SLEEP_STATUS and RESET registers. PWR_BUTTON/SLP_BUTTON say there
	 * are no fixed-feature buttons, otherwise Linux adds LNXPWRBN/LNXSLPBN devices.
	 */
	f->flags = htole32(ACPI_FADT_HW_REDUCED | ACPI_FADT_RESET_REG_SUP | ACPI_FADT_PWR_BUTTON |
			   ACPI_FADT_SLP_BUTTON);
	/*
	 * LEGACY_DEVICES and 8042 clear, VGA/CMOS-RTC absent: Linux then skips the i8042 and
	 * rtc_cmos probes and VGA poking. ASPM controls set: virtual PCIe links have no ASPM.
	 * MSI stays supported for the PCIe devices to come.
	 */
	f->iapc_boot_arch = htole16(ACPI_IAPC_VGA_NOT_PRESENT | ACPI_IAPC_CMOS_RTC_NOT_PRESENT |
				    ACPI_IAPC_PCIE_ASPM_CONTROLS);
	/* DSDT is 32-bit; leave it zero rather than truncate when the tables sit above 4 GiB. */
	if (c->dsdt_gpa <= UINT32_MAX)
		f->dsdt = htole32((uint32_t)c->dsdt_gpa);
	f->x_dsdt = htole64(c->dsdt_gpa);
	f->reset_reg = io_gas8(cfg->reset_port);
	f->reset_value = cfg->reset_value;
	f->sleep_control_reg = io_gas8(cfg->sleep_ctl_port);
	f->sleep_status_reg = io_gas8(cfg->sleep_sts_port);
	f->minor_version = 3;   /* ACPI 6.3 */
	finish_table(&f->header, "FACP", sizeof(*f), 6);
	return 0;
}

static int build_madt(struct acpi_ctx *c, uint64_t *gpa)
{
	const struct acpi_config *cfg = c->cfg;
	size_t len = sizeof(struct acpi_madt) + cfg->ncpus * sizeof(struct acpi_madt_lapic) +
		     sizeof(struct acpi_madt_ioapic);
	struct acpi_madt *m = ctx_alloc(c, len, 8, gpa);
	struct acpi_madt_lapic *l;
	struct acpi_madt_ioapic *io;

	if (!m)
		return -ENOSPC;
	m->lapic_address = htole32(cfg->lapic_addr);
	/*
	 * PCAT_COMPAT=1: KVM_CREATE_IRQCHIP really does model a dual 8259, and the flag tells
	 * the OS to mask it before using the IOAPIC. Linux in HW-reduced mode uses no 8259 at
	 * all (null_legacy_pic), so for it this is informational only.
	 */
	m->flags = htole32(ACPI_MADT_PCAT_COMPAT);

	l = (struct acpi_madt_lapic *)(m + 1);
	for (unsigned int i = 0; i < cfg->ncpus; i++, l++) {
		l->type = ACPI_MADT_TYPE_LAPIC;
		l->length = sizeof(*l);
		l->processor_uid = i;
		l->apic_id = i;
		l->flags = htole32(ACPI_MADT_LAPIC_ENABLED);
	}
	io = (struct acpi_madt_ioapic *)l;
	io->type = ACPI_MADT_TYPE_IOAPIC;
	io->length = sizeof(*io);
	io->ioapic_id = cfg->ioapic_id;
	io->address = htole32(cfg->ioapic_addr);
	io->gsi_base = 0;
	/*
	 * No Interrupt Source Overrides. The usual ISA IRQ0 -> GSI 2 override describes PC
	 * chipsets that wire the PIT to IOAPIC pin 2; KVM's in-kernel PIT raises GSI 0, and
	 * KVM's default routing sends GSI n (n < 16) to IOAPIC pin n, so identity is right.
	 * No SCI override either: HW-reduced ACPI has no SCI (SCI_INT is 0 and Linux skips
	 * SCI setup on reduced hardware).
	 */
	finish_table(&m->header, "APIC", len, 5 /* ACPI 6.3 */);
	return 0;
}

/* MCFG with one allocation: segment 0, bus 0. Without PCI it is left out (*gpa = 0). */
static int build_mcfg(struct acpi_ctx *c, uint64_t *gpa)
{
	size_t len = sizeof(struct acpi_mcfg) + sizeof(struct acpi_mcfg_alloc);
	struct acpi_mcfg *m;
	struct acpi_mcfg_alloc *al;

	*gpa = 0;
	if (!c->cfg->pci_ecam_base)
		return 0;
	m = ctx_alloc(c, len, 8, gpa);
	if (!m)
		return -ENOSPC;
	al = (struct acpi_mcfg_alloc *)(m + 1);
	al->base_address = htole64(c->cfg->pci_ecam_base);
	al->segment = 0;
	al->start_bus = 0;
	al->end_bus = 0;
	finish_table(&m->header, "MCFG", len, 1);
	return 0;
}

/* VIOT: the virtio-iommu PCI node, then one PCI range node per run of translated functions. */
static int build_viot(struct acpi_ctx *c, uint64_t *gpa)
{
	const struct acpi_config *cfg = c->cfg;
	size_t iommu_off = sizeof(struct acpi_viot);
	size_t len = iommu_off + sizeof(struct acpi_viot_virtio_iommu_pci) +
		     cfg->viot_nranges * sizeof(struct acpi_viot_pci_range);
	struct acpi_viot *v;
	struct acpi_viot_virtio_iommu_pci *io;
	struct acpi_viot_pci_range *r;

	*gpa = 0;
	if (!cfg->viot_nranges)
		return 0;
	v = ctx_alloc(c, len, 8, gpa);
	if (!v)
		return -ENOSPC;
	v->node_count = htole16((uint16_t)(1 + cfg->viot_nranges));
	v->node_offset = htole16((uint16_t)iommu_off);
	io = (struct acpi_viot_virtio_iommu_pci *)(v + 1);
	io->type = ACPI_VIOT_NODE_VIRTIO_IOMMU_PCI;
	io->length = htole16(sizeof(*io));
	io->segment = 0;
	io->bdf = htole16(cfg->viot_iommu_bdf);
	r = (struct acpi_viot_pci_range *)(io + 1);
	for (unsigned int i = 0; i < cfg->viot_nranges; i++, r++) {
		r->type = ACPI_VIOT_NODE_PCI_RANGE;
		r->length = htole16(sizeof(*r));
		r->endpoint_start = htole32(cfg->viot_ranges[i].bdf_start);
		r->segment_start = r->segment_end = 0;
		r->bdf_start = htole16(cfg->viot_ranges[i].bdf_start);
		r->bdf_end = htole16(cfg->viot_ranges[i].bdf_end);
		r->output_node = htole16((uint16_t)iommu_off);
	}
	finish_table(&v->header, "VIOT", len, 0);
	return 0;
}

/* Tables listed in the XSDT, in order; adding one is adding a line here. A table may leave itself out (gpa 0). */
static int (*const xsdt_tables[])(struct acpi_ctx *c, uint64_t *gpa) = {
	build_fadt,
	build_madt,
	build_mcfg,
	build_viot,
};
#define NTABLES (sizeof(xsdt_tables) / sizeof(xsdt_tables[0]))

static bool config_ok(const struct acpi_config *cfg)
{
	/* MADT LAPIC entries carry 8-bit APIC ids and 0xff is the broadcast id. */
	if (cfg->ncpus == 0 || cfg->ncpus > 255)
		return false;
	if (cfg->ioapic_id < cfg->ncpus)
		return false;
	if (cfg->uart_irq > 15)   /* IRQNoFlags describes ISA IRQs only */
		return false;
	if (cfg->s5_slp_typ > 7)  /* SLP_TYP is a 3-bit field of SLEEP_CONTROL_REG */
		return false;
	if (!cfg->lapic_addr || !cfg->ioapic_addr)
		return false;
	/* ACPICA treats a zero GAS address as "register not present". */
	if (!cfg->uart_port || !cfg->pvpanic_port || !cfg->sleep_ctl_port ||
	    !cfg->sleep_sts_port || !cfg->reset_port)
		return false;
	/* A VIOT needs the PCI bus, and sane ranges that leave the IOMMU itself out. */
	if (cfg->viot_nranges > ACPI_VIOT_MAX_RANGES || (cfg->viot_nranges && !cfg->pci_ecam_base))
		return false;
	for (unsigned int i = 0; i < cfg->viot_nranges; i++)
		if (cfg->viot_ranges[i].bdf_start > cfg->viot_ranges[i].bdf_end ||
		    (cfg->viot_iommu_bdf >= cfg->viot_ranges[i].bdf_start &&
		     cfg->viot_iommu_bdf <= cfg->viot_ranges[i].bdf_end))
			return false;
	return true;
}

long acpi_build_tables(const struct acpi_config *cfg, void *buf, size_t len, uint64_t gpa,
		       uint64_t *rsdp_gpa)
{
	struct acpi_ctx c = { .cfg = cfg, .buf = buf, .len = buf ? len : 0, .gpa = gpa };
	uint64_t rsdp_addr, xsdt_addr, table_addr[NTABLES];
	size_t xsdt_len = sizeof(struct acpi_header) + NTABLES * sizeof(uint64_t);
	struct acpi_rsdp *rsdp;
	struct acpi_header *xsdt;
	uint64_t entry;
	int err;

	if (!cfg || !rsdp_gpa || !config_ok(cfg))
		return -EINVAL;
	if (gpa + len < gpa)
		return -EINVAL;

	rsdp = ctx_alloc(&c, sizeof(*rsdp), 16, &rsdp_addr);
	if (!rsdp)
		return -ENOSPC;
	xsdt = ctx_alloc(&c, xsdt_len, 8, &xsdt_addr);
	if (!xsdt)
		return -ENOSPC;
	err = build_dsdt(&c);
	if (err)
		return err;
	for (size_t i = 0; i < NTABLES; i++) {
		err = xsdt_tables[i](&c, &table_addr[i]);
		if (err)
			return err;
	}

	size_t n = 0;
	for (size_t i = 0; i < NTABLES; i++) {
		if (!table_addr[i])
			continue;
		entry = htole64(table_addr[i]);
		/* XSDT entries are 8 bytes at offset 36: not naturally aligned, so memcpy. */
		memcpy((uint8_t *)(xsdt + 1) + n++ * sizeof(entry), &entry, sizeof(entry));
	}
	/* The tables left out leave unused room after the XSDT: it is simply not part of it. */
	finish_table(xsdt, "XSDT", sizeof(struct acpi_header) + n * sizeof(uint64_t), 1);

	memcpy(rsdp->signature, "RSD PTR ", 8);
	memcpy(rsdp->oem_id, ACPI_OEM_ID, 6);
	rsdp->revision = 2;
	rsdp->rsdt_address = 0;   /* no RSDT: revision 2 readers use the XSDT */
	rsdp->length = htole32(sizeof(*rsdp));
	rsdp->xsdt_address = htole64(xsdt_addr);
	rsdp->checksum = checksum(rsdp, 20);
	rsdp->extended_checksum = checksum(rsdp, sizeof(*rsdp));

	*rsdp_gpa = rsdp_addr;
	return (long)c.pos;
}

struct acpi_config acpi_platform_config(unsigned int ncpus)
{
	return (struct acpi_config){
		.ncpus = ncpus,
		.lapic_addr = X86_LAPIC_ADDR,
		.ioapic_addr = X86_IOAPIC_ADDR,
		.ioapic_id = (uint8_t)ncpus,
		.uart_port = X86_COM1_PORT,
		.uart_irq = X86_COM1_IRQ,
		.pvpanic_port = X86_PVPANIC_PORT,
		.sleep_ctl_port = X86_PM_SLEEP_CTL,
		.sleep_sts_port = X86_PM_SLEEP_STS,
		.reset_port = X86_PM_RESET,
		.reset_value = X86_PM_RESET_VALUE,
		.s5_slp_typ = X86_S5_SLP_TYP,
		.pci_ecam_base = X86_PCI_ECAM_START,
		.pci_mmio_base = (uint32_t)X86_PCI_MMIO_START,
		.pci_mmio_size = (uint32_t)X86_PCI_MMIO_SIZE,
		.pci_cf8_port = X86_PCI_CF8_PORT,
		.pci_io_base = X86_PCI_IO_START,
		.pci_io_size = X86_PCI_IO_SIZE,
	};
}
