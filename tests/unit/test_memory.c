#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmm/memory.h"

/* Two regions like x86 with a hole: [0, 64K) and [1M, 1M+64K), backed by one test buffer. */
static struct guest_memory gm;
static uint8_t backing[128 * 1024];

static void setup(void)
{
	gm_init(&gm);
	cr_assert_eq(gm_add_region(&gm, 0, 64 * 1024), 0);
	cr_assert_eq(gm_add_region(&gm, 1024 * 1024, 64 * 1024), 0);
	cr_assert_eq(gm_attach(&gm, backing, sizeof(backing)), 0);
}

TestSuite(memory, .init = setup);

Test(memory, in_range_pointers)
{
	cr_assert_eq(gm_ptr(&gm, 0, 1), backing);
	cr_assert_eq(gm_ptr(&gm, 64 * 1024 - 4, 4), backing + 64 * 1024 - 4);
	cr_assert_eq(gm_ptr(&gm, 1024 * 1024, 16), backing + 64 * 1024);
	cr_assert_eq(gm_ptr(&gm, 1024 * 1024 + 64 * 1024 - 1, 1), backing + sizeof(backing) - 1);
}

Test(memory, rejects_hole_end_and_crossing)
{
	cr_assert_null(gm_ptr(&gm, 64 * 1024, 1), "first byte of the hole");
	cr_assert_null(gm_ptr(&gm, 64 * 1024 - 2, 4), "straddles region end");
	cr_assert_null(gm_ptr(&gm, 1024 * 1024 - 1, 2), "straddles region start");
	cr_assert_null(gm_ptr(&gm, 0, 1024 * 1024 + 1), "spans the hole into the next region");
	cr_assert_null(gm_ptr(&gm, 1024 * 1024 + 64 * 1024, 1), "past the end");
}

Test(memory, rejects_overflowing_ranges)
{
	cr_assert_null(gm_ptr(&gm, UINT64_MAX, 2));
	cr_assert_null(gm_ptr(&gm, 16, UINT64_MAX));
	cr_assert_null(gm_ptr(&gm, UINT64_MAX - 7, 16));
}

Test(memory, zero_length_inside_only)
{
	cr_assert_not_null(gm_ptr(&gm, 100, 0));
	cr_assert_null(gm_ptr(&gm, 64 * 1024, 0));
}

Test(memory, read_write_copy_and_fail_cleanly)
{
	uint32_t v = 0xdeadbeef, out = 0;

	cr_assert_eq(gm_write(&gm, 1024 * 1024 + 8, &v, sizeof(v)), 0);
	cr_assert_eq(gm_read(&gm, 1024 * 1024 + 8, &out, sizeof(out)), 0);
	cr_assert_eq(out, v);
	cr_assert_eq(gm_write(&gm, 64 * 1024 - 2, &v, sizeof(v)), -EFAULT);
	cr_assert_eq(gm_read(&gm, UINT64_MAX - 1, &out, sizeof(out)), -EFAULT);
}

Test(memory, region_layout_rules)
{
	struct guest_memory g;

	gm_init(&g);
	cr_assert_eq(gm_add_region(&g, 0x1000, 0x1000), 0);
	cr_assert_eq(gm_add_region(&g, 0x1800, 0x1000), -EINVAL, "overlap");
	cr_assert_eq(gm_add_region(&g, 0x0, 0x100), -EINVAL, "unsorted");
	cr_assert_eq(gm_add_region(&g, 0x3000, 0), -EINVAL, "empty");
	cr_assert_eq(gm_add_region(&g, UINT64_MAX - 10, 100), -EOVERFLOW);
}

Test(memory, allocation_is_zeroed_and_huge_page_aligned)
{
	struct guest_memory g;
	uint8_t *p;

	gm_init(&g);
	cr_assert_eq(gm_add_region(&g, 0, 3 << 20), 0);
	cr_assert_eq(gm_add_region(&g, 4ull << 30, 1 << 20), 0);
	cr_assert_eq(gm_alloc(&g), 0);
	cr_assert_eq((uintptr_t)g.base % (2u << 20), 0, "RAM starts on a 2 MiB boundary so KVM can map huge blocks");
	cr_assert_eq(g.map_len, 4 << 20);
	p = gm_ptr(&g, 4ull << 30, 4096);
	cr_assert_not_null(p);
	cr_assert_eq(p[4095], 0);
	p[0] = 1;
	cr_assert_eq(g.regions[1].offset, 3 << 20);
	cr_assert_eq(p, g.base + (3 << 20));
	gm_free(&g);
	cr_assert_null(g.base);
	cr_assert_eq(g.map_len, 0);
}

Test(memory, parse_size_units)
{
	uint64_t v;

	cr_assert_eq(parse_size("512M", &v), 0);
	cr_assert_eq(v, 512ull << 20);
	cr_assert_eq(parse_size("2G", &v), 0);
	cr_assert_eq(v, 2ull << 30);
	cr_assert_eq(parse_size("64KiB", &v), 0);
	cr_assert_eq(v, 64ull << 10);
	cr_assert_eq(parse_size("4096", &v), 0);
	cr_assert_eq(v, 4096);
	cr_assert_eq(parse_size("1gb", &v), -EINVAL);
	cr_assert_eq(parse_size("", &v), -EINVAL);
	cr_assert_eq(parse_size("-1G", &v), -EINVAL);
	cr_assert_eq(parse_size("M", &v), -EINVAL);
	cr_assert_eq(parse_size("20000000000T", &v), -ERANGE);
}

Test(memory, load_fd_into_memfd_and_reject_bad_ranges)
{
	struct guest_memory g;
	char path[] = "/tmp/moat-gm-XXXXXX";
	int fd = mkstemp(path);
	uint8_t data[10000], *p;

	cr_assert_geq(fd, 0);
	unlink(path);
	for (unsigned int i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7);
	cr_assert_eq(write(fd, data, sizeof(data)), (ssize_t)sizeof(data));
	gm_init(&g);
	cr_assert_eq(gm_add_region(&g, 0, 1 << 20), 0);
	cr_assert_eq(gm_add_region(&g, 2 << 20, 1 << 20), 0);
	cr_assert_eq(gm_alloc(&g), 0);
	cr_assert_eq(gm_load_fd(&g, (2 << 20) + 100, fd, 10, sizeof(data) - 10), 0);
	p = gm_ptr(&g, (2 << 20) + 100, sizeof(data) - 10);
	cr_assert_eq(memcmp(p, data + 10, sizeof(data) - 10), 0);
	cr_assert_eq(gm_load_fd(&g, (1 << 20) - 10, fd, 0, 100), -EFAULT, "crosses into the hole");
	cr_assert_eq(gm_load_fd(&g, UINT64_MAX - 10, fd, 0, 100), -EFAULT);
	cr_assert_eq(gm_load_fd(&g, 0, fd, sizeof(data) - 5, 100), -EIO, "file too short");
	gm_free(&g);
	close(fd);
}
