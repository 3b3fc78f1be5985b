#include "devices/pci/pci.h"

#include <errno.h>
#include <string.h>

uint32_t pci_cfg_get(const struct pci_device *pd, uint32_t off, unsigned int size)
{
	uint32_t v = 0;

	for (unsigned int i = 0; i < size; i++)
		v |= (uint32_t)pd->cfg[off + i] << (8 * i);
	return v;
}

void pci_cfg_set(struct pci_device *pd, uint32_t off, uint32_t val, unsigned int size)
{
	for (unsigned int i = 0; i < size; i++)
		pd->cfg[off + i] = (uint8_t)(val >> (8 * i));
}

void pci_wmask_set(struct pci_device *pd, uint32_t off, uint32_t mask, unsigned int size)
{
	for (unsigned int i = 0; i < size; i++)
		pd->wmask[off + i] = (uint8_t)(mask >> (8 * i));
}

void pci_device_init(struct pci_device *pd, uint16_t vendor, uint16_t device, uint32_t class_code, uint8_t revision,
		     uint16_t subsys_vendor, uint16_t subsys_id, const struct pci_device_ops *ops, void *ctx)
{
	memset(pd, 0, sizeof(*pd));
	pci_cfg_set(pd, PCI_VENDOR_ID, vendor, 2);
	pci_cfg_set(pd, PCI_DEVICE_ID, device, 2);
	pci_cfg_set(pd, PCI_REVISION_ID, revision, 1);
	pci_cfg_set(pd, PCI_CLASS_PROG, class_code, 3);
	pci_cfg_set(pd, PCI_SUBSYSTEM_VENDOR_ID, subsys_vendor, 2);
	pci_cfg_set(pd, PCI_SUBSYSTEM_ID, subsys_id, 2);
	/* Memory decoding, bus mastering and INTx disable are the guest's (I/O decoding too once an I/O BAR is
	 * added); there is no INTx pin. */
	pci_wmask_set(pd, PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE, 2);
	pci_wmask_set(pd, PCI_INTERRUPT_LINE, 0xff, 1);
	pci_wmask_set(pd, 0x0c, 0xff, 1); /* cache line size: scratch for the guest */
	pd->next_cap = 0x40;
	pd->ops = ops;
	pd->ctx = ctx;
}

int pci_device_add_bar(struct pci_device *pd, unsigned int bar, uint64_t size, bool is64)
{
	if (bar >= PCI_NUM_BARS || (is64 && bar + 1 >= PCI_NUM_BARS) || size < 4096 || (size & (size - 1)) ||
	    (!is64 && size > (1ull << 31)) || pd->bar[bar].size || (is64 && pd->bar[bar + 1].size))
		return -EINVAL;
	pd->bar[bar].size = size;
	pd->bar[bar].is64 = is64;
	return 0;
}

int pci_device_add_io_bar(struct pci_device *pd, unsigned int bar, uint32_t size)
{
	if (bar >= PCI_NUM_BARS || size < 4 || size > PCI_IO_BAR_MAX || (size & (size - 1)) || pd->bar[bar].size ||
	    (bar > 0 && pd->bar[bar - 1].is64))
		return -EINVAL;
	pd->bar[bar].size = size;
	pd->bar[bar].io = true;
	pd->wmask[PCI_COMMAND] |= PCI_COMMAND_IO;
	return 0;
}

int pci_device_add_cap(struct pci_device *pd, uint8_t id, const void *body, unsigned int len)
{
	unsigned int off = pd->next_cap;

	if (len < 2 || off + ((len + 3) & ~3u) > 0x100)
		return -ENOSPC;
	pd->cfg[off] = id;
	pd->cfg[off + 1] = 0;
	if (len > 2)
		memcpy(&pd->cfg[off + 2], body, len - 2);
	if (pd->last_cap)
		pd->cfg[pd->last_cap + 1] = (uint8_t)off;
	else
		pd->cfg[PCI_CAPABILITY_LIST] = (uint8_t)off;
	pci_cfg_set(pd, PCI_STATUS, pci_cfg_get(pd, PCI_STATUS, 2) | PCI_STATUS_CAP_LIST, 2);
	pd->last_cap = (uint8_t)off;
	pd->next_cap = (uint8_t)(off + ((len + 3) & ~3u));
	return (int)off;
}

