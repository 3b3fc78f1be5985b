#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "devices/pci/msix.h"
#include "devices/pci/pci.h"

#define WIN_BASE 0xc0000000ull
#define WIN_SIZE 0x20000000ull

/* A device that records BAR traffic. */
struct rec {
	struct pci_device pd;
	unsigned int reads, writes, maps, unmaps;
	unsigned int last_bar, last_map_bar;
	uint64_t last_off, last_map_addr;
	uint32_t last_val;
	unsigned int cfg_written;
};

static void rec_read(struct pci_device *pd, unsigned int bar, uint64_t off, void *data, unsigned int size)
{
	struct rec *r = pd->ctx;
	uint32_t v = 0xa5a50000u | (uint32_t)off;

	r->reads++;
	r->last_bar = bar;
	r->last_off = off;
	memcpy(data, &v, size > 4 ? 4 : size);
}

static void rec_write(struct pci_device *pd, unsigned int bar, uint64_t off, const void *data, unsigned int size)
{
	struct rec *r = pd->ctx;

	r->writes++;
	r->last_bar = bar;
	r->last_off = off;
	r->last_val = 0;
	memcpy(&r->last_val, data, size > 4 ? 4 : size);
}

static void rec_mapped(struct pci_device *pd, unsigned int bar, uint64_t addr, bool mapped)
{
	struct rec *r = pd->ctx;

	r->last_map_bar = bar;
	if (mapped) {
		r->maps++;
		r->last_map_addr = addr;
	} else {
		r->unmaps++;
	}
}

static void rec_cfg(struct pci_device *pd, uint32_t off, unsigned int size)
{
	((struct rec *)pd->ctx)->cfg_written++;
}

static const struct pci_device_ops rec_ops = {
	.bar_read = rec_read,
	.bar_write = rec_write,
	.bar_mapped = rec_mapped,
	.config_written = rec_cfg,
};

static struct pci_bus bus;

static void setup_dev(struct rec *r, uint64_t bar_size, bool is64)
{
	memset(r, 0, sizeof(*r));
	pci_device_init(&r->pd, 0x1af4, 0x1041, 0x020000, 1, 0x1af4, 1, &rec_ops, r);
	cr_assert_eq(pci_device_add_bar(&r->pd, 0, bar_size, is64), 0);
}

static uint32_t cfg32(unsigned int slot, uint32_t off)
{
	uint32_t v;
	pci_config_read(&bus, slot, 0, off, &v, 4);
	return v;
}

static void wcfg32(unsigned int slot, uint32_t off, uint32_t v)
{
	pci_config_write(&bus, slot, 0, off, &v, 4);
}

static void init_bus(void)
{
	pci_bus_init(&bus, WIN_BASE, WIN_SIZE);
}

static void fini_bus(void)
{
	pci_bus_fini(&bus);
}

TestSuite(pci, .init = init_bus, .fini = fini_bus);

Test(pci, header_ids_and_empty_slots)
{
	struct rec r;

	setup_dev(&r, 0x8000, true);
	cr_assert_eq(pci_bus_add(&bus, &r.pd), 0);
	cr_assert_eq(r.pd.slot, 1, "slot 0 stays empty");
	cr_assert_eq(cfg32(1, 0), 0x10411af4u);
	cr_assert_eq(cfg32(1, 8) >> 8, 0x020000u, "class code");
	cr_assert_eq(cfg32(1, 8) & 0xff, 1, "revision");
	cr_assert_eq(cfg32(0, 0), 0xffffffffu, "no device in slot 0");
	cr_assert_eq(cfg32(5, 0), 0xffffffffu);
	/* Other functions of a present device do not exist either. */
	uint32_t v;
	pci_config_read(&bus, 1, 3, 0, &v, 4);
	cr_assert_eq(v, 0xffffffffu);
	/* Vendor and class are read-only. */
	wcfg32(1, 0, 0);
	cr_assert_eq(cfg32(1, 0), 0x10411af4u);
}

