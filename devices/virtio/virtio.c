#include "devices/virtio/virtio.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define STATUS_KNOWN                                                                                 \
	(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_DRIVER_OK |                  \
	 VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DEVICE_NEEDS_RESET | VIRTIO_STATUS_FAILED)

static bool queue_size_ok(unsigned int size, unsigned int max)
{
	return size && size <= max && !(size & (size - 1));
}

int virtio_dev_init(struct virtio_dev *dev, const struct virtio_dev_ops *ops, uint32_t device_id,
		    uint64_t device_features, unsigned int nqueues, const uint16_t *queue_sizes,
		    const struct dma_as *as, struct virtio_irq irq)
{
	if (!ops || !ops->activate || !ops->reset || !ops->queue_notify || !as || nqueues > VIRTIO_MAX_QUEUES)
		return -EINVAL;
	for (unsigned int i = 0; i < nqueues; i++)
		if (!queue_size_ok(queue_sizes[i], VIRTQ_MAX_SIZE))
			return -EINVAL;
	memset(dev, 0, sizeof(*dev));
	dev->ops = ops;
	dev->device_id = device_id;
	dev->device_features = device_features | VIRTIO_BIT(VIRTIO_F_VERSION_1);
	dev->nqueues = nqueues;
	dev->as = as;
	dev->irq = irq;
	for (unsigned int i = 0; i < nqueues; i++)
		dev->queues[i].max_size = dev->queues[i].size = queue_sizes[i];
	pthread_mutex_init(&dev->lock, NULL);
	return 0;
}

void virtio_dev_require_access_platform(struct virtio_dev *dev)
{
	dev->device_features |= VIRTIO_BIT(VIRTIO_F_ACCESS_PLATFORM);
	dev->required_features |= VIRTIO_BIT(VIRTIO_F_ACCESS_PLATFORM);
}

void virtio_dev_fini(struct virtio_dev *dev)
{
	pthread_mutex_destroy(&dev->lock);
}

bool virtio_dev_live(const struct virtio_dev *dev)
{
	return (dev->status & VIRTIO_STATUS_DRIVER_OK) &&
	       !(dev->status & (VIRTIO_STATUS_DEVICE_NEEDS_RESET | VIRTIO_STATUS_FAILED));
}

static void raise_irq(struct virtio_dev *dev, enum virtio_irq_kind kind, unsigned int queue)
{
	/* A failed injection is the transport's to report; the device has nothing better to do. */
	if (dev->irq.fn)
		(void)dev->irq.fn(dev->irq.ctx, kind, queue);
}

void virtio_reset(struct virtio_dev *dev)
{
	/* The device first, so it stops using queues before they are forgotten. */
	dev->ops->reset(dev);
	for (unsigned int i = 0; i < dev->nqueues; i++) {
		struct virtio_queue *q = &dev->queues[i];
		q->size = q->max_size;
		q->desc = q->avail = q->used = 0;
		q->enabled = false;
		virtq_reset(&q->vq);
	}
	dev->driver_features = 0;
	dev->status = 0;
}

static bool features_acceptable(const struct virtio_dev *dev)
{
	return !(dev->driver_features & ~dev->device_features) &&
	       (dev->driver_features & VIRTIO_BIT(VIRTIO_F_VERSION_1)) &&
	       (dev->driver_features & dev->required_features) == dev->required_features;
}

int virtio_set_status(struct virtio_dev *dev, uint8_t status)
{
	uint8_t old = dev->status, added = status & ~old, next = old | added;
	int err;

	if (status == 0) {
		virtio_reset(dev);
		return 0;
	}
	if (old & ~status)
		return -EINVAL; /* only a reset clears bits */
	if (!added)
		return 0;
	/* NEEDS_RESET is the device's to set; a driver echoing it back is fine (it is in old). */
	if ((added & ~STATUS_KNOWN) || (added & VIRTIO_STATUS_DEVICE_NEEDS_RESET))
		return -EINVAL;
	if (old & VIRTIO_STATUS_FAILED)
		return -EINVAL; /* the driver gave up: it must reset first */
	if (added & VIRTIO_STATUS_FAILED) {
		dev->status = old | VIRTIO_STATUS_FAILED;
		return 0;
	}
	if ((added & VIRTIO_STATUS_DRIVER) && !(next & VIRTIO_STATUS_ACKNOWLEDGE))
		return -EINVAL;
	if ((added & VIRTIO_STATUS_FEATURES_OK) && !(next & VIRTIO_STATUS_DRIVER))
		return -EINVAL;
	/* Not together with FEATURES_OK: the driver must see it accepted and set up queues first. */
	if ((added & VIRTIO_STATUS_DRIVER_OK) && !(old & VIRTIO_STATUS_FEATURES_OK))
		return -EINVAL;
	if ((added & VIRTIO_STATUS_FEATURES_OK) && !features_acceptable(dev))
		return -ENOTSUP; /* FEATURES_OK stays clear; the driver reads it back and gives up */
	dev->status = next;
	if (!(added & VIRTIO_STATUS_DRIVER_OK))
		return 0;
	err = dev->ops->activate(dev);
	if (err)
		virtio_set_needs_reset(dev);
	return err;
}

int virtio_set_driver_features(struct virtio_dev *dev, uint64_t features)
{
	uint8_t s = dev->status;

	if (!(s & VIRTIO_STATUS_DRIVER) || (s & (VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_FAILED)))
		return -EINVAL;
	/* Kept as written: FEATURES_OK is where unoffered bits are refused. */
	dev->driver_features = features;
	return 0;
}

