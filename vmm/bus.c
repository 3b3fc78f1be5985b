#include "vmm/bus.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void bus_init(struct bus *bus)
{
	memset(bus, 0, sizeof(*bus));
}

void bus_free(struct bus *bus)
{
	free(bus->ranges);
	bus_init(bus);
}

int bus_register(struct bus *bus, uint64_t base, uint64_t len, const struct bus_ops *ops, void *dev,
		 const char *name)
{
	unsigned int pos = 0;
	uint64_t end;

	if (len == 0 || __builtin_add_overflow(base, len - 1, &end) || !ops)
		return -EINVAL;
	while (pos < bus->nranges && bus->ranges[pos].base < base)
		pos++;
	if (pos > 0) {
		const struct bus_range *p = &bus->ranges[pos - 1];
		if (p->base + (p->len - 1) >= base)
			return -EEXIST;
	}
	if (pos < bus->nranges && bus->ranges[pos].base <= end)
		return -EEXIST;
	if (bus->nranges == bus->cap) {
		unsigned int cap = bus->cap ? bus->cap * 2 : 8;
		struct bus_range *r = realloc(bus->ranges, cap * sizeof(*r));
		if (!r)
			return -ENOMEM;
		bus->ranges = r;
		bus->cap = cap;
	}
	memmove(&bus->ranges[pos + 1], &bus->ranges[pos], (bus->nranges - pos) * sizeof(*bus->ranges));
	bus->ranges[pos] = (struct bus_range){ .base = base, .len = len, .ops = ops, .dev = dev, .name = name };
	bus->nranges++;
	return 0;
}

const struct bus_range *bus_find(const struct bus *bus, uint64_t addr, unsigned int size)
{
	unsigned int lo = 0, hi = bus->nranges;

	if (size == 0)
		return NULL;
	while (lo < hi) {
		unsigned int mid = lo + (hi - lo) / 2;
		const struct bus_range *r = &bus->ranges[mid];
		if (addr < r->base) {
			hi = mid;
		} else if (addr - r->base >= r->len) {
			lo = mid + 1;
		} else {
			/* An access straddling the end of a range is not this device's. */
			if (addr - r->base + size > r->len)
				return NULL;
			return r;
		}
	}
	return NULL;
}

bool bus_read(const struct bus *bus, uint64_t addr, void *data, unsigned int size)
{
	const struct bus_range *r = bus_find(bus, addr, size);

	if (!r || !r->ops->read) {
		memset(data, 0xff, size);
		return r != NULL;
	}
	r->ops->read(r->dev, addr - r->base, data, size);
	return true;
}

bool bus_write(const struct bus *bus, uint64_t addr, const void *data, unsigned int size)
{
	const struct bus_range *r = bus_find(bus, addr, size);

	if (!r || !r->ops->write)
		return r != NULL;
	r->ops->write(r->dev, addr - r->base, data, size);
	return true;
}
