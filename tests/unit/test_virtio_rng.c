#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "devices/virtio/rng.h"
#include "devices/virtio/virtio.h"
#include "tests/unit/virtq_mock.h"

struct rx {
	struct vqm m;
	struct virtio_rng *rng;
	struct virtio_dev *dev;
	int queue_irqs, config_irqs;
};

static int count_irq(void *ctx, enum virtio_irq_kind kind, unsigned int queue)
{
	struct rx *x = ctx;

	if (kind == VIRTIO_IRQ_CONFIG)
		x->config_irqs++;
	else
		x->queue_irqs++;
	return 0;
}

/* Up to DRIVER_OK with every feature the device offers except `drop`. */
static void rx_start(struct rx *x, uint64_t drop)
{
	const uint8_t steps[] = { VIRTIO_STATUS_ACKNOWLEDGE, VIRTIO_STATUS_DRIVER, VIRTIO_STATUS_FEATURES_OK };
	char err[128];
	uint8_t status = 0;

	memset(x, 0, sizeof(*x));
	vqm_init(&x->m, 64);
	cr_assert_eq(virtio_rng_new(&x->m.as, &x->rng, err, sizeof(err)), 0, "%s", err);
	x->dev = virtio_rng_dev(x->rng);
	x->dev->irq = (struct virtio_irq){ .fn = count_irq, .ctx = x };
	for (unsigned int i = 0; i < sizeof(steps); i++) {
		if (steps[i] == VIRTIO_STATUS_FEATURES_OK)
			cr_assert_eq(virtio_set_driver_features(x->dev, x->dev->device_features & ~drop), 0);
		status |= steps[i];
		cr_assert_eq(virtio_set_status(x->dev, status), 0);
	}
	cr_assert_eq(virtio_queue_set_addr(x->dev, 0, x->m.desc, x->m.avail, x->m.used), 0);
	cr_assert_eq(virtio_queue_enable(x->dev, 0), 0);
	cr_assert_eq(virtio_set_status(x->dev, status | VIRTIO_STATUS_DRIVER_OK), 0);
}

static void rx_stop(struct rx *x)
{
	virtio_rng_free(x->rng);
	vqm_fini(&x->m);
}

static void expect_used(struct rx *x, uint16_t i, uint16_t head, uint32_t len)
{
	uint32_t id, l;

	cr_assert_gt(vqm_used_idx(&x->m), i, "entry %u completed", i);
	vqm_used_elem(&x->m, i, &id, &l);
	cr_assert_eq(id, head);
	cr_assert_eq(l, len, "used len %u, expected %u", l, len);
}

static unsigned int nonzero(struct rx *x, uint64_t gpa, uint32_t len)
{
	const uint8_t *p = vqm_host(&x->m, gpa, len);
	unsigned int n = 0;

	for (uint32_t i = 0; i < len; i++)
		n += p[i] != 0;
	return n;
}

Test(virtio_rng, identity)
{
	struct rx x;
	uint8_t buf[4] = { 1, 2, 3, 4 };

	rx_start(&x, 0);
	cr_assert_eq(x.dev->device_id, 4);
	cr_assert_str_eq(x.dev->ops->name, "rng");
	cr_assert_eq(x.dev->nqueues, 1);
	cr_assert_eq(x.dev->queues[0].max_size, 64);
	cr_assert_eq(x.dev->ops->config_read(x.dev, 0, buf, 4), -EINVAL, "no configuration space");
	cr_assert_eq(buf[0] | buf[1] | buf[2] | buf[3], 0, "and it reads as zeros");
	cr_assert_eq(x.dev->ops->config_write(x.dev, 0, buf, 4), -EINVAL);
	rx_stop(&x);
	virtio_rng_free(NULL);
}