Test(pci, bar_sizing_and_placement)
{
	struct rec a, b;

	setup_dev(&a, 0x8000, true);
	setup_dev(&b, 0x100000, false);
	cr_assert_eq(pci_bus_add(&bus, &a.pd), 0);
	cr_assert_eq(pci_bus_add(&bus, &b.pd), 0);
	/* Placed, naturally aligned, inside the window, decoding. */
	cr_assert_eq(a.pd.bar[0].addr, WIN_BASE);
	cr_assert_eq(b.pd.bar[0].addr % 0x100000, 0);
	cr_assert(b.pd.bar[0].addr >= WIN_BASE + 0x8000);
	cr_assert(a.pd.bar[0].mapped && b.pd.bar[0].mapped);
	cr_assert_eq(a.maps, 1);
	cr_assert_eq(cfg32(1, 0x10), (uint32_t)WIN_BASE | PCI_BAR_MEM_64);
	cr_assert_eq(cfg32(1, 0x14), 0, "upper half of the 64-bit BAR");

	/* Sizing: all ones reads back the size mask; the decode stops meanwhile. */
	wcfg32(1, 0x10, 0xffffffffu);
	cr_assert_eq(cfg32(1, 0x10), (uint32_t)~(0x8000u - 1) | PCI_BAR_MEM_64);
	wcfg32(1, 0x14, 0xffffffffu);
	cr_assert_eq(cfg32(1, 0x14), 0xffffffffu);
	cr_assert_not(a.pd.bar[0].mapped, "an all-ones BAR is outside the window");
	wcfg32(1, 0x14, 0);
	wcfg32(1, 0x10, (uint32_t)WIN_BASE + 0x10000);
	cr_assert(a.pd.bar[0].mapped);
	cr_assert_eq(a.last_map_addr, WIN_BASE + 0x10000, "moved BAR mapped at its new address");
	/* Unused BARs read zero and ignore writes. */
	wcfg32(1, 0x18, 0xffffffffu);
	cr_assert_eq(cfg32(1, 0x18), 0);
}

Test(pci, window_dispatch_follows_bars_and_memory_enable)
{
	struct rec a;
	uint32_t v = 0;

	setup_dev(&a, 0x8000, true);
	cr_assert_eq(pci_bus_add(&bus, &a.pd), 0);
	pci_window_read(&bus, 0x1234, &v, 4);
	cr_assert_eq(v, 0xa5a51234u);
	v = 0x77;
	pci_window_write(&bus, 0x100, &v, 4);
	cr_assert_eq(a.writes, 1);
	cr_assert_eq(a.last_off, 0x100);
	cr_assert_eq(a.last_val, 0x77);
	/* An access straddling the BAR's end reaches nobody. */
	pci_window_read(&bus, 0x8000 - 2, &v, 4);
	cr_assert_eq(v, 0xffffffffu);
	/* Memory decoding off: the BAR goes quiet. */
	uint16_t cmd = 0;
	pci_config_write(&bus, 1, 0, PCI_COMMAND, &cmd, 2);
	cr_assert_not(a.pd.bar[0].mapped);
	cr_assert_eq(a.unmaps, 1);
	unsigned int before = a.reads;
	pci_window_read(&bus, 0x10, &v, 4);
	cr_assert_eq(v, 0xffffffffu);
	cr_assert_eq(a.reads, before);
	cmd = PCI_COMMAND_MEMORY;
	pci_config_write(&bus, 1, 0, PCI_COMMAND, &cmd, 2);
	cr_assert(a.pd.bar[0].mapped);
}

Test(pci, capability_list_walk)
{
	struct rec a;
	uint8_t body[18] = { 0 };

	setup_dev(&a, 0x8000, true);
	cr_assert_eq(pci_device_add_cap(&a.pd, PCI_CAP_ID_VNDR, body, 16), 0x40);
	cr_assert_eq(pci_device_add_cap(&a.pd, PCI_CAP_ID_VNDR, body, 20), 0x50);
	cr_assert_eq(pci_bus_add(&bus, &a.pd), 0);
	cr_assert(cfg32(1, PCI_COMMAND) & (PCI_STATUS_CAP_LIST << 16));
	uint8_t p = (uint8_t)cfg32(1, PCI_CAPABILITY_LIST);
	unsigned int n = 0;
	while (p && n < 48) {
		uint32_t hdr = cfg32(1, p);
		cr_assert_eq(hdr & 0xff, PCI_CAP_ID_VNDR);
		p = (uint8_t)(hdr >> 8);
		n++;
	}
	cr_assert_eq(n, 2);
	/* Full: no room left in the first 256 bytes. */
	uint8_t big[200] = { 0 };
	cr_assert_eq(pci_device_add_cap(&a.pd, PCI_CAP_ID_VNDR, big, 200), -ENOSPC);
}

