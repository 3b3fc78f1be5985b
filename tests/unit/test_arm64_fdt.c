/* The arm64 device tree (arch/arm64/fdt.c) and Image header (arch/arm64/boot.c), checked on the build host. */
#include <criterion/criterion.h>
#include <errno.h>
#include <libfdt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arch/arm64/boot.h"
#include "arch/arm64/fdt.h"
#include "arch/arm64/layout.h"

#define FDT_BUF 0x10000

static struct arm64_machine machine(unsigned int ncpus)
{
	return (struct arm64_machine){
		.ncpus = ncpus,
		.ram = { ARM64_RAM_BASE, 512ull << 20 },
		.gic_dist = { ARM64_GIC_DIST_BASE, ARM64_GIC_DIST_SIZE },
		.gic_redist = { ARM64_GIC_REDIST_BASE, ARM64_GIC_REDIST_SIZE * ncpus },
		.gic_its = { ARM64_GIC_ITS_BASE, ARM64_GIC_ITS_SIZE },
		.uart = { ARM64_UART_BASE, ARM64_UART_SIZE },
		.uart_spi = ARM64_UART_SPI,
		.uart_clock = ARM64_UART_CLOCK,
		.pvpanic = { ARM64_PVPANIC_BASE, ARM64_PVPANIC_SIZE },
		.pci_ecam = { ARM64_PCI_ECAM_BASE, ARM64_PCI_ECAM_SIZE },
		.pci_mmio = { ARM64_PCI_MMIO_BASE, ARM64_PCI_MMIO_SIZE },
		.bootargs = "console=ttyS0 panic=-1",
		.initrd_start = 0x5f000000,
		.initrd_size = 0x123456,
	};
}

/* IOMMU at 00:01.0, endpoints 00:02.0 and 00:04.0 (00:03.0 is a device with iommu=off). */
static struct arm64_machine machine_iommu(void)
{
	struct arm64_machine m = machine(2);

	m.has_iommu = 1;
	m.iommu_bdf = 1 << 3;
	m.endpoint_bdf[0] = 2 << 3;
	m.endpoint_bdf[1] = 4 << 3;
	m.nendpoints = 2;
	return m;
}

static void *build(const struct arm64_machine *m)
{
	void *buf = calloc(1, FDT_BUF);
	long n;

	cr_assert_not_null(buf);
	n = arm64_fdt_build(m, buf, FDT_BUF);
	cr_assert_gt(n, 0, "arm64_fdt_build: %ld", n);
	cr_assert_eq(fdt_check_header(buf), 0);
	cr_assert_eq((long)fdt_totalsize(buf), n);
	return buf;
}

static int node(const void *fdt, const char *path)
{
	int off = fdt_path_offset(fdt, path);

	cr_assert_geq(off, 0, "node %s missing: %s", path, fdt_strerror(off));
	return off;
}

static const char *str(const void *fdt, int off, const char *name)
{
	const char *s = fdt_getprop(fdt, off, name, NULL);

	cr_assert_not_null(s, "property %s missing", name);
	return s;
}

static uint32_t u32(const void *fdt, int off, const char *name)
{
	int len;
	const fdt32_t *p = fdt_getprop(fdt, off, name, &len);

	cr_assert_not_null(p, "property %s missing", name);
	cr_assert_eq(len, 4, "property %s is %d bytes", name, len);
	return fdt32_to_cpu(p[0]);
}

/* The n-th (base, size) pair of a reg with 2 address and 2 size cells. */
static void reg2(const void *fdt, int off, int n, uint64_t *base, uint64_t *size)
{
	int len;
	const fdt32_t *p = fdt_getprop(fdt, off, "reg", &len);

	cr_assert_not_null(p);
	cr_assert_geq(len, (n + 1) * 16);
	p += 4 * n;
	*base = (uint64_t)fdt32_to_cpu(p[0]) << 32 | fdt32_to_cpu(p[1]);
	*size = (uint64_t)fdt32_to_cpu(p[2]) << 32 | fdt32_to_cpu(p[3]);
}

/* The node a phandle property points at, which must exist. */
static int target(const void *fdt, uint32_t phandle)
{
	int off = fdt_node_offset_by_phandle(fdt, phandle);

	cr_assert_geq(off, 0, "phandle %u does not resolve", phandle);
	return off;
}