/* The BAR register value a guest reads: address bits plus the type bits. */
static uint32_t bar_reg(const struct pci_device *pd, unsigned int i)
{
	const struct pci_bar *b = &pd->bar[i];

	if (b->size && b->io)
		return (uint32_t)b->addr | PCI_BAR_IO;
	if (b->size)
		return (uint32_t)b->addr | (b->is64 ? PCI_BAR_MEM_64 : 0);
	if (i > 0 && pd->bar[i - 1].is64)
		return (uint32_t)(pd->bar[i - 1].addr >> 32);
	return 0;
}

static bool bar_decodes(const struct pci_bus *bus, const struct pci_device *pd, const struct pci_bar *b)
{
	uint64_t end;

	if (!b->size || !b->addr ||
	    !(pci_cfg_get(pd, PCI_COMMAND, 2) & (b->io ? PCI_COMMAND_IO : PCI_COMMAND_MEMORY)))
		return false;
	/* Only addresses inside the bridge's window reach the bus; anything else the guest picked decodes nowhere. */
	if (__builtin_add_overflow(b->addr, b->size, &end))
		return false;
	if (b->io)
		return b->addr >= bus->io_base && end <= (uint64_t)bus->io_base + bus->io_size;
	return b->addr >= bus->mmio_base && end <= bus->mmio_base + bus->mmio_size;
}

/* Bring every BAR's decode state in line with the command register and its address. cfg_lock held. */
static void bars_update(struct pci_device *pd)
{
	struct pci_bus *bus = pd->bus;

	for (unsigned int i = 0; i < PCI_NUM_BARS; i++) {
		struct pci_bar *b = &pd->bar[i];
		bool want = bus && bar_decodes(bus, pd, b);

		if (!b->size || want == b->mapped)
			continue;
		if (bus)
			pthread_rwlock_wrlock(&bus->bar_lock);
		b->mapped = want;
		if (bus)
			pthread_rwlock_unlock(&bus->bar_lock);
		if (pd->ops && pd->ops->bar_mapped)
			pd->ops->bar_mapped(pd, i, b->addr, want);
	}
}

/* Stop decoding a BAR (before its address changes); bars_update() maps it again where it belongs. */
static void bar_unmap(struct pci_device *pd, unsigned int i)
{
	struct pci_bar *b = &pd->bar[i];

	if (!b->mapped)
		return;
	pthread_rwlock_wrlock(&pd->bus->bar_lock);
	b->mapped = false;
	pthread_rwlock_unlock(&pd->bus->bar_lock);
	if (pd->ops && pd->ops->bar_mapped)
		pd->ops->bar_mapped(pd, i, b->addr, false);
}

/* A write to a BAR register, as a whole dword (bytes the guest wrote are merged in first). */
static void bar_reg_write(struct pci_device *pd, unsigned int i, uint32_t val)
{
	struct pci_bar *b = &pd->bar[i];

	if (b->size) {
		bar_unmap(pd, i);
		/* Low address bits below the size read back as zero: that is how the guest sizes a BAR. An I/O BAR
		 * decodes 16 address bits, as on x86: the upper half reads back as zero. */
		if (b->io)
			b->addr = val & 0xfffcu & ~(b->size - 1);
		else
			b->addr = ((b->addr & ~0xffffffffull) | (val & 0xfffffff0u)) & ~(b->size - 1);
	} else if (i > 0 && pd->bar[i - 1].is64) {
		struct pci_bar *lo = &pd->bar[i - 1];

		bar_unmap(pd, i - 1);
		lo->addr = (((uint64_t)val << 32) | (lo->addr & 0xffffffffull)) & ~(lo->size - 1);
	}
	bars_update(pd);
}

