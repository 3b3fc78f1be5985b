#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/aml.h"

#define GUARD 64
#define GUARD_BYTE 0xa5

static void assert_bytes(const uint8_t *got, size_t got_len, const uint8_t *want, size_t want_len)
{
	cr_assert_eq(got_len, want_len, "length %zu, want %zu", got_len, want_len);
	for (size_t i = 0; i < want_len; i++)
		cr_assert_eq(got[i], want[i], "byte %zu: 0x%02x, want 0x%02x", i, got[i], want[i]);
}

#define ASSERT_AML(a, ...)                                                              \
	do {                                                                            \
		const uint8_t want_[] = { __VA_ARGS__ };                                \
		cr_assert_eq(aml_finish(a), 0);                                         \
		assert_bytes((a)->buf, aml_len(a), want_, sizeof(want_));               \
	} while (0)

Test(aml, pkglength_boundaries)
{
	static const struct {
		uint32_t v;
		int n;
		uint8_t b[4];
	} cases[] = {
		{ 0, 1, { 0x00 } },
		{ 63, 1, { 0x3f } },
		{ 64, 2, { 0x40, 0x04 } },
		{ 0x123, 2, { 0x43, 0x12 } },
		{ 4095, 2, { 0x4f, 0xff } },
		{ 4096, 3, { 0x80, 0x00, 0x01 } },
		{ 0xfffff, 3, { 0x8f, 0xff, 0xff } },
		{ 0x100000, 4, { 0xc0, 0x00, 0x00, 0x01 } },
		{ 0x1234567, 4, { 0xc7, 0x56, 0x34, 0x12 } },
		{ 0xfffffff, 4, { 0xcf, 0xff, 0xff, 0xff } },
	};
	uint8_t out[4];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(out, 0xee, sizeof(out));
		int n = aml_pkglength(out, cases[i].v);
		cr_assert_eq(n, cases[i].n, "value 0x%x: %d bytes, want %d", cases[i].v, n, cases[i].n);
		assert_bytes(out, (size_t)n, cases[i].b, (size_t)cases[i].n);
	}
	cr_assert_eq(aml_pkglength(out, 0x10000000), -ERANGE);
	cr_assert_eq(aml_pkglength(out, UINT32_MAX), -ERANGE);
}

/*
 * Scope(ABCD){ raw bytes }: the PkgLength covers its own bytes, the 4-byte name and the
 * body, so the encoded value is body + 4 + n for an n-byte encoding.
 */
static void check_scope_pkglength(size_t raw, uint32_t want_value, int want_n)
{
	size_t cap = raw + 16;
	uint8_t *buf = malloc(cap);
	uint8_t *body = calloc(1, raw ? raw : 1);
	uint8_t enc[4];
	struct aml a;

	cr_assert(buf && body);
	aml_init(&a, buf, cap);
	aml_scope(&a, "ABCD");
	aml_raw(&a, body, raw);
	cr_assert_eq(aml_end(&a), 0);
	cr_assert_eq(aml_finish(&a), 0);
	cr_assert_eq(aml_pkglength(enc, want_value), want_n);
	cr_assert_eq(aml_len(&a), 1 + (size_t)want_n + 4 + raw);
	cr_assert_eq(buf[0], 0x10);
	assert_bytes(buf + 1, (size_t)want_n, enc, (size_t)want_n);
	cr_assert_eq(memcmp(buf + 1 + want_n, "ABCD", 4), 0);
	free(body);
	free(buf);
}

Test(aml, block_pkglength_counts_itself_at_boundaries)
{
	check_scope_pkglength(58, 63, 1);             /* 58 + 4 + 1 = 63 fits one byte */
	check_scope_pkglength(59, 65, 2);             /* 64 would not, so 2 bytes: 59 + 4 + 2 */
	check_scope_pkglength(4089, 4095, 2);
	check_scope_pkglength(4090, 4097, 3);
	check_scope_pkglength(0xffff8, 0xfffff, 3);
	check_scope_pkglength(0xffff9, 0x100001, 4);
}