/*
 * Look rid up in a <rid-base phandle out-base length> map (msi-map, iommu-map).
 * Returns true and the phandle and output id if an entry covers it.
 */
static bool map_lookup(const void *fdt, int off, const char *name, uint32_t rid, uint32_t *ph, uint32_t *out)
{
	int len;
	const fdt32_t *p = fdt_getprop(fdt, off, name, &len);

	if (!p)
		return false;
	cr_assert_eq(len % 16, 0, "%s is not a list of 4-cell entries", name);
	for (int i = 0; i < len / 16; i++, p += 4) {
		uint32_t base = fdt32_to_cpu(p[0]), length = fdt32_to_cpu(p[3]);

		if (rid >= base && rid - base < length) {
			*ph = fdt32_to_cpu(p[1]);
			*out = fdt32_to_cpu(p[2]) + (rid - base);
			return true;
		}
	}
	return false;
}

Test(arm64_fdt, root_chosen_and_memory)
{
	struct arm64_machine m = machine(1);
	void *fdt = build(&m);
	int root = node(fdt, "/"), chosen = node(fdt, "/chosen"), mem, uart;
	const void *p;
	uint64_t base, size;
	int len;

	cr_assert_eq(u32(fdt, root, "#address-cells"), 2);
	cr_assert_eq(u32(fdt, root, "#size-cells"), 2);
	cr_assert_eq(target(fdt, u32(fdt, root, "interrupt-parent")), node(fdt, "/intc@8000000"));
	cr_assert_str_eq(str(fdt, chosen, "bootargs"), "console=ttyS0 panic=-1");
	p = fdt_getprop(fdt, chosen, "linux,initrd-start", &len);
	cr_assert(p && len == 8);
	cr_assert_eq(fdt64_ld(p), 0x5f000000);
	p = fdt_getprop(fdt, chosen, "linux,initrd-end", &len);
	cr_assert(p && len == 8);
	cr_assert_eq(fdt64_ld(p), 0x5f000000 + 0x123456);
	/* stdout-path names the UART node, which is a 16550 with byte registers on SPI 1. */
	uart = fdt_path_offset(fdt, str(fdt, chosen, "stdout-path"));
	cr_assert_geq(uart, 0, "stdout-path does not resolve");
	cr_assert_str_eq(str(fdt, uart, "compatible"), "ns16550a");
	cr_assert_eq(u32(fdt, uart, "reg-shift"), 0);
	cr_assert_eq(u32(fdt, uart, "clock-frequency"), ARM64_UART_CLOCK);
	reg2(fdt, uart, 0, &base, &size);
	cr_assert_eq(base, ARM64_UART_BASE);
	{
		const fdt32_t *irq = fdt_getprop(fdt, uart, "interrupts", &len);
		cr_assert(irq && len == 12);
		cr_assert_eq(fdt32_to_cpu(irq[0]), 0, "an SPI");
		cr_assert_eq(fdt32_to_cpu(irq[1]), ARM64_UART_SPI);
	}
	mem = node(fdt, "/memory@40000000");
	cr_assert_str_eq(str(fdt, mem, "device_type"), "memory");
	reg2(fdt, mem, 0, &base, &size);
	cr_assert_eq(base, ARM64_RAM_BASE);
	cr_assert_eq(size, 512ull << 20);
	cr_assert_str_eq(str(fdt, node(fdt, "/pvpanic@9010000"), "compatible"), "qemu,pvpanic-mmio");
	free(fdt);
}

Test(arm64_fdt, no_initrd_no_initrd_properties)
{
	struct arm64_machine m = machine(1);
	void *fdt;

	m.initrd_size = 0;
	fdt = build(&m);
	cr_assert_null(fdt_getprop(fdt, node(fdt, "/chosen"), "linux,initrd-start", NULL));
	free(fdt);
}

