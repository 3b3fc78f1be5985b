#include <criterion/criterion.h>
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "devices/virtio/blk.h"
#include "devices/virtio/virtio.h"
#include "tests/unit/virtq_mock.h"

#define QSIZE 256u
#define HDR 16u
#define DISK_SIZE (1u << 20)
#define CAPACITY (DISK_SIZE / 512)

#define T_IN 0u
#define T_OUT 1u
#define T_FLUSH 4u
#define T_GET_ID 8u
#define T_DISCARD 11u
#define T_WRITE_ZEROES 13u
#define S_OK 0u
#define S_IOERR 1u
#define S_UNSUPP 2u
#define F_RO VIRTIO_BIT(5)
#define F_FLUSH VIRTIO_BIT(9)
#define F_DISCARD VIRTIO_BIT(13)
#define F_WRITE_ZEROES VIRTIO_BIT(14)
#define UNTOUCHED 0xee /* a status byte the device has not written */

/*
 * The mock's memory seen through a stand-in IOMMU: runs cut to `chop` bytes (so one buffer becomes
 * many iovecs), and a range that stops translating after `allow` more lookups (memory unmapped
 * while the device holds a popped chain).
 */
struct test_as {
	struct dma_as as;
	const struct dma_as *ram;
	uint64_t chop;
	uint64_t poison, poison_len;
	int allow;
};

static int test_translate(const struct dma_as *as, uint64_t iova, uint64_t len, unsigned int perm, void **host,
			  uint64_t *run)
{
	struct test_as *t = as->ctx;
	int err;

	if (t->poison_len && iova < t->poison + t->poison_len && iova + len > t->poison) {
		if (t->allow == 0)
			return -EFAULT;
		t->allow--;
	}
	err = t->ram->ops->translate(t->ram, iova, len, perm, host, run);
	if (!err && t->chop && *run > t->chop)
		*run = t->chop;
	return err;
}

static const struct dma_as_ops test_ops = { .translate = test_translate };

struct bx {
	struct vqm m;
	struct test_as tas;
	struct virtio_blk *blk;
	struct virtio_dev *dev;
	char path[64];
	int fd; /* the test's own view of the disk file */
	uint16_t used_seen;
	int queue_irqs, config_irqs;
};

static uint8_t pat(uint64_t off)
{
	return (uint8_t)(off * 31 + (off >> 9) * 7 + 1);
}

static int count_irq(void *ctx, enum virtio_irq_kind kind, unsigned int queue)
{
	struct bx *b = ctx;

	if (kind == VIRTIO_IRQ_CONFIG)
		b->config_irqs++;
	else
		b->queue_irqs++;
	return 0;
}

/* A temp disk of `size` bytes filled with pat(). */
static void make_disk(struct bx *b, uint64_t size)
{
	uint8_t *buf = malloc(size);

	cr_assert_not_null(buf);
	strcpy(b->path, "/tmp/moat-blk-XXXXXX");
	b->fd = mkstemp(b->path);
	cr_assert_geq(b->fd, 0);
	for (uint64_t i = 0; i < size; i++)
		buf[i] = pat(i);
	cr_assert_eq(pwrite(b->fd, buf, size, 0), (ssize_t)size);
	free(buf);
}

static struct blk_config config_for(const struct bx *b, bool readonly, const char *serial)
{
	struct blk_config c = { .readonly = readonly };

	strcpy(c.path, b->path);
	strcpy(c.serial, serial);
	return c;
}

/* Open the device on the disk and drive it to DRIVER_OK with its features minus `drop`. */
static void bx_start(struct bx *b, const struct blk_config *cfg, uint64_t drop)
{
	char err[256];
	struct virtio_dev *d;

	vqm_init(&b->m, QSIZE);
	b->tas = (struct test_as){ .as = { .ops = &test_ops, .ctx = &b->tas }, .ram = &b->m.as };
	cr_assert_eq(virtio_blk_new(cfg, &b->tas.as, &b->blk, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_empty(err, "no warning for a sector-aligned disk");
	d = b->dev = virtio_blk_dev(b->blk);
	d->irq = (struct virtio_irq){ .fn = count_irq, .ctx = b };
	cr_assert_eq(virtio_set_status(d, VIRTIO_STATUS_ACKNOWLEDGE), 0);
	cr_assert_eq(virtio_set_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER), 0);
	cr_assert_eq(virtio_set_driver_features(d, d->device_features & ~drop), 0);
	cr_assert_eq(virtio_set_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
						  VIRTIO_STATUS_FEATURES_OK), 0);
	cr_assert_eq(virtio_queue_set_addr(d, 0, b->m.desc, b->m.avail, b->m.used), 0);
	cr_assert_eq(virtio_queue_enable(d, 0), 0);
	cr_assert_eq(virtio_set_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
						  VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK), 0);
}

static void bx_open(struct bx *b, bool readonly, const char *serial)
{
	struct blk_config c;

	memset(b, 0, sizeof(*b));
	make_disk(b, DISK_SIZE);
	c = config_for(b, readonly, serial);
	bx_start(b, &c, 0);
}

static void bx_close(struct bx *b)
{
	virtio_blk_free(b->blk);
	vqm_fini(&b->m);
	close(b->fd);
	unlink(b->path);
}

struct rq {
	uint16_t head;
	uint64_t hdr, status, data[16];
};

static void put_hdr(struct bx *b, uint64_t gpa, uint32_t type, uint64_t sector)
{
	uint8_t *h = vqm_host(&b->m, gpa, HDR);
	uint32_t t = htole32(type), z = 0;
	uint64_t s = htole64(sector);

	memcpy(h, &t, 4);
	memcpy(h + 4, &z, 4);
	memcpy(h + 8, &s, 8);
}

