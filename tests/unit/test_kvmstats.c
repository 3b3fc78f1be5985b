#include <criterion/criterion.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmm/kvmstats.h"

#define NAME_SIZE 48

struct fake_desc {
	const char *name;
	uint32_t flags;
	uint16_t size;
};

/* A stats file laid out as KVM's: header, id, descriptors (each followed by its name), then the values. */
static int fake_stats(const struct fake_desc *d, unsigned int n, const uint64_t *values)
{
	char path[] = "/tmp/moat-kvmstats-XXXXXX";
	int fd = mkstemp(path);
	size_t dsize = sizeof(struct kvm_stats_desc) + NAME_SIZE;
	struct kvm_stats_header h = {
		.name_size = NAME_SIZE,
		.num_desc = n,
		.id_offset = sizeof(h),
		.desc_offset = sizeof(h) + 64,
		.data_offset = (uint32_t)(sizeof(h) + 64 + dsize * n),
	};
	uint32_t off = 0;

	cr_assert_geq(fd, 0);
	unlink(path);
	cr_assert_eq(pwrite(fd, &h, sizeof(h), 0), (ssize_t)sizeof(h));
	cr_assert_eq(pwrite(fd, "kvm-1234/vcpu-0", 16, h.id_offset), 16);
	for (unsigned int i = 0; i < n; i++) {
		uint8_t buf[sizeof(struct kvm_stats_desc) + NAME_SIZE];
		struct kvm_stats_desc *k = (struct kvm_stats_desc *)buf;

		memset(buf, 0, sizeof(buf));
		k->flags = d[i].flags;
		k->size = d[i].size;
		k->offset = off;
		strncpy(k->name, d[i].name, NAME_SIZE - 1);
		cr_assert_eq(pwrite(fd, buf, dsize, h.desc_offset + i * dsize), (ssize_t)dsize);
		cr_assert_eq(pwrite(fd, &values[i], sizeof(uint64_t), h.data_offset + off), 8);
		off += d[i].size * 8u;
	}
	return fd;
}

static void set_value(int fd, unsigned int index, uint64_t v)
{
	struct kvm_stats_header h;
	struct kvm_stats_desc k;
	size_t dsize = sizeof(struct kvm_stats_desc) + NAME_SIZE;

	cr_assert_eq(pread(fd, &h, sizeof(h), 0), (ssize_t)sizeof(h));
	cr_assert_eq(pread(fd, &k, sizeof(k), h.desc_offset + index * dsize), (ssize_t)sizeof(k));
	cr_assert_eq(pwrite(fd, &v, 8, h.data_offset + k.offset), 8);
}

Test(kvmstats, finds_wanted_cumulative_counters_and_reports_what_grew)
{
	static const struct fake_desc d[] = {
		{ "halt_poll_fail_hist", KVM_STATS_TYPE_LOG_HIST, 32 }, /* a histogram: skipped */
		{ "exits", KVM_STATS_TYPE_CUMULATIVE, 1 },
		{ "guest_mode", KVM_STATS_TYPE_INSTANT, 1 },            /* not a count: skipped */
		{ "pf_taken", KVM_STATS_TYPE_CUMULATIVE, 1 },
		{ "io_exits", KVM_STATS_TYPE_CUMULATIVE, 1 },
		{ "not_wanted", KVM_STATS_TYPE_CUMULATIVE, 1 },
	};
	uint64_t values[6] = { 0, 100, 1, 40, 7, 9 };
	struct kvm_vcpu_stats s;
	char buf[256];

	memset(&s, 0, sizeof(s));
	s.fd = fake_stats(d, 6, values);
	cr_assert_eq(kvm_stats_parse(&s), 0);
	cr_assert_eq(s.n, 3, "exits, io_exits and pf_taken, not %u counters", s.n);
	kvm_stats_since(&s, buf, sizeof(buf));
	cr_assert_str_empty(buf, "no mark yet: nothing to say");
	kvm_stats_mark(&s);
	kvm_stats_since(&s, buf, sizeof(buf));
	cr_assert_str_eq(buf, "no counter moved");
	set_value(s.fd, 1, 1100);
	set_value(s.fd, 3, 1040);
	set_value(s.fd, 5, 99);
	kvm_stats_since(&s, buf, sizeof(buf));
	cr_assert_str_eq(buf, "exits 1000, pf_taken 1000");
	kvm_stats_close(&s);
	cr_assert_eq(s.fd, -1);
}

Test(kvmstats, refuses_a_header_out_of_bounds)
{
	struct kvm_vcpu_stats s;
	struct kvm_stats_header h = { .name_size = 48, .num_desc = 1u << 20 };
	char path[] = "/tmp/moat-kvmstats-XXXXXX";

	memset(&s, 0, sizeof(s));
	s.fd = mkstemp(path);
	cr_assert_geq(s.fd, 0);
	unlink(path);
	cr_assert_eq(pwrite(s.fd, &h, sizeof(h), 0), (ssize_t)sizeof(h));
	cr_assert_lt(kvm_stats_parse(&s), 0, "a million descriptors is not a KVM stats file");
	cr_assert_eq(s.n, 0);
	/* A file too short for its descriptors. */
	h.num_desc = 4;
	cr_assert_eq(pwrite(s.fd, &h, sizeof(h), 0), (ssize_t)sizeof(h));
	cr_assert_lt(kvm_stats_parse(&s), 0);
	kvm_stats_close(&s);
}

Test(kvmstats, without_kvm_stats_the_report_is_empty)
{
	struct kvm_vcpu_stats s;
	char buf[64];

	kvm_stats_open(&s, -1); /* not a vCPU fd: KVM_GET_STATS_FD fails */
	cr_assert_eq(s.fd, -1);
	kvm_stats_mark(&s);
	kvm_stats_since(&s, buf, sizeof(buf));
	cr_assert_str_empty(buf);
}
