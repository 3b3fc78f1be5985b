#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "devices/virtio/virtio.h"
#include "tests/unit/virtq_mock.h"

#define ACK VIRTIO_STATUS_ACKNOWLEDGE
#define DRV VIRTIO_STATUS_DRIVER
#define FOK VIRTIO_STATUS_FEATURES_OK
#define DOK VIRTIO_STATUS_DRIVER_OK
#define NRS VIRTIO_STATUS_DEVICE_NEEDS_RESET
#define FAIL VIRTIO_STATUS_FAILED
#define V1 VIRTIO_BIT(VIRTIO_F_VERSION_1)
#define EVT VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX)

/* A device that records what the core asked of it. */
struct fake {
	struct virtio_dev dev; /* first: the ops get &fake.dev */
	int activated, resets, notified[4];
	int activate_ret;
	int irq_queue[4], irq_config;
	struct vqm m;
};

static int fake_activate(struct virtio_dev *dev)
{
	struct fake *f = (struct fake *)dev;
	f->activated++;
	return f->activate_ret;
}

static void fake_reset(struct virtio_dev *dev)
{
	((struct fake *)dev)->resets++;
}

static void fake_notify(struct virtio_dev *dev, unsigned int queue)
{
	((struct fake *)dev)->notified[queue]++;
}

static const struct virtio_dev_ops fake_ops = {
	.activate = fake_activate,
	.reset = fake_reset,
	.queue_notify = fake_notify,
};

static int fake_irq(void *ctx, enum virtio_irq_kind kind, unsigned int queue)
{
	struct fake *f = ctx;
	if (kind == VIRTIO_IRQ_CONFIG)
		f->irq_config++;
	else
		f->irq_queue[queue]++;
	return 0;
}

static const uint16_t sizes[2] = { 8, 16 };

static void fake_init(struct fake *f)
{
	memset(f, 0, sizeof(*f));
	vqm_init(&f->m, 8);
	cr_assert_eq(virtio_dev_init(&f->dev, &fake_ops, 4, EVT, 2, sizes, &f->m.as,
				     (struct virtio_irq){ .fn = fake_irq, .ctx = f }),
		     0);
}

/* Drive the device up to (and including) the status bits in `upto`. */
static void bring_up(struct fake *f, uint8_t upto)
{
	struct virtio_dev *d = &f->dev;

	cr_assert_eq(virtio_set_status(d, ACK), 0);
	if (upto == ACK)
		return;
	cr_assert_eq(virtio_set_status(d, ACK | DRV), 0);
	cr_assert_eq(virtio_set_driver_features(d, V1 | EVT), 0);
	if (upto == (ACK | DRV))
		return;
	cr_assert_eq(virtio_set_status(d, ACK | DRV | FOK), 0);
	cr_assert_eq(virtio_queue_set_addr(d, 0, f->m.desc, f->m.avail, f->m.used), 0);
	cr_assert_eq(virtio_queue_enable(d, 0), 0);
	if (upto == (ACK | DRV | FOK))
		return;
	cr_assert_eq(virtio_set_status(d, ACK | DRV | FOK | DOK), 0);
}

Test(virtio_status, init_validates)
{
	struct virtio_dev d;
	struct fake f;
	struct dma_as as = { 0 };
	const struct virtio_dev_ops no_activate = { .reset = fake_reset, .queue_notify = fake_notify };
	const uint16_t bad[] = { 8, 12 }, zero[] = { 0 }, big[] = { 32768 };
	struct virtio_irq irq = { 0 };

	cr_assert_eq(virtio_dev_init(&d, NULL, 1, 0, 0, NULL, &as, irq), -EINVAL);
	cr_assert_eq(virtio_dev_init(&d, &no_activate, 1, 0, 0, NULL, &as, irq), -EINVAL);
	cr_assert_eq(virtio_dev_init(&d, &fake_ops, 1, 0, 0, NULL, NULL, irq), -EINVAL);
	cr_assert_eq(virtio_dev_init(&d, &fake_ops, 1, 0, VIRTIO_MAX_QUEUES + 1, sizes, &as, irq), -EINVAL);
	cr_assert_eq(virtio_dev_init(&d, &fake_ops, 1, 0, 2, bad, &as, irq), -EINVAL);
	cr_assert_eq(virtio_dev_init(&d, &fake_ops, 1, 0, 1, zero, &as, irq), -EINVAL);
	cr_assert_eq(virtio_dev_init(&d, &fake_ops, 1, 0, 1, big, &as, irq), 0);
	fake_init(&f);
	cr_assert_eq(f.dev.device_features, V1 | EVT, "VERSION_1 is always offered");
	cr_assert_eq(f.dev.status, 0);
	cr_assert_eq(f.dev.queues[1].size, 16);
	vqm_fini(&f.m);
}