/* Queue header, n data buffers and a status byte, as a direct chain or one indirect table. */
static struct rq submit(struct bx *b, uint32_t type, uint64_t sector, const struct vqm_buf *data, unsigned int n,
			bool indirect)
{
	struct vqm_buf bufs[18];
	struct rq r = { 0 };

	cr_assert_leq(n, 16);
	bufs[0] = (struct vqm_buf){ 0, HDR, false };
	for (unsigned int i = 0; i < n; i++)
		bufs[1 + i] = data[i];
	bufs[n + 1] = (struct vqm_buf){ 0, 1, true };
	r.head = indirect ? vqm_indirect(&b->m, bufs, n + 2, NULL) : vqm_chain(&b->m, bufs, n + 2);
	r.hdr = bufs[0].addr;
	r.status = bufs[n + 1].addr;
	for (unsigned int i = 0; i < n; i++)
		r.data[i] = bufs[1 + i].addr;
	put_hdr(b, r.hdr, type, sector);
	*(uint8_t *)vqm_host(&b->m, r.status, 1) = UNTOUCHED;
	vqm_publish(&b->m, r.head);
	return r;
}

static void kick(struct bx *b)
{
	virtio_queue_notify(b->dev, 0);
}

/* The next used entry is head with len. */
static void expect_used(struct bx *b, uint16_t head, uint32_t len, const char *why)
{
	uint32_t id, l;

	cr_assert_neq(b->used_seen, vqm_used_idx(&b->m), "%s: not completed", why);
	vqm_used_elem(&b->m, b->used_seen++, &id, &l);
	cr_assert_eq(id, head, "%s: used id", why);
	cr_assert_eq(l, len, "%s: used len %u, expected %u", why, l, len);
}

/* Kick and expect r completed with status and used len. */
static void expect_done(struct bx *b, const struct rq *r, uint8_t status, uint32_t len, const char *why)
{
	kick(b);
	expect_used(b, r->head, len, why);
	cr_assert_eq(*(uint8_t *)vqm_host(&b->m, r->status, 1), status, "%s: status", why);
	cr_assert(virtio_dev_live(b->dev), "%s: the device keeps running", why);
}

static void fill_guest(struct bx *b, uint64_t gpa, uint32_t len, uint8_t seed)
{
	uint8_t *p = vqm_host(&b->m, gpa, len);

	for (uint32_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seed + i * 13);
}

/* The file at off holds pat() (untouched) for len bytes. */
static void expect_file_pristine(struct bx *b, uint64_t off, uint64_t len, const char *why)
{
	uint8_t buf[4096];

	for (uint64_t done = 0; done < len; done += sizeof(buf)) {
		size_t n = len - done < sizeof(buf) ? len - done : sizeof(buf);

		cr_assert_eq(pread(b->fd, buf, n, off + done), (ssize_t)n);
		for (size_t i = 0; i < n; i++)
			cr_assert_eq(buf[i], pat(off + done + i), "%s: file byte %llu changed", why,
				     (unsigned long long)(off + done + i));
	}
}

static void expect_file_zero(struct bx *b, uint64_t off, uint64_t len, const char *why)
{
	uint8_t buf[512];

	for (uint64_t done = 0; done < len; done += sizeof(buf)) {
		cr_assert_eq(pread(b->fd, buf, sizeof(buf), off + done), (ssize_t)sizeof(buf));
		for (size_t i = 0; i < sizeof(buf); i++)
			cr_assert_eq(buf[i], 0, "%s: byte %llu not zero", why, (unsigned long long)(off + done + i));
	}
}

Test(virtio_blk, out_then_in_round_trip_direct_and_indirect)
{
	struct bx b;
	struct vqm_buf out[] = { { 0, 100, false }, { 0, 1000, false }, { 0, 436, false } };
	struct vqm_buf in[] = { { 0, 512, true }, { 0, 1024, true } };
	uint8_t expect[1536], file[1536];
	struct rq r;

	bx_open(&b, false, "");
	r = submit(&b, T_OUT, 5, out, 3, false);
	fill_guest(&b, r.data[0], 100, 1);
	fill_guest(&b, r.data[1], 1000, 101);
	fill_guest(&b, r.data[2], 436, 77);
	memcpy(expect, vqm_host(&b.m, r.data[0], 100), 100);
	memcpy(expect + 100, vqm_host(&b.m, r.data[1], 1000), 1000);
	memcpy(expect + 1100, vqm_host(&b.m, r.data[2], 436), 436);
	expect_done(&b, &r, S_OK, 1, "OUT over three uneven descriptors");
	cr_assert_eq(pread(b.fd, file, sizeof(file), 5 * 512), (ssize_t)sizeof(file));
	cr_assert_eq(memcmp(file, expect, sizeof(file)), 0, "the file holds the guest's bytes at sector 5");
	expect_file_pristine(&b, 0, 5 * 512, "before the write");
	expect_file_pristine(&b, 8 * 512, 512, "after the write");

	r = submit(&b, T_IN, 5, in, 2, true);
	expect_done(&b, &r, S_OK, 1536 + 1, "IN through an indirect table: data plus status");
	cr_assert_eq(memcmp(vqm_host(&b.m, r.data[0], 512), expect, 512), 0);
	cr_assert_eq(memcmp(vqm_host(&b.m, r.data[1], 1024), expect + 512, 1024), 0);
	bx_close(&b);
}

Test(virtio_blk, data_split_across_regions_and_many_runs)
{
	struct bx b;
	/* One buffer across the R0/R1 boundary: contiguous in GPA, two host runs. */
	struct vqm_buf in[] = { { VQM_R1 - 512, 1024, true }, { VQM_R2, 2048, true } };
	struct rq r;

	bx_open(&b, false, "");
	r = submit(&b, T_IN, 100, in, 2, false);
	expect_done(&b, &r, S_OK, 3073, "IN across two memory regions");
	for (uint32_t i = 0; i < 1024; i++)
		cr_assert_eq(*(uint8_t *)vqm_host(&b.m, VQM_R1 - 512 + i, 1), pat(100 * 512 + i));
	for (uint32_t i = 0; i < 2048; i++)
		cr_assert_eq(*(uint8_t *)vqm_host(&b.m, VQM_R2 + i, 1), pat(100 * 512 + 1024 + i));

	/* 8-byte runs: 4 KiB becomes 512 iovecs, more than one preadv/pwritev batch. */
	b.tas.chop = 8;
	in[0] = (struct vqm_buf){ 0, 4096, false };
	r = submit(&b, T_OUT, 200, in, 1, false);
	fill_guest(&b, r.data[0], 4096, 9);
	expect_done(&b, &r, S_OK, 1, "OUT in 512 runs");
	in[0] = (struct vqm_buf){ 0, 4096, true };
	r = submit(&b, T_IN, 200, in, 1, false);
	expect_done(&b, &r, S_OK, 4097, "IN in 512 runs");
	for (uint32_t i = 0; i < 4096; i++)
		cr_assert_eq(*(uint8_t *)vqm_host(&b.m, r.data[0] + i, 1), (uint8_t)(9 + i * 13), "byte %u", i);
	bx_close(&b);
}

