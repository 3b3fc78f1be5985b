/*
 * Device-side virtio core shared by every virtio device: feature and status bits,
 * the common device state and the status/feature state machine of VIRTIO 1.2 3.1.
 *
 * Transport-agnostic: a transport (virtio-pci later) owns the registers and calls
 * into here; a device supplies a const struct virtio_dev_ops and never sees its
 * transport. Interrupts go out through an injected struct virtio_irq.
 */
#ifndef MOAT_VIRTIO_H
#define MOAT_VIRTIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "devices/virtio/virtqueue.h"
#include "vmm/dma.h"

/* Feature bit numbers. */
#define VIRTIO_RING_F_INDIRECT_DESC 28
#define VIRTIO_RING_F_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32
#define VIRTIO_F_ACCESS_PLATFORM 33
#define VIRTIO_BIT(n) (1ull << (n))

/* Device status bits. */
#define VIRTIO_STATUS_ACKNOWLEDGE 1u
#define VIRTIO_STATUS_DRIVER 2u
#define VIRTIO_STATUS_DRIVER_OK 4u
#define VIRTIO_STATUS_FEATURES_OK 8u
#define VIRTIO_STATUS_DEVICE_NEEDS_RESET 64u
#define VIRTIO_STATUS_FAILED 128u

#define VIRTIO_MAX_QUEUES 16u

enum virtio_irq_kind {
	VIRTIO_IRQ_QUEUE,  /* used buffers on queue `queue` */
	VIRTIO_IRQ_CONFIG, /* configuration change (or NEEDS_RESET) */
};

/* Supplied by the transport: it knows whether this is an MSI-X vector, an ISR bit + INTx, ... */
struct virtio_irq {
	int (*fn)(void *ctx, enum virtio_irq_kind kind, unsigned int queue);
	/*
	 * For back ends that serve the rings outside moat (kernel vhost): the eventfd the driver's kicks on
	 * queue signal, and the eventfd that raises queue's interrupt without moat (-1 when the driver gave
	 * the queue no vector or did not enable MSI-X). The fds stay the transport's. NULL in transports
	 * that have none; -errno.
	 */
	int (*queue_eventfds)(void *ctx, unsigned int queue, int *kick_fd, int *call_fd);
	void *ctx;
};

struct virtio_dev;

/*
 * A back-end fd the device wants watched (a TAP for RX, ...). The device's worker thread
 * polls it and calls fn(dev, epoll events) serialized with every other call into the device
 * (dev->lock held). fn must do nothing unless the device is live (virtio_dev_live()).
 */
struct virtio_backend_fd {
	int fd;
	uint32_t events; /* EPOLLIN, EPOLLOUT, EPOLLET ... */
	void (*fn)(struct virtio_dev *dev, uint32_t events);
};

#define VIRTIO_MAX_BACKEND_FDS 4u

/*
 * Threading: each device has one worker thread (devices/virtio/worker.c) that receives the
 * driver's kicks (ioeventfds) and back-end events; the transport handles register accesses on
 * vCPU threads. Both hold dev->lock around every call into the ops below, so a device never
 * locks and never sees two calls at once. Handlers may block on the back end (a disk flush):
 * that only delays this device.
 */
struct virtio_dev_ops {
	const char *name; /* short, for logs and thread names: "net", "blk", "rng" */
	/* DRIVER_OK: features are final and enabled queues are initialised; start serving. */
	int (*activate)(struct virtio_dev *dev);
	/* Status written 0 (or the transport's reset): stop touching queues and guest memory. */
	void (*reset)(struct virtio_dev *dev);
	/* The driver kicked queue `queue` (< nqueues, enabled). */
	void (*queue_notify)(struct virtio_dev *dev, unsigned int queue);
	/* Device-specific configuration space; off/len are guest-controlled, the device bounds them. */
	int (*config_read)(struct virtio_dev *dev, uint32_t off, void *buf, uint32_t len);
	int (*config_write)(struct virtio_dev *dev, uint32_t off, const void *buf, uint32_t len);
	/* Optional: the back-end fds to watch, asked once when the worker starts; returns how many (<= max). */
	unsigned int (*backend_fds)(struct virtio_dev *dev, struct virtio_backend_fd *out, unsigned int max);
	/*
	 * Serve kicks on the vCPU thread that wrote the notify register instead of the worker: for short,
	 * never-blocking request queues whose driver spins for the answer (the IOMMU's MAP/UNMAP), where
	 * waking another thread costs more than the work. Back-end fds still go to the worker.
	 */
	bool notify_inline;
	/*
	 * The back end reads the queues' kick eventfds itself (irq.queue_eventfds): the worker must not
	 * consume them. queue_notify is then only called for kicks the transport could not deliver.
	 */
	bool kicks_elsewhere;
};

/* A queue as the transport configures it, and the running queue once enabled. */
struct virtio_queue {
	uint16_t max_size;      /* the device's limit (power of two); 0: queue does not exist */
	uint16_t size;          /* driver's choice, defaults to max_size */
	uint64_t desc, avail, used;
	bool enabled;
	struct virtq vq;
};

