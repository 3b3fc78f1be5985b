/*
 * virtio-rng. A new device follows the same shape: a struct that starts with its
 * struct virtio_dev, a const ops table, a queue handler that pops every available chain,
 * pushes each back with the bytes it wrote, notifies once, and marks the device
 * NEEDS_RESET when the driver hands it something broken.
 */
#include "devices/virtio/rng.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "vmm/log.h"

#define RNG_QUEUE_SIZE 64u
/* Per request: plenty to seed a guest, and one greedy request cannot keep the worker busy for long. */
#define RNG_MAX_REQUEST (64u * 1024)

struct virtio_rng {
	struct virtio_dev dev; /* rng keeps no state beyond the core's */
};

/*
 * Fill up to RNG_MAX_REQUEST of the chain's writable bytes; *written says how many.
 * -EFAULT if guest memory went away under the chain.
 */
static int rng_fill(const struct virtq *q, const struct virtq_chain *c, uint32_t *written)
{
	uint32_t want = c->write_len < RNG_MAX_REQUEST ? c->write_len : RNG_MAX_REQUEST, done = 0;
	uint8_t buf[4096];

	while (done < want) {
		size_t n = want - done < sizeof(buf) ? want - done : sizeof(buf);
		/*
		 * Blocking: the device must return at least one byte (5.4.6), and getrandom only blocks
		 * until the host's pool is first seeded, early in host boot; that would delay only this device.
		 */
		ssize_t got = getrandom(buf, n, 0);

		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break; /* cannot happen with a valid buffer; give the guest what there is */
		/* GUEST: [done, done+got) lies within write_len; chain_write checks the mapping now. */
		if (virtq_chain_write(q, c, done, buf, (uint32_t)got))
			return -EFAULT;
		done += (uint32_t)got;
	}
	*written = done;
	return 0;
}

/* Readable buffers are the driver's mistake (5.4.6) and are ignored; none writable gets 0 bytes. */
static int rng_serve(struct virtio_dev *dev, const struct virtq *q, const struct virtq_chain *c, uint32_t *written)
{
	return rng_fill(q, c, written);
}

static void rng_queue_notify(struct virtio_dev *dev, unsigned int queue)
{
	virtio_serve_queue(dev, queue, rng_serve);
}

static int rng_activate(struct virtio_dev *dev)
{
	return 0;
}

static void rng_reset(struct virtio_dev *dev)
{
	/* Nothing in flight: every request completes inside queue_notify. */
}

/* No configuration space: every access is out of range, and reads see zeros. */
static int rng_config_read(struct virtio_dev *dev, uint32_t off, void *buf, uint32_t len)
{
	memset(buf, 0, len);
	return -EINVAL;
}

static int rng_config_write(struct virtio_dev *dev, uint32_t off, const void *buf, uint32_t len)
{
	return -EINVAL;
}

static const struct virtio_dev_ops rng_ops = {
	.name = "rng",
	.activate = rng_activate,
	.reset = rng_reset,
	.queue_notify = rng_queue_notify,
	.config_read = rng_config_read,
	.config_write = rng_config_write,
};

int virtio_rng_new(const struct dma_as *as, struct virtio_rng **out, char *err, size_t errlen)
{
	static const uint16_t sizes[1] = { RNG_QUEUE_SIZE };
	const uint64_t features = VIRTIO_BIT(VIRTIO_RING_F_INDIRECT_DESC) | VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX);
	struct virtio_rng *rng = calloc(1, sizeof(*rng));
	int r;

	if (!rng)
		return set_err(err, errlen, -ENOMEM, "out of memory for the virtio-rng device");
	r = virtio_dev_init(&rng->dev, &rng_ops, VIRTIO_ID_RNG, features, 1, sizes, as, (struct virtio_irq){ 0 });
	if (r) {
		free(rng);
		return set_err(err, errlen, r, "cannot set up the virtio-rng device");
	}
	*out = rng;
	return 0;
}

struct virtio_dev *virtio_rng_dev(struct virtio_rng *rng)
{
	return &rng->dev;
}

void virtio_rng_free(struct virtio_rng *rng)
{
	if (!rng)
		return;
	virtio_dev_fini(&rng->dev);
	free(rng);
}
