#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "devices/virtio/virtio.h"
#include "devices/virtio/virtqueue.h"
#include "tests/unit/virtq_mock.h"

#define IND VIRTIO_BIT(VIRTIO_RING_F_INDIRECT_DESC)
#define EVT VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX)

static void start(struct vqm *m, struct virtq *q, unsigned int size, uint64_t features)
{
	vqm_init(m, size);
	cr_assert_eq(virtq_init(q, &m->as, size, m->desc, m->avail, m->used), 0);
	virtq_set_features(q, features);
}

/* Publish one chain and expect pop to fail with err. */
static void expect_bad(struct vqm *m, struct virtq *q, uint16_t head, int err, const char *why)
{
	struct virtq_chain c;

	vqm_publish(m, head);
	cr_assert_eq(virtq_pop(q, &c), err, "%s", why);
}

Test(virtq, init_validates_size_alignment_and_mapping)
{
	struct vqm m;
	struct virtq q;
	const unsigned int bad_sizes[] = { 0, 3, 6, 100, 32769, 65536, 65535 };

	vqm_init(&m, 256);
	for (unsigned int i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++)
		cr_assert_eq(virtq_init(&q, &m.as, bad_sizes[i], m.desc, m.avail, m.used), -EINVAL, "size %u",
			     bad_sizes[i]);
	cr_assert_eq(virtq_init(&q, &m.as, 1, m.desc, m.avail, m.used), 0);
	cr_assert_eq(virtq_init(&q, &m.as, 256, m.desc, m.avail, m.used), 0);
	cr_assert_eq(virtq_init(&q, &m.as, 256, m.desc + 8, m.avail, m.used), -EINVAL, "desc 16-aligned");
	cr_assert_eq(virtq_init(&q, &m.as, 256, m.desc, m.avail + 1, m.used), -EINVAL, "avail 2-aligned");
	cr_assert_eq(virtq_init(&q, &m.as, 256, m.desc, m.avail, m.used + 2), -EINVAL, "used 4-aligned");
	cr_assert_not(q.ready, "a refused init leaves the queue stopped");
	cr_assert_eq(virtq_init(&q, &m.as, 256, VQM_HOLE, m.avail, m.used), -EFAULT, "desc in the hole");
	cr_assert_eq(virtq_init(&q, &m.as, 256, m.desc, VQM_HOLE - 16, m.used), -EFAULT, "avail runs into hole");
	cr_assert_eq(virtq_init(&q, &m.as, 256, m.desc, m.avail, VQM_R2 + VQM_R2_SIZE - 64), -EFAULT,
		     "used runs past RAM");
	cr_assert_eq(virtq_init(&q, &m.as, 256, UINT64_MAX - 15, m.avail, m.used), -EFAULT, "desc wraps");
	cr_assert_eq(virtq_init(&q, &m.as, 256, VQM_R1 - 2048, m.avail, m.used), 0,
		     "a ring across the R0/R1 boundary is contiguous guest memory");
	vqm_fini(&m);

	vqm_init(&m, 32768);
	cr_assert_eq(virtq_init(&q, &m.as, 32768, m.desc, m.avail, m.used), 0, "largest queue");
	cr_assert_eq(q.size, 32768);
	vqm_fini(&m);
}

Test(virtq, empty_and_not_ready_pop_nothing)
{
	struct vqm m;
	struct virtq q;
	struct virtq_chain c;

	start(&m, &q, 8, 0);
	cr_assert_eq(virtq_pop(&q, &c), 0);
	virtq_reset(&q);
	cr_assert_eq(virtq_pop(&q, &c), 0, "kick on a reset queue");
	cr_assert_eq(virtq_push(&q, 0, 0), -EINVAL);
	vqm_fini(&m);
}