Test(pci, hostile_config_accesses)
{
	struct rec a;
	uint32_t v = 0xdeadbeef;

	setup_dev(&a, 0x8000, true);
	cr_assert_eq(pci_bus_add(&bus, &a.pd), 0);
	/* Misaligned, oversized and out-of-range accesses are ignored (reads all ones). */
	pci_config_read(&bus, 1, 0, 0x3, &v, 4);
	cr_assert_eq(v, 0xffffffffu);
	pci_config_read(&bus, 1, 0, 0xffe, &v, 4);
	cr_assert_eq(v, 0xffffffffu);
	pci_config_write(&bus, 1, 0, 0x1001, &v, 1);
	pci_config_write(&bus, 1, 0, 0x11, &v, 2);
	cr_assert_eq(a.pd.bar[0].addr, WIN_BASE);
	/* ECAM beyond bus 0 and the legacy port without the enable bit. */
	pci_ecam_read(&bus, 1u << 20, &v, 4);
	cr_assert_eq(v, 0xffffffffu);
	uint32_t addr = 1u << 11; /* slot 1, register 0, no enable bit */
	pci_cf8_write(&bus, 0, &addr, 4);
	pci_cf8_read(&bus, 4, &v, 4);
	cr_assert_eq(v, 0xffffffffu);
	addr |= 0x80000000u;
	pci_cf8_write(&bus, 0, &addr, 4);
	pci_cf8_read(&bus, 4, &v, 4);
	cr_assert_eq(v, 0x10411af4u);
	/* ECAM: device 1 is at offset 1 << 15. */
	pci_ecam_read(&bus, 1u << 15, &v, 4);
	cr_assert_eq(v, 0x10411af4u);
}

/* ------------------------------------------------------------------ MSI-X */

struct irqrec {
	unsigned int fired[8];
	unsigned int routes, unroutes;
	uint64_t addr[8];
	uint32_t data[8];
};

static int rec_route(void *ctx, unsigned int vec, uint64_t addr, uint32_t data, bool enable)
{
	struct irqrec *r = ctx;

	if (enable) {
		r->routes++;
		r->addr[vec] = addr;
		r->data[vec] = data;
	} else {
		r->unroutes++;
	}
	return 0;
}

static int rec_fire(void *ctx, unsigned int vec)
{
	((struct irqrec *)ctx)->fired[vec]++;
	return 0;
}

static const struct msix_ops rec_msix = { .route = rec_route, .fire = rec_fire };

static void entry_write(struct msix *m, unsigned int v, uint64_t addr, uint32_t data, uint32_t ctrl)
{
	uint32_t w[4] = { (uint32_t)addr, (uint32_t)(addr >> 32), data, ctrl };

	for (unsigned int i = 0; i < 4; i++)
		msix_table_write(m, v * 16 + i * 4, &w[i], 4);
}

static void msix_ctl(struct rec *d, struct msix *m, uint16_t flags)
{
	pci_config_write(&bus, d->pd.slot, 0, m->cap + 2, &flags, 2);
	msix_config_written(m, m->cap + 2, 2);
}

Test(pci, msix_table_mask_pending_and_enable)
{
	struct rec d;
	struct msix m;
	struct irqrec ir = { 0 };
	uint64_t pba;
	uint32_t v;

	setup_dev(&d, 0x8000, true);
	cr_assert_eq(msix_init(&m, &d.pd, 3, 0, 0x4000, 0x5000, &rec_msix, &ir), 0);
	cr_assert_eq(pci_bus_add(&bus, &d.pd), 0);
	/* Capability: table size N-1, table/PBA offsets with the BIR. */
	cr_assert_eq(cfg32(1, m.cap) >> 16, 2);
	cr_assert_eq(cfg32(1, m.cap + 4), 0x4000u);
	cr_assert_eq(cfg32(1, m.cap + 8), 0x5000u);

	/* Disabled: an interrupt only sets the pending bit. */
	cr_assert_eq(msix_notify(&m, 1), 0);
	cr_assert_eq(ir.fired[1], 0);
	msix_pba_read(&m, 0, &pba, 8);
	cr_assert_eq(pba, 2);

	/* Program vector 1 while masked, enable MSI-X: still masked, still pending. */
	entry_write(&m, 1, 0xfee01000u, 0x4041, MSIX_CTRL_MASKED);
	msix_ctl(&d, &m, MSIX_FLAGS_ENABLE);
	cr_assert(msix_enabled(&m));
	cr_assert_eq(ir.fired[1], 0);
	/* Unmask: routed with its address/data, and the pending interrupt goes out. */
	v = 0;
	msix_table_write(&m, 1 * 16 + 12, &v, 4);
	cr_assert_eq(ir.routes, 1);
	cr_assert_eq(ir.addr[1], 0xfee01000u);
	cr_assert_eq(ir.data[1], 0x4041);
	cr_assert_eq(ir.fired[1], 1);
	msix_pba_read(&m, 0, &pba, 8);
	cr_assert_eq(pba, 0);
	/* Live vector: sent at once. */
	cr_assert_eq(msix_notify(&m, 1), 0);
	cr_assert_eq(ir.fired[1], 2);
	/* Function mask: pending again, delivered when lifted. */
	msix_ctl(&d, &m, MSIX_FLAGS_ENABLE | MSIX_FLAGS_MASKALL);
	cr_assert_eq(ir.unroutes, 1);
	cr_assert_eq(msix_notify(&m, 1), 0);
	cr_assert_eq(ir.fired[1], 2);
	msix_ctl(&d, &m, MSIX_FLAGS_ENABLE);
	cr_assert_eq(ir.fired[1], 3);
	/* Read back the entry; reserved control bits are not kept. */
	v = 0xffffffffu;
	msix_table_write(&m, 1 * 16 + 12, &v, 4);
	msix_table_read(&m, 1 * 16 + 12, &v, 4);
	cr_assert_eq(v, MSIX_CTRL_MASKED);
	msix_table_read(&m, 1 * 16 + 8, &v, 4);
	cr_assert_eq(v, 0x4041);
}