Test(virtio_status, full_bring_up_activates_and_notifies)
{
	struct fake f;
	struct virtq *vq;

	fake_init(&f);
	bring_up(&f, ACK | DRV | FOK | DOK);
	cr_assert_eq(f.dev.status, ACK | DRV | FOK | DOK);
	cr_assert_eq(f.activated, 1);
	vq = virtio_queue(&f.dev, 0);
	cr_assert_not_null(vq);
	cr_assert(vq->event_idx, "negotiated ring features reach the queue");
	cr_assert_not(vq->indirect);
	cr_assert_null(virtio_queue(&f.dev, 1), "queue 1 never enabled");
	cr_assert_eq(virtio_set_status(&f.dev, ACK | DRV | FOK | DOK), 0, "rewriting the same status is harmless");
	cr_assert_eq(f.activated, 1, "and does not activate twice");

	virtio_queue_notify(&f.dev, 0);
	virtio_queue_notify(&f.dev, 1); /* not enabled */
	virtio_queue_notify(&f.dev, 7); /* does not exist */
	cr_assert_eq(f.notified[0], 1);
	cr_assert_eq(f.notified[1], 0);

	cr_assert_eq(virtq_push(vq, 0, 0), 0);
	cr_assert_eq(virtio_notify_used(&f.dev, 0), 0);
	cr_assert_eq(f.irq_queue[0], 1);
	cr_assert_eq(virtio_notify_used(&f.dev, 1), -EINVAL);
	vqm_fini(&f.m);
}

/* Each case: bring up to `from`, write `to`, expect err and the status unchanged. */
struct bad_case {
	uint8_t from, to;
	int err;
	const char *why;
};

Test(virtio_status, illegal_transitions_are_refused)
{
	const struct bad_case cases[] = {
		{ 0, DRV, -EINVAL, "DRIVER without ACKNOWLEDGE" },
		{ 0, FOK, -EINVAL, "FEATURES_OK first" },
		{ 0, DOK, -EINVAL, "DRIVER_OK first" },
		{ 0, NRS, -EINVAL, "driver sets DEVICE_NEEDS_RESET" },
		{ 0, 0x10, -EINVAL, "reserved bit 4" },
		{ 0, 0x20, -EINVAL, "reserved bit 5" },
		{ ACK, ACK | FOK, -EINVAL, "FEATURES_OK without DRIVER" },
		{ ACK, ACK | DRV | FOK, -ENOTSUP, "DRIVER and FEATURES_OK together: no features written yet" },
		{ ACK | DRV, ACK | DRV | DOK, -EINVAL, "DRIVER_OK without FEATURES_OK" },
		{ ACK | DRV, ACK | DRV | FOK | DOK, -EINVAL, "FEATURES_OK and DRIVER_OK together" },
		{ ACK | DRV, ACK, -EINVAL, "clearing DRIVER" },
		{ ACK | DRV | FOK, ACK | DRV, -EINVAL, "clearing FEATURES_OK" },
		{ ACK | DRV | FOK, DRV | FOK, -EINVAL, "clearing ACKNOWLEDGE" },
		{ ACK | DRV | FOK | DOK, ACK | DRV | DOK, -EINVAL, "clearing FEATURES_OK after DRIVER_OK" },
		{ ACK | DRV | FOK | DOK, ACK | DRV | FOK, -EINVAL, "clearing DRIVER_OK" },
		{ ACK | DRV | FOK | DOK, ACK | DRV | FOK | DOK | NRS, -EINVAL, "driver sets NEEDS_RESET" },
	};

	for (unsigned int i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct bad_case *c = &cases[i];
		struct fake f;

		fake_init(&f);
		if (c->from)
			bring_up(&f, c->from);
		cr_assert_eq(virtio_set_status(&f.dev, c->to), c->err, "%s", c->why);
		cr_assert_eq(f.dev.status, c->from, "%s: status unchanged", c->why);
		cr_assert_eq(f.activated, c->from & DOK ? 1 : 0, "%s", c->why);
		vqm_fini(&f.m);
	}
}