Test(arm64_fdt, cpus_use_psci)
{
	struct arm64_machine m = machine(20);
	void *fdt = build(&m);
	int cpus = node(fdt, "/cpus"), psci = node(fdt, "/psci"), n = 0, off, len;
	const char *compat;

	cr_assert_eq(u32(fdt, cpus, "#address-cells"), 1);
	cr_assert_eq(u32(fdt, cpus, "#size-cells"), 0);
	fdt_for_each_subnode(off, fdt, cpus) {
		/* vCPU n's MPIDR: Aff1 = n >> 4, Aff0 = n & 15. */
		uint32_t want = ((uint32_t)(n >> 4) << 8) | (uint32_t)(n & 15);

		cr_assert_str_eq(str(fdt, off, "device_type"), "cpu");
		cr_assert_str_eq(str(fdt, off, "enable-method"), "psci");
		cr_assert_eq(u32(fdt, off, "reg"), want, "cpu %d reg", n);
		n++;
	}
	cr_assert_eq(n, 20);
	cr_assert_geq(node(fdt, "/cpus/cpu@101"), 0, "cpu 17 is Aff1 1, Aff0 1");
	cr_assert_str_eq(str(fdt, psci, "method"), "hvc");
	compat = fdt_getprop(fdt, psci, "compatible", &len);
	cr_assert_not_null(compat);
	cr_assert_eq(fdt_stringlist_contains(compat, len, "arm,psci-0.2"), 1);
	free(fdt);
}

Test(arm64_fdt, gic_its_and_timer)
{
	struct arm64_machine m = machine(4);
	void *fdt = build(&m);
	int gic = node(fdt, "/intc@8000000"), its = node(fdt, "/intc@8000000/its@8080000"), timer, len;
	const fdt32_t *irqs;
	uint64_t base, size;

	cr_assert_str_eq(str(fdt, gic, "compatible"), "arm,gic-v3");
	cr_assert_not_null(fdt_getprop(fdt, gic, "interrupt-controller", NULL));
	cr_assert_eq(u32(fdt, gic, "#interrupt-cells"), 3);
	reg2(fdt, gic, 0, &base, &size);
	cr_assert_eq(base, ARM64_GIC_DIST_BASE);
	reg2(fdt, gic, 1, &base, &size);
	cr_assert_eq(base, ARM64_GIC_REDIST_BASE);
	cr_assert_eq(size, 4 * ARM64_GIC_REDIST_SIZE, "one redistributor per vCPU");
	cr_assert_eq(target(fdt, ARM64_PHANDLE_GIC), gic);
	cr_assert_str_eq(str(fdt, its, "compatible"), "arm,gic-v3-its");
	cr_assert_not_null(fdt_getprop(fdt, its, "msi-controller", NULL));
	cr_assert_eq(u32(fdt, its, "#msi-cells"), 1);
	reg2(fdt, its, 0, &base, &size);
	cr_assert_eq(base, ARM64_GIC_ITS_BASE);
	timer = node(fdt, "/timer");
	cr_assert_str_eq(str(fdt, timer, "compatible"), "arm,armv8-timer");
	irqs = fdt_getprop(fdt, timer, "interrupts", &len);
	cr_assert(irqs && len == 4 * 12);
	cr_assert_eq(fdt32_to_cpu(irqs[7]), 11, "the virtual timer is PPI 11");
	free(fdt);
}

Test(arm64_fdt, pci_msi_map_covers_the_bus)
{
	struct arm64_machine m = machine(1);
	void *fdt = build(&m);
	int pci = node(fdt, "/pcie@30000000"), len;
	const fdt32_t *ranges;
	uint32_t ph, out;
	uint64_t base, size;

	cr_assert_str_eq(str(fdt, pci, "compatible"), "pci-host-ecam-generic");
	cr_assert_str_eq(str(fdt, pci, "device_type"), "pci");
	cr_assert_not_null(fdt_getprop(fdt, pci, "dma-coherent", NULL));
	reg2(fdt, pci, 0, &base, &size);
	cr_assert_eq(base, ARM64_PCI_ECAM_BASE);
	cr_assert_eq(size, ARM64_PCI_ECAM_SIZE);
	ranges = fdt_getprop(fdt, pci, "ranges", &len);
	cr_assert(ranges && len == 7 * 4);
	cr_assert_eq(fdt32_to_cpu(ranges[0]), 0x02000000, "32-bit memory space");
	cr_assert_eq(fdt32_to_cpu(ranges[4]), ARM64_PCI_MMIO_BASE);
	cr_assert_eq(fdt32_to_cpu(ranges[6]), ARM64_PCI_MMIO_SIZE);
	for (uint32_t rid = 0; rid <= 0xffff; rid++) {
		cr_assert(map_lookup(fdt, pci, "msi-map", rid, &ph, &out), "rid 0x%x not in msi-map", rid);
		cr_assert_eq(out, rid, "ITS device id of rid 0x%x", rid);
		cr_assert_eq(target(fdt, ph), node(fdt, "/intc@8000000/its@8080000"));
	}
	cr_assert_null(fdt_getprop(fdt, pci, "iommu-map", NULL), "no IOMMU, no iommu-map");
	fdt_for_each_subnode(len, fdt, pci) cr_assert_fail("no IOMMU, no child node of the host bridge");
	free(fdt);
}