/* Queue setup happens between FEATURES_OK and DRIVER_OK, on a queue not yet enabled. */
static struct virtio_queue *queue_for_setup(struct virtio_dev *dev, unsigned int queue)
{
	uint8_t s = dev->status;

	if (queue >= dev->nqueues || !(s & VIRTIO_STATUS_FEATURES_OK) ||
	    (s & (VIRTIO_STATUS_DRIVER_OK | VIRTIO_STATUS_FAILED)) || dev->queues[queue].enabled)
		return NULL;
	return &dev->queues[queue];
}

int virtio_queue_set_size(struct virtio_dev *dev, unsigned int queue, unsigned int size)
{
	struct virtio_queue *q = queue_for_setup(dev, queue);

	if (!q || !queue_size_ok(size, q->max_size))
		return -EINVAL;
	q->size = (uint16_t)size;
	return 0;
}

int virtio_queue_set_addr(struct virtio_dev *dev, unsigned int queue, uint64_t desc, uint64_t avail, uint64_t used)
{
	struct virtio_queue *q = queue_for_setup(dev, queue);

	if (!q)
		return -EINVAL;
	q->desc = desc;
	q->avail = avail;
	q->used = used;
	return 0;
}

int virtio_queue_enable(struct virtio_dev *dev, unsigned int queue)
{
	struct virtio_queue *q = queue_for_setup(dev, queue);
	int err;

	if (!q)
		return -EINVAL;
	/* GUEST: size and the three ring addresses are validated and translated by virtq_init. */
	err = virtq_init(&q->vq, dev->as, q->size, q->desc, q->avail, q->used);
	if (err)
		return err;
	virtq_set_features(&q->vq, dev->driver_features);
	q->enabled = true;
	return 0;
}

struct virtq *virtio_queue(struct virtio_dev *dev, unsigned int queue)
{
	if (queue >= dev->nqueues || !dev->queues[queue].enabled)
		return NULL;
	return &dev->queues[queue].vq;
}

void virtio_describe_queues(struct virtio_dev *dev, char *buf, size_t len)
{
	size_t n = 0;

	if (!len)
		return;
	buf[0] = '\0';
	pthread_mutex_lock(&dev->lock);
	for (unsigned int i = 0; i < dev->nqueues && n + 1 < len; i++) {
		char q[160];
		int w;

		if (!dev->queues[i].enabled)
			continue;
		virtq_describe(&dev->queues[i].vq, q, sizeof(q));
		w = snprintf(buf + n, len - n, "%squeue %u: %s", n ? "; " : "", i, q);
		if (w < 0)
			break;
		n += (size_t)w < len - n ? (size_t)w : len - n - 1;
	}
	pthread_mutex_unlock(&dev->lock);
}

void virtio_queue_notify(struct virtio_dev *dev, unsigned int queue)
{
	/* A kick before DRIVER_OK, after NEEDS_RESET or for a queue never enabled is ignored. */
	if (!virtio_queue(dev, queue) || !virtio_dev_live(dev))
		return;
	dev->ops->queue_notify(dev, queue);
}

int virtio_notify_used(struct virtio_dev *dev, unsigned int queue)
{
	struct virtq *vq = virtio_queue(dev, queue);
	int r;

	if (!vq)
		return -EINVAL;
	r = virtq_needs_notify(vq);
	if (r < 0) {
		virtio_set_needs_reset(dev);
		return r;
	}
	if (r)
		raise_irq(dev, VIRTIO_IRQ_QUEUE, queue);
	return 0;
}

void virtio_set_needs_reset(struct virtio_dev *dev)
{
	if (dev->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET)
		return;
	dev->status |= VIRTIO_STATUS_DEVICE_NEEDS_RESET;
	/* 2.1.2: with DRIVER_OK set the device must tell the driver through a config change notification. */
	if (dev->status & VIRTIO_STATUS_DRIVER_OK)
		raise_irq(dev, VIRTIO_IRQ_CONFIG, 0);
}

void virtio_config_changed(struct virtio_dev *dev)
{
	dev->config_generation++;
	if (dev->status & VIRTIO_STATUS_DRIVER_OK)
		raise_irq(dev, VIRTIO_IRQ_CONFIG, 0);
}

void virtio_serve_queue(struct virtio_dev *dev, unsigned int queue,
			int (*serve)(struct virtio_dev *dev, const struct virtq *q, const struct virtq_chain *c,
				     uint32_t *written))
{
	struct virtq *q = virtio_queue(dev, queue);
	struct virtq_chain chain;
	bool pushed = false;
	int r;

	if (!q)
		return;
	for (;;) {
		uint32_t written = 0;

		/* Before each request, outside any section: the IOMMU's requests may be waiting on this CPU. */
		dma_help(q->as);
		r = virtq_pop(q, &chain);
		if (r != 1)
			break;
		r = serve(dev, q, &chain, &written);
		if (!r)
			r = virtq_push(q, chain.head, written);
		if (r)
			break;
		pushed = true;
	}
	/* A malformed chain, or guest memory gone from under one: the queue is broken until a reset. */
	if (r < 0)
		virtio_set_needs_reset(dev);
	/* A ring fault while notifying marks NEEDS_RESET in there; nothing more to do. */
	if (pushed && virtio_notify_used(dev, queue) < 0)
		return;
}