Test(virtio_status, features_ok_needs_subset_and_version_1)
{
	struct fake f;

	fake_init(&f);
	bring_up(&f, ACK | DRV);
	cr_assert_eq(virtio_set_driver_features(&f.dev, V1 | VIRTIO_BIT(VIRTIO_F_ACCESS_PLATFORM)), 0);
	cr_assert_eq(virtio_set_status(&f.dev, ACK | DRV | FOK), -ENOTSUP, "ACCESS_PLATFORM not offered");
	cr_assert_eq(f.dev.status, ACK | DRV, "FEATURES_OK reads back clear");
	cr_assert_eq(virtio_set_driver_features(&f.dev, EVT), 0);
	cr_assert_eq(virtio_set_status(&f.dev, ACK | DRV | FOK), -ENOTSUP, "legacy driver (no VERSION_1)");
	cr_assert_eq(f.dev.status, ACK | DRV);
	cr_assert_eq(virtio_set_driver_features(&f.dev, V1), 0);
	cr_assert_eq(virtio_set_status(&f.dev, ACK | DRV | FOK), 0);
	cr_assert_eq(virtio_set_driver_features(&f.dev, V1 | EVT), -EINVAL, "features frozen after FEATURES_OK");
	cr_assert_eq(f.dev.driver_features, V1);
	vqm_fini(&f.m);

	fake_init(&f);
	cr_assert_eq(virtio_set_driver_features(&f.dev, V1), -EINVAL, "before DRIVER");
	bring_up(&f, ACK);
	cr_assert_eq(virtio_set_driver_features(&f.dev, V1), -EINVAL, "before DRIVER");
	vqm_fini(&f.m);
}

Test(virtio_status, failed_then_only_reset)
{
	struct fake f;

	fake_init(&f);
	bring_up(&f, ACK | DRV);
	cr_assert_eq(virtio_set_status(&f.dev, ACK | DRV | FAIL), 0, "the driver may give up at any time");
	cr_assert_eq(f.dev.status, ACK | DRV | FAIL);
	cr_assert_eq(virtio_set_status(&f.dev, ACK | DRV | FAIL | FOK), -EINVAL);
	cr_assert_eq(virtio_set_driver_features(&f.dev, V1), -EINVAL);
	cr_assert_eq(virtio_set_status(&f.dev, 0), 0);
	cr_assert_eq(f.dev.status, 0);
	bring_up(&f, ACK | DRV | FOK | DOK);
	cr_assert_eq(f.activated, 1, "a reset device comes up again");
	vqm_fini(&f.m);
}

Test(virtio_status, reset_forgets_driver_state)
{
	struct fake f;

	fake_init(&f);
	bring_up(&f, ACK | DRV | FOK);
	cr_assert_eq(virtio_queue_set_size(&f.dev, 1, 4), 0);
	cr_assert_eq(virtio_set_status(&f.dev, ACK | DRV | FOK | DOK), 0);
	cr_assert_eq(virtio_set_status(&f.dev, 0), 0);
	cr_assert_eq(f.resets, 1);
	cr_assert_eq(f.dev.status, 0);
	cr_assert_eq(f.dev.driver_features, 0);
	cr_assert_null(virtio_queue(&f.dev, 0));
	cr_assert_not(f.dev.queues[0].vq.ready);
	cr_assert_eq(f.dev.queues[1].size, 16, "size back to the maximum");
	cr_assert_eq(f.dev.queues[0].desc, 0);
	virtio_queue_notify(&f.dev, 0);
	cr_assert_eq(f.notified[0], 0, "no kicks reach a reset device");
	vqm_fini(&f.m);
}

Test(virtio_status, activate_failure_needs_reset)
{
	struct fake f;

	fake_init(&f);
	f.activate_ret = -ENOMEM;
	bring_up(&f, ACK | DRV | FOK);
	cr_assert_eq(virtio_set_status(&f.dev, ACK | DRV | FOK | DOK), -ENOMEM);
	cr_assert_eq(f.dev.status, ACK | DRV | FOK | DOK | NRS);
	cr_assert_eq(f.irq_config, 1);
	virtio_queue_notify(&f.dev, 0);
	cr_assert_eq(f.notified[0], 0, "a device needing reset ignores kicks");
	cr_assert_eq(virtio_set_status(&f.dev, ACK | DRV | FOK | DOK | NRS), 0, "the driver may echo NEEDS_RESET");
	vqm_fini(&f.m);
}

