/* AML byte-code builder; opcodes and encodings per ACPI 6.5 chapters 6.4 and 20. */
#include "vmm/aml.h"

#include <errno.h>
#include <string.h>

enum {
	AML_ZERO = 0x00,
	AML_ONE = 0x01,
	AML_NAME_OP = 0x08,
	AML_BYTE_PREFIX = 0x0a,
	AML_WORD_PREFIX = 0x0b,
	AML_DWORD_PREFIX = 0x0c,
	AML_STRING_PREFIX = 0x0d,
	AML_QWORD_PREFIX = 0x0e,
	AML_SCOPE_OP = 0x10,
	AML_BUFFER_OP = 0x11,
	AML_PACKAGE_OP = 0x12,
	AML_METHOD_OP = 0x14,
	AML_DUAL_NAME_PREFIX = 0x2e,
	AML_MULTI_NAME_PREFIX = 0x2f,
	AML_EXT_OP_PREFIX = 0x5b,
	AML_ROOT_CHAR = 0x5c,
	AML_PARENT_PREFIX = 0x5e,
	AML_DEVICE_OP = 0x82,     /* after AML_EXT_OP_PREFIX */
	AML_RETURN_OP = 0xa4,
	AML_ONES = 0xff,
};

/* Resource descriptor tags (ACPI 6.5 section 6.4). */
enum {
	RES_IRQ_NOFLAGS = 0x22,  /* small, length 2 */
	RES_IO = 0x47,           /* small, length 7 */
	RES_END_TAG = 0x79,      /* small, length 1 */
	RES_MEM32_FIXED = 0x86,
	RES_DWORD_ADDR = 0x87,
	RES_WORD_ADDR = 0x88,
	RES_EXT_IRQ = 0x89,
	RES_QWORD_ADDR = 0x8a,
};

enum block_kind { BLK_TERMS, BLK_PACKAGE, BLK_BUFFER, BLK_RESTEMPLATE };

void aml_init(struct aml *a, void *buf, size_t cap)
{
	memset(a, 0, sizeof(*a));
	a->buf = buf;
	a->cap = buf ? cap : 0;
}

int aml_finish(const struct aml *a)
{
	if (a->err)
		return a->err;
	return a->depth ? -EINVAL : 0;
}

static int fail(struct aml *a, int err)
{
	if (!a->err)
		a->err = err;
	return a->err;
}

static int put(struct aml *a, const void *data, size_t len)
{
	if (a->err || !len)
		return a->err;
	if (len > a->cap - a->len)
		return fail(a, -ENOSPC);
	memcpy(a->buf + a->len, data, len);
	a->len += len;
	return 0;
}

static int put8(struct aml *a, uint8_t v)
{
	return put(a, &v, 1);
}

static void le16(uint8_t *p, uint16_t v)
{
	p[0] = v;
	p[1] = v >> 8;
}

static void le32(uint8_t *p, uint32_t v)
{
	le16(p, v);
	le16(p + 2, v >> 16);
}

static void le64(uint8_t *p, uint64_t v)
{
	le32(p, v);
	le32(p + 4, v >> 32);
}

/* Data objects directly inside a Package are its elements; count them for NumElements. */
static void count_element(struct aml *a)
{
	if (!a->err && a->depth && a->open[a->depth - 1].kind == BLK_PACKAGE)
		a->open[a->depth - 1].count++;
}

int aml_pkglength(uint8_t out[4], uint32_t v)
{
	/* 1 byte holds 6 bits; longer forms hold 4 bits in the lead byte plus 8 per byte. */
	if (v < (1u << 6)) {
		out[0] = v;
		return 1;
	}
	if (v > AML_PKGLENGTH_MAX)
		return -ERANGE;
	int n = v < (1u << 12) ? 2 : v < (1u << 20) ? 3 : 4;
	out[0] = (uint8_t)((n - 1) << 6) | (v & 0x0f);
	for (int i = 1; i < n; i++)
		out[i] = v >> (4 + 8 * (i - 1));
	return n;
}

