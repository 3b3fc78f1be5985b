/* The arm64 guest's device tree (see fdt.h). Bindings: Documentation/devicetree/bindings in Linux. */
#include "arch/arm64/fdt.h"

#include <errno.h>
#include <libfdt.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define GIC_SPI 0u
#define GIC_PPI 1u
#define IRQ_LEVEL_HIGH 4u
#define PCI_SPACE_MEM32 0x02000000u
#define PCI_RID_SPACE 0x10000u /* requester ids of segment 0: bus << 8 | dev << 3 | fn */

/* Sequential-write helpers: every libfdt call's result goes through ok() so the first error sticks. */
struct fdt_w {
	void *fdt;
	int err;
};

static void ok(struct fdt_w *w, int r)
{
	if (r < 0 && !w->err)
		w->err = r;
}

static void begin(struct fdt_w *w, const char *fmt, uint64_t unit, bool has_unit)
{
	char name[64];

	if (has_unit)
		snprintf(name, sizeof(name), fmt, (unsigned long long)unit);
	else
		snprintf(name, sizeof(name), "%s", fmt);
	ok(w, fdt_begin_node(w->fdt, name));
}

static void end(struct fdt_w *w)
{
	ok(w, fdt_end_node(w->fdt));
}

static void prop_u32(struct fdt_w *w, const char *name, uint32_t v)
{
	ok(w, fdt_property_u32(w->fdt, name, v));
}

static void prop_str(struct fdt_w *w, const char *name, const char *v)
{
	ok(w, fdt_property_string(w->fdt, name, v));
}

static void prop_empty(struct fdt_w *w, const char *name)
{
	ok(w, fdt_property(w->fdt, name, NULL, 0));
}

/* A property of n 32-bit cells. */
static void prop_cells(struct fdt_w *w, const char *name, const uint32_t *cells, unsigned int n)
{
	fdt32_t be[64];

	if (n > sizeof(be) / sizeof(be[0])) {
		ok(w, -FDT_ERR_NOSPACE);
		return;
	}
	for (unsigned int i = 0; i < n; i++)
		be[i] = cpu_to_fdt32(cells[i]);
	ok(w, fdt_property(w->fdt, name, be, (int)(n * sizeof(be[0]))));
}

/* reg = <base size> with #address-cells = #size-cells = 2, for up to two regions. */
static void prop_reg2(struct fdt_w *w, const struct arm64_fdt_region *r, unsigned int n)
{
	uint32_t c[8];

	for (unsigned int i = 0; i < n; i++) {
		c[4 * i] = (uint32_t)(r[i].base >> 32);
		c[4 * i + 1] = (uint32_t)r[i].base;
		c[4 * i + 2] = (uint32_t)(r[i].size >> 32);
		c[4 * i + 3] = (uint32_t)r[i].size;
	}
	prop_cells(w, "reg", c, 4 * n);
}

static void add_cpus(struct fdt_w *w, const struct arm64_machine *m)
{
	begin(w, "cpus", 0, false);
	prop_u32(w, "#address-cells", 1);
	prop_u32(w, "#size-cells", 0);
	for (unsigned int i = 0; i < m->ncpus; i++) {
		/* KVM gives vCPU i the MPIDR affinity Aff1 = i >> 4, Aff0 = i & 15. */
		uint32_t mpidr = ((i >> 4) << 8) | (i & 0xf);

		begin(w, "cpu@%llx", mpidr, true);
		prop_str(w, "device_type", "cpu");
		prop_str(w, "compatible", "arm,arm-v8");
		prop_u32(w, "reg", mpidr);
		prop_str(w, "enable-method", "psci");
		end(w);
	}
	end(w);
}