Test(aml, integer_encodings)
{
	static const struct {
		uint64_t v;
		size_t n;
		uint8_t b[9];
	} cases[] = {
		{ 0, 1, { 0x00 } },
		{ 1, 1, { 0x01 } },
		{ 2, 2, { 0x0a, 0x02 } },
		{ 0xff, 2, { 0x0a, 0xff } },
		{ 0x100, 3, { 0x0b, 0x00, 0x01 } },
		{ 0xffff, 3, { 0x0b, 0xff, 0xff } },
		{ 0x10000, 5, { 0x0c, 0x00, 0x00, 0x01, 0x00 } },
		{ 0xffffffff, 5, { 0x0c, 0xff, 0xff, 0xff, 0xff } },
		{ 0x100000000ull, 9, { 0x0e, 0, 0, 0, 0, 1, 0, 0, 0 } },
		{ 0x123456789abcdef0ull, 9, { 0x0e, 0xf0, 0xde, 0xbc, 0x9a, 0x78, 0x56, 0x34, 0x12 } },
		{ UINT64_MAX - 1, 9, { 0x0e, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff } },
		{ UINT64_MAX, 1, { 0xff } },
	};
	uint8_t buf[16];
	struct aml a;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		aml_init(&a, buf, sizeof(buf));
		cr_assert_eq(aml_integer(&a, cases[i].v), 0);
		assert_bytes(buf, aml_len(&a), cases[i].b, cases[i].n);
	}
}

Test(aml, eisaid)
{
	uint8_t buf[8];
	uint32_t v;
	struct aml a;

	cr_assert_eq(aml_eisaid_encode("PNP0501", &v), 0);
	cr_assert_eq(v, 0x0105D041);
	cr_assert_eq(aml_eisaid_encode("PNP0A08", &v), 0);
	cr_assert_eq(v, 0x080AD041);
	cr_assert_eq(aml_eisaid_encode("PNP050", &v), -EINVAL);
	cr_assert_eq(aml_eisaid_encode("pnp0501", &v), -EINVAL);
	cr_assert_eq(aml_eisaid_encode("PNP05G1", &v), -EINVAL);

	aml_init(&a, buf, sizeof(buf));
	aml_eisaid(&a, "PNP0501");
	ASSERT_AML(&a, 0x0c, 0x41, 0xd0, 0x05, 0x01);
}

Test(aml, names_and_strings)
{
	uint8_t buf[64];
	struct aml a;

	aml_init(&a, buf, sizeof(buf));
	aml_name_string(&a, "_HID", "QEMU0001");
	ASSERT_AML(&a, 0x08, '_', 'H', 'I', 'D', 0x0d, 'Q', 'E', 'M', 'U', '0', '0', '0', '1', 0x00);

	aml_init(&a, buf, sizeof(buf));
	aml_namestring(&a, "\\_SB");
	aml_namestring(&a, "\\_SB.PCI0");
	aml_namestring(&a, "A.B.C");
	aml_namestring(&a, "^^S5");
	aml_namestring(&a, "\\");
	ASSERT_AML(&a, 0x5c, '_', 'S', 'B', '_',
		   0x5c, 0x2e, '_', 'S', 'B', '_', 'P', 'C', 'I', '0',
		   0x2f, 3, 'A', '_', '_', '_', 'B', '_', '_', '_', 'C', '_', '_', '_',
		   0x5e, 0x5e, 'S', '5', '_', '_',
		   0x5c, 0x00);

	static const char *const bad[] = { "", "foo", "TOOLONG", "_SB..X", "_SB.", "1ABC", "^", "A-B" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		aml_init(&a, buf, sizeof(buf));
		cr_assert_eq(aml_namestring(&a, bad[i]), -EINVAL, "\"%s\"", bad[i]);
		cr_assert_eq(aml_len(&a), 0);
	}

	aml_init(&a, buf, sizeof(buf));
	cr_assert_eq(aml_string(&a, "caf\xc3\xa9"), -EINVAL);
}

Test(aml, package_counts_elements)
{
	uint8_t buf[64];
	struct aml a;

	aml_init(&a, buf, sizeof(buf));
	aml_name(&a, "\\_S5_");
	aml_package(&a);
	aml_integer(&a, 5);
	aml_integer(&a, 0);
	aml_end(&a);
	ASSERT_AML(&a, 0x08, 0x5c, '_', 'S', '5', '_', 0x12, 0x05, 0x02, 0x0a, 0x05, 0x00);

	/* A nested package is one element of its parent; its contents are not. */
	aml_init(&a, buf, sizeof(buf));
	aml_package(&a);
	aml_string(&a, "A");
	aml_package(&a);
	aml_integer(&a, 1);
	aml_integer(&a, 2);
	aml_integer(&a, 3);
	aml_end(&a);
	aml_end(&a);
	ASSERT_AML(&a, 0x12, 0x0d, 0x02, 0x0d, 'A', 0x00,
		   0x12, 0x07, 0x03, 0x01, 0x0a, 0x02, 0x0a, 0x03);
}

Test(aml, package_too_many_elements)
{
	uint8_t buf[1024];
	struct aml a;

	aml_init(&a, buf, sizeof(buf));
	aml_package(&a);
	for (int i = 0; i < 256; i++)
		aml_integer(&a, 0);
	cr_assert_eq(aml_end(&a), -E2BIG);
	cr_assert_eq(aml_finish(&a), -E2BIG);
}