static void device_config_write(struct pci_device *pd, uint32_t off, const uint8_t *data, unsigned int size)
{
	uint32_t first = off, end = off + size;
	uint16_t cmd_before = (uint16_t)pci_cfg_get(pd, PCI_COMMAND, 2);

	/* The BAR dwords are decoded, not masked: merge the written bytes into each dword touched. */
	for (unsigned int i = 0; i < PCI_NUM_BARS; i++) {
		uint32_t reg = PCI_BAR0 + 4 * i, v;

		if (end <= reg || off >= reg + 4)
			continue;
		v = bar_reg(pd, i);
		for (uint32_t a = off; a < end; a++)
			if (a >= reg && a < reg + 4)
				v = (v & ~(0xffu << (8 * (a - reg)))) | ((uint32_t)data[a - off] << (8 * (a - reg)));
		bar_reg_write(pd, i, v);
	}
	for (uint32_t a = first; a < end; a++) {
		uint8_t m = pd->wmask[a];

		if (a >= PCI_BAR0 && a < PCI_BAR0 + 4 * PCI_NUM_BARS)
			continue;
		pd->cfg[a] = (uint8_t)((pd->cfg[a] & ~m) | (data[a - off] & m));
	}
	if (first < PCI_COMMAND + 2 && end > PCI_COMMAND &&
	    ((pci_cfg_get(pd, PCI_COMMAND, 2) ^ cmd_before) & (PCI_COMMAND_MEMORY | PCI_COMMAND_IO)))
		bars_update(pd);
	if (pd->ops && pd->ops->config_written)
		pd->ops->config_written(pd, off, size);
}

static void device_config_read(struct pci_device *pd, uint32_t off, uint8_t *data, unsigned int size)
{
	if (pd->ops && pd->ops->config_reading)
		pd->ops->config_reading(pd, off, size);
	for (unsigned int k = 0; k < size; k++) {
		uint32_t a = off + k;

		if (a >= PCI_BAR0 && a < PCI_BAR0 + 4 * PCI_NUM_BARS)
			data[k] = (uint8_t)(bar_reg(pd, (a - PCI_BAR0) / 4) >> (8 * ((a - PCI_BAR0) % 4)));
		else
			data[k] = pd->cfg[a];
	}
}

void pci_bus_init(struct pci_bus *bus, uint64_t mmio_base, uint64_t mmio_size)
{
	memset(bus, 0, sizeof(*bus));
	pthread_mutex_init(&bus->cfg_lock, NULL);
	pthread_rwlock_init(&bus->bar_lock, NULL);
	bus->mmio_base = bus->mmio_next = mmio_base;
	bus->mmio_size = mmio_size;
}

void pci_bus_set_io_window(struct pci_bus *bus, uint32_t base, uint32_t size)
{
	bus->io_base = bus->io_next = base;
	bus->io_size = size;
}

void pci_bus_fini(struct pci_bus *bus)
{
	pthread_mutex_destroy(&bus->cfg_lock);
	pthread_rwlock_destroy(&bus->bar_lock);
}

/* Place every BAR of one kind (I/O or memory) from *next, naturally aligned, inside [*next, end); -ENOSPC. */
static int place_bars(struct pci_device *pd, bool io, uint64_t *next, uint64_t end, bool commit)
{
	uint64_t at = *next;

	for (unsigned int i = 0; i < PCI_NUM_BARS; i++) {
		uint64_t size = pd->bar[i].size;

		if (!size || pd->bar[i].io != io)
			continue;
		at = (at + size - 1) & ~(size - 1);
		if (at < *next || at > end || end - at < size)
			return -ENOSPC;
		if (commit)
			pd->bar[i].addr = at;
		at += size;
	}
	if (commit)
		*next = at;
	return 0;
}

