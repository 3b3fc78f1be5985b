#include "devices/virtio/blk.h"

#include <endian.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devices/virtio/blk_file.h"
#include "vmm/log.h"

/* Feature bits (5.2.3). */
#define BLK_F_SEG_MAX 2
#define BLK_F_RO 5
#define BLK_F_BLK_SIZE 6
#define BLK_F_FLUSH 9
#define BLK_F_DISCARD 13
#define BLK_F_WRITE_ZEROES 14

/* Request types and status values (5.2.6). */
#define BLK_T_IN 0u
#define BLK_T_OUT 1u
#define BLK_T_FLUSH 4u
#define BLK_T_GET_ID 8u
#define BLK_T_DISCARD 11u
#define BLK_T_WRITE_ZEROES 13u
#define BLK_S_OK 0u
#define BLK_S_IOERR 1u
#define BLK_S_UNSUPP 2u

#define SECTOR 512u
#define QUEUE_SIZE 256u
/* Data descriptors per request: a chain also carries the header and the status. */
#define SEG_MAX (VIRTQ_MAX_SEGS - 2)
/* DISCARD / WRITE_ZEROES limits: bound the work one request can ask of the worker. */
#define DWZ_MAX_SEG 16u
#define DWZ_MAX_SECTORS (1u << 21) /* 1 GiB per segment */
#define DWZ_F_UNMAP 1u
/* 4 KiB, the block size of common host file systems: a smaller hole is only zeroed, never freed. */
#define DISCARD_ALIGN_SECTORS 8u
/* iovecs per preadv/pwritev: one per contiguous run, enough for SEG_MAX segments in one call. */
#define IOV_BATCH 256u

/* Wire layouts, little endian. */
struct blk_req_hdr {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};
_Static_assert(sizeof(struct blk_req_hdr) == 16, "request header layout");

struct blk_dwz_seg {
	uint64_t sector;
	uint32_t num_sectors;
	uint32_t flags;
};
_Static_assert(sizeof(struct blk_dwz_seg) == 16, "discard/write-zeroes segment layout");

/* struct virtio_blk_config up to the write-zeroes fields; later fields belong to features not offered. */
struct blk_config_space {
	uint64_t capacity;
	uint32_t size_max;
	uint32_t seg_max;
	uint16_t cylinders;
	uint8_t heads, sectors;
	uint32_t blk_size;
	uint8_t physical_block_exp, alignment_offset;
	uint16_t min_io_size;
	uint32_t opt_io_size;
	uint8_t writeback, unused0;
	uint16_t num_queues;
	uint32_t max_discard_sectors, max_discard_seg, discard_sector_alignment;
	uint32_t max_write_zeroes_sectors, max_write_zeroes_seg;
	uint8_t write_zeroes_may_unmap, unused1[3];
} __attribute__((packed));
_Static_assert(offsetof(struct blk_config_space, blk_size) == 20, "config layout");
_Static_assert(offsetof(struct blk_config_space, max_discard_sectors) == 36, "config layout");
_Static_assert(sizeof(struct blk_config_space) == 60, "config layout");

struct blk_stats {
	uint64_t in, out, flush, get_id, discard, write_zeroes, unsupported;
	uint64_t bytes_read, bytes_written;
	uint64_t ioerr;      /* IOERR completions, whatever the cause */
	uint64_t host_err;   /* of which a host syscall failed */
	uint64_t no_status;  /* chains with no writable byte for a status */
	int last_host_errno;
};

struct virtio_blk {
	struct virtio_dev dev;
	struct blk_file file;
	bool readonly;
	uint64_t capacity; /* 512-byte sectors */
	char id[BLK_SERIAL_MAX]; /* GET_ID answer, NUL-padded */
	struct blk_config_space config;
	struct blk_stats stats;
};

static struct virtio_blk *to_blk(struct virtio_dev *dev)
{
	return (struct virtio_blk *)((char *)dev - offsetof(struct virtio_blk, dev));
}

static void host_error(struct virtio_blk *blk, int err)
{
	blk->stats.host_err++;
	blk->stats.last_host_errno = -err;
}

/* ------------------------------------------------------------------ requests */