/* Encodes an integer into out (at most 9 bytes) and returns its length. */
static size_t encode_integer(uint8_t *out, uint64_t v)
{
	if (v == 0) {
		out[0] = AML_ZERO;
		return 1;
	}
	if (v == 1) {
		out[0] = AML_ONE;
		return 1;
	}
	if (v == UINT64_MAX) {
		/* Ones is all 64 bits set in revision >= 2 tables; truncated equally in revision 1. */
		out[0] = AML_ONES;
		return 1;
	}
	if (v <= UINT8_MAX) {
		out[0] = AML_BYTE_PREFIX;
		out[1] = v;
		return 2;
	}
	if (v <= UINT16_MAX) {
		out[0] = AML_WORD_PREFIX;
		le16(out + 1, v);
		return 3;
	}
	if (v <= UINT32_MAX) {
		out[0] = AML_DWORD_PREFIX;
		le32(out + 1, v);
		return 5;
	}
	out[0] = AML_QWORD_PREFIX;
	le64(out + 1, v);
	return 9;
}

int aml_raw(struct aml *a, const void *data, size_t len)
{
	return put(a, data, len);
}

static bool lead_name_char(char c)
{
	return (c >= 'A' && c <= 'Z') || c == '_';
}

static bool name_char(char c)
{
	return lead_name_char(c) || (c >= '0' && c <= '9');
}

int aml_namestring(struct aml *a, const char *path)
{
	/* Up to 8 prefix chars, MultiNamePrefix, SegCount, then 255 segments. */
	uint8_t out[8 + 2 + 4 * 255];
	uint8_t segs[4 * 255];
	size_t n = 0, nsegs = 0;
	const char *p = path;

	if (a->err)
		return a->err;
	if (!path || !*path)
		return fail(a, -EINVAL);
	if (*p == '\\') {
		out[n++] = AML_ROOT_CHAR;
		p++;
	} else {
		while (*p == '^') {
			if (n >= 8)
				return fail(a, -EINVAL);
			out[n++] = AML_PARENT_PREFIX;
			p++;
		}
	}
	while (*p) {
		size_t len = 0;

		if (nsegs == 255 || !lead_name_char(*p))
			return fail(a, -EINVAL);
		while (len < 4 && name_char(p[len]))
			len++;
		if (p[len] && p[len] != '.')
			return fail(a, -EINVAL);
		memcpy(segs + 4 * nsegs, p, len);
		memset(segs + 4 * nsegs + len, '_', 4 - len);
		nsegs++;
		p += len;
		if (*p == '.' && !*++p)
			return fail(a, -EINVAL);   /* trailing dot */
	}
	if (nsegs == 0) {
		if (n == 0 || out[0] != AML_ROOT_CHAR)
			return fail(a, -EINVAL);   /* "^" alone names nothing */
		out[n++] = 0x00;                   /* NullName: "\" is the root itself */
	} else if (nsegs == 2) {
		out[n++] = AML_DUAL_NAME_PREFIX;
	} else if (nsegs > 2) {
		out[n++] = AML_MULTI_NAME_PREFIX;
		out[n++] = nsegs;
	}
	memcpy(out + n, segs, 4 * nsegs);
	return put(a, out, n + 4 * nsegs);
}

int aml_integer(struct aml *a, uint64_t v)
{
	uint8_t out[9];

	count_element(a);
	return put(a, out, encode_integer(out, v));
}