Test(virtq, direct_chain_pop_copy_push)
{
	struct vqm m;
	struct virtq q;
	struct virtq_chain c;
	struct vqm_buf b[] = { { 0, 16, false }, { 0, 32, false }, { 0, 64, true } };
	uint8_t src[48], dst[48], out[64];
	uint16_t head;
	uint32_t id, len;

	start(&m, &q, 8, 0);
	head = vqm_chain(&m, b, 3);
	for (unsigned int i = 0; i < sizeof(src); i++)
		src[i] = (uint8_t)i;
	memcpy(vqm_host(&m, b[0].addr, 16), src, 16);
	memcpy(vqm_host(&m, b[1].addr, 32), src + 16, 32);
	vqm_publish(&m, head);

	cr_assert_eq(virtq_pop(&q, &c), 1);
	cr_assert_eq(c.head, head);
	cr_assert_eq(c.nseg, 3);
	cr_assert_eq(c.nread, 2);
	cr_assert_eq(c.read_len, 48);
	cr_assert_eq(c.write_len, 64);
	cr_assert_eq(c.seg[0].iova, b[0].addr);
	cr_assert_eq(c.seg[1].len, 32);
	cr_assert(c.seg[2].write);
	cr_assert_eq(virtq_pop(&q, &c), 0, "one chain only");

	cr_assert_eq(virtq_chain_read(&q, &c, 0, dst, 48), 0);
	cr_assert_eq(memcmp(dst, src, 48), 0);
	cr_assert_eq(virtq_chain_read(&q, &c, 10, dst, 20), 0, "across the two readable segments");
	cr_assert_eq(memcmp(dst, src + 10, 20), 0);
	cr_assert_eq(virtq_chain_read(&q, &c, 40, dst, 9), -EFAULT, "past the readable bytes");
	memset(out, 0x5a, sizeof(out));
	cr_assert_eq(virtq_chain_write(&q, &c, 0, out, 64), 0);
	cr_assert_eq(memcmp(vqm_host(&m, b[2].addr, 64), out, 64), 0);
	cr_assert_eq(virtq_chain_write(&q, &c, 1, out, 64), -EFAULT, "past the writable bytes");

	cr_assert_eq(virtq_push(&q, c.head, 64), 0);
	cr_assert_eq(vqm_used_idx(&m), 1);
	vqm_used_elem(&m, 0, &id, &len);
	cr_assert_eq(id, head);
	cr_assert_eq(len, 64);
	cr_assert_eq(virtq_push(&q, 8, 0), -EINVAL, "head beyond the queue");
	cr_assert_eq(vqm_used_idx(&m), 1);
	vqm_fini(&m);
}

Test(virtq, indices_wrap_at_16_bits)
{
	struct vqm m;
	struct virtq q;
	struct virtq_chain c;

	start(&m, &q, 4, 0);
	/* Both sides agree the free-running indices are at 65534. */
	q.last_avail_idx = q.used_idx = 65534;
	vqm_set_avail_idx(&m, 65534);
	for (unsigned int i = 0; i < 4; i++) {
		struct vqm_buf b = { 0, 8, (i & 1) != 0 };
		vqm_publish(&m, vqm_chain(&m, &b, 1));
	}
	cr_assert_eq(m.avail_idx, 2);
	for (unsigned int i = 0; i < 4; i++) {
		cr_assert_eq(virtq_pop(&q, &c), 1, "chain %u", i);
		cr_assert_eq(c.head, i);
		cr_assert_eq(virtq_push(&q, c.head, i), 0);
	}
	cr_assert_eq(virtq_pop(&q, &c), 0);
	cr_assert_eq(vqm_used_idx(&m), 2);
	for (uint16_t i = 0; i < 4; i++) {
		uint32_t id, len;
		vqm_used_elem(&m, (uint16_t)(65534 + i), &id, &len);
		cr_assert_eq(id, i);
		cr_assert_eq(len, i);
	}
	vqm_fini(&m);
}

Test(virtq, avail_idx_jumps)
{
	struct vqm m;
	struct virtq q;
	struct virtq_chain c;
	struct vqm_buf b = { 0, 8, false };

	start(&m, &q, 8, 0);
	for (unsigned int i = 0; i < 8; i++)
		vqm_publish(&m, vqm_chain(&m, &b, 1));
	for (unsigned int i = 0; i < 8; i++)
		cr_assert_eq(virtq_pop(&q, &c), 1, "a full ring (exactly size) is fine");
	vqm_set_avail_idx(&m, (uint16_t)(8 + 9));
	cr_assert_eq(virtq_pop(&q, &c), -EINVAL, "jump by size + 1");
	vqm_fini(&m);

	start(&m, &q, 8, 0);
	vqm_set_avail_idx(&m, 0xffff);
	cr_assert_eq(virtq_pop(&q, &c), -EINVAL, "index moved backwards");
	vqm_fini(&m);
}