Test(virtio_blk, out_of_range_and_overflowing_sectors_are_ioerr)
{
	char stats[512];
	struct bx b;
	struct vqm_buf one = { 0, 512, true }, two = { 0, 1024, true }, w = { 0, 512, false };
	struct rq r;

	bx_open(&b, false, "");
	r = submit(&b, T_IN, CAPACITY - 1, &one, 1, false);
	expect_done(&b, &r, S_OK, 513, "the last sector");
	two.addr = 0;
	r = submit(&b, T_IN, CAPACITY - 1, &two, 1, false);
	expect_done(&b, &r, S_IOERR, 1, "runs one sector past the end: status only");
	one.addr = 0;
	r = submit(&b, T_IN, CAPACITY, &one, 1, false);
	expect_done(&b, &r, S_IOERR, 1, "starts at the end");
	one.addr = 0;
	r = submit(&b, T_IN, UINT64_MAX, &one, 1, false);
	expect_done(&b, &r, S_IOERR, 1, "sector UINT64_MAX");
	r = submit(&b, T_OUT, UINT64_MAX / 512 + 1, &w, 1, false);
	expect_done(&b, &r, S_IOERR, 1, "sector * 512 overflows");
	w.addr = 0;
	r = submit(&b, T_OUT, UINT64_MAX - 1, &w, 1, false);
	expect_done(&b, &r, S_IOERR, 1, "sector + count wraps");
	expect_file_pristine(&b, 0, DISK_SIZE, "refused writes");
	cr_assert_eq(lseek(b.fd, 0, SEEK_END), DISK_SIZE, "and the file did not grow");
	virtio_blk_stats(b.blk, stats, sizeof(stats));
	cr_assert(strstr(stats, "5 I/O errors (0 from the host)"), "all refused by the device itself: %s", stats);
	bx_close(&b);
}

Test(virtio_blk, lengths_not_multiple_of_512_and_wrong_direction)
{
	struct bx b;
	struct vqm_buf odd_in = { 0, 500, true }, odd_out = { 0, 513, false };
	struct vqm_buf rd = { 0, 512, false }, wr = { 0, 512, true };
	struct rq r;

	bx_open(&b, false, "");
	r = submit(&b, T_IN, 0, &odd_in, 1, false);
	expect_done(&b, &r, S_IOERR, 1, "IN of 500 bytes");
	r = submit(&b, T_OUT, 0, &odd_out, 1, false);
	expect_done(&b, &r, S_IOERR, 1, "OUT of 513 bytes");
	r = submit(&b, T_IN, 0, &rd, 1, false);
	expect_done(&b, &r, S_IOERR, 1, "IN whose data is device-readable");
	r = submit(&b, T_OUT, 0, &wr, 1, false);
	expect_done(&b, &r, S_IOERR, 1, "OUT whose data is device-writable");
	expect_file_pristine(&b, 0, 4096, "refused writes");
	bx_close(&b);
}

Test(virtio_blk, short_header_and_missing_status)
{
	struct bx b;
	struct vqm_buf shorthdr[] = { { 0, 8, false }, { 0, 1, true } };
	struct vqm_buf split[] = { { 0, 8, false }, { 0, 8, false }, { 0, 512, true }, { 0, 1, true } };
	struct vqm_buf nostatus[] = { { 0, HDR, false }, { 0, 512, false } };
	struct vqm_buf one = { 0, 512, true };
	uint16_t head;
	uint8_t hdr[HDR];
	struct rq r;

	bx_open(&b, false, "");
	head = vqm_chain(&b.m, shorthdr, 2);
	*(uint8_t *)vqm_host(&b.m, shorthdr[1].addr, 1) = UNTOUCHED;
	vqm_publish(&b.m, head);
	kick(&b);
	expect_used(&b, head, 1, "8-byte header");
	cr_assert_eq(*(uint8_t *)vqm_host(&b.m, shorthdr[1].addr, 1), S_IOERR);

	head = vqm_chain(&b.m, nostatus, 2);
	put_hdr(&b, nostatus[0].addr, T_OUT, 0);
	fill_guest(&b, nostatus[1].addr, 512, 3);
	vqm_publish(&b.m, head);
	kick(&b);
	expect_used(&b, head, 0, "no writable byte: completed empty");
	expect_file_pristine(&b, 0, 512, "a request without a status is not carried out");
	cr_assert(virtio_dev_live(b.dev));

	/* A header split over two descriptors is still a header. */
	head = vqm_chain(&b.m, split, 4);
	memset(hdr, 0, sizeof(hdr));
	hdr[8] = 3; /* IN, sector 3 */
	memcpy(vqm_host(&b.m, split[0].addr, 8), hdr, 8);
	memcpy(vqm_host(&b.m, split[1].addr, 8), hdr + 8, 8);
	vqm_publish(&b.m, head);
	kick(&b);
	expect_used(&b, head, 513, "header in two pieces");
	cr_assert_eq(*(uint8_t *)vqm_host(&b.m, split[2].addr, 1), pat(3 * 512));

	r = submit(&b, T_IN, 1, &one, 1, false);
	expect_done(&b, &r, S_OK, 513, "the device keeps serving");
	bx_close(&b);
}