int aml_string(struct aml *a, const char *s)
{
	if (a->err)
		return a->err;
	for (const char *c = s; *c; c++)
		if ((unsigned char)*c > 0x7f)
			return fail(a, -EINVAL);
	count_element(a);
	put8(a, AML_STRING_PREFIX);
	return put(a, s, strlen(s) + 1);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int aml_eisaid_encode(const char *id, uint32_t *out)
{
	uint32_t v = 0;

	if (!id || strlen(id) != 7)
		return -EINVAL;
	/* Three letters in 5 bits each ('A' == 1), then four hex digits. */
	for (int i = 0; i < 3; i++) {
		if (id[i] < 'A' || id[i] > 'Z')
			return -EINVAL;
		v = (v << 5) | (uint32_t)(id[i] - 'A' + 1);
	}
	for (int i = 3; i < 7; i++) {
		int h = hexval(id[i]);
		if (h < 0)
			return -EINVAL;
		v = (v << 4) | (uint32_t)h;
	}
	/* The id is defined big-endian; AML stores the integer little-endian. */
	*out = __builtin_bswap32(v);
	return 0;
}

int aml_eisaid(struct aml *a, const char *id)
{
	uint8_t out[5];
	uint32_t v;

	if (a->err)
		return a->err;
	if (aml_eisaid_encode(id, &v))
		return fail(a, -EINVAL);
	count_element(a);
	out[0] = AML_DWORD_PREFIX;
	le32(out + 1, v);
	return put(a, out, sizeof(out));
}

int aml_name(struct aml *a, const char *name)
{
	put8(a, AML_NAME_OP);
	return aml_namestring(a, name);
}

int aml_name_integer(struct aml *a, const char *name, uint64_t v)
{
	aml_name(a, name);
	return aml_integer(a, v);
}

int aml_name_string(struct aml *a, const char *name, const char *s)
{
	aml_name(a, name);
	return aml_string(a, s);
}

int aml_name_eisaid(struct aml *a, const char *name, const char *id)
{
	aml_name(a, name);
	return aml_eisaid(a, id);
}

/* Call right after the opcode: the PkgLength goes here once the block is closed. */
static int open_block(struct aml *a, unsigned int kind)
{
	if (a->err)
		return a->err;
	if (a->depth == AML_MAX_DEPTH)
		return fail(a, -E2BIG);
	a->open[a->depth].start = a->len;
	a->open[a->depth].kind = kind;
	a->open[a->depth].count = 0;
	a->depth++;
	return 0;
}

int aml_scope(struct aml *a, const char *path)
{
	put8(a, AML_SCOPE_OP);
	open_block(a, BLK_TERMS);
	return aml_namestring(a, path);
}

int aml_device(struct aml *a, const char *name)
{
	put(a, (const uint8_t[]){ AML_EXT_OP_PREFIX, AML_DEVICE_OP }, 2);
	open_block(a, BLK_TERMS);
	return aml_namestring(a, name);
}

int aml_method(struct aml *a, const char *name, unsigned int nargs, bool serialized)
{
	if (nargs > 7)
		return fail(a, -EINVAL);
	put8(a, AML_METHOD_OP);
	open_block(a, BLK_TERMS);
	aml_namestring(a, name);
	/* MethodFlags: ArgCount in bits 0-2, SerializeFlag in bit 3, SyncLevel 0. */
	return put8(a, (uint8_t)(nargs | (serialized ? 0x08 : 0)));
}

int aml_package(struct aml *a)
{
	count_element(a);
	put8(a, AML_PACKAGE_OP);
	return open_block(a, BLK_PACKAGE);
}

int aml_buffer(struct aml *a)
{
	count_element(a);
	put8(a, AML_BUFFER_OP);
	return open_block(a, BLK_BUFFER);
}

int aml_resource_template(struct aml *a)
{
	count_element(a);
	put8(a, AML_BUFFER_OP);
	return open_block(a, BLK_RESTEMPLATE);
}

int aml_end(struct aml *a)
{
	struct aml_block *b;
	uint8_t hdr[4 + 9];
	size_t body, n = 0, extra = 0;
	uint8_t tail[9];

	if (a->err)
		return a->err;
	if (!a->depth)
		return fail(a, -EINVAL);
	b = &a->open[a->depth - 1];

	if (b->kind == BLK_RESTEMPLATE) {
		/* EndTag checksum: the whole template, EndTag included, sums to zero. */
		uint8_t sum = RES_END_TAG;
		for (size_t i = b->start; i < a->len; i++)
			sum += a->buf[i];
		if (put(a, (const uint8_t[]){ RES_END_TAG, (uint8_t)-sum }, 2))
			return a->err;
	}
	body = a->len - b->start;

	/* What follows the PkgLength inside the block: BufferSize or NumElements. */
	if (b->kind == BLK_BUFFER || b->kind == BLK_RESTEMPLATE) {
		extra = encode_integer(tail, body);
	} else if (b->kind == BLK_PACKAGE) {
		if (b->count > 255)
			return fail(a, -E2BIG);   /* would need VarPackageOp */
		tail[0] = b->count;
		extra = 1;
	}

	/* PkgLength counts its own bytes, so pick the shortest form that still fits. */
	for (int k = 1; k <= 4; k++) {
		uint64_t total = (uint64_t)body + extra + k;
		if (total <= AML_PKGLENGTH_MAX && aml_pkglength(hdr, total) == k) {
			n = k;
			break;
		}
	}
	if (!n)
		return fail(a, -ERANGE);
	memcpy(hdr + n, tail, extra);
	n += extra;

	if (n > a->cap - a->len)
		return fail(a, -ENOSPC);
	memmove(a->buf + b->start + n, a->buf + b->start, body);
	memcpy(a->buf + b->start, hdr, n);
	a->len += n;
	a->depth--;
	return 0;
}

int aml_return_integer(struct aml *a, uint64_t v)
{
	uint8_t out[10];

	out[0] = AML_RETURN_OP;
	return put(a, out, 1 + encode_integer(out + 1, v));
}

static int in_template(struct aml *a)
{
	if (a->err)
		return a->err;
	if (!a->depth || a->open[a->depth - 1].kind != BLK_RESTEMPLATE)
		return fail(a, -EINVAL);
	return 0;
}

int aml_io(struct aml *a, bool decode16, uint16_t min, uint16_t max, uint8_t align, uint8_t len)
{
	uint8_t d[8];

	if (in_template(a))
		return a->err;
	if (min > max)
		return fail(a, -EINVAL);
	d[0] = RES_IO;
	d[1] = decode16 ? 1 : 0;
	le16(d + 2, min);
	le16(d + 4, max);
	d[6] = align;
	d[7] = len;
	return put(a, d, sizeof(d));
}

int aml_irq_noflags(struct aml *a, unsigned int irq)
{
	uint8_t d[3];

	if (in_template(a))
		return a->err;
	if (irq > 15)
		return fail(a, -ERANGE);
	d[0] = RES_IRQ_NOFLAGS;
	le16(d + 1, (uint16_t)(1u << irq));
	return put(a, d, sizeof(d));
}

int aml_ext_irq(struct aml *a, unsigned int flags, uint32_t gsi)
{
	uint8_t d[9];

	if (in_template(a))
		return a->err;
	if (flags & ~0x1fu)
		return fail(a, -EINVAL);
	d[0] = RES_EXT_IRQ;
	le16(d + 1, 6);         /* flags, count, one DWORD; no ResourceSource */
	d[3] = flags;
	d[4] = 1;
	le32(d + 5, gsi);
	return put(a, d, sizeof(d));
}

int aml_memory32_fixed(struct aml *a, bool rw, uint32_t base, uint32_t len)
{
	uint8_t d[12];

	if (in_template(a))
		return a->err;
	d[0] = RES_MEM32_FIXED;
	le16(d + 1, 9);
	d[3] = rw ? 1 : 0;
	le32(d + 4, base);
	le32(d + 8, len);
	return put(a, d, sizeof(d));
}

/* Word/DWord/QWord address descriptors differ only in tag and field width. */
static int addr_space(struct aml *a, const struct aml_addr_space *s, uint8_t tag, unsigned int width)
{
	const uint64_t f[5] = { s->granularity, s->min, s->max, s->translation, s->length };
	uint8_t d[3 + 3 + 5 * 8];
	uint64_t limit = width == 8 ? UINT64_MAX : (1ull << (8 * width)) - 1;
	size_t n = 6;

	if (in_template(a))
		return a->err;
	if (s->type > AML_ADDR_BUS || s->flags & ~0x0fu)
		return fail(a, -EINVAL);
	d[0] = tag;
	le16(d + 1, 3 + 5 * width);
	d[3] = s->type;
	d[4] = s->flags;
	d[5] = s->type_flags;
	for (int i = 0; i < 5; i++) {
		if (f[i] > limit)
			return fail(a, -ERANGE);
		if (width == 2)
			le16(d + n, f[i]);
		else if (width == 4)
			le32(d + n, f[i]);
		else
			le64(d + n, f[i]);
		n += width;
	}
	return put(a, d, n);
}

int aml_word_addr(struct aml *a, const struct aml_addr_space *s)
{
	return addr_space(a, s, RES_WORD_ADDR, 2);
}

int aml_dword_addr(struct aml *a, const struct aml_addr_space *s)
{
	return addr_space(a, s, RES_DWORD_ADDR, 4);
}

int aml_qword_addr(struct aml *a, const struct aml_addr_space *s)
{
	return addr_space(a, s, RES_QWORD_ADDR, 8);
}