int pci_bus_add(struct pci_bus *bus, struct pci_device *pd)
{
	uint64_t mmio_next = bus->mmio_next, io_next = bus->io_next;
	uint64_t mmio_end = bus->mmio_base + bus->mmio_size, io_end = (uint64_t)bus->io_base + bus->io_size;
	uint16_t cmd = PCI_COMMAND_MEMORY;
	unsigned int slot;

	for (slot = 1; slot < PCI_MAX_DEVICES && bus->devs[slot]; slot++)
		;
	if (slot >= PCI_MAX_DEVICES)
		return -ENOSPC;
	/* Natural alignment for every BAR, in the order of the BARs; nothing changes unless all fit. */
	if (place_bars(pd, false, &mmio_next, mmio_end, false) || place_bars(pd, true, &io_next, io_end, false))
		return -ENOSPC;
	(void)place_bars(pd, false, &bus->mmio_next, mmio_end, true);
	(void)place_bars(pd, true, &io_next, io_end, true);
	bus->io_next = (uint32_t)io_next;
	for (unsigned int i = 0; i < PCI_NUM_BARS; i++)
		if (pd->bar[i].size && pd->bar[i].io)
			cmd |= PCI_COMMAND_IO;
	pd->slot = slot;
	pd->bus = bus;
	/* As firmware would leave it: BARs assigned and decoding, so the guest may keep the placement. */
	pci_cfg_set(pd, PCI_COMMAND, pci_cfg_get(pd, PCI_COMMAND, 2) | cmd, 2);
	bus->devs[slot] = pd;
	pthread_mutex_lock(&bus->cfg_lock);
	bars_update(pd);
	pthread_mutex_unlock(&bus->cfg_lock);
	return 0;
}

/* GUEST: off and size come from the guest; only naturally aligned 1/2/4-byte accesses inside 4 KiB reach a device. */
static bool cfg_access_ok(uint32_t off, unsigned int size)
{
	return (size == 1 || size == 2 || size == 4) && !(off & (size - 1)) && off + size <= PCI_CFG_SIZE;
}

void pci_config_read(struct pci_bus *bus, unsigned int slot, unsigned int fn, uint32_t off, void *data,
		     unsigned int size)
{
	struct pci_device *pd = slot < PCI_MAX_DEVICES && fn == 0 ? bus->devs[slot] : NULL;

	if (!pd || !cfg_access_ok(off, size)) {
		memset(data, 0xff, size > 8 ? 8 : size);
		return;
	}
	pthread_mutex_lock(&bus->cfg_lock);
	device_config_read(pd, off, data, size);
	pthread_mutex_unlock(&bus->cfg_lock);
}

void pci_config_write(struct pci_bus *bus, unsigned int slot, unsigned int fn, uint32_t off, const void *data,
		      unsigned int size)
{
	struct pci_device *pd = slot < PCI_MAX_DEVICES && fn == 0 ? bus->devs[slot] : NULL;

	if (!pd || !cfg_access_ok(off, size))
		return;
	pthread_mutex_lock(&bus->cfg_lock);
	device_config_write(pd, off, data, size);
	pthread_mutex_unlock(&bus->cfg_lock);
}

/* ECAM: bus 0 only; offset = device << 15 | function << 12 | register. */
void pci_ecam_read(void *opaque, uint64_t off, void *data, unsigned int size)
{
	if (off >= PCI_ECAM_BUS_SIZE) {
		memset(data, 0xff, size);
		return;
	}
	pci_config_read(opaque, (off >> 15) & 31, (off >> 12) & 7, off & 0xfff, data, size);
}

void pci_ecam_write(void *opaque, uint64_t off, const void *data, unsigned int size)
{
	if (off < PCI_ECAM_BUS_SIZE)
		pci_config_write(opaque, (off >> 15) & 31, (off >> 12) & 7, off & 0xfff, data, size);
}

/*
 * Legacy configuration mechanism #1: 0xcf8 holds enable | bus | device | function | register, 0xcfc-0xcff
 * move the data. Byte 0xcf9 is also the reset control register: bit 2 asks for a reset.
 */
static bool cf8_target(const struct pci_bus *bus, uint64_t off, unsigned int *slot, unsigned int *fn, uint32_t *reg)
{
	uint32_t a = bus->cf8;

	if (!(a & 0x80000000u) || ((a >> 16) & 0xff) != 0)
		return false;
	*slot = (a >> 11) & 31;
	*fn = (a >> 8) & 7;
	*reg = (a & 0xfc) + (uint32_t)(off - 4);
	return true;
}