Test(virtio_blk, readonly_refuses_writes)
{
	char stats[512];
	struct bx b;
	struct vqm_buf w = { 0, 512, false }, rd = { 0, 512, true };
	struct rq r;

	bx_open(&b, true, "");
	cr_assert(b.dev->device_features & F_RO);
	cr_assert_not(b.dev->device_features & (F_DISCARD | F_WRITE_ZEROES), "nothing that writes is offered");
	r = submit(&b, T_OUT, 0, &w, 1, false);
	fill_guest(&b, r.data[0], 512, 5);
	expect_done(&b, &r, S_IOERR, 1, "OUT on a read-only disk");
	expect_file_pristine(&b, 0, 512, "read-only");
	virtio_blk_stats(b.blk, stats, sizeof(stats));
	cr_assert(strstr(stats, "1 I/O errors (0 from the host)"), "refused before any write is tried: %s", stats);
	r = submit(&b, T_IN, 0, &rd, 1, false);
	expect_done(&b, &r, S_OK, 513, "reads still work");
	r = submit(&b, T_FLUSH, 0, NULL, 0, false);
	expect_done(&b, &r, S_OK, 1, "FLUSH has nothing to do but succeeds");
	bx_close(&b);
}

Test(virtio_blk, flush_and_unknown_types)
{
	struct bx b;
	const uint32_t unknown[] = { 2, 3, 5, 10, 14, 15, 16, 0x80000000u, UINT32_MAX };
	struct vqm_buf rd = { 0, 512, true };
	struct rq r;

	bx_open(&b, false, "");
	r = submit(&b, T_FLUSH, 0, NULL, 0, false);
	expect_done(&b, &r, S_OK, 1, "FLUSH");
	r = submit(&b, T_FLUSH, 12345, NULL, 0, true);
	expect_done(&b, &r, S_OK, 1, "FLUSH ignores the sector");
	for (unsigned int i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
		rd.addr = 0;
		r = submit(&b, unknown[i], 0, &rd, 1, false);
		expect_done(&b, &r, S_UNSUPP, 1, "unknown type");
	}
	bx_close(&b);
}

static void get_id(struct bx *b, uint32_t buflen, const char *expect, uint32_t n)
{
	struct vqm_buf id = { 0, buflen, true };
	struct rq r = submit(b, T_GET_ID, 0, &id, 1, false);
	uint8_t *p;

	memset(vqm_host(&b->m, r.data[0], buflen), 0xaa, buflen);
	expect_done(b, &r, S_OK, n + 1, "GET_ID");
	p = vqm_host(&b->m, r.data[0], buflen);
	cr_assert_eq(memcmp(p, expect, n), 0, "id bytes");
	for (uint32_t i = n; i < buflen; i++)
		cr_assert_eq(p[i], 0xaa, "byte %u past the id is untouched", i);
}

Test(virtio_blk, get_id)
{
	struct bx b;

	bx_open(&b, false, "moat-disk-1");
	get_id(&b, 20, "moat-disk-1\0\0\0\0\0\0\0\0\0", 20);
	get_id(&b, 8, "moat-dis", 8);
	get_id(&b, 64, "moat-disk-1\0\0\0\0\0\0\0\0\0", 20);
	bx_close(&b);

	bx_open(&b, false, "ABCDEFGHIJKLMNOPQRST");
	get_id(&b, 20, "ABCDEFGHIJKLMNOPQRST", 20);
	bx_close(&b);

	bx_open(&b, false, "");
	get_id(&b, 20, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 20);
	bx_close(&b);
}

/* A DISCARD or WRITE_ZEROES request with n 16-byte segments. */
struct seg {
	uint64_t sector;
	uint32_t num, flags;
};

static struct rq submit_dwz(struct bx *b, uint32_t type, const struct seg *s, unsigned int n, uint32_t bytes)
{
	struct vqm_buf d = { 0, bytes, false };
	struct rq r = submit(b, type, 0, &d, bytes ? 1 : 0, false);

	for (unsigned int i = 0; i < n && (i + 1) * 16 <= bytes; i++) {
		uint8_t *p = vqm_host(&b->m, r.data[0] + i * 16, 16);
		uint64_t sector = htole64(s[i].sector);
		uint32_t num = htole32(s[i].num), flags = htole32(s[i].flags);

		memcpy(p, &sector, 8);
		memcpy(p + 8, &num, 4);
		memcpy(p + 12, &flags, 4);
	}
	return r;
}

/* Independently of the device: can this file system punch holes in a file like the disk? */
static bool fs_punches_holes(void)
{
	char path[] = "/tmp/moat-punch-XXXXXX";
	int fd = mkstemp(path);
	bool ok;

	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, 65536), 0);
	ok = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 4096) == 0;
	close(fd);
	unlink(path);
	return ok;
}

Test(virtio_blk, discard_offered_iff_holes_work_and_zeroes_the_range)
{
	struct bx b;
	struct seg s[] = { { 16, 8, 0 }, { 64, 16, 0 } };
	struct rq r;

	bx_open(&b, false, "");
	cr_assert_eq(!!(b.dev->device_features & F_DISCARD), fs_punches_holes(),
		     "DISCARD follows what the file system can do");
	cr_assert(b.dev->device_features & F_WRITE_ZEROES, "WRITE_ZEROES always works on a writable disk");
	if (!(b.dev->device_features & F_DISCARD)) {
		bx_close(&b);
		cr_skip_test("this file system cannot punch holes");
	}
	expect_file_pristine(&b, 0, DISK_SIZE, "probing for hole punching changed nothing");
	cr_assert_eq(lseek(b.fd, 0, SEEK_END), DISK_SIZE, "nor the size");
	r = submit_dwz(&b, T_DISCARD, s, 2, 32);
	expect_done(&b, &r, S_OK, 1, "DISCARD of two ranges");
	expect_file_pristine(&b, 0, 16 * 512, "before the first range");
	expect_file_zero(&b, 16 * 512, 8 * 512, "first range");
	expect_file_pristine(&b, 24 * 512, 40 * 512, "between");
	expect_file_zero(&b, 64 * 512, 16 * 512, "second range");
	expect_file_pristine(&b, 80 * 512, DISK_SIZE - 80 * 512, "after");
	cr_assert_eq(lseek(b.fd, 0, SEEK_END), DISK_SIZE, "the size stays");
	bx_close(&b);
}