Test(aml, device_method_buffer)
{
	uint8_t buf[64];
	struct aml a;

	aml_init(&a, buf, sizeof(buf));
	aml_device(&a, "PEVT");
	aml_method(&a, "_STA", 0, false);
	aml_return_integer(&a, 0x0f);
	aml_end(&a);
	aml_end(&a);
	ASSERT_AML(&a, 0x5b, 0x82, 0x0f, 'P', 'E', 'V', 'T',
		   0x14, 0x09, '_', 'S', 'T', 'A', 0x00, 0xa4, 0x0a, 0x0f);

	aml_init(&a, buf, sizeof(buf));
	aml_method(&a, "M", 3, true);
	aml_end(&a);
	ASSERT_AML(&a, 0x14, 0x06, 'M', '_', '_', '_', 0x0b);

	aml_init(&a, buf, sizeof(buf));
	aml_name(&a, "BUF0");
	aml_buffer(&a);
	aml_raw(&a, (const uint8_t[]){ 1, 2, 3 }, 3);
	aml_end(&a);
	ASSERT_AML(&a, 0x08, 'B', 'U', 'F', '0', 0x11, 0x06, 0x0a, 0x03, 1, 2, 3);

	aml_init(&a, buf, sizeof(buf));
	cr_assert_eq(aml_method(&a, "M", 8, false), -EINVAL);
}

static uint8_t sum_bytes(const uint8_t *p, size_t n)
{
	uint8_t s = 0;

	while (n--)
		s += *p++;
	return s;
}

Test(aml, resource_template_end_tag)
{
	uint8_t buf[64];
	struct aml a;

	aml_init(&a, buf, sizeof(buf));
	aml_resource_template(&a);
	aml_io(&a, true, 0x3f8, 0x3f8, 1, 8);
	aml_irq_noflags(&a, 4);
	aml_end(&a);
	cr_assert_eq(aml_finish(&a), 0);
	/* Buffer(0x0f){ IO descriptor (8), IRQNoFlags (3), EndTag (2) } */
	cr_assert_eq(aml_len(&a), 17);
	assert_bytes(buf, 15, (const uint8_t[]){ 0x11, 0x10, 0x0a, 0x0d,
						 0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08,
						 0x22, 0x10, 0x00 }, 15);
	cr_assert_eq(buf[15], 0x79, "EndTag");
	cr_assert_eq(sum_bytes(buf + 4, 13), 0, "template with EndTag sums to zero");

	/* An empty template is just the EndTag, checksum -0x79. */
	aml_init(&a, buf, sizeof(buf));
	aml_resource_template(&a);
	aml_end(&a);
	ASSERT_AML(&a, 0x11, 0x05, 0x0a, 0x02, 0x79, 0x87);
}

Test(aml, resource_descriptors)
{
	uint8_t buf[256];
	struct aml a;

	aml_init(&a, buf, sizeof(buf));
	aml_resource_template(&a);
	aml_ext_irq(&a, AML_EXT_IRQ_CONSUMER | AML_EXT_IRQ_EDGE, 33);
	aml_memory32_fixed(&a, true, 0xfec00000, 0x1000);
	aml_end(&a);
	cr_assert_eq(aml_finish(&a), 0);
	assert_bytes(buf + 4, 21, (const uint8_t[]){
		0x89, 0x06, 0x00, 0x03, 0x01, 33, 0, 0, 0,
		0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0xc0, 0xfe, 0x00, 0x10, 0x00, 0x00 }, 21);
	cr_assert_eq(sum_bytes(buf + 4, aml_len(&a) - 4), 0);

	struct aml_addr_space bus = {
		.type = AML_ADDR_BUS,
		.flags = AML_ADDR_MIN_FIXED | AML_ADDR_MAX_FIXED,
		.min = 0, .max = 0xff, .length = 0x100,
	};
	struct aml_addr_space mem = {
		.type = AML_ADDR_MEMORY,
		.flags = AML_ADDR_MIN_FIXED | AML_ADDR_MAX_FIXED,
		.type_flags = AML_MEM_RW | AML_MEM_NONCACHEABLE,
		.min = 0xc0000000, .max = 0xfebfffff, .length = 0x3ec00000,
	};
	struct aml_addr_space high = mem;
	high.min = 0x8000000000ull;
	high.max = 0xffffffffffull;
	high.length = 0x8000000000ull;

	aml_init(&a, buf, sizeof(buf));
	aml_resource_template(&a);
	aml_word_addr(&a, &bus);
	aml_dword_addr(&a, &mem);
	aml_qword_addr(&a, &high);
	aml_end(&a);
	cr_assert_eq(aml_finish(&a), 0);
	/* BufferOp, PkgLength (2 bytes), ByteConst size (2 bytes), then the descriptors. */
	const uint8_t *d = buf + 5;
	assert_bytes(d, 16, (const uint8_t[]){ 0x88, 13, 0, 2, 0x0c, 0, 0, 0, 0, 0, 0xff, 0,
					       0, 0, 0, 1 }, 16);
	d += 16;
	assert_bytes(d, 6, (const uint8_t[]){ 0x87, 23, 0, 0, 0x0c, 0x01 }, 6);
	cr_assert_eq(d[10] | d[11] << 8 | d[12] << 16 | (uint32_t)d[13] << 24, 0xc0000000u);
	d += 26;
	assert_bytes(d, 6, (const uint8_t[]){ 0x8a, 43, 0, 0, 0x0c, 0x01 }, 6);
	cr_assert_eq(d[18], 0x80, "min 0x80_0000_0000");
	d += 46;
	cr_assert_eq(d[0], 0x79);
	cr_assert_eq((size_t)(d + 2 - buf), aml_len(&a));

	aml_init(&a, buf, sizeof(buf));
	aml_resource_template(&a);
	cr_assert_eq(aml_dword_addr(&a, &high), -ERANGE);

	aml_init(&a, buf, sizeof(buf));
	aml_resource_template(&a);
	cr_assert_eq(aml_irq_noflags(&a, 16), -ERANGE);
}