void pci_cf8_read(void *opaque, uint64_t off, void *data, unsigned int size)
{
	struct pci_bus *bus = opaque;
	unsigned int slot, fn;
	uint32_t reg;

	if (off == 0 && size == 4) {
		pthread_mutex_lock(&bus->cfg_lock);
		memcpy(data, &bus->cf8, 4);
		pthread_mutex_unlock(&bus->cfg_lock);
		return;
	}
	memset(data, 0xff, size);
	if (off < 4)
		return;
	pthread_mutex_lock(&bus->cfg_lock);
	bool ok = cf8_target(bus, off, &slot, &fn, &reg);
	pthread_mutex_unlock(&bus->cfg_lock);
	if (ok)
		pci_config_read(bus, slot, fn, reg, data, size);
}

void pci_cf8_write(void *opaque, uint64_t off, const void *data, unsigned int size)
{
	struct pci_bus *bus = opaque;
	unsigned int slot, fn;
	uint32_t reg;

	if (off == 0 && size == 4) {
		pthread_mutex_lock(&bus->cfg_lock);
		memcpy(&bus->cf8, data, 4);
		pthread_mutex_unlock(&bus->cfg_lock);
		return;
	}
	if (off == 1 && size == 1) {
		if ((*(const uint8_t *)data & 0x4) && bus->reset_request)
			bus->reset_request(bus->reset_ctx);
		return;
	}
	if (off < 4)
		return;
	pthread_mutex_lock(&bus->cfg_lock);
	bool ok = cf8_target(bus, off, &slot, &fn, &reg);
	pthread_mutex_unlock(&bus->cfg_lock);
	if (ok)
		pci_config_write(bus, slot, fn, reg, data, size);
}

/* The BAR of one kind (I/O or memory) that decodes [addr, addr+size) right now; bar_lock held for reading. */
static struct pci_device *bar_lookup(struct pci_bus *bus, bool io, uint64_t addr, unsigned int size, unsigned int *bar,
				     uint64_t *off)
{
	for (unsigned int s = 0; s < PCI_MAX_DEVICES; s++) {
		struct pci_device *pd = bus->devs[s];

		if (!pd)
			continue;
		for (unsigned int i = 0; i < PCI_NUM_BARS; i++) {
			const struct pci_bar *b = &pd->bar[i];

			if (b->mapped && b->io == io && addr >= b->addr && size <= b->size &&
			    addr - b->addr <= b->size - size) {
				*bar = i;
				*off = addr - b->addr;
				return pd;
			}
		}
	}
	return NULL;
}

static void window_read(struct pci_bus *bus, bool io, uint64_t addr, void *data, unsigned int size)
{
	struct pci_device *pd;
	unsigned int bar;
	uint64_t boff;

	pthread_rwlock_rdlock(&bus->bar_lock);
	pd = bar_lookup(bus, io, addr, size, &bar, &boff);
	if (pd)
		pd->ops->bar_read(pd, bar, boff, data, size);
	else
		memset(data, 0xff, size);
	pthread_rwlock_unlock(&bus->bar_lock);
}

static void window_write(struct pci_bus *bus, bool io, uint64_t addr, const void *data, unsigned int size)
{
	struct pci_device *pd;
	unsigned int bar;
	uint64_t boff;

	pthread_rwlock_rdlock(&bus->bar_lock);
	pd = bar_lookup(bus, io, addr, size, &bar, &boff);
	if (pd)
		pd->ops->bar_write(pd, bar, boff, data, size);
	pthread_rwlock_unlock(&bus->bar_lock);
}

void pci_window_read(void *opaque, uint64_t off, void *data, unsigned int size)
{
	struct pci_bus *bus = opaque;

	window_read(bus, false, bus->mmio_base + off, data, size);
}

void pci_window_write(void *opaque, uint64_t off, const void *data, unsigned int size)
{
	struct pci_bus *bus = opaque;

	window_write(bus, false, bus->mmio_base + off, data, size);
}

void pci_io_read(void *opaque, uint64_t off, void *data, unsigned int size)
{
	struct pci_bus *bus = opaque;

	window_read(bus, true, bus->io_base + off, data, size);
}

void pci_io_write(void *opaque, uint64_t off, const void *data, unsigned int size)
{
	struct pci_bus *bus = opaque;

	window_write(bus, true, bus->io_base + off, data, size);
}