static blkcnt_t blocks(struct bx *b)
{
	struct stat st;

	cr_assert_eq(fsync(b->fd), 0);
	cr_assert_eq(fstat(b->fd, &st), 0);
	return st.st_blocks;
}

Test(virtio_blk, write_zeroes_with_and_without_unmap)
{
	struct bx b;
	/* keep covers 4 KiB blocks 1-2 whole, unmap blocks 13-15. */
	struct seg keep = { 3, 21, 0 }, unmap = { 100, 28, 1 }, last = { CAPACITY - 1, 1, 0 };
	blkcnt_t before;
	struct rq r;

	bx_open(&b, false, "");
	before = blocks(&b);
	r = submit_dwz(&b, T_WRITE_ZEROES, &keep, 1, 16);
	expect_done(&b, &r, S_OK, 1, "WRITE_ZEROES");
	/* Without unmap the driver wants the blocks kept (a guest's fallocate, say). */
	cr_assert_eq(blocks(&b), before, "no unmap: nothing freed");
	r = submit_dwz(&b, T_WRITE_ZEROES, &unmap, 1, 16);
	expect_done(&b, &r, S_OK, 1, "WRITE_ZEROES with unmap");
	if (b.dev->device_features & F_DISCARD)
		cr_assert_lt(blocks(&b), before, "unmap frees blocks where the file system can");
	r = submit_dwz(&b, T_WRITE_ZEROES, &last, 1, 16);
	expect_done(&b, &r, S_OK, 1, "the last sector");
	expect_file_pristine(&b, 0, 3 * 512, "before");
	expect_file_zero(&b, 3 * 512, 21 * 512, "zeroed");
	expect_file_pristine(&b, 24 * 512, 76 * 512, "between");
	expect_file_zero(&b, 100 * 512, 28 * 512, "zeroed with unmap");
	expect_file_pristine(&b, 128 * 512, DISK_SIZE - 129 * 512, "after");
	expect_file_zero(&b, DISK_SIZE - 512, 512, "last sector");
	cr_assert_eq(lseek(b.fd, 0, SEEK_END), DISK_SIZE, "the size stays");
	bx_close(&b);
}

struct dwz_case {
	uint32_t type;
	struct seg s[17];
	unsigned int n;
	uint32_t bytes;
	uint8_t status;
	const char *why;
};

Test(virtio_blk, discard_and_write_zeroes_reject_malformed_segments)
{
	const struct dwz_case cases[] = {
		{ T_WRITE_ZEROES, { { 0 } }, 0, 0, S_IOERR, "no segment at all" },
		{ T_WRITE_ZEROES, { { 0, 1, 0 } }, 1, 8, S_IOERR, "half a segment" },
		{ T_WRITE_ZEROES, { { 0, 1, 0 }, { 2, 1, 0 } }, 2, 24, S_IOERR, "1.5 segments" },
		{ T_WRITE_ZEROES, { { 0, 1, 0 } }, 17, 17 * 16, S_IOERR, "17 segments, 16 allowed" },
		{ T_WRITE_ZEROES, { { 0, 1, 2 } }, 1, 16, S_UNSUPP, "reserved flag bit" },
		{ T_WRITE_ZEROES, { { 0, 1, 0x80000001u } }, 1, 16, S_UNSUPP, "reserved flag bit with unmap" },
		{ T_DISCARD, { { 0, 1, 1 } }, 1, 16, S_UNSUPP, "DISCARD with unmap" },
		{ T_DISCARD, { { 0, 1, 4 } }, 1, 16, S_UNSUPP, "DISCARD with a reserved flag" },
		{ T_WRITE_ZEROES, { { 0, (1u << 21) + 1, 0 } }, 1, 16, S_IOERR, "more than max_write_zeroes_sectors" },
		{ T_DISCARD, { { 0, (1u << 21) + 1, 0 } }, 1, 16, S_IOERR, "more than max_discard_sectors" },
		{ T_WRITE_ZEROES, { { CAPACITY - 1, 2, 0 } }, 1, 16, S_IOERR, "past the end" },
		{ T_DISCARD, { { CAPACITY, 1, 0 } }, 1, 16, S_IOERR, "starts at the end" },
		{ T_WRITE_ZEROES, { { UINT64_MAX, 1, 0 } }, 1, 16, S_IOERR, "sector UINT64_MAX" },
		{ T_WRITE_ZEROES, { { UINT64_MAX - 1, 4, 0 } }, 1, 16, S_IOERR, "sector + count wraps" },
		{ T_WRITE_ZEROES, { { 4, 4, 0 }, { CAPACITY, 1, 0 } }, 2, 32, S_IOERR, "good then bad: none done" },
		{ T_DISCARD, { { 4, 4, 0 }, { 8, 4, 8 } }, 2, 32, S_UNSUPP, "good then bad flags: none done" },
	};

	for (unsigned int i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct dwz_case *c = &cases[i];
		struct seg segs[17];
		struct bx b;
		struct rq r;

		bx_open(&b, false, "");
		if (c->type == T_DISCARD && !(b.dev->device_features & F_DISCARD)) {
			bx_close(&b);
			continue; /* not offered here: covered by the UNSUPP test */
		}
		for (unsigned int j = 0; j < 17; j++)
			segs[j] = c->n == 17 ? c->s[0] : c->s[j];
		r = submit_dwz(&b, c->type, segs, c->n, c->bytes);
		expect_done(&b, &r, c->status, 1, c->why);
		expect_file_pristine(&b, 0, DISK_SIZE, c->why);
		bx_close(&b);
	}
}