Test(virtio_rng, fills_every_writable_byte)
{
	struct rx x;
	struct vqm_buf b[] = { { 0, 100, true }, { VQM_R1 - 14, 28, true } };
	struct vqm_buf again = { 0, 128, true };
	uint16_t head;

	rx_start(&x, 0);
	head = vqm_chain(&x.m, b, 2);
	vqm_publish(&x.m, head);
	virtio_queue_notify(x.dev, 0);
	expect_used(&x, 0, head, 128);
	/* 128 random bytes all zero has probability 2^-1024; a handful of zeros is normal. */
	cr_assert_gt(nonzero(&x, b[0].addr, 100) + nonzero(&x, VQM_R1 - 14, 14) + nonzero(&x, VQM_R1, 14), 100,
		     "random bytes were written, on both sides of the region boundary");
	cr_assert_eq(x.queue_irqs, 1);

	head = vqm_indirect(&x.m, &again, 1, NULL);
	vqm_publish(&x.m, head);
	virtio_queue_notify(x.dev, 0);
	expect_used(&x, 1, head, 128);
	cr_assert_neq(memcmp(vqm_host(&x.m, b[0].addr, 100), vqm_host(&x.m, again.addr, 100), 100), 0,
		      "each request gets fresh bytes");
	rx_stop(&x);
}

Test(virtio_rng, large_request_is_capped)
{
	struct rx x;
	/* 128 KiB offered: R1 and R2 whole. */
	struct vqm_buf b[] = { { VQM_R1, VQM_R1_SIZE, true }, { VQM_R2, VQM_R2_SIZE, true } };
	uint16_t head;

	rx_start(&x, 0);
	head = vqm_chain(&x.m, b, 2);
	vqm_publish(&x.m, head);
	virtio_queue_notify(x.dev, 0);
	expect_used(&x, 0, head, 64 * 1024);
	cr_assert_gt(nonzero(&x, VQM_R1 + VQM_R1_SIZE - 4096, 4096), 3900, "the first 64 KiB are filled to the end");
	cr_assert_eq(nonzero(&x, VQM_R2, VQM_R2_SIZE), 0, "nothing past the cap is touched");
	rx_stop(&x);
}

Test(virtio_rng, nothing_writable_gets_zero_bytes)
{
	struct rx x;
	struct vqm_buf rd = { 0, 64, false };
	struct vqm_buf mixed[] = { { 0, 16, false }, { 0, 32, true } };
	uint16_t h1, h2;

	rx_start(&x, 0);
	h1 = vqm_chain(&x.m, &rd, 1);
	vqm_publish(&x.m, h1);
	h2 = vqm_chain(&x.m, mixed, 2);
	vqm_publish(&x.m, h2);
	virtio_queue_notify(x.dev, 0);
	expect_used(&x, 0, h1, 0);
	cr_assert_eq(nonzero(&x, rd.addr, 64), 0, "a readable buffer is not written");
	expect_used(&x, 1, h2, 32);
	cr_assert_eq(nonzero(&x, mixed[0].addr, 16), 0, "readable part ignored");
	cr_assert_gt(nonzero(&x, mixed[1].addr, 32), 16);
	cr_assert(virtio_dev_live(x.dev));
	rx_stop(&x);
}

Test(virtio_rng, one_interrupt_per_batch)
{
	struct rx x;
	struct vqm_buf b = { 0, 8, true };

	rx_start(&x, VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX)); /* else EVENT_IDX alone could hide extra interrupts */
	for (unsigned int i = 0; i < 3; i++) {
		b.addr = 0;
		vqm_publish(&x.m, vqm_chain(&x.m, &b, 1));
	}
	virtio_queue_notify(x.dev, 0);
	cr_assert_eq(vqm_used_idx(&x.m), 3);
	cr_assert_eq(x.queue_irqs, 1);
	rx_stop(&x);
}

Test(virtio_rng, unmapped_buffer_needs_reset)
{
	struct rx x;
	struct vqm_buf good = { 0, 8, true };

	rx_start(&x, 0);
	vqm_set_desc(&x.m, 0, VQM_HOLE - 4, 8, VIRTQ_DESC_F_WRITE, 0);
	vqm_publish(&x.m, 0);
	x.m.next_desc = 1;
	virtio_queue_notify(x.dev, 0);
	cr_assert(x.dev->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
	cr_assert_eq(x.config_irqs, 1, "the driver is told");
	cr_assert_eq(vqm_used_idx(&x.m), 0);
	vqm_publish(&x.m, vqm_chain(&x.m, &good, 1));
	virtio_queue_notify(x.dev, 0);
	cr_assert_eq(vqm_used_idx(&x.m), 0, "nothing is served until a reset");
	cr_assert_eq(nonzero(&x, good.addr, 8), 0);

	virtio_reset(x.dev);
	cr_assert_eq(x.dev->status, 0, "a reset brings it back");
	rx_stop(&x);
}