/* The chain bytes [skip, skip+len) of segments from `seg` on, walked as host iovecs. */
struct span {
	const struct virtq_chain *c;
	unsigned int seg;
	uint32_t off;  /* into c->seg[seg] */
	uint32_t left; /* bytes still to go */
};

static void span_init(struct span *s, const struct virtq_chain *c, unsigned int seg, uint32_t skip, uint32_t len)
{
	while (seg < c->nseg && skip >= c->seg[seg].len)
		skip -= c->seg[seg++].len;
	*s = (struct span){ .c = c, .seg = seg, .off = skip, .left = len };
}

/* Move the span's bytes between guest memory and the file at pos, with no copy in between. */
static int span_io(struct virtio_blk *blk, struct span *s, uint64_t pos, bool write)
{
	/* OUT reads guest memory, IN writes it. */
	unsigned int perm = write ? DMA_READ : DMA_WRITE;

	while (s->left) {
		struct iovec iov[IOV_BATCH];
		uint64_t bytes = 0;
		unsigned int n = 0, dma;
		int err = 0;

		/* A read-side section (dma.h) from the translations to the end of the I/O through them. */
		dma = dma_begin(blk->dev.as);
		while (s->left && n < IOV_BATCH) {
			const struct virtq_seg *g = &s->c->seg[s->seg];
			uint32_t want = g->len - s->off < s->left ? g->len - s->off : s->left;
			uint64_t run;
			void *host;

			/*
			 * GUEST: [iova+off, +want) lies in a segment checked at pop; dma_translate checks it again
			 * now (it may have been unmapped since) and returns only the part contiguous in the host.
			 */
			err = dma_translate(blk->dev.as, g->iova + s->off, want, perm, &host, &run);
			if (err)
				break;
			iov[n++] = (struct iovec){ .iov_base = host, .iov_len = (size_t)run };
			bytes += run;
			s->left -= (uint32_t)run;
			s->off += (uint32_t)run;
			if (s->off == g->len) {
				s->seg++;
				s->off = 0;
			}
		}
		if (!err) {
			err = blk_file_rw(&blk->file, iov, n, pos, write);
			if (err)
				host_error(blk, err);
		}
		dma_end(blk->dev.as, dma);
		if (err)
			return err;
		pos += bytes;
	}
	return 0;
}

/* [sector, sector+n) inside the disk, without overflow. */
static bool range_ok(const struct virtio_blk *blk, uint64_t sector, uint64_t n)
{
	return sector <= blk->capacity && n <= blk->capacity - sector;
}

static bool writeback(const struct virtio_blk *blk)
{
	return blk->dev.driver_features & VIRTIO_BIT(BLK_F_FLUSH);
}

static uint8_t flush(struct virtio_blk *blk)
{
	int err = blk_file_sync(&blk->file);

	if (err) {
		host_error(blk, err);
		return BLK_S_IOERR;
	}
	return BLK_S_OK;
}

/* After a write: a driver without FLUSH was promised write-through (5.2.6, stable writes, case 1). */
static uint8_t write_done(struct virtio_blk *blk)
{
	if (!writeback(blk))
		return flush(blk);
	return BLK_S_OK;
}

/*
 * IN and OUT. The header is the whole readable part of an IN, the status the whole writable part
 * of an OUT: data on the wrong side means the driver is confused about the direction, so refuse
 * rather than guess.
 */
static uint8_t blk_rw(struct virtio_blk *blk, const struct virtq_chain *c, uint64_t sector, bool write,
		      uint32_t *data_out)
{
	uint32_t len = write ? c->read_len - sizeof(struct blk_req_hdr) : c->write_len - 1;
	struct span s;

	if (write && blk->readonly)
		return BLK_S_IOERR; /* and not a byte written (5.2.6) */
	if (write ? c->write_len != 1 : c->read_len != sizeof(struct blk_req_hdr))
		return BLK_S_IOERR;
	if (len % SECTOR || !range_ok(blk, sector, len / SECTOR))
		return BLK_S_IOERR;
	if (write)
		span_init(&s, c, 0, sizeof(struct blk_req_hdr), len);
	else
		span_init(&s, c, c->nread, 0, len);
	if (span_io(blk, &s, sector * SECTOR, write))
		return BLK_S_IOERR;
	if (!write) {
		blk->stats.bytes_read += len;
		*data_out = len;
		return BLK_S_OK;
	}
	blk->stats.bytes_written += len;
	return write_done(blk);
}