Test(virtio_blk, dwz_extra_writable_bytes_and_not_negotiated)
{
	struct bx b;
	struct blk_config c;
	struct vqm_buf bufs[] = { { 0, HDR, false }, { 0, 16, false }, { 0, 4, true } };
	struct seg s = { 0, 1, 0 };
	uint16_t head;
	struct rq r;

	bx_open(&b, false, "");
	head = vqm_chain(&b.m, bufs, 3);
	put_hdr(&b, bufs[0].addr, T_WRITE_ZEROES, 0);
	memcpy(vqm_host(&b.m, bufs[1].addr, 8), &(uint64_t){ 0 }, 8);
	memcpy(vqm_host(&b.m, bufs[1].addr + 8, 4), &(uint32_t){ htole32(1) }, 4);
	vqm_publish(&b.m, head);
	kick(&b);
	expect_used(&b, head, 1, "status after 3 stray writable bytes");
	cr_assert_eq(*(uint8_t *)vqm_host(&b.m, bufs[2].addr + 3, 1), S_IOERR);
	expect_file_pristine(&b, 0, 512, "not zeroed");
	bx_close(&b);

	memset(&b, 0, sizeof(b));
	make_disk(&b, DISK_SIZE);
	c = config_for(&b, false, "");
	bx_start(&b, &c, F_DISCARD | F_WRITE_ZEROES);
	r = submit_dwz(&b, T_WRITE_ZEROES, &s, 1, 16);
	expect_done(&b, &r, S_UNSUPP, 1, "WRITE_ZEROES not negotiated");
	r = submit_dwz(&b, T_DISCARD, &s, 1, 16);
	expect_done(&b, &r, S_UNSUPP, 1, "DISCARD not negotiated");
	expect_file_pristine(&b, 0, 512, "nothing done");
	bx_close(&b);
}

static uint32_t cfg32(struct virtio_dev *d, uint32_t off)
{
	uint32_t v;

	cr_assert_eq(d->ops->config_read(d, off, &v, 4), 0, "config offset %u", off);
	return le32toh(v);
}

Test(virtio_blk, config_space)
{
	struct bx b;
	struct virtio_dev *d;
	uint64_t cap;
	uint8_t buf[8], zero[8] = { 0 }, before[60], after[60];

	bx_open(&b, false, "");
	d = b.dev;
	cr_assert_eq(d->device_id, 2);
	cr_assert_str_eq(d->ops->name, "blk");
	cr_assert_eq(d->nqueues, 1);
	cr_assert_eq(d->queues[0].max_size, 256);
	cr_assert_eq(d->ops->config_read(d, 0, &cap, 8), 0);
	cr_assert_eq(le64toh(cap), CAPACITY, "capacity in 512-byte sectors");
	cr_assert_eq(cfg32(d, 0) | (uint64_t)cfg32(d, 4) << 32, CAPACITY, "read as two halves");
	cr_assert_eq(cfg32(d, 12), 254, "seg_max: the chain limit minus header and status");
	cr_assert_eq(cfg32(d, 20), 512, "blk_size");
	cr_assert_eq(cfg32(d, 48), 1u << 21, "max_write_zeroes_sectors");
	cr_assert_eq(cfg32(d, 52), 16, "max_write_zeroes_seg");
	if (d->device_features & F_DISCARD) {
		cr_assert_eq(cfg32(d, 36), 1u << 21, "max_discard_sectors");
		cr_assert_eq(cfg32(d, 40), 16, "max_discard_seg");
		cr_assert_eq(cfg32(d, 44), 8, "discard_sector_alignment");
		cr_assert_eq(cfg32(d, 56) & 0xff, 1, "write_zeroes_may_unmap");
	}

	memset(buf, 0x55, sizeof(buf));
	cr_assert_eq(d->ops->config_read(d, 60, buf, 1), -EINVAL, "one past the end");
	cr_assert_eq(buf[0], 0, "reads zeros there");
	memset(buf, 0x55, sizeof(buf));
	cr_assert_eq(d->ops->config_read(d, 56, buf, 8), -EINVAL, "straddles the end");
	cr_assert_eq(memcmp(buf, zero, 8), 0);
	cr_assert_eq(d->ops->config_read(d, UINT32_MAX, buf, 2), -EINVAL, "offset + len wraps");
	cr_assert_eq(d->ops->config_read(d, UINT32_MAX - 1, buf, 4), -EINVAL, "offset + len wraps to 2");
	cr_assert_eq(d->ops->config_read(d, 0x1000, buf, 4), -EINVAL);
	cr_assert_eq(d->ops->config_read(d, 60, buf, 0), 0, "an empty read at the end");

	cr_assert_eq(d->ops->config_read(d, 0, before, 60), 0);
	cr_assert_eq(d->ops->config_write(d, 32, zero, 1), 0, "writeback: ignored");
	cr_assert_eq(d->ops->config_write(d, 0, zero, 8), 0, "capacity: ignored");
	cr_assert_eq(d->ops->config_write(d, 58, zero, 4), -EINVAL);
	cr_assert_eq(d->ops->config_write(d, UINT32_MAX, zero, 2), -EINVAL);
	cr_assert_eq(d->ops->config_read(d, 0, after, 60), 0);
	cr_assert_eq(memcmp(before, after, 60), 0, "config writes change nothing");
	bx_close(&b);
}