Test(aml, misuse_is_reported)
{
	uint8_t buf[64];
	struct aml a;

	aml_init(&a, buf, sizeof(buf));
	cr_assert_eq(aml_end(&a), -EINVAL, "end with nothing open");

	aml_init(&a, buf, sizeof(buf));
	cr_assert_eq(aml_io(&a, true, 1, 1, 1, 1), -EINVAL, "descriptor outside a template");

	aml_init(&a, buf, sizeof(buf));
	aml_scope(&a, "\\_SB");
	aml_buffer(&a);
	cr_assert_eq(aml_irq_noflags(&a, 4), -EINVAL, "descriptor in a plain buffer");

	aml_init(&a, buf, sizeof(buf));
	aml_scope(&a, "\\_SB");
	cr_assert_eq(aml_finish(&a), -EINVAL, "unclosed block");

	aml_init(&a, buf, sizeof(buf));
	for (int i = 0; i < AML_MAX_DEPTH; i++)
		cr_assert_eq(aml_package(&a), 0);
	cr_assert_eq(aml_package(&a), -E2BIG);
	cr_assert_eq(aml_integer(&a, 1), -E2BIG, "errors are sticky");
}

/* A DSDT-like body touching every kind of block. */
static int build_sample(struct aml *a)
{
	aml_scope(a, "\\_SB");
	aml_device(a, "COM1");
	aml_name_eisaid(a, "_HID", "PNP0501");
	aml_name_integer(a, "_UID", 0);
	aml_name(a, "_CRS");
	aml_resource_template(a);
	aml_io(a, true, 0x3f8, 0x3f8, 1, 8);
	aml_irq_noflags(a, 4);
	aml_end(a);
	aml_method(a, "_STA", 0, false);
	aml_return_integer(a, 0x0f);
	aml_end(a);
	aml_end(a);
	aml_end(a);
	aml_name(a, "\\_S5_");
	aml_package(a);
	aml_integer(a, 5);
	aml_integer(a, 0);
	aml_end(a);
	return aml_finish(a);
}

Test(aml, overflow_detected_never_written_past)
{
	uint8_t ref[256];
	struct aml a;
	size_t need;

	aml_init(&a, ref, sizeof(ref));
	cr_assert_eq(build_sample(&a), 0);
	need = aml_len(&a);

	for (size_t cap = 0; cap <= need; cap++) {
		/* The builder gets cap bytes; the guard after them must stay untouched. */
		uint8_t *buf = malloc(cap + GUARD);
		cr_assert(buf);
		memset(buf, GUARD_BYTE, cap + GUARD);
		aml_init(&a, buf, cap);
		int err = build_sample(&a);
		if (cap < need) {
			cr_assert_eq(err, -ENOSPC, "cap %zu of %zu", cap, need);
			cr_assert_leq(aml_len(&a), cap);
		} else {
			cr_assert_eq(err, 0);
			cr_assert_eq(memcmp(buf, ref, need), 0);
		}
		for (size_t i = cap; i < cap + GUARD; i++)
			cr_assert_eq(buf[i], GUARD_BYTE, "cap %zu: byte %zu written", cap, i);
		free(buf);
	}
}
