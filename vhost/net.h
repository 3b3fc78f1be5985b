/*
 * virtio-net with its data path in the host kernel (vhost-net): moat keeps the virtio device (features,
 * configuration space, status) and hands the rings to /dev/vhost-net at DRIVER_OK. Kicks go from KVM's
 * ioeventfds straight to vhost and interrupts from vhost straight to KVM's irqfds, so no packet
 * touches moat.
 *
 * Behind the virtio-iommu, the device negotiates VIRTIO_F_ACCESS_PLATFORM with vhost, vhost addresses
 * guest memory by IOVA, and its device IOTLB is served from moat's IOMMU page tables (vhost/iotlb.h)
 * by a thread per device. Without the IOMMU, vhost uses the memory table (IOVA == GPA).
 *
 * Activation and reset run on the vCPU thread that wrote the status, under dev->lock.
 */
#ifndef MOAT_VHOST_NET_H
#define MOAT_VHOST_NET_H

#include <stdbool.h>
#include <stddef.h>

#include "devices/net/tap.h"
#include "devices/virtio/iommu.h"
#include "devices/virtio/virtio.h"
#include "vmm/dma.h"

struct vm;
struct guest_memory;
struct vhost_net;

struct vhost_net_params {
	struct vm *vm;                      /* for its log; NULL in tests */
	const struct net_config *cfg;
	int tap_fd;                         /* not owned */
	struct guest_memory *gm;            /* the memory table vhost gets */
	const struct dma_as *as;            /* the device's DMA path: the endpoint's, or identity */
	struct viommu_endpoint *ep;         /* NULL: not behind the IOMMU */
	int prefetch;                       /* enum vhost_iotlb_prefetch: push guest MAPs into vhost's IOTLB */
	int (*set_offload)(void *ctx, unsigned int tun_flags);
	void *offload_ctx;
};

/*
 * Open /dev/vhost-net, become its owner, give it the memory table, and build the device. -errno with
 * err naming the problem and the fix (module not loaded, no permission, a kernel without what is needed).
 */
int vhost_net_new(const struct vhost_net_params *p, struct vhost_net **out, char *err, size_t errlen)
	__attribute__((warn_unused_result));
struct virtio_dev *vhost_net_dev(struct vhost_net *n);
/* Start the IOTLB thread (behind the IOMMU only), when the guest starts. -errno. */
int vhost_net_start(struct vhost_net *n) __attribute__((warn_unused_result));
/* Stops the thread, closes the vhost fd (not the TAP). NULL is fine. */
void vhost_net_free(struct vhost_net *n);
/* One line: vhost state and, behind the IOMMU, the IOTLB counters. Callable from any thread. */
void vhost_net_stats(const struct vhost_net *n, char *buf, size_t len);

#endif