static uint8_t blk_get_id(struct virtio_blk *blk, const struct virtq *q, const struct virtq_chain *c,
			  uint32_t *data_out)
{
	/* The driver gives 20 bytes; a shorter buffer gets a truncated id, a longer one only 20. */
	uint32_t n = c->write_len - 1 < BLK_SERIAL_MAX ? c->write_len - 1 : BLK_SERIAL_MAX;

	if (c->read_len != sizeof(struct blk_req_hdr))
		return BLK_S_IOERR;
	/* GUEST: n fits in the writable part before the status; chain_write checks the mapping. */
	if (virtq_chain_write(q, c, 0, blk->id, n))
		return BLK_S_IOERR;
	*data_out = n;
	return BLK_S_OK;
}

/* One segment's verdict before anything is done (5.2.6: unknown flags and DISCARD+unmap are UNSUPP). */
static uint8_t dwz_check(const struct virtio_blk *blk, const struct blk_dwz_seg *s, bool discard)
{
	uint32_t flags = le32toh(s->flags), n = le32toh(s->num_sectors);

	if ((flags & ~DWZ_F_UNMAP) || (discard && (flags & DWZ_F_UNMAP)))
		return BLK_S_UNSUPP;
	if (n > DWZ_MAX_SECTORS || !range_ok(blk, le64toh(s->sector), n))
		return BLK_S_IOERR;
	return BLK_S_OK;
}

static uint8_t blk_discard_zeroes(struct virtio_blk *blk, const struct virtq *q, const struct virtq_chain *c,
				  bool discard)
{
	struct blk_dwz_seg seg[DWZ_MAX_SEG];
	uint32_t bytes = c->read_len - sizeof(struct blk_req_hdr);
	unsigned int n = bytes / sizeof(seg[0]);
	uint8_t st;

	/* Never offered on a read-only disk, so this also keeps writes off one. */
	if (!(blk->dev.driver_features & VIRTIO_BIT(discard ? BLK_F_DISCARD : BLK_F_WRITE_ZEROES)))
		return BLK_S_UNSUPP;
	if (c->write_len != 1 || bytes == 0 || bytes % sizeof(seg[0]) || n > DWZ_MAX_SEG)
		return BLK_S_IOERR;
	/* GUEST: bytes <= sizeof(seg), all within the readable part; chain_read checks the mapping. */
	if (virtq_chain_read(q, c, sizeof(struct blk_req_hdr), seg, bytes))
		return BLK_S_IOERR;
	/* Every segment is checked before any is acted on: a refused request changes nothing. */
	for (unsigned int i = 0; i < n; i++) {
		st = dwz_check(blk, &seg[i], discard);
		if (st != BLK_S_OK)
			return st;
	}
	for (unsigned int i = 0; i < n; i++) {
		uint64_t off = le64toh(seg[i].sector) * SECTOR, len = (uint64_t)le32toh(seg[i].num_sectors) * SECTOR;
		int err;

		if (!len)
			continue;
		if (discard)
			err = blk_file_discard(&blk->file, off, len);
		else
			err = blk_file_zero(&blk->file, off, len, le32toh(seg[i].flags) & DWZ_F_UNMAP);
		if (err) {
			host_error(blk, err);
			return BLK_S_IOERR;
		}
	}
	return write_done(blk);
}

static uint8_t blk_dispatch(struct virtio_blk *blk, const struct virtq *q, const struct virtq_chain *c,
			    const struct blk_req_hdr *hdr, uint32_t *data_out)
{
	uint64_t sector = le64toh(hdr->sector);

	switch (le32toh(hdr->type)) {
	case BLK_T_IN:
		blk->stats.in++;
		return blk_rw(blk, c, sector, false, data_out);
	case BLK_T_OUT:
		blk->stats.out++;
		return blk_rw(blk, c, sector, true, data_out);
	case BLK_T_FLUSH:
		/* sector and any data are ignored: the spec only asks the driver to leave them out. */
		blk->stats.flush++;
		return flush(blk);
	case BLK_T_GET_ID:
		blk->stats.get_id++;
		return blk_get_id(blk, q, c, data_out);
	case BLK_T_DISCARD:
		blk->stats.discard++;
		return blk_discard_zeroes(blk, q, c, true);
	case BLK_T_WRITE_ZEROES:
		blk->stats.write_zeroes++;
		return blk_discard_zeroes(blk, q, c, false);
	default:
		blk->stats.unsupported++;
		return BLK_S_UNSUPP;
	}
}

