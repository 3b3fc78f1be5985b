/*
 * VIRTIO 1.x split virtqueue, device side.
 *
 * The queue keeps the driver's ring addresses as IOVAs and reaches them through a
 * struct dma_as on every access, never through cached host pointers: the rings may
 * sit behind an IOMMU whose mappings change, and ACCESS_PLATFORM must keep meaning
 * something. Every value read from the rings is guest-controlled and checked.
 *
 * Not thread-safe: one thread (the device's worker) owns a queue at a time.
 */
#ifndef MOAT_VIRTQUEUE_H
#define MOAT_VIRTQUEUE_H

#include <stdbool.h>
#include <stdint.h>

#include "vmm/dma.h"

#define VIRTQ_MAX_SIZE 32768u

/* Descriptor flags. */
#define VIRTQ_DESC_F_NEXT 1u
#define VIRTQ_DESC_F_WRITE 2u
#define VIRTQ_DESC_F_INDIRECT 4u
/* avail->flags: the driver asks for no used-buffer notifications (ignored with EVENT_IDX). */
#define VRING_AVAIL_F_NO_INTERRUPT 1u
/* used->flags: the device asks for no available-buffer notifications (ignored with EVENT_IDX). */
#define VRING_USED_F_NO_NOTIFY 1u

/* Ring layout sizes (bytes) and alignments from VIRTIO 1.2, 2.7. */
#define VIRTQ_DESC_SIZE 16u
#define VIRTQ_DESC_ALIGN 16u
#define VIRTQ_AVAIL_ALIGN 2u
#define VIRTQ_USED_ALIGN 4u
#define VIRTQ_DESC_BYTES(n) ((uint64_t)(n) * 16u)
#define VIRTQ_AVAIL_BYTES(n) (6u + (uint64_t)(n) * 2u) /* flags, idx, ring[n], used_event */
#define VIRTQ_USED_BYTES(n) (6u + (uint64_t)(n) * 8u)  /* flags, idx, ring[n], avail_event */

/*
 * Segments a chain may have once zero-length descriptors are dropped. A driver needing
 * more is beyond what moat's devices advertise (e.g. virtio-blk seg_max), so pop rejects it.
 */
#define VIRTQ_MAX_SEGS 256u

struct virtq_seg {
	uint64_t iova;
	uint32_t len; /* > 0 */
	bool write;   /* device-writable */
};

/* One popped chain: readable segments first (seg[0..nread)), then writable ones. */
struct virtq_chain {
	uint16_t head;       /* pass back to virtq_push */
	unsigned int nseg;
	unsigned int nread;
	uint32_t read_len;   /* bytes in the readable segments */
	uint32_t write_len;  /* bytes in the writable segments */
	struct virtq_seg seg[VIRTQ_MAX_SEGS];
};

struct virtq {
	const struct dma_as *as;
	uint64_t desc, avail, used; /* IOVAs of the three areas */
	uint16_t size;              /* power of two; a uint16_t holds 32768 */
	uint16_t last_avail_idx;    /* next avail->ring slot to consume (free-running) */
	uint16_t used_idx;          /* next used->idx to publish (free-running) */
	uint16_t signalled_used;    /* used_idx at the last notification decision */
	bool signalled_valid;       /* false until the first decision: then always notify */
	bool event_idx;             /* VIRTIO_RING_F_EVENT_IDX negotiated */
	bool indirect;              /* VIRTIO_RING_F_INDIRECT_DESC negotiated */
	bool ready;
	bool kicks_off;             /* the device polls: it asked the driver not to notify (virtq_set_kicks) */
	int error;                  /* sticky: after a malformed chain the queue stays broken */
};

/*
 * Validate and start a queue: size a power of two in [1, 32768], areas aligned (desc 16,
 * avail 2, used 4) and mapped (desc/avail readable, used writable). -EINVAL / -EFAULT.
 * Ring features are off until virtq_set_features().
 */
int virtq_init(struct virtq *q, const struct dma_as *as, unsigned int size, uint64_t desc, uint64_t avail,
	       uint64_t used) __attribute__((warn_unused_result));
/* Take EVENT_IDX / INDIRECT_DESC from the negotiated driver features. */
void virtq_set_features(struct virtq *q, uint64_t driver_features);
/* Forget everything (device reset). */
void virtq_reset(struct virtq *q);

/*
 * Next available chain into *chain: 1 if one was taken, 0 if the queue is empty,
 * -EINVAL for a malformed chain or ring, -EFAULT for an unmapped address. After an
 * error the queue stays broken and the caller should mark the device NEEDS_RESET.
 */
int virtq_pop(struct virtq *q, struct virtq_chain *chain) __attribute__((warn_unused_result));
/* Chains the driver has made available that are not taken yet (>= 0), or -errno (the queue is then broken). */
int virtq_pending(struct virtq *q) __attribute__((warn_unused_result));
/*
 * The queue's state in one phrase for a report, into buf (always terminated): the driver's avail idx, the
 * entries taken, used idx as published and as in guest memory, then the notification words (with EVENT_IDX
 * avail_event and used_event, else both flags), "polling" while kicks are off, "broken" after an error, "?"
 * for a word that cannot be read. Changes nothing.
 */
void virtq_describe(const struct virtq *q, char *buf, size_t len);
/*
 * Ask the driver to stop (on = false) or resume (on = true) notifying new buffers, for a device that
 * polls the avail ring meanwhile. Off: VRING_USED_F_NO_NOTIFY, or with EVENT_IDX an avail_event the
 * driver has already passed, and pops leave it so. On: the flag cleared, or avail_event at the next
 * entry, then a full barrier; the caller must look at virtq_pending() afterwards, since a buffer made
 * available before the driver saw the change came with no kick. A no-op on a queue not ready.
 */
int virtq_set_kicks(struct virtq *q, bool on) __attribute__((warn_unused_result));
/* Return a chain to the driver with written bytes. -EINVAL for a bad head, -EFAULT if the ring is unmapped. */
int virtq_push(struct virtq *q, uint16_t head, uint32_t written) __attribute__((warn_unused_result));
/* After one or more pushes: 1 if the driver wants an interrupt now, 0 if not, -errno. */
int virtq_needs_notify(struct virtq *q) __attribute__((warn_unused_result));

/* Copy out of a chain's readable bytes starting at off; -EFAULT if not all of it is there or mapped. */
int virtq_chain_read(const struct virtq *q, const struct virtq_chain *chain, uint32_t off, void *buf,
		     uint32_t len) __attribute__((warn_unused_result));
/* Copy into a chain's writable bytes starting at off; -EFAULT likewise. */
int virtq_chain_write(const struct virtq *q, const struct virtq_chain *chain, uint32_t off, const void *buf,
		      uint32_t len) __attribute__((warn_unused_result));

#endif