Test(pci, msix_hostile_accesses)
{
	struct rec d;
	struct msix m;
	struct irqrec ir = { 0 };
	uint32_t v = 0x12345678;
	uint64_t q = ~0ull;

	setup_dev(&d, 0x8000, true);
	cr_assert_eq(msix_init(&m, &d.pd, 2, 0, 0x4000, 0x5000, &rec_msix, &ir), 0);
	/* Beyond the table, misaligned, odd sizes: ignored, reads zero. */
	msix_table_write(&m, 2 * 16, &v, 4);
	msix_table_write(&m, 3, &v, 4);
	msix_table_write(&m, 0, &v, 2);
	msix_table_read(&m, 2 * 16, &v, 4);
	cr_assert_eq(v, 0);
	msix_table_read(&m, 0, &v, 4);
	cr_assert_eq(v, 0, "entry 0 untouched");
	msix_pba_read(&m, 8, &q, 8);
	cr_assert_eq(q, 0);
	cr_assert_eq(msix_notify(&m, 2), -EINVAL, "vector beyond the table");
	/* Bad parameters. */
	struct msix m2;
	cr_assert_eq(msix_init(&m2, &d.pd, 0, 0, 0x4000, 0x5000, &rec_msix, &ir), -EINVAL);
	cr_assert_eq(msix_init(&m2, &d.pd, 65, 0, 0x4000, 0x5000, &rec_msix, &ir), -EINVAL);
	cr_assert_eq(msix_init(&m2, &d.pd, 2, 0, 0x4004, 0x5000, &rec_msix, &ir), -EINVAL);
}

/* ------------------------------------------------------------------ I/O BARs */

#define IO_BASE 0x1000u
#define IO_SIZE 0x1000u

static void setup_io_dev(struct rec *r, uint32_t io_size)
{
	setup_dev(r, 0x8000, true);
	cr_assert_eq(pci_device_add_io_bar(&r->pd, 2, io_size), 0);
}

Test(pci, io_bar_rejects_bad_sizes_and_slots)
{
	struct rec r;

	setup_dev(&r, 0x8000, true);
	cr_assert_eq(pci_device_add_io_bar(&r.pd, 2, 2), -EINVAL, "below the 4-port minimum");
	cr_assert_eq(pci_device_add_io_bar(&r.pd, 2, 12), -EINVAL, "not a power of two");
	cr_assert_eq(pci_device_add_io_bar(&r.pd, 2, 512), -EINVAL, "above 256 ports");
	cr_assert_eq(pci_device_add_io_bar(&r.pd, 0, 4), -EINVAL, "BAR 0 is taken");
	cr_assert_eq(pci_device_add_io_bar(&r.pd, 1, 4), -EINVAL, "BAR 1 is BAR 0's upper half");
	cr_assert_eq(pci_device_add_io_bar(&r.pd, 6, 4), -EINVAL);
	cr_assert_eq(pci_device_add_io_bar(&r.pd, 2, 4), 0);
	cr_assert_eq(pci_device_add_io_bar(&r.pd, 2, 4), -EINVAL, "already there");
}