/*
 * Serve one request and write its status into the last writable byte; *used counts the bytes
 * written (data before the status, then the status). -EFAULT if the status cannot be written:
 * the chain cannot be completed honestly.
 */
static int blk_request(struct virtio_blk *blk, const struct virtq *q, const struct virtq_chain *c, uint32_t *used)
{
	struct blk_req_hdr hdr;
	uint32_t data_out = 0;
	uint8_t status;

	if (c->write_len == 0) {
		/* Nowhere to put a status: hand the buffers back untouched so the driver is not stuck. */
		blk->stats.no_status++;
		*used = 0;
		return 0;
	}
	/* GUEST: the header is read only if the readable part holds it; chain_read checks the mapping. */
	if (c->read_len < sizeof(hdr) || virtq_chain_read(q, c, 0, &hdr, sizeof(hdr)))
		status = BLK_S_IOERR;
	else
		status = blk_dispatch(blk, q, c, &hdr, &data_out);
	if (status == BLK_S_IOERR)
		blk->stats.ioerr++;
	/* GUEST: write_len > 0, so the status byte is inside the writable part; chain_write checks it. */
	if (virtq_chain_write(q, c, c->write_len - 1, &status, 1))
		return -EFAULT;
	*used = (status == BLK_S_OK ? data_out : 0) + 1;
	return 0;
}

static int blk_serve(struct virtio_dev *dev, const struct virtq *q, const struct virtq_chain *c, uint32_t *used)
{
	return blk_request(to_blk(dev), q, c, used);
}

static void blk_queue_notify(struct virtio_dev *dev, unsigned int queue)
{
	virtio_serve_queue(dev, queue, blk_serve);
}

/* ------------------------------------------------------------------ device ops */

static int blk_activate(struct virtio_dev *dev)
{
	return 0; /* requests are served synchronously as they are kicked: nothing to start */
}

static void blk_reset(struct virtio_dev *dev)
{
	/* Nothing in flight: every request completes inside queue_notify. Statistics stay. */
}

static int blk_config_read(struct virtio_dev *dev, uint32_t off, void *buf, uint32_t len)
{
	const struct virtio_blk *blk = to_blk(dev);

	/* GUEST: off and len bounded against the config size without overflow; beyond reads zeros. */
	if (off > sizeof(blk->config) || len > sizeof(blk->config) - off) {
		memset(buf, 0, len);
		return -EINVAL;
	}
	memcpy(buf, (const uint8_t *)&blk->config + off, len);
	return 0;
}

static int blk_config_write(struct virtio_dev *dev, uint32_t off, const void *buf, uint32_t len)
{
	/* Every field is read-only (writeback needs CONFIG_WCE, not offered): ignore in-range writes. */
	if (off > sizeof(struct blk_config_space) || len > sizeof(struct blk_config_space) - off)
		return -EINVAL;
	return 0;
}

static const struct virtio_dev_ops blk_ops = {
	.name = "blk",
	.activate = blk_activate,
	.reset = blk_reset,
	.queue_notify = blk_queue_notify,
	.config_read = blk_config_read,
	.config_write = blk_config_write,
};

/* ------------------------------------------------------------------ construction */

static void fill_config(struct virtio_blk *blk)
{
	struct blk_config_space *c = &blk->config;

	memset(c, 0, sizeof(*c));
	c->capacity = htole64(blk->capacity);
	c->seg_max = htole32(SEG_MAX);
	c->blk_size = htole32(SECTOR);
	if (blk->file.punch) {
		c->max_discard_sectors = htole32(DWZ_MAX_SECTORS);
		c->max_discard_seg = htole32(DWZ_MAX_SEG);
		c->discard_sector_alignment = htole32(DISCARD_ALIGN_SECTORS);
	}
	if (!blk->readonly) {
		c->max_write_zeroes_sectors = htole32(DWZ_MAX_SECTORS);
		c->max_write_zeroes_seg = htole32(DWZ_MAX_SEG);
		c->write_zeroes_may_unmap = blk->file.punch;
	}
}