Test(virtio_status, needs_reset_interrupts_only_when_live)
{
	struct fake f;

	fake_init(&f);
	bring_up(&f, ACK | DRV | FOK);
	virtio_set_needs_reset(&f.dev);
	cr_assert(f.dev.status & NRS);
	cr_assert_eq(f.irq_config, 0, "no config interrupt before DRIVER_OK");
	cr_assert_eq(virtio_set_status(&f.dev, 0), 0);
	cr_assert_eq(f.dev.status, 0, "reset clears NEEDS_RESET");

	bring_up(&f, ACK | DRV | FOK | DOK);
	virtio_set_needs_reset(&f.dev);
	virtio_set_needs_reset(&f.dev);
	cr_assert_eq(f.irq_config, 1, "once");
	vqm_fini(&f.m);
}

Test(virtio_status, config_changed_bumps_generation)
{
	struct fake f;

	fake_init(&f);
	virtio_config_changed(&f.dev);
	cr_assert_eq(f.dev.config_generation, 1);
	cr_assert_eq(f.irq_config, 0);
	bring_up(&f, ACK | DRV | FOK | DOK);
	virtio_config_changed(&f.dev);
	cr_assert_eq(f.dev.config_generation, 2);
	cr_assert_eq(f.irq_config, 1);
	vqm_fini(&f.m);
}

Test(virtio_status, queue_setup_window_and_checks)
{
	struct fake f;
	struct virtio_dev *d = &f.dev;

	fake_init(&f);
	bring_up(&f, ACK | DRV);
	cr_assert_eq(virtio_queue_set_size(d, 0, 8), -EINVAL, "before FEATURES_OK");
	cr_assert_eq(virtio_queue_enable(d, 0), -EINVAL, "before FEATURES_OK");
	cr_assert_eq(virtio_set_status(d, ACK | DRV | FOK), 0);
	cr_assert_eq(virtio_queue_set_size(d, 2, 8), -EINVAL, "no queue 2");
	cr_assert_eq(virtio_queue_set_size(d, 0, 16), -EINVAL, "above max 8");
	cr_assert_eq(virtio_queue_set_size(d, 0, 6), -EINVAL, "not a power of two");
	cr_assert_eq(virtio_queue_set_size(d, 0, 0), -EINVAL);
	cr_assert_eq(virtio_queue_set_size(d, 0, 4), 0);
	cr_assert_eq(virtio_queue_set_addr(d, 0, f.m.desc + 4, f.m.avail, f.m.used), 0);
	cr_assert_eq(virtio_queue_enable(d, 0), -EINVAL, "misaligned desc");
	cr_assert_eq(virtio_queue_set_addr(d, 0, VQM_HOLE, f.m.avail, f.m.used), 0);
	cr_assert_eq(virtio_queue_enable(d, 0), -EFAULT, "desc not in RAM");
	cr_assert_null(virtio_queue(d, 0));
	cr_assert_eq(virtio_queue_set_addr(d, 0, f.m.desc, f.m.avail, f.m.used), 0);
	cr_assert_eq(virtio_queue_enable(d, 0), 0);
	cr_assert_eq(virtio_queue(d, 0)->size, 4);
	cr_assert_eq(virtio_queue_enable(d, 0), -EINVAL, "already enabled");
	cr_assert_eq(virtio_queue_set_addr(d, 0, 0, 0, 0), -EINVAL, "enabled queues are fixed");
	cr_assert_eq(virtio_set_status(d, ACK | DRV | FOK | DOK), 0);
	cr_assert_eq(virtio_queue_set_size(d, 1, 8), -EINVAL, "after DRIVER_OK");
	cr_assert_eq(virtio_queue_enable(d, 1), -EINVAL, "after DRIVER_OK");
	vqm_fini(&f.m);
}

static int deny_translate(const struct dma_as *as, uint64_t iova, uint64_t len, unsigned int perm, void **host,
			  uint64_t *run)
{
	return -EFAULT;
}

static const struct dma_as_ops deny_ops = { .translate = deny_translate };

Test(virtio_status, ring_fault_on_notify_needs_reset)
{
	struct fake f;
	const struct dma_as deny = { .ops = &deny_ops };

	fake_init(&f);
	bring_up(&f, ACK | DRV | FOK | DOK);
	virtio_queue(&f.dev, 0)->as = &deny; /* the rings were unmapped behind the device's back */
	cr_assert_eq(virtio_notify_used(&f.dev, 0), -EFAULT);
	cr_assert(f.dev.status & NRS);
	cr_assert_eq(f.irq_config, 1);
	cr_assert_eq(f.irq_queue[0], 0);
	vqm_fini(&f.m);
}