Test(virtq, head_out_of_range_and_sticky_error)
{
	struct vqm m;
	struct virtq q;
	struct virtq_chain c;
	struct vqm_buf b = { 0, 8, false };

	start(&m, &q, 8, 0);
	expect_bad(&m, &q, 8, -EINVAL, "head == size");
	vqm_publish(&m, vqm_chain(&m, &b, 1));
	cr_assert_eq(virtq_pop(&q, &c), -EINVAL, "broken until reset, even with a good chain next");
	cr_assert_eq(virtq_init(&q, &m.as, 8, m.desc, m.avail, m.used), 0, "re-init after reset clears it");
	vqm_fini(&m);

	start(&m, &q, 8, 0);
	expect_bad(&m, &q, 0xffff, -EINVAL, "head 0xffff");
	vqm_fini(&m);
}

Test(virtq, next_out_of_range_and_loops)
{
	struct vqm m;
	struct virtq q;
	uint64_t a;

	start(&m, &q, 8, 0);
	a = vqm_alloc(&m, 16, 8);
	vqm_set_desc(&m, 0, a, 8, VIRTQ_DESC_F_NEXT, 8);
	expect_bad(&m, &q, 0, -EINVAL, "next == size");
	vqm_fini(&m);

	start(&m, &q, 8, 0);
	a = vqm_alloc(&m, 16, 8);
	vqm_set_desc(&m, 0, a, 8, VIRTQ_DESC_F_NEXT, 1);
	vqm_set_desc(&m, 1, a, 8, VIRTQ_DESC_F_NEXT, 0);
	expect_bad(&m, &q, 0, -EINVAL, "0 -> 1 -> 0");
	vqm_fini(&m);

	start(&m, &q, 8, 0);
	a = vqm_alloc(&m, 16, 8);
	vqm_set_desc(&m, 3, a, 0, VIRTQ_DESC_F_NEXT, 3);
	expect_bad(&m, &q, 3, -EINVAL, "zero-length self loop");
	vqm_fini(&m);
}

Test(virtq, chain_of_exactly_queue_size)
{
	struct vqm m;
	struct virtq q;
	struct virtq_chain c;
	struct vqm_buf b[8];

	start(&m, &q, 8, 0);
	for (unsigned int i = 0; i < 8; i++)
		b[i] = (struct vqm_buf){ 0, 4, i >= 4 };
	vqm_publish(&m, vqm_chain(&m, b, 8));
	cr_assert_eq(virtq_pop(&q, &c), 1);
	cr_assert_eq(c.nseg, 8);
	cr_assert_eq(c.nread, 4);
	vqm_fini(&m);
}

Test(virtq, too_many_segments)
{
	struct vqm m;
	struct virtq q;
	struct virtq_chain c;
	static struct vqm_buf b[VIRTQ_MAX_SEGS + 1];

	start(&m, &q, 1024, 0);
	for (unsigned int i = 0; i <= VIRTQ_MAX_SEGS; i++)
		b[i] = (struct vqm_buf){ 0, 1, false };
	vqm_publish(&m, vqm_chain(&m, b, VIRTQ_MAX_SEGS));
	cr_assert_eq(virtq_pop(&q, &c), 1, "exactly VIRTQ_MAX_SEGS fit");
	for (unsigned int i = 0; i <= VIRTQ_MAX_SEGS; i++)
		b[i] = (struct vqm_buf){ 0, 1, false };
	expect_bad(&m, &q, vqm_chain(&m, b, VIRTQ_MAX_SEGS + 1), -EINVAL, "one more does not");
	vqm_fini(&m);
}

