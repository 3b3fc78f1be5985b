#include "devices/virtio/virtqueue.h"

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "devices/virtio/virtio.h"

/* Wire layout of a descriptor (little endian, VIRTIO 1.2 2.7.5). */
struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};
_Static_assert(sizeof(struct virtq_desc) == VIRTQ_DESC_SIZE, "descriptor layout");

struct virtq_used_elem {
	uint32_t id;
	uint32_t len;
};

/* Offsets inside the avail and used areas. */
#define AVAIL_FLAGS 0u
#define AVAIL_IDX 2u
#define AVAIL_RING 4u
#define USED_FLAGS 0u
#define USED_IDX 2u
#define USED_RING 4u

void virtq_reset(struct virtq *q)
{
	memset(q, 0, sizeof(*q));
}

int virtq_init(struct virtq *q, const struct dma_as *as, unsigned int size, uint64_t desc, uint64_t avail,
	       uint64_t used)
{
	int err;

	virtq_reset(q);
	if (size == 0 || size > VIRTQ_MAX_SIZE || (size & (size - 1)))
		return -EINVAL;
	if (desc % VIRTQ_DESC_ALIGN || avail % VIRTQ_AVAIL_ALIGN || used % VIRTQ_USED_ALIGN)
		return -EINVAL;
	/* GUEST: the three areas must be mapped now; every later access is translated and checked again. */
	err = dma_check(as, desc, VIRTQ_DESC_BYTES(size), DMA_READ);
	if (!err)
		err = dma_check(as, avail, VIRTQ_AVAIL_BYTES(size), DMA_READ);
	if (!err)
		err = dma_check(as, used, VIRTQ_USED_BYTES(size), DMA_READ | DMA_WRITE);
	if (err)
		return err;
	q->as = as;
	q->size = (uint16_t)size; /* 32768 fits: uint16_t holds up to 65535 */
	q->desc = desc;
	q->avail = avail;
	q->used = used;
	q->ready = true;
	return 0;
}

void virtq_set_features(struct virtq *q, uint64_t driver_features)
{
	q->event_idx = driver_features & (1ull << VIRTIO_RING_F_EVENT_IDX);
	q->indirect = driver_features & (1ull << VIRTIO_RING_F_INDIRECT_DESC);
}

/*
 * A ring index or flags word the driver updates concurrently: it must be one naturally
 * aligned 16-bit access. Alignment of the IOVA was checked in virtq_init; the host side
 * is checked here in case a translation does not preserve it.
 */
static uint16_t *ring_u16(const struct virtq *q, uint64_t iova, unsigned int perm)
{
	/* GUEST: iova is inside an area checked at init; dma_ptr re-checks it is mapped and contiguous. */
	uint16_t *p = dma_ptr(q->as, iova, sizeof(uint16_t), perm);

	return p && !((uintptr_t)p & 1) ? p : NULL;
}

/* Acquire: ring entries the driver wrote before publishing idx must be read after idx. */
static int avail_idx_acquire(const struct virtq *q, uint16_t *idx)
{
	uint16_t *p = ring_u16(q, q->avail + AVAIL_IDX, DMA_READ);

	if (!p)
		return -EFAULT;
	*idx = le16toh(__atomic_load_n(p, __ATOMIC_ACQUIRE));
	return 0;
}

static int ring_load16(const struct virtq *q, uint64_t iova, uint16_t *val)
{
	uint16_t *p = ring_u16(q, iova, DMA_READ);

	if (!p)
		return -EFAULT;
	*val = le16toh(__atomic_load_n(p, __ATOMIC_RELAXED));
	return 0;
}

static int ring_store16(const struct virtq *q, uint64_t iova, uint16_t val, int order)
{
	uint16_t *p = ring_u16(q, iova, DMA_WRITE);

	if (!p)
		return -EFAULT;
	__atomic_store_n(p, htole16(val), order);
	return 0;
}

/* avail_event sits after used->ring[size]: "notify me when avail->idx passes this". */
static int set_avail_event(const struct virtq *q, uint16_t val)
{
	return ring_store16(q, q->used + USED_RING + 8u * (uint64_t)q->size, val, __ATOMIC_RELAXED);
}