Test(pci, io_bar_needs_an_io_window)
{
	struct rec r;

	setup_io_dev(&r, 8);
	cr_assert_eq(pci_bus_add(&bus, &r.pd), -ENOSPC);
	cr_assert_null(bus.devs[1], "a device that did not fit is not on the bus");
	cr_assert_eq(bus.mmio_next, WIN_BASE, "nothing was allocated");
}

Test(pci, io_bar_placement_sizing_and_decode)
{
	struct rec a, b;
	uint32_t v;

	pci_bus_set_io_window(&bus, IO_BASE, IO_SIZE);
	setup_io_dev(&a, 8);
	setup_io_dev(&b, 64);
	cr_assert_eq(pci_bus_add(&bus, &a.pd), 0);
	cr_assert_eq(pci_bus_add(&bus, &b.pd), 0);
	cr_assert_eq(a.pd.bar[2].addr, IO_BASE);
	cr_assert_eq(b.pd.bar[2].addr, IO_BASE + 64, "naturally aligned after a's 8 ports");
	cr_assert_eq(cfg32(1, PCI_BAR0 + 8), IO_BASE | PCI_BAR_IO, "an I/O BAR reads back with bit 0 set");
	cr_assert(cfg32(1, PCI_COMMAND) & PCI_COMMAND_IO, "I/O decoding on, as firmware leaves it");
	cr_assert_eq(a.maps, 2, "both BARs decode");
	/* Sizing: all ones reads back the size mask over 16 address bits, with the I/O bit. */
	wcfg32(1, PCI_BAR0 + 8, 0xffffffffu);
	cr_assert_eq(cfg32(1, PCI_BAR0 + 8), (0xfffcu & ~7u) | PCI_BAR_IO);
	wcfg32(1, PCI_BAR0 + 8, IO_BASE + 0x200);
	cr_assert_eq(a.pd.bar[2].addr, IO_BASE + 0x200);
	cr_assert_eq(a.last_map_bar, 2);
	cr_assert_eq(a.last_map_addr, IO_BASE + 0x200);
	/* Port accesses reach the I/O BAR, not the memory BAR at the same offset. */
	v = 0x1234;
	pci_io_write(&bus, 0x200 + 2, &v, 2);
	cr_assert_eq(a.writes, 1);
	cr_assert_eq(a.last_bar, 2);
	cr_assert_eq(a.last_off, 2);
	cr_assert_eq(a.last_val, 0x1234);
	pci_io_read(&bus, 0x200 + 4, &v, 4);
	cr_assert_eq(a.reads, 1);
	cr_assert_eq(a.last_bar, 2);
	/* An access running past the BAR's end, or wider than the BAR, reaches nothing and reads all ones. */
	pci_io_read(&bus, 0x200 + 6, &v, 4);
	cr_assert_eq(v, 0xffffffffu);
	cr_assert_eq(a.reads, 1);
	/* The memory window does not decode I/O BARs, nor the I/O window memory BARs. */
	pci_window_write(&bus, IO_BASE + 0x200 - WIN_BASE, &v, 2);
	pci_io_write(&bus, (uint32_t)(a.pd.bar[0].addr - WIN_BASE), &v, 2);
	cr_assert_eq(a.writes, 1);
	/* I/O decoding off: the BAR stops decoding; the memory BAR keeps going. */
	wcfg32(1, PCI_COMMAND, PCI_COMMAND_MEMORY);
	cr_assert_eq(a.last_map_bar, 2);
	pci_io_write(&bus, 0x200, &v, 2);
	cr_assert_eq(a.writes, 1);
	pci_window_write(&bus, a.pd.bar[0].addr - WIN_BASE, &v, 4);
	cr_assert_eq(a.writes, 2);
	cr_assert_eq(a.last_bar, 0);
	/* Back on, but placed outside the window: decodes nowhere. */
	wcfg32(1, PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_IO);
	wcfg32(1, PCI_BAR0 + 8, 0x3f8);
	pci_io_write(&bus, 0, &v, 2);
	cr_assert_eq(a.writes, 2);
	cr_assert(!a.pd.bar[2].mapped);
}

Test(pci, io_window_full_is_enospc)
{
	struct rec a, b;

	pci_bus_set_io_window(&bus, IO_BASE, 64);
	setup_io_dev(&a, 64);
	setup_io_dev(&b, 4);
	cr_assert_eq(pci_bus_add(&bus, &a.pd), 0);
	cr_assert_eq(pci_bus_add(&bus, &b.pd), -ENOSPC);
	cr_assert_eq(bus.mmio_next, a.pd.bar[0].addr + 0x8000, "b took no memory either");
}