static void add_gic(struct fdt_w *w, const struct arm64_machine *m)
{
	const struct arm64_fdt_region regs[2] = { m->gic_dist, m->gic_redist };
	const uint32_t maint[3] = { GIC_PPI, 9, IRQ_LEVEL_HIGH };

	begin(w, "intc@%llx", m->gic_dist.base, true);
	prop_str(w, "compatible", "arm,gic-v3");
	prop_u32(w, "#interrupt-cells", 3);
	prop_empty(w, "interrupt-controller");
	prop_u32(w, "#address-cells", 2);
	prop_u32(w, "#size-cells", 2);
	prop_empty(w, "ranges");
	prop_reg2(w, regs, 2);
	prop_cells(w, "interrupts", maint, 3);
	prop_u32(w, "phandle", ARM64_PHANDLE_GIC);
	if (m->gic_its.size) {
		begin(w, "its@%llx", m->gic_its.base, true);
		prop_str(w, "compatible", "arm,gic-v3-its");
		prop_empty(w, "msi-controller");
		prop_u32(w, "#msi-cells", 1);
		prop_reg2(w, &m->gic_its, 1);
		prop_u32(w, "phandle", ARM64_PHANDLE_ITS);
		end(w);
	}
	end(w);
}

static void add_timer(struct fdt_w *w)
{
	/* Secure physical, non-secure physical, virtual, hypervisor timers (PPIs 13, 14, 11, 10). */
	const uint32_t irqs[12] = { GIC_PPI, 13, IRQ_LEVEL_HIGH, GIC_PPI, 14, IRQ_LEVEL_HIGH,
				    GIC_PPI, 11, IRQ_LEVEL_HIGH, GIC_PPI, 10, IRQ_LEVEL_HIGH };

	begin(w, "timer", 0, false);
	prop_str(w, "compatible", "arm,armv8-timer");
	prop_cells(w, "interrupts", irqs, 12);
	prop_empty(w, "always-on");
	end(w);
}

static void add_pci(struct fdt_w *w, const struct arm64_machine *m)
{
	const uint32_t bus_range[2] = { 0, 0 };
	const uint32_t ranges[7] = { PCI_SPACE_MEM32,
				     (uint32_t)(m->pci_mmio.base >> 32),
				     (uint32_t)m->pci_mmio.base,
				     (uint32_t)(m->pci_mmio.base >> 32),
				     (uint32_t)m->pci_mmio.base,
				     (uint32_t)(m->pci_mmio.size >> 32),
				     (uint32_t)m->pci_mmio.size };
	uint32_t map[4 * ARM64_FDT_MAX_ENDPOINTS];

	begin(w, "pcie@%llx", m->pci_ecam.base, true);
	prop_str(w, "compatible", "pci-host-ecam-generic");
	prop_str(w, "device_type", "pci");
	prop_u32(w, "#address-cells", 3);
	prop_u32(w, "#size-cells", 2);
	prop_cells(w, "bus-range", bus_range, 2);
	prop_u32(w, "linux,pci-domain", 0);
	prop_reg2(w, &m->pci_ecam, 1);
	prop_cells(w, "ranges", ranges, 7);
	prop_empty(w, "dma-coherent");
	if (m->gic_its.size) {
		/* Every requester id is its own ITS device id. */
		const uint32_t msi_map[4] = { 0, ARM64_PHANDLE_ITS, 0, PCI_RID_SPACE };

		prop_cells(w, "msi-map", msi_map, 4);
	}
	if (m->has_iommu) {
		/* Exactly the functions behind the IOMMU: <rid-base &iommu endpoint-id length>, endpoint id = rid. */
		for (unsigned int i = 0; i < m->nendpoints; i++) {
			map[4 * i] = m->endpoint_bdf[i];
			map[4 * i + 1] = ARM64_PHANDLE_IOMMU;
			map[4 * i + 2] = m->endpoint_bdf[i];
			map[4 * i + 3] = 1;
		}
		if (m->nendpoints)
			prop_cells(w, "iommu-map", map, 4 * m->nendpoints);
		/* The virtio,pci-iommu binding: a child node of the host bridge whose reg is the IOMMU's BDF. */
		{
			const uint32_t reg[5] = { (uint32_t)m->iommu_bdf << 8, 0, 0, 0, 0 };
			char name[32];

			/* PCI unit address: "dev" for function 0, else "dev,fn". */
			if (m->iommu_bdf & 7)
				snprintf(name, sizeof(name), "virtio_iommu@%x,%x", (m->iommu_bdf >> 3) & 0x1f,
					 m->iommu_bdf & 7);
			else
				snprintf(name, sizeof(name), "virtio_iommu@%x", (m->iommu_bdf >> 3) & 0x1f);
			ok(w, fdt_begin_node(w->fdt, name));
			prop_str(w, "compatible", "virtio,pci-iommu");
			prop_cells(w, "reg", reg, 5);
			prop_u32(w, "#iommu-cells", 1);
			prop_u32(w, "phandle", ARM64_PHANDLE_IOMMU);
			end(w);
		}
	}
	end(w);
}