static int read_desc(const struct virtq *q, uint64_t table, uint16_t idx, struct virtq_desc *d)
{
	/* GUEST: idx < the table's entry count (checked by the caller); dma_read checks the bytes. */
	int err = dma_read(q->as, table + (uint64_t)idx * VIRTQ_DESC_SIZE, d, sizeof(*d));

	if (err)
		return err;
	d->addr = le64toh(d->addr);
	d->len = le32toh(d->len);
	d->flags = le16toh(d->flags);
	d->next = le16toh(d->next);
	return 0;
}

/* Add one data descriptor to the chain: the per-buffer rules of VIRTIO 1.2 2.7.4-2.7.5. */
static int add_segment(const struct virtq *q, struct virtq_chain *c, const struct virtq_desc *d,
		       uint64_t *total)
{
	bool write = d->flags & VIRTQ_DESC_F_WRITE;

	/* The device reports lengths in 32 bits, so a chain may not describe more. */
	*total += d->len;
	if (*total > UINT32_MAX)
		return -EINVAL;
	if (d->len == 0)
		return 0; /* allowed, and carries nothing: not even an order violation */
	if (!write && c->nseg > c->nread)
		return -EINVAL; /* device-readable after device-writable */
	/* GUEST: [addr, addr+len) checked for wrap-around and mapped with the access the device will make. */
	if (dma_check(q->as, d->addr, d->len, write ? DMA_WRITE : DMA_READ))
		return -EFAULT;
	if (c->nseg == VIRTQ_MAX_SEGS)
		return -EINVAL;
	c->seg[c->nseg++] = (struct virtq_seg){ .iova = d->addr, .len = d->len, .write = write };
	if (write) {
		c->write_len += d->len;
	} else {
		c->read_len += d->len;
		c->nread++;
	}
	return 0;
}

static int walk_chain(const struct virtq *q, uint16_t head, struct virtq_chain *c)
{
	uint64_t table = q->desc, total = 0;
	uint32_t count = q->size;  /* entries in the current table */
	uint32_t ttl = q->size;    /* descriptors left before we call it a loop */
	uint16_t idx = head;
	bool indirect = false, first = true;

	c->head = head;
	c->nseg = c->nread = 0;
	c->read_len = c->write_len = 0;
	for (;;) {
		struct virtq_desc d;
		int err;

		if (ttl-- == 0)
			return -EINVAL; /* the chain loops, or is longer than the queue allows */
		err = read_desc(q, table, idx, &d);
		if (err)
			return err;
		if (d.flags & VIRTQ_DESC_F_INDIRECT) {
			/*
			 * Only as the whole chain (head, no NEXT), only when negotiated, never nested,
			 * and a table no longer than a chain may be (2.7.5.3.1).
			 */
			if (!q->indirect || indirect || !first || (d.flags & VIRTQ_DESC_F_NEXT))
				return -EINVAL;
			if (d.len == 0 || d.len % VIRTQ_DESC_SIZE || d.len / VIRTQ_DESC_SIZE > q->size)
				return -EINVAL;
			/* GUEST: the table [addr, addr+len) checked for wrap-around and mapped readable. */
			if (dma_check(q->as, d.addr, d.len, DMA_READ))
				return -EFAULT;
			table = d.addr;
			count = ttl = d.len / VIRTQ_DESC_SIZE;
			idx = 0;
			indirect = true;
			first = false;
			continue;
		}
		first = false;
		err = add_segment(q, c, &d, &total);
		if (err)
			return err;
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			return 0;
		if (d.next >= count)
			return -EINVAL;
		idx = d.next;
	}
}

static int virtq_fail(struct virtq *q, int err)
{
	q->error = err;
	return err;
}

/* Entries the driver has made available and we have not taken; more than size is a driver bug. */
static int avail_pending(const struct virtq *q, uint16_t *pending)
{
	uint16_t idx;
	int err = avail_idx_acquire(q, &idx);

	if (err)
		return err;
	*pending = (uint16_t)(idx - q->last_avail_idx);
	return *pending > q->size ? -EINVAL : 0;
}