int virtio_blk_new(const struct blk_config *cfg, const struct dma_as *as, struct virtio_blk **out, char *err,
		   size_t errlen)
{
	static const uint16_t sizes[1] = { QUEUE_SIZE };
	struct virtio_blk *blk;
	uint64_t features;
	int r;

	if (errlen)
		err[0] = '\0';
	blk = calloc(1, sizeof(*blk));
	if (!blk)
		return set_err(err, errlen, -ENOMEM, "out of memory for disk '%s'", cfg->path);
	r = blk_file_open(&blk->file, cfg->path, cfg->readonly, err, errlen);
	if (r) {
		free(blk);
		return r;
	}
	blk->readonly = cfg->readonly;
	blk->capacity = blk->file.size / SECTOR;
	/* calloc left the rest zero: GET_ID's NUL padding. */
	memcpy(blk->id, cfg->serial, strnlen(cfg->serial, sizeof(blk->id)));
	features = VIRTIO_BIT(BLK_F_SEG_MAX) | VIRTIO_BIT(BLK_F_BLK_SIZE) | VIRTIO_BIT(BLK_F_FLUSH) |
		   VIRTIO_BIT(VIRTIO_RING_F_INDIRECT_DESC) | VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX);
	/* Zeroing always works (plain writes as a last resort); freeing blocks only where holes do. */
	features |= cfg->readonly ? VIRTIO_BIT(BLK_F_RO) : VIRTIO_BIT(BLK_F_WRITE_ZEROES);
	if (blk->file.punch)
		features |= VIRTIO_BIT(BLK_F_DISCARD);
	r = virtio_dev_init(&blk->dev, &blk_ops, VIRTIO_ID_BLOCK, features, 1, sizes, as, (struct virtio_irq){ 0 });
	if (r) {
		blk_file_close(&blk->file);
		free(blk);
		return set_err(err, errlen, r, "cannot set up the virtio-blk device for '%s'", cfg->path);
	}
	fill_config(blk);
	if (blk->file.size % SECTOR)
		snprintf(err, errlen,
			 "disk image '%s' is %llu bytes, not a multiple of 512: the guest sees only the first %llu; "
			 "resize it to silence this (truncate -s %llu '%s')",
			 cfg->path, (unsigned long long)blk->file.size, (unsigned long long)(blk->capacity * SECTOR),
			 (unsigned long long)((blk->capacity + 1) * SECTOR), cfg->path);
	*out = blk;
	return 0;
}

struct virtio_dev *virtio_blk_dev(struct virtio_blk *blk)
{
	return &blk->dev;
}

void virtio_blk_free(struct virtio_blk *blk)
{
	if (!blk)
		return;
	virtio_dev_fini(&blk->dev);
	blk_file_close(&blk->file);
	free(blk);
}

void virtio_blk_stats(const struct virtio_blk *blk, char *buf, size_t len)
{
	const struct blk_stats *s = &blk->stats;

	snprintf(buf, len,
		 "requests: %llu read, %llu write, %llu flush, %llu get-id, %llu discard, %llu write-zeroes, "
		 "%llu unsupported; %llu bytes read, %llu written; %llu I/O errors (%llu from the host%s%s), "
		 "%llu without a status byte",
		 (unsigned long long)s->in, (unsigned long long)s->out, (unsigned long long)s->flush,
		 (unsigned long long)s->get_id, (unsigned long long)s->discard, (unsigned long long)s->write_zeroes,
		 (unsigned long long)s->unsupported, (unsigned long long)s->bytes_read,
		 (unsigned long long)s->bytes_written, (unsigned long long)s->ioerr, (unsigned long long)s->host_err,
		 s->last_host_errno ? ", last: " : "", s->last_host_errno ? strerror(s->last_host_errno) : "",
		 (unsigned long long)s->no_status);
}