struct virtio_dev {
	const struct virtio_dev_ops *ops;
	uint32_t device_id;
	uint64_t device_features;
	uint64_t required_features; /* FEATURES_OK is refused without these (ACCESS_PLATFORM behind an IOMMU) */
	uint64_t driver_features;
	uint8_t status;
	uint32_t config_generation;
	unsigned int nqueues;
	struct virtio_queue queues[VIRTIO_MAX_QUEUES];
	const struct dma_as *as; /* how this device reaches guest memory (identity or IOMMU) */
	struct virtio_irq irq;   /* set by the transport when the device is plugged in */
	pthread_mutex_t lock;    /* taken by the transport and the worker, never by the device */
};

/*
 * Each enabled queue's state (virtq_describe), "queue N: ...; queue M: ...", into buf (always terminated):
 * for a report, say of a guest that stopped making progress. Takes dev->lock.
 */
void virtio_describe_queues(struct virtio_dev *dev, char *buf, size_t len);

/*
 * Set up the common state. queue_sizes[i] is each queue's maximum size (power of two,
 * <= 32768). VERSION_1 is always offered: moat is a modern-only device. -EINVAL.
 */
int virtio_dev_init(struct virtio_dev *dev, const struct virtio_dev_ops *ops, uint32_t device_id,
		    uint64_t device_features, unsigned int nqueues, const uint16_t *queue_sizes,
		    const struct dma_as *as, struct virtio_irq irq) __attribute__((warn_unused_result));

/*
 * A status write from the driver. 0 resets. Otherwise bits may only be added, in order
 * (ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK), never removed, never DEVICE_NEEDS_RESET;
 * FAILED at any time, and after FAILED only a reset. FEATURES_OK only if the driver's
 * features are a subset of the device's and include VERSION_1 and required_features (-ENOTSUP, the bit stays
 * clear so the driver sees it refused). DRIVER_OK calls ops->activate. A refused write
 * leaves the status unchanged and returns -EINVAL.
 */
int virtio_set_status(struct virtio_dev *dev, uint8_t status) __attribute__((warn_unused_result));
/* Driver feature write: only between DRIVER and FEATURES_OK. -EINVAL otherwise. */
int virtio_set_driver_features(struct virtio_dev *dev, uint64_t features) __attribute__((warn_unused_result));
/*
 * The device sits behind an IOMMU: offer VIRTIO_F_ACCESS_PLATFORM and insist on it, so a driver
 * cannot get its device to use guest-physical addresses by leaving it out (dev->as translates IOVAs).
 */
void virtio_dev_require_access_platform(struct virtio_dev *dev);
/* Destroy what virtio_dev_init set up (the lock). */
void virtio_dev_fini(struct virtio_dev *dev);
/* DRIVER_OK set, neither NEEDS_RESET nor FAILED: the device may serve its queues. */
bool virtio_dev_live(const struct virtio_dev *dev);

/* Reset everything the driver set up, and tell the device (ops->reset). */
void virtio_reset(struct virtio_dev *dev);

/*
 * Queue configuration by the transport: allowed after FEATURES_OK and before DRIVER_OK
 * (-EINVAL otherwise, or for a queue that does not exist / is already enabled).
 */
int virtio_queue_set_size(struct virtio_dev *dev, unsigned int queue, unsigned int size)
	__attribute__((warn_unused_result));
int virtio_queue_set_addr(struct virtio_dev *dev, unsigned int queue, uint64_t desc, uint64_t avail, uint64_t used)
	__attribute__((warn_unused_result));
/* Validate and start the queue (virtq_init with the negotiated ring features). -EINVAL / -EFAULT. */
int virtio_queue_enable(struct virtio_dev *dev, unsigned int queue) __attribute__((warn_unused_result));
/* The running queue, or NULL if it does not exist or is not enabled. */
struct virtq *virtio_queue(struct virtio_dev *dev, unsigned int queue);

/* Forward a driver kick to the device if the queue is enabled and the device is live. */
void virtio_queue_notify(struct virtio_dev *dev, unsigned int queue);
/* After pushes on a queue: interrupt the driver if it wants one; a ring fault marks NEEDS_RESET. */
int virtio_notify_used(struct virtio_dev *dev, unsigned int queue);

/*
 * Serve every available chain of queue: serve(dev, q, chain, &written) returns 0 to give the chain back
 * with `written` bytes, or -errno when the queue cannot go on (a malformed ring, guest memory gone):
 * the device then needs a reset. One interrupt for the batch. For devices that answer each request
 * before taking the next (blk, rng, iommu).
 */
void virtio_serve_queue(struct virtio_dev *dev, unsigned int queue,
			int (*serve)(struct virtio_dev *dev, const struct virtq *q, const struct virtq_chain *c,
				     uint32_t *written));

/* The device found itself or the driver broken: set DEVICE_NEEDS_RESET and raise a config interrupt. */
void virtio_set_needs_reset(struct virtio_dev *dev);
/* Device config changed: bump the generation and raise a config interrupt. */
void virtio_config_changed(struct virtio_dev *dev);

#endif