Test(arm64_fdt, iommu_map_lists_exactly_the_endpoints)
{
	struct arm64_machine m = machine_iommu();
	void *fdt = build(&m);
	int pci = node(fdt, "/pcie@30000000"), iommu = node(fdt, "/pcie@30000000/virtio_iommu@1"), len;
	const fdt32_t *reg;
	uint32_t ph, out;

	cr_assert_str_eq(str(fdt, iommu, "compatible"), "virtio,pci-iommu");
	cr_assert_eq(u32(fdt, iommu, "#iommu-cells"), 1);
	reg = fdt_getprop(fdt, iommu, "reg", &len);
	cr_assert(reg && len == 5 * 4, "a PCI reg: 3 address + 2 size cells");
	cr_assert_eq(fdt32_to_cpu(reg[0]), (uint32_t)(1 << 3) << 8, "reg names the IOMMU's own BDF");
	cr_assert_eq(fdt_parent_offset(fdt, iommu), pci);
	for (uint32_t rid = 0; rid <= 0xffff; rid++) {
		bool behind = rid == (2 << 3) || rid == (4 << 3);
		bool mapped = map_lookup(fdt, pci, "iommu-map", rid, &ph, &out);

		cr_assert_eq(mapped, behind, "rid 0x%x: in iommu-map %d, behind the IOMMU %d", rid, mapped, behind);
		if (mapped) {
			cr_assert_eq(target(fdt, ph), iommu);
			cr_assert_eq(out, rid, "endpoint id = requester id");
		}
		/* Every function, the IOMMU included, still reaches the ITS. */
		cr_assert(map_lookup(fdt, pci, "msi-map", rid, &ph, &out));
	}
	free(fdt);
}

Test(arm64_fdt, bad_descriptions_and_small_buffers)
{
	struct arm64_machine m = machine(1);
	char small[256];

	m.ncpus = 0;
	cr_assert_eq(arm64_fdt_build(&m, small, sizeof(small)), -EINVAL);
	m = machine(ARM64_FDT_MAX_CPUS + 1);
	cr_assert_eq(arm64_fdt_build(&m, small, sizeof(small)), -EINVAL);
	m = machine(1);
	m.bootargs = NULL;
	cr_assert_eq(arm64_fdt_build(&m, small, sizeof(small)), -EINVAL);
	m = machine(1);
	m.ram.base = UINT64_MAX - 10;
	cr_assert_eq(arm64_fdt_build(&m, small, sizeof(small)), -EINVAL, "RAM wrapping around");
	m = machine_iommu();
	m.pci_ecam.size = 0;
	cr_assert_eq(arm64_fdt_build(&m, small, sizeof(small)), -EINVAL, "an IOMMU needs the PCI bus");
	m = machine(1);
	cr_assert_eq(arm64_fdt_build(&m, small, sizeof(small)), -ENOSPC);
}

