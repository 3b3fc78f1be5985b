#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>

#include "vmm/bus.h"

static uint64_t last_off;
static unsigned int last_size;

static void r(void *dev, uint64_t off, void *data, unsigned int size)
{
	last_off = off;
	last_size = size;
	*(uint8_t *)data = (uint8_t)(uintptr_t)dev;
}

static const struct bus_ops ops = { .read = r };

Test(bus, register_lookup_and_overlap)
{
	struct bus b;
	uint8_t v;

	bus_init(&b);
	cr_assert_eq(bus_register(&b, 0x100, 0x10, &ops, (void *)1, "a"), 0);
	cr_assert_eq(bus_register(&b, 0x200, 0x10, &ops, (void *)2, "b"), 0);
	cr_assert_eq(bus_register(&b, 0x0, 0x10, &ops, (void *)3, "c"), 0);
	cr_assert_eq(bus_register(&b, 0x10f, 2, &ops, NULL, "x"), -EEXIST);
	cr_assert_eq(bus_register(&b, 0xf8, 0x10, &ops, NULL, "x"), -EEXIST);
	cr_assert_eq(bus_register(&b, 0x1f0, 0x20, &ops, NULL, "x"), -EEXIST);
	cr_assert_eq(bus_register(&b, 0x50, 0, &ops, NULL, "x"), -EINVAL);
	cr_assert_eq(bus_register(&b, UINT64_MAX, 2, &ops, NULL, "x"), -EINVAL);
	cr_assert(bus_read(&b, 0x204, &v, 1));
	cr_assert_eq(v, 2);
	cr_assert_eq(last_off, 4);
	cr_assert(bus_read(&b, 0x5, &v, 1));
	cr_assert_eq(v, 3);
	cr_assert_not(bus_read(&b, 0x150, &v, 1));
	cr_assert_eq(v, 0xff, "nothing there reads all ones");
	cr_assert_null(bus_find(&b, 0x10e, 4), "access straddling the range end");
	cr_assert_not_null(bus_find(&b, 0x10c, 4));
	for (int i = 0; i < 100; i++)
		cr_assert_eq(bus_register(&b, 0x1000 + i * 8, 8, &ops, NULL, "many"), 0);
	cr_assert_eq(bus_find(&b, 0x1000 + 57 * 8 + 3, 1)->base, 0x1000 + 57 * 8);
	bus_free(&b);
}