Test(virtio_blk, malformed_chain_needs_reset)
{
	struct bx b;
	struct vqm_buf rd = { 0, 512, true };
	struct rq r;

	bx_open(&b, false, "");
	vqm_set_desc(&b.m, 0, VQM_HOLE, 16, 0, 0);
	vqm_publish(&b.m, 0);
	b.m.next_desc = 1;
	kick(&b);
	cr_assert(b.dev->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
	cr_assert_eq(b.config_irqs, 1, "the driver is told");
	cr_assert_eq(vqm_used_idx(&b.m), 0, "nothing completed");
	r = submit(&b, T_IN, 0, &rd, 1, false);
	kick(&b);
	cr_assert_eq(vqm_used_idx(&b.m), 0, "a broken device serves nothing until reset");
	cr_assert_eq(*(uint8_t *)vqm_host(&b.m, r.status, 1), UNTOUCHED);
	bx_close(&b);
}

Test(virtio_blk, memory_unmapped_after_pop)
{
	struct bx b;
	struct vqm_buf rd = { 0, 512, true };
	struct rq r;

	bx_open(&b, false, "");
	rd.addr = vqm_alloc(&b.m, 512, 8);
	b.tas.poison = rd.addr;
	b.tas.poison_len = 512;
	b.tas.allow = 1; /* the check when the chain is popped */
	r = submit(&b, T_IN, 0, &rd, 1, false);
	expect_done(&b, &r, S_IOERR, 1, "data buffer gone: IOERR, the device carries on");

	rd.addr = 0;
	r = submit(&b, T_IN, 0, &rd, 1, false);
	b.tas.poison = r.status;
	b.tas.poison_len = 1;
	b.tas.allow = 1;
	kick(&b);
	cr_assert(b.dev->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET, "status byte gone: cannot complete honestly");
	cr_assert_eq(vqm_used_idx(&b.m), 1, "and it is not completed");
	bx_close(&b);
}

Test(virtio_blk, one_interrupt_per_batch)
{
	struct bx b;
	struct vqm_buf rd[3] = { { 0, 512, true }, { 0, 512, true }, { 0, 512, true } };
	struct rq r[3];
	struct blk_config c;

	/* Without EVENT_IDX the driver wants an interrupt for every used entry: only batching makes it one. */
	memset(&b, 0, sizeof(b));
	make_disk(&b, DISK_SIZE);
	c = config_for(&b, false, "");
	bx_start(&b, &c, VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX));
	for (unsigned int i = 0; i < 3; i++)
		r[i] = submit(&b, T_IN, i, &rd[i], 1, false);
	kick(&b);
	for (unsigned int i = 0; i < 3; i++)
		expect_used(&b, r[i].head, 513, "batch");
	cr_assert_eq(b.queue_irqs, 1);
	bx_close(&b);
}

/* The device's own descriptor for the disk, found through /proc. */
static int device_fd(struct bx *b)
{
	char want[PATH_MAX], link[PATH_MAX], name[64];
	DIR *dir = opendir("/proc/self/fd");
	struct dirent *e;
	int found = -1;

	cr_assert_not_null(realpath(b->path, want));
	cr_assert_not_null(dir);
	while ((e = readdir(dir))) {
		int fd = atoi(e->d_name);
		ssize_t n;

		if (e->d_name[0] == '.' || fd == b->fd || fd == dirfd(dir))
			continue;
		snprintf(name, sizeof(name), "/proc/self/fd/%d", fd);
		n = readlink(name, link, sizeof(link) - 1);
		if (n < 0)
			continue;
		link[n] = '\0';
		if (!strcmp(link, want))
			found = fd;
	}
	closedir(dir);
	cr_assert_geq(found, 0);
	return found;
}

Test(virtio_blk, host_errors_are_ioerr_and_the_device_carries_on)
{
	struct bx b;
	struct vqm_buf rd = { 0, 512, true }, wr = { 0, 512, false };
	char stats[512];
	struct rq r;
	int full;

	bx_open(&b, false, "");
	cr_assert_eq(ftruncate(b.fd, 0), 0, "the image shrinks under the device");
	r = submit(&b, T_IN, 8, &rd, 1, false);
	expect_done(&b, &r, S_IOERR, 1, "read at end of file");
	cr_assert_eq(ftruncate(b.fd, DISK_SIZE), 0);
	rd.addr = 0;
	r = submit(&b, T_IN, 8, &rd, 1, false);
	expect_done(&b, &r, S_OK, 513, "served again once the file is back");

	full = open("/dev/full", O_RDWR | O_CLOEXEC);
	cr_assert_geq(full, 0);
	cr_assert_geq(dup2(full, device_fd(&b)), 0, "every write now fails with ENOSPC");
	close(full);
	r = submit(&b, T_OUT, 0, &wr, 1, false);
	expect_done(&b, &r, S_IOERR, 1, "ENOSPC");
	virtio_blk_stats(b.blk, stats, sizeof(stats));
	cr_assert(strstr(stats, "2 read, 1 write"), "%s", stats);
	cr_assert(strstr(stats, "2 I/O errors (2 from the host, last: No space left on device)"), "%s", stats);
	cr_assert(strstr(stats, "512 bytes read, 0 written"), "%s", stats);
	bx_close(&b);
}

struct parse_case {
	const char *arg;
	const char *path;
	bool readonly;
	const char *serial;
};

Test(virtio_blk, parse_opts_good)
{
	char longpath[PATH_MAX + 8];
	const struct parse_case cases[] = {
		{ "path=disk.img", "disk.img", false, "" },
		{ "path=/var/a b.img,readonly=on", "/var/a b.img", true, "" },
		{ "readonly=off,serial=SN-42,path=x", "x", false, "SN-42" },
		{ "serial=ABCDEFGHIJKLMNOPQRST,path=y", "y", false, "ABCDEFGHIJKLMNOPQRST" },
		{ "path=a,,b.img,readonly=on", "a,b.img", true, "" },
		{ "path=trailing,,", "trailing,", false, "" },
		{ "path=x=y", "x=y", false, "" },
	};
	struct blk_config c;
	char err[256];

	for (unsigned int i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		cr_assert_eq(blk_parse_opts(cases[i].arg, &c, err, sizeof(err)), 0, "%s: %s", cases[i].arg, err);
		cr_assert_str_eq(c.path, cases[i].path, "%s", cases[i].arg);
		cr_assert_eq(c.readonly, cases[i].readonly, "%s", cases[i].arg);
		cr_assert_str_eq(c.serial, cases[i].serial, "%s", cases[i].arg);
	}
	memset(longpath, 0, sizeof(longpath));
	strcpy(longpath, "path=");
	memset(longpath + 5, 'p', PATH_MAX - 1);
	cr_assert_eq(blk_parse_opts(longpath, &c, err, sizeof(err)), 0, "PATH_MAX - 1 bytes fit");
	cr_assert_eq(strlen(c.path), PATH_MAX - 1);
	longpath[5 + PATH_MAX - 1] = 'p';
	cr_assert_eq(blk_parse_opts(longpath, &c, err, sizeof(err)), -EINVAL, "one more does not");
	cr_assert(strstr(err, "longer than"), "%s", err);
}

struct bad_case {
	const char *arg;
	const char *says; /* part of the message */
};

