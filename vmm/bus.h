/*
 * Port-I/O and MMIO dispatch: a sorted table of [base, base+len) ranges, each with an
 * ops table and an opaque device pointer. Ranges are registered while the VM is built
 * (before vCPUs run), so lookups need no lock; devices lock their own state.
 */
#ifndef MOAT_BUS_H
#define MOAT_BUS_H

#include <stdbool.h>
#include <stdint.h>

struct bus_ops {
	/* offset is relative to the range base; size is 1, 2, 4 or 8 */
	void (*read)(void *dev, uint64_t offset, void *data, unsigned int size);
	void (*write)(void *dev, uint64_t offset, const void *data, unsigned int size);
};

struct bus_range {
	uint64_t base;
	uint64_t len;
	const struct bus_ops *ops;
	void *dev;
	const char *name;
};

struct bus {
	struct bus_range *ranges;
	unsigned int nranges;
	unsigned int cap;
};

void bus_init(struct bus *bus);
void bus_free(struct bus *bus);
/* -EEXIST if the range overlaps one already registered, -EINVAL for an empty/wrapping range. */
int bus_register(struct bus *bus, uint64_t base, uint64_t len, const struct bus_ops *ops, void *dev,
		 const char *name) __attribute__((warn_unused_result));
const struct bus_range *bus_find(const struct bus *bus, uint64_t addr, unsigned int size);
/* Dispatch; returns false when nothing is there (reads then return all ones). */
bool bus_read(const struct bus *bus, uint64_t addr, void *data, unsigned int size);
bool bus_write(const struct bus *bus, uint64_t addr, const void *data, unsigned int size);

#endif