Test(virtq, buffer_addresses)
{
	struct vqm m;
	struct virtq q;
	struct virtq_chain c;
	uint8_t buf[32], got[32];

	start(&m, &q, 8, 0);
	vqm_set_desc(&m, 0, VQM_R2 + VQM_R2_SIZE, 8, 0, 0);
	expect_bad(&m, &q, 0, -EFAULT, "beyond RAM");
	vqm_fini(&m);

	start(&m, &q, 8, 0);
	vqm_set_desc(&m, 0, VQM_HOLE - 4, 8, VIRTQ_DESC_F_WRITE, 0);
	expect_bad(&m, &q, 0, -EFAULT, "runs from RAM into the hole");
	vqm_fini(&m);

	start(&m, &q, 8, 0);
	vqm_set_desc(&m, 0, UINT64_MAX - 10, 100, 0, 0);
	expect_bad(&m, &q, 0, -EFAULT, "addr + len wraps");
	vqm_fini(&m);

	start(&m, &q, 8, 0);
	vqm_set_desc(&m, 0, VQM_R1 - 16, 32, 0, 0);
	for (unsigned int i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(0x30 + i);
	memcpy(vqm_host(&m, VQM_R1 - 16, 16), buf, 16);
	memcpy(vqm_host(&m, VQM_R1, 16), buf + 16, 16);
	vqm_publish(&m, 0);
	cr_assert_eq(virtq_pop(&q, &c), 1, "a buffer across two adjacent regions is fine");
	cr_assert_eq(virtq_chain_read(&q, &c, 0, got, 32), 0);
	cr_assert_eq(memcmp(got, buf, 32), 0);
	vqm_fini(&m);
}

Test(virtq, zero_length_descriptors_carry_nothing)
{
	struct vqm m;
	struct virtq q;
	struct virtq_chain c;
	/* Zero-length ones anywhere (even unmapped, even a "read" after a write) are skipped. */
	struct vqm_buf b[] = { { VQM_HOLE, 0, false }, { 0, 16, false }, { 0, 0, true },
			       { 0, 8, true }, { 0xdead0000ull, 0, false } };

	start(&m, &q, 8, 0);
	vqm_publish(&m, vqm_chain(&m, b, 5));
	cr_assert_eq(virtq_pop(&q, &c), 1);
	cr_assert_eq(c.nseg, 2);
	cr_assert_eq(c.nread, 1);
	cr_assert_eq(c.read_len, 16);
	cr_assert_eq(c.write_len, 8);
	vqm_fini(&m);
}

Test(virtq, read_after_write_is_invalid)
{
	struct vqm m;
	struct virtq q;
	struct vqm_buf b[] = { { 0, 8, false }, { 0, 8, true }, { 0, 8, false } };

	start(&m, &q, 8, 0);
	expect_bad(&m, &q, vqm_chain(&m, b, 3), -EINVAL, "R W R");
	vqm_fini(&m);

	start(&m, &q, 8, IND);
	b[0].addr = b[1].addr = b[2].addr = 0;
	expect_bad(&m, &q, vqm_indirect(&m, b, 3, NULL), -EINVAL, "R W R in an indirect table");
	vqm_fini(&m);
}

/*
 * Lengths summing past 4 GiB need buffers that big: this address space aliases every
 * IOVA from BIG on to one scratch page and is the mock's identity map below it.
 */
#define BIG (1ull << 40)
struct alias_as {
	struct dma_as as;
	struct dma_as *ram;
	uint8_t *scratch;
};

static int alias_translate(const struct dma_as *as, uint64_t iova, uint64_t len, unsigned int perm, void **host,
			   uint64_t *run)
{
	const struct alias_as *a = (const struct alias_as *)as;
	uint64_t left = 4096 - iova % 4096;

	if (iova < BIG)
		return a->ram->ops->translate(a->ram, iova, len, perm, host, run);
	*run = len < left ? len : left;
	*host = a->scratch + iova % 4096;
	return 0;
}

static const struct dma_as_ops alias_ops = { .translate = alias_translate };

Test(virtq, length_sum_overflow)
{
	static uint8_t scratch[4096];
	struct vqm m;
	struct virtq q;
	struct virtq_chain c;
	struct alias_as a = { .as = { .ops = &alias_ops }, .scratch = scratch };
	struct vqm_buf ok[] = { { BIG, 0xfffffff0u, false }, { BIG, 0xf, true } };
	struct vqm_buf over[] = { { BIG, 0xfffffff0u, false }, { BIG, 0x10, true } };

	vqm_init(&m, 8);
	a.ram = &m.as;
	cr_assert_eq(virtq_init(&q, &a.as, 8, m.desc, m.avail, m.used), 0);
	vqm_publish(&m, vqm_chain(&m, ok, 2));
	cr_assert_eq(virtq_pop(&q, &c), 1, "sum UINT32_MAX is the limit");
	cr_assert_eq(c.read_len, 0xfffffff0u);
	cr_assert_eq(c.write_len, 0xf);
	expect_bad(&m, &q, vqm_chain(&m, over, 2), -EINVAL, "sum UINT32_MAX + 1");
	vqm_fini(&m);
}

Test(virtq, indirect_good)
{
	struct vqm m;
	struct virtq q;
	struct virtq_chain c;
	struct vqm_buf b[] = { { 0, 12, false }, { 0, 20, true }, { 0, 4, true } };
	uint16_t head;
	uint32_t id, len;

	start(&m, &q, 8, IND | EVT);
	head = vqm_indirect(&m, b, 3, NULL);
	vqm_publish(&m, head);
	cr_assert_eq(virtq_pop(&q, &c), 1);
	cr_assert_eq(c.head, head);
	cr_assert_eq(c.nseg, 3);
	cr_assert_eq(c.nread, 1);
	cr_assert_eq(c.seg[1].iova, b[1].addr);
	cr_assert_eq(c.write_len, 24);
	cr_assert_eq(virtq_push(&q, head, 24), 0);
	vqm_used_elem(&m, 0, &id, &len);
	cr_assert_eq(id, head, "the used ring names the head in the main table");
	vqm_fini(&m);
}

Test(virtq, indirect_table_of_queue_size_and_write_flag_ignored)
{
	struct vqm m;
	struct virtq q;
	struct virtq_chain c;
	struct vqm_buf b[8];
	uint64_t table;
	uint16_t head;

	start(&m, &q, 8, IND);
	for (unsigned int i = 0; i < 8; i++)
		b[i] = (struct vqm_buf){ 0, 2, false };
	head = vqm_indirect(&m, b, 8, &table);
	vqm_set_desc(&m, head, table, 8 * 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE, 0);
	vqm_publish(&m, head);
	cr_assert_eq(virtq_pop(&q, &c), 1);
	cr_assert_eq(c.nseg, 8);
	cr_assert_eq(c.nread, 8);
	vqm_fini(&m);
}

Test(virtq, indirect_rejections)
{
	struct vqm m;
	struct virtq q;
	struct vqm_buf b[] = { { 0, 8, false }, { 0, 8, true } };
	uint64_t table, a;
	uint16_t head;

	start(&m, &q, 8, 0);
	expect_bad(&m, &q, vqm_indirect(&m, b, 2, NULL), -EINVAL, "INDIRECT_DESC not negotiated");
	vqm_fini(&m);

#define FRESH()                                                                                        \
	do {                                                                                           \
		start(&m, &q, 8, IND);                                                                 \
		b[0].addr = b[1].addr = 0;                                                             \
		head = vqm_indirect(&m, b, 2, &table);                                                 \
	} while (0)

	FRESH();
	vqm_set_desc(&m, head, table, 32, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1);
	expect_bad(&m, &q, head, -EINVAL, "INDIRECT with NEXT");
	vqm_fini(&m);

	FRESH();
	vqm_set_table_desc(&m, table, 1, table, 32, VIRTQ_DESC_F_INDIRECT, 0);
	expect_bad(&m, &q, head, -EINVAL, "nested indirect");
	vqm_fini(&m);

	FRESH();
	vqm_set_desc(&m, head, table, 0, VIRTQ_DESC_F_INDIRECT, 0);
	expect_bad(&m, &q, head, -EINVAL, "empty table");
	vqm_fini(&m);

	FRESH();
	vqm_set_desc(&m, head, table, 24, VIRTQ_DESC_F_INDIRECT, 0);
	expect_bad(&m, &q, head, -EINVAL, "table length not a multiple of 16");
	vqm_fini(&m);

	FRESH();
	vqm_set_desc(&m, head, table, 9 * 16, VIRTQ_DESC_F_INDIRECT, 0);
	expect_bad(&m, &q, head, -EINVAL, "table longer than the queue");
	vqm_fini(&m);

	FRESH();
	vqm_set_desc(&m, head, VQM_HOLE - 16, 32, VIRTQ_DESC_F_INDIRECT, 0);
	expect_bad(&m, &q, head, -EFAULT, "table runs into the hole");
	vqm_fini(&m);

	FRESH();
	vqm_set_desc(&m, head, UINT64_MAX - 15, 32, VIRTQ_DESC_F_INDIRECT, 0);
	expect_bad(&m, &q, head, -EFAULT, "table address wraps");
	vqm_fini(&m);

	FRESH();
	vqm_set_table_desc(&m, table, 1, b[1].addr, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
	expect_bad(&m, &q, head, -EINVAL, "next beyond the table's 2 entries");
	vqm_fini(&m);

	FRESH();
	vqm_set_table_desc(&m, table, 1, b[1].addr, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 0);
	expect_bad(&m, &q, head, -EINVAL, "loop inside the table");
	vqm_fini(&m);

	FRESH();
	a = vqm_alloc(&m, 8, 8);
	vqm_set_desc(&m, 5, a, 8, VIRTQ_DESC_F_NEXT, head);
	expect_bad(&m, &q, 5, -EINVAL, "indirect descriptor after a direct one");
	vqm_fini(&m);
#undef FRESH
}

Test(virtq, notify_without_event_idx)
{
	struct vqm m;
	struct virtq q;
	struct virtq_chain c;
	struct vqm_buf b = { 0, 8, true };

	start(&m, &q, 8, 0);
	cr_assert_eq(virtq_needs_notify(&q), 1, "the first decision always notifies");
	cr_assert_eq(virtq_needs_notify(&q), 0, "nothing pushed since");
	vqm_publish(&m, vqm_chain(&m, &b, 1));
	cr_assert_eq(virtq_pop(&q, &c), 1);
	cr_assert_eq(virtq_push(&q, c.head, 8), 0);
	cr_assert_eq(virtq_needs_notify(&q), 1);
	vqm_set_avail_flags(&m, VRING_AVAIL_F_NO_INTERRUPT);
	cr_assert_eq(virtq_push(&q, c.head, 8), 0);
	cr_assert_eq(virtq_needs_notify(&q), 0, "driver asked for no interrupts");
	cr_assert_eq(vqm_avail_event(&m), 0, "avail_event untouched without EVENT_IDX");
	vqm_fini(&m);
}

/* Push n used entries for head 0 and return the notification decision. */
static int push_n(struct virtq *q, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++)
		cr_assert_eq(virtq_push(q, 0, 0), 0);
	return virtq_needs_notify(q);
}

Test(virtq, notify_with_event_idx)
{
	struct vqm m;
	struct virtq q;

	start(&m, &q, 8, EVT);
	vqm_set_avail_flags(&m, VRING_AVAIL_F_NO_INTERRUPT); /* ignored with EVENT_IDX */
	vqm_set_used_event(&m, 100);
	cr_assert_eq(push_n(&q, 1), 1, "no previous decision: notify");
	vqm_set_used_event(&m, 1);
	cr_assert_eq(push_n(&q, 1), 1, "used idx 1 -> 2 passes used_event 1");
	vqm_set_used_event(&m, 5);
	cr_assert_eq(push_n(&q, 1), 0, "2 -> 3, waiting for 5");
	cr_assert_eq(push_n(&q, 2), 0, "3 -> 5 has not passed 5");
	cr_assert_eq(push_n(&q, 1), 1, "5 -> 6 passes 5");
	vqm_set_used_event(&m, 7);
	cr_assert_eq(push_n(&q, 3), 1, "6 -> 9 passes 7 in one batch");
	vqm_set_used_event(&m, 8);
	cr_assert_eq(push_n(&q, 1), 0, "9 -> 10: 8 is behind us, already signalled");
	cr_assert_eq(virtq_needs_notify(&q), 0, "no new entries");
	vqm_fini(&m);
}

Test(virtq, notify_with_event_idx_wraps)
{
	struct vqm m;
	struct virtq q;

	start(&m, &q, 8, EVT);
	q.used_idx = q.signalled_used = 65534;
	q.signalled_valid = true;
	vqm_set_used_event(&m, 65535);
	cr_assert_eq(push_n(&q, 1), 0, "65534 -> 65535 has not passed 65535");
	cr_assert_eq(push_n(&q, 1), 1, "65535 -> 0 passes 65535");
	cr_assert_eq(vqm_used_idx(&m), 0);

	q.used_idx = q.signalled_used = 65534;
	vqm_set_used_event(&m, 65535);
	cr_assert_eq(push_n(&q, 3), 1, "65534 -> 1 passes 65535");
	q.used_idx = q.signalled_used = 65534;
	vqm_set_used_event(&m, 2);
	cr_assert_eq(push_n(&q, 3), 0, "65534 -> 1 has not reached 2");
	cr_assert_eq(push_n(&q, 2), 1, "1 -> 3 passes 2");
	q.used_idx = q.signalled_used = 65535;
	vqm_set_used_event(&m, 65534);
	cr_assert_eq(push_n(&q, 2), 0, "65535 -> 1: 65534 was before our old index");
	vqm_fini(&m);
}

Test(virtq, avail_event_follows_pops)
{
	struct vqm m;
	struct virtq q;
	struct virtq_chain c;
	struct vqm_buf b = { 0, 8, false };

	start(&m, &q, 8, EVT);
	q.last_avail_idx = 0xfffe;
	vqm_set_avail_idx(&m, 0xfffe);
	cr_assert_eq(virtq_pop(&q, &c), 0);
	cr_assert_eq(vqm_avail_event(&m), 0xfffe, "empty: kick me on the next entry");
	vqm_publish(&m, vqm_chain(&m, &b, 1));
	b.addr = 0;
	vqm_publish(&m, vqm_chain(&m, &b, 1));
	cr_assert_eq(virtq_pop(&q, &c), 1);
	cr_assert_eq(vqm_avail_event(&m), 0xffff);
	cr_assert_eq(virtq_pop(&q, &c), 1);
	cr_assert_eq(vqm_avail_event(&m), 0, "wraps with the index");
	cr_assert_eq(virtq_pop(&q, &c), 0);
	vqm_fini(&m);
}

static int deny_translate(const struct dma_as *as, uint64_t iova, uint64_t len, unsigned int perm, void **host,
			  uint64_t *run)
{
	return -EFAULT;
}

static const struct dma_as_ops deny_ops = { .translate = deny_translate };

Test(virtq, rings_unmapped_after_init)
{
	struct vqm m;
	struct virtq q;
	struct virtq_chain c;
	const struct dma_as deny = { .ops = &deny_ops };

	/* An IOMMU unmap of the rings after the queue started: every access is translated again. */
	start(&m, &q, 8, EVT);
	q.as = &deny;
	cr_assert_eq(virtq_push(&q, 0, 0), -EFAULT);
	cr_assert_eq(virtq_needs_notify(&q), -EFAULT);
	cr_assert_eq(virtq_pop(&q, &c), -EFAULT);
	vqm_fini(&m);
}

Test(virtq, describe_reads_both_sides_and_changes_nothing)
{
	struct vqm m;
	struct virtq q;
	struct virtq_chain c;
	struct vqm_buf b = { 0, 8, false };
	char s[200];

	memset(&q, 0, sizeof(q));
	s[0] = 'x';
	virtq_describe(&q, s, 0);
	cr_assert_eq(s[0], 'x', "a zero-length buffer is left alone");
	virtq_describe(&q, s, sizeof(s));
	cr_assert_str_eq(s, "not ready");

	start(&m, &q, 8, EVT);
	vqm_publish(&m, vqm_chain(&m, &b, 1));
	b.addr = 0;
	vqm_publish(&m, vqm_chain(&m, &b, 1));
	cr_assert_eq(virtq_pop(&q, &c), 1);
	cr_assert_eq(virtq_push(&q, c.head, 0), 0);
	vqm_set_used_event(&m, 9);
	virtq_describe(&q, s, sizeof(s));
	/* Two made available, one taken and used; avail_event follows the pop: kick me at entry 1. */
	cr_assert_str_eq(s, "avail 2 taken 1 used 1 (guest sees 1) avail_event 1 used_event 9", "%s", s);
	cr_assert_eq(virtq_pop(&q, &c), 1, "describing took nothing");

	cr_assert_eq(virtq_set_kicks(&q, false), 0);
	virtq_describe(&q, s, sizeof(s));
	cr_assert(strstr(s, " polling"), "%s", s);
	virtq_describe(&q, s, 12);
	cr_assert_eq(strlen(s), 11, "cut to the buffer, terminated");
	vqm_fini(&m);

	start(&m, &q, 8, 0);
	vqm_set_avail_flags(&m, VRING_AVAIL_F_NO_INTERRUPT);
	virtq_describe(&q, s, sizeof(s));
	cr_assert_str_eq(s, "avail 0 taken 0 used 0 (guest sees 0) used flags 0 avail flags 1", "%s", s);
	vqm_fini(&m);
}