Test(virtio_blk, parse_opts_bad)
{
	const struct bad_case cases[] = {
		{ "", "needs a value" },
		{ "disk.img", "write --disk path=disk.img" },
		{ "disk.img,readonly=on", "not a bare file name" },
		{ "readonly=on", "needs path=FILE" },
		{ "path=", "path= is empty" },
		{ "path=a,path=b", "path= is given twice" },
		{ "path=a,readonly=yes", "readonly= takes on or off" },
		{ "path=a,readonly=", "readonly= takes on or off" },
		{ "path=a,readonly", "readonly has no value" },
		{ "path=a,size=1G", "unknown option 'size'" },
		{ "path=a,", "empty option" },
		{ ",path=a", "empty option" },
		{ "path=a,readonly=on,,x", "readonly= takes on or off" },
		{ "path=a,,,size=1", "unknown option 'size'" },
		{ "path=a,serial=ABCDEFGHIJKLMNOPQRSTU", "longer than 20 characters" },
		{ "path=a,serial=", "serial= is empty" },
		{ "path=a,serial=tab\there", "printable ASCII" },
		{ "path=a,serial=caf\xc3\xa9", "printable ASCII" },
		{ "PATH=a", "unknown option 'PATH'" },
	};
	struct blk_config c;
	char err[256];

	for (unsigned int i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		cr_assert_eq(blk_parse_opts(cases[i].arg, &c, err, sizeof(err)), -EINVAL, "'%s' accepted",
			     cases[i].arg);
		cr_assert(strstr(err, cases[i].says), "'%s': message '%s' should say '%s'", cases[i].arg, err,
			  cases[i].says);
	}
	cr_assert_eq(blk_parse_opts(NULL, &c, err, sizeof(err)), -EINVAL);
}

Test(virtio_blk, new_refuses_bad_images_with_a_clear_message)
{
	struct vqm m;
	struct virtio_blk *blk = NULL;
	struct blk_config c = { .path = "/nonexistent/moat/disk.img" };
	char err[512], dir[] = "/tmp/moat-blkdir-XXXXXX", fifo[PATH_MAX + 8];
	int fd;

	vqm_init(&m, QSIZE);
	cr_assert_eq(virtio_blk_new(&c, &m.as, &blk, err, sizeof(err)), -ENOENT);
	cr_assert(strstr(err, "/nonexistent/moat/disk.img") && strstr(err, "does not exist"), "%s", err);

	cr_assert_not_null(mkdtemp(dir));
	strcpy(c.path, dir);
	cr_assert_lt(virtio_blk_new(&c, &m.as, &blk, err, sizeof(err)), 0, "a directory, read-write");
	cr_assert(strstr(err, dir), "%s", err);
	c.readonly = true;
	cr_assert_eq(virtio_blk_new(&c, &m.as, &blk, err, sizeof(err)), -EINVAL, "a directory, read-only");
	cr_assert(strstr(err, "not a regular file or a block device"), "%s", err);

	snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
	cr_assert_eq(mkfifo(fifo, 0600), 0);
	strcpy(c.path, fifo);
	cr_assert_eq(virtio_blk_new(&c, &m.as, &blk, err, sizeof(err)), -EINVAL, "a FIFO is refused, not waited on");
	unlink(fifo);

	snprintf(fifo, sizeof(fifo), "%s/tiny", dir);
	fd = open(fifo, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "0123456789", 10), 10);
	close(fd);
	strcpy(c.path, fifo);
	c.readonly = false;
	cr_assert_eq(virtio_blk_new(&c, &m.as, &blk, err, sizeof(err)), -EINVAL, "10 bytes");
	cr_assert(strstr(err, "smaller than one 512-byte sector") && strstr(err, fifo), "%s", err);
	unlink(fifo);
	rmdir(dir);
	virtio_blk_free(NULL);
	vqm_fini(&m);
}

Test(virtio_blk, size_not_a_multiple_of_512_is_rounded_down_with_a_warning)
{
	struct bx b;
	struct blk_config c;
	struct virtio_blk *blk;
	char err[512];
	uint64_t cap;

	memset(&b, 0, sizeof(b));
	make_disk(&b, 4096 + 100);
	c = config_for(&b, false, "");
	vqm_init(&b.m, QSIZE);
	cr_assert_eq(virtio_blk_new(&c, &b.m.as, &blk, err, sizeof(err)), 0);
	cr_assert(strstr(err, "4196 bytes") && strstr(err, "first 4096") && strstr(err, b.path), "%s", err);
	cr_assert_eq(virtio_blk_dev(blk)->ops->config_read(virtio_blk_dev(blk), 0, &cap, 8), 0);
	cr_assert_eq(le64toh(cap), 8);
	virtio_blk_free(blk);
	vqm_fini(&b.m);
	close(b.fd);
	unlink(b.path);
}

/* Swap the device's file for /dev/null: writes succeed, fdatasync fails (EINVAL), so a sync shows. */
static void back_with_dev_null(struct bx *b)
{
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);

	cr_assert_geq(null, 0);
	cr_assert_geq(dup2(null, device_fd(b)), 0);
	close(null);
}

Test(virtio_blk, write_through_unless_flush_is_negotiated)
{
	struct vqm_buf w = { 0, 512, false };
	struct blk_config c;
	struct bx b;
	struct rq r;

	bx_open(&b, false, "");
	back_with_dev_null(&b);
	r = submit(&b, T_OUT, 0, &w, 1, false);
	expect_done(&b, &r, S_OK, 1, "write-back: OUT completes without a sync");
	r = submit(&b, T_FLUSH, 0, NULL, 0, false);
	expect_done(&b, &r, S_IOERR, 1, "FLUSH syncs, and reports the failure");
	bx_close(&b);

	memset(&b, 0, sizeof(b));
	make_disk(&b, DISK_SIZE);
	c = config_for(&b, false, "");
	bx_start(&b, &c, F_FLUSH);
	back_with_dev_null(&b);
	w.addr = 0;
	r = submit(&b, T_OUT, 0, &w, 1, false);
	expect_done(&b, &r, S_IOERR, 1, "write-through: OUT syncs before completing");
	bx_close(&b);
}