static bool region_ok(const struct arm64_fdt_region *r)
{
	return r->size && r->base + r->size > r->base;
}

static int check(const struct arm64_machine *m)
{
	if (!m->ncpus || m->ncpus > ARM64_FDT_MAX_CPUS || !region_ok(&m->ram) || !region_ok(&m->gic_dist) ||
	    !region_ok(&m->gic_redist) || !region_ok(&m->uart) || !m->bootargs)
		return -EINVAL;
	if (m->pci_ecam.size && (!region_ok(&m->pci_mmio) || !region_ok(&m->pci_ecam)))
		return -EINVAL;
	if (m->has_iommu && (!m->pci_ecam.size || m->nendpoints > ARM64_FDT_MAX_ENDPOINTS))
		return -EINVAL;
	if (m->initrd_size && m->initrd_start + m->initrd_size < m->initrd_start)
		return -EINVAL;
	return 0;
}

long arm64_fdt_build(const struct arm64_machine *m, void *buf, size_t len)
{
	struct fdt_w w = { .fdt = buf };
	char uart_path[64];
	int r = check(m);

	if (r)
		return r;
	if (len > INT32_MAX)
		len = INT32_MAX;
	snprintf(uart_path, sizeof(uart_path), "/uart@%llx", (unsigned long long)m->uart.base);

	ok(&w, fdt_create(buf, (int)len));
	ok(&w, fdt_finish_reservemap(buf));
	begin(&w, "", 0, false);
	prop_str(&w, "compatible", "linux,dummy-virt");
	prop_str(&w, "model", "moat");
	prop_u32(&w, "#address-cells", 2);
	prop_u32(&w, "#size-cells", 2);
	prop_u32(&w, "interrupt-parent", ARM64_PHANDLE_GIC);

	begin(&w, "chosen", 0, false);
	prop_str(&w, "bootargs", m->bootargs);
	prop_str(&w, "stdout-path", uart_path);
	if (m->initrd_size) {
		ok(&w, fdt_property_u64(buf, "linux,initrd-start", m->initrd_start));
		ok(&w, fdt_property_u64(buf, "linux,initrd-end", m->initrd_start + m->initrd_size));
	}
	end(&w);

	begin(&w, "aliases", 0, false);
	prop_str(&w, "serial0", uart_path);
	end(&w);

	begin(&w, "memory@%llx", m->ram.base, true);
	prop_str(&w, "device_type", "memory");
	prop_reg2(&w, &m->ram, 1);
	end(&w);

	add_cpus(&w, m);

	begin(&w, "psci", 0, false);
	{
		static const char compat[] = "arm,psci-1.0\0arm,psci-0.2";
		ok(&w, fdt_property(buf, "compatible", compat, sizeof(compat)));
	}
	prop_str(&w, "method", "hvc");
	end(&w);

	add_gic(&w, m);
	add_timer(&w);

	begin(&w, "uart@%llx", m->uart.base, true);
	{
		const uint32_t irq[3] = { GIC_SPI, m->uart_spi, IRQ_LEVEL_HIGH };

		prop_str(&w, "compatible", "ns16550a");
		prop_reg2(&w, &m->uart, 1);
		prop_cells(&w, "interrupts", irq, 3);
		prop_u32(&w, "clock-frequency", m->uart_clock);
		prop_u32(&w, "reg-shift", 0);
		prop_u32(&w, "reg-io-width", 1);
	}
	end(&w);

	if (m->pvpanic.size) {
		begin(&w, "pvpanic@%llx", m->pvpanic.base, true);
		prop_str(&w, "compatible", "qemu,pvpanic-mmio");
		prop_reg2(&w, &m->pvpanic, 1);
		end(&w);
	}
	if (m->pci_ecam.size)
		add_pci(&w, m);

	end(&w); /* root */
	ok(&w, fdt_finish(buf));
	if (w.err)
		return w.err == -FDT_ERR_NOSPACE ? -ENOSPC : -EINVAL;
	return fdt_totalsize(buf);
}