static int pop_in_section(struct virtq *q, struct virtq_chain *chain)
{
	uint16_t pending, head;
	int err;

	if (q->error)
		return q->error;
	if (!q->ready)
		return 0; /* a kick for a queue the driver has not enabled: nothing to do */
	err = avail_pending(q, &pending);
	if (err)
		return virtq_fail(q, err);
	if (!pending) {
		if (!q->event_idx || q->kicks_off)
			return 0;
		/*
		 * Ask for a kick on the next entry, then look again: the driver publishes idx before
		 * reading avail_event, we write avail_event before re-reading idx, so one of us sees
		 * the other and no kick is lost.
		 */
		err = set_avail_event(q, q->last_avail_idx);
		if (err)
			return virtq_fail(q, err);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		err = avail_pending(q, &pending);
		if (err)
			return virtq_fail(q, err);
		if (!pending)
			return 0;
	}
	/* GUEST: slot index reduced modulo size, inside the avail area checked at init; dma re-checks. */
	err = ring_load16(q, q->avail + AVAIL_RING + 2u * (uint64_t)(q->last_avail_idx % q->size), &head);
	if (err)
		return virtq_fail(q, err);
	if (head >= q->size)
		return virtq_fail(q, -EINVAL);
	err = walk_chain(q, head, chain);
	if (err)
		return virtq_fail(q, err);
	q->last_avail_idx++;
	if (q->event_idx && !q->kicks_off) {
		err = set_avail_event(q, q->last_avail_idx);
		if (err)
			return virtq_fail(q, err);
	}
	return 1;
}

/*
 * Each operation on the rings is one read-side section (dma.h): host pointers to the rings and
 * buffers live only inside it, so an UNMAP waits at most for one ring update or one segment copy.
 */
int virtq_pop(struct virtq *q, struct virtq_chain *chain)
{
	unsigned int dma;
	int r;

	if (!q->ready)
		return q->error ? q->error : 0;
	dma = dma_begin(q->as);
	r = pop_in_section(q, chain);
	dma_end(q->as, dma);
	return r;
}

int virtq_pending(struct virtq *q)
{
	unsigned int dma;
	uint16_t pending = 0;
	int err;

	if (!q->ready || q->error)
		return q->error;
	dma = dma_begin(q->as);
	err = avail_pending(q, &pending);
	dma_end(q->as, dma);
	return err ? virtq_fail(q, err) : pending;
}

static void fmt_u16(char *buf, size_t len, int err, uint16_t v)
{
	if (err)
		snprintf(buf, len, "?");
	else
		snprintf(buf, len, "%u", v);
}

void virtq_describe(const struct virtq *q, char *buf, size_t len)
{
	char aidx[8], uidx[8], n1[8], n2[8];
	uint16_t v = 0;
	unsigned int dma;
	int err;

	if (!len)
		return;
	if (!q->ready) {
		snprintf(buf, len, "not ready");
		return;
	}
	dma = dma_begin(q->as);
	err = avail_idx_acquire(q, &v);
	fmt_u16(aidx, sizeof(aidx), err, v);
	err = ring_load16(q, q->used + USED_IDX, &v);
	fmt_u16(uidx, sizeof(uidx), err, v);
	if (q->event_idx) {
		err = ring_load16(q, q->used + USED_RING + 8u * (uint64_t)q->size, &v);
		fmt_u16(n1, sizeof(n1), err, v);
		err = ring_load16(q, q->avail + AVAIL_RING + 2u * (uint64_t)q->size, &v);
		fmt_u16(n2, sizeof(n2), err, v);
	} else {
		err = ring_load16(q, q->used + USED_FLAGS, &v);
		fmt_u16(n1, sizeof(n1), err, v);
		err = ring_load16(q, q->avail + AVAIL_FLAGS, &v);
		fmt_u16(n2, sizeof(n2), err, v);
	}
	dma_end(q->as, dma);
	snprintf(buf, len, "avail %s taken %u used %u (guest sees %s) %s %s %s %s%s%s", aidx, q->last_avail_idx,
		 q->used_idx, uidx, q->event_idx ? "avail_event" : "used flags", n1,
		 q->event_idx ? "used_event" : "avail flags", n2, q->kicks_off ? " polling" : "",
		 q->error ? " broken" : "");
}

