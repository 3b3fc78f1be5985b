/*
 * virtio-rng (VIRTIO 1.2 section 5.4): the guest's entropy source, fed by the host's getrandom().
 * The smallest whole device: start here when writing a new one.
 */
#ifndef MOAT_VIRTIO_RNG_H
#define MOAT_VIRTIO_RNG_H

#include <stddef.h>

#include "devices/virtio/virtio.h"
#include "vmm/dma.h"

#define VIRTIO_ID_RNG 4u

struct virtio_rng;

/* as must outlive the device. The irq is left empty for the transport. -ENOMEM. */
int virtio_rng_new(const struct dma_as *as, struct virtio_rng **out, char *err, size_t errlen)
	__attribute__((warn_unused_result));
struct virtio_dev *virtio_rng_dev(struct virtio_rng *rng);
/* NULL is fine. */
void virtio_rng_free(struct virtio_rng *rng);

#endif