/* dtc decompiles the blob, recompiles it, and decompiles that to the same text. */
static bool run(const char *cmd, char *out, size_t outlen)
{
	FILE *p = popen(cmd, "r");
	size_t n;

	cr_assert_not_null(p);
	n = fread(out, 1, outlen - 1, p);
	out[n] = '\0';
	return pclose(p) == 0;
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = calloc(1, 1 << 20);
	size_t n;

	cr_assert_not_null(f, "cannot open %s", path);
	cr_assert_not_null(buf);
	n = fread(buf, 1, (1 << 20) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

Test(arm64_fdt, dtc_round_trip)
{
	struct arm64_machine m = machine_iommu();
	char dir[] = "/tmp/moat-fdt-XXXXXX", path[128], cmd[512], out[8192];
	void *fdt;
	char *dts1, *dts2;
	FILE *f;

	if (system("command -v dtc >/dev/null 2>&1") != 0)
		cr_assert_fail("dtc not found: install device-tree-compiler (tools/install-deps.sh does)");
	fdt = build(&m);
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/a.dtb", dir);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	cr_assert_eq(fwrite(fdt, 1, fdt_totalsize(fdt), f), fdt_totalsize(fdt));
	fclose(f);
	snprintf(cmd, sizeof(cmd),
		 "cd %s && dtc -q -I dtb -O dts -o a.dts a.dtb 2>&1 && dtc -q -I dts -O dtb -o b.dtb a.dts 2>&1 && "
		 "dtc -q -I dtb -O dts -o b.dts b.dtb 2>&1",
		 dir);
	cr_assert(run(cmd, out, sizeof(out)), "dtc failed: %s", out);
	snprintf(path, sizeof(path), "%s/a.dts", dir);
	dts1 = slurp(path);
	snprintf(path, sizeof(path), "%s/b.dts", dir);
	dts2 = slurp(path);
	cr_assert_str_eq(dts1, dts2);
	cr_assert_not_null(strstr(dts1, "compatible = \"virtio,pci-iommu\";"));
	cr_assert_not_null(strstr(dts1, "iommu-map = <0x10 0x03 0x10 0x01 0x20 0x03 0x20 0x01>;"), "%s", dts1);
	cr_assert_not_null(strstr(dts1, "msi-map = <0x00 0x02 0x00 0x10000>;"));
	/* dtc's own checks (phandle references, unit addresses, reg formats) pass without warnings. */
	snprintf(cmd, sizeof(cmd), "cd %s && dtc -I dtb -O dtb -o /dev/null a.dtb 2>&1", dir);
	cr_assert(run(cmd, out, sizeof(out)), "dtc check failed: %s", out);
	cr_assert_str_empty(out, "dtc warnings: %s", out);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
	free(dts1);
	free(dts2);
	free(fdt);
}

static void image_header(uint8_t *h, uint64_t text_offset, uint64_t image_size)
{
	memset(h, 0, ARM64_IMAGE_HEADER_BYTES);
	for (int i = 0; i < 8; i++) {
		h[8 + i] = (uint8_t)(text_offset >> (8 * i));
		h[16 + i] = (uint8_t)(image_size >> (8 * i));
	}
	memcpy(h + 56, "ARM\x64", 4);
}

Test(arm64_image, header)
{
	uint8_t h[ARM64_IMAGE_HEADER_BYTES];
	struct arm64_image img;

	image_header(h, 0, 40 << 20);
	cr_assert_eq(arm64_image_parse(h, sizeof(h), 30 << 20, &img), 0);
	cr_assert_eq(img.text_offset, 0);
	cr_assert_eq(img.image_size, 40 << 20);
	image_header(h, 0, 0);
	cr_assert_eq(arm64_image_parse(h, sizeof(h), 30 << 20, &img), 0, "old kernels: image_size 0");
	cr_assert_eq(img.text_offset, 0x80000);
	image_header(h, 0, 20 << 20);
	cr_assert_eq(arm64_image_parse(h, sizeof(h), 30 << 20, &img), -EINVAL, "file larger than image_size");
	image_header(h, 4 << 20, 40 << 20);
	cr_assert_eq(arm64_image_parse(h, sizeof(h), 30 << 20, &img), -EINVAL, "text_offset past 2 MiB");
	image_header(h, 0, 40 << 20);
	h[59] = 0;
	cr_assert_eq(arm64_image_parse(h, sizeof(h), 30 << 20, &img), -ENOEXEC);
	cr_assert_eq(arm64_image_parse(h, 10, 30 << 20, &img), -ENOEXEC, "short file");
	h[0] = 0x1f;
	h[1] = 0x8b;
	cr_assert_eq(arm64_image_parse(h, sizeof(h), 30 << 20, &img), -EMEDIUMTYPE, "gzip'd Image");
}