int virtq_set_kicks(struct virtq *q, bool on)
{
	unsigned int dma;
	uint16_t flags = on ? 0 : VRING_USED_F_NO_NOTIFY;
	int err;

	if (!q->ready || q->error)
		return q->error;
	q->kicks_off = !on;
	dma = dma_begin(q->as);
	/*
	 * 2.7.10: with EVENT_IDX the driver kicks when its avail idx passes avail_event. One behind what
	 * we took is behind anything it can add next; the flags word is then ignored by the driver.
	 */
	if (q->event_idx)
		err = set_avail_event(q, on ? q->last_avail_idx : (uint16_t)(q->last_avail_idx - 1));
	else
		err = ring_store16(q, q->used + USED_FLAGS, flags, __ATOMIC_RELAXED);
	dma_end(q->as, dma);
	/* Our store before our next look at avail idx; the driver does the mirror (idx, then our word). */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return err ? virtq_fail(q, err) : 0;
}

int virtq_push(struct virtq *q, uint16_t head, uint32_t written)
{
	struct virtq_used_elem e = { .id = htole32(head), .len = htole32(written) };
	unsigned int dma;
	int err;

	if (!q->ready || head >= q->size)
		return -EINVAL;
	dma = dma_begin(q->as);
	err = dma_write(q->as, q->used + USED_RING + 8u * (uint64_t)(q->used_idx % q->size), &e, sizeof(e));
	if (!err) {
		q->used_idx++;
		/* Release: the entry must be visible before the driver can see the new idx. */
		err = ring_store16(q, q->used + USED_IDX, q->used_idx, __ATOMIC_RELEASE);
	}
	dma_end(q->as, dma);
	return err;
}

/* VIRTIO 1.2 2.7.10: has new_idx passed event since old_idx? All mod 2^16. */
static bool need_event(uint16_t event, uint16_t new_idx, uint16_t old_idx)
{
	return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old_idx);
}

static int needs_notify(struct virtq *q);

int virtq_needs_notify(struct virtq *q)
{
	unsigned int dma;
	int r;

	if (!q->ready)
		return 0;
	dma = dma_begin(q->as);
	r = needs_notify(q);
	dma_end(q->as, dma);
	return r;
}

static int needs_notify(struct virtq *q)
{
	uint16_t old = q->signalled_used, new_idx = q->used_idx, val;
	bool valid = q->signalled_valid;
	int err;

	if (!q->ready)
		return 0;
	/* Our used->idx store must be visible before we read what the driver asked for. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	q->signalled_used = new_idx;
	q->signalled_valid = true;
	if (valid && old == new_idx)
		return 0; /* nothing new since the last decision */
	if (q->event_idx) {
		err = ring_load16(q, q->avail + AVAIL_RING + 2u * (uint64_t)q->size, &val); /* used_event */
		if (err)
			return err;
		/* Without a previous decision we cannot know what old was: notify to be safe. */
		return !valid || need_event(val, new_idx, old);
	}
	err = ring_load16(q, q->avail + AVAIL_FLAGS, &val);
	if (err)
		return err;
	return !(val & VRING_AVAIL_F_NO_INTERRUPT);
}

/*
 * Copy between buf and the part [off, off+len) of the chain's segments [from, to).
 * out = true copies guest -> buf.
 */
static int chain_copy(const struct virtq *q, const struct virtq_chain *c, unsigned int from, unsigned int to,
		      uint32_t off, uint8_t *buf, uint32_t len, bool out)
{
	for (unsigned int i = from; i < to && len; i++) {
		const struct virtq_seg *s = &c->seg[i];
		unsigned int dma;
		uint32_t n;
		int err;

		if (off >= s->len) {
			off -= s->len;
			continue;
		}
		n = s->len - off < len ? s->len - off : len;
		/* GUEST: [iova+off, +n) lies in a segment checked at pop; dma re-checks the mapping now. */
		dma = dma_begin(q->as);
		err = out ? dma_read(q->as, s->iova + off, buf, n) : dma_write(q->as, s->iova + off, buf, n);
		dma_end(q->as, dma);
		if (err)
			return err;
		buf += n;
		len -= n;
		off = 0;
	}
	return len ? -EFAULT : 0;
}

int virtq_chain_read(const struct virtq *q, const struct virtq_chain *chain, uint32_t off, void *buf, uint32_t len)
{
	return chain_copy(q, chain, 0, chain->nread, off, buf, len, true);
}

int virtq_chain_write(const struct virtq *q, const struct virtq_chain *chain, uint32_t off, const void *buf,
		      uint32_t len)
{
	return chain_copy(q, chain, chain->nread, chain->nseg, off, (uint8_t *)buf, len, false);
}
