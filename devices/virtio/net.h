/*
 * virtio-net device (VIRTIO 1.2, 5.1) over a packet fd: a TAP, or in tests one end of an
 * AF_UNIX SOCK_SEQPACKET socketpair. Every frame on the fd is prefixed by the 12-byte
 * VERSION_1 header (struct virtio_net_hdr_mrg_rxbuf), so offload metadata passes through.
 *
 * One receive/transmit queue pair (receiveq 0, transmitq 1), no control queue. Runs on the
 * device's worker thread (and a vCPU thread for activate/config) under dev->lock like every
 * virtio device; it never locks itself.
 */
#ifndef MOAT_VIRTIO_NET_H
#define MOAT_VIRTIO_NET_H

#include <stddef.h>

#include "devices/net/tap.h"
#include "devices/virtio/virtio.h"
#include "vmm/dma.h"

#define VIRTIO_ID_NET 1u

/* Feature bits (5.1.3). */
#define VIRTIO_NET_F_CSUM 0
#define VIRTIO_NET_F_GUEST_CSUM 1
#define VIRTIO_NET_F_MTU 3
#define VIRTIO_NET_F_MAC 5
#define VIRTIO_NET_F_GUEST_TSO4 7
#define VIRTIO_NET_F_GUEST_TSO6 8
#define VIRTIO_NET_F_GUEST_ECN 9
#define VIRTIO_NET_F_GUEST_UFO 10
#define VIRTIO_NET_F_HOST_TSO4 11
#define VIRTIO_NET_F_HOST_TSO6 12
#define VIRTIO_NET_F_HOST_ECN 13
#define VIRTIO_NET_F_HOST_UFO 14
#define VIRTIO_NET_F_MRG_RXBUF 15
#define VIRTIO_NET_F_STATUS 16
#define VIRTIO_NET_F_CTRL_VQ 17
#define VIRTIO_NET_F_MQ 22

#define VIRTIO_NET_S_LINK_UP 1u

/* The header every frame carries (5.1.6), little endian. */
struct virtio_net_hdr {
	uint8_t flags;
	uint8_t gso_type;
	uint16_t hdr_len;
	uint16_t gso_size;
	uint16_t csum_start;
	uint16_t csum_offset;
	uint16_t num_buffers;
};
#define VIRTIO_NET_HDR_LEN 12u
_Static_assert(sizeof(struct virtio_net_hdr) == VIRTIO_NET_HDR_LEN, "VERSION_1 net header");

#define VIRTIO_NET_HDR_F_NEEDS_CSUM 1u
#define VIRTIO_NET_HDR_F_DATA_VALID 2u
#define VIRTIO_NET_HDR_F_RSC_INFO 4u
#define VIRTIO_NET_HDR_GSO_NONE 0u
#define VIRTIO_NET_HDR_GSO_TCPV4 1u
#define VIRTIO_NET_HDR_GSO_UDP 3u
#define VIRTIO_NET_HDR_GSO_TCPV6 4u
#define VIRTIO_NET_HDR_GSO_UDP_L4 5u
#define VIRTIO_NET_HDR_GSO_ECN 0x80u

/* Config space (5.1.4) as moat lays it out: the fields up to mtu. */
#define VIRTIO_NET_CFG_MAC 0u
#define VIRTIO_NET_CFG_STATUS 6u
#define VIRTIO_NET_CFG_MAX_PAIRS 8u
#define VIRTIO_NET_CFG_MTU 10u
#define VIRTIO_NET_CFG_SIZE 12u

/*
 * Largest frame (without the header) either way: a 64 KiB GSO packet with its Ethernet
 * header, what a TAP with offloads hands over. Larger ones are dropped.
 */
#define VIRTIO_NET_MAX_FRAME 65550u
#define VIRTIO_NET_QUEUE_SIZE 256u

struct virtio_net;

struct virtio_net_counters {
	uint64_t rx_packets, rx_bytes; /* delivered to the guest; bytes without the header */
	uint64_t rx_dropped;           /* well-formed frames with no room: guest buffers too small */
	uint64_t rx_errors;            /* runt or malformed frames, offloads the guest did not ask for, read errors */
	uint64_t tx_packets, tx_bytes; /* written to the back end */
	uint64_t tx_dropped;           /* frames the back end refused (link down, bad GSO, ...) */
	uint64_t tx_errors;            /* malformed chains from the guest */
};

/*
 * fd: a TAP fd (or, in tests, one end of a socketpair(AF_UNIX, SOCK_SEQPACKET), which keeps
 * packet boundaries); the device makes it non-blocking and never closes it. cfg gives the
 * MAC and MTU. set_offload (may be NULL) is told at activation which TUN_F_* offloads the
 * guest accepts. -errno with err saying why.
 */
int virtio_net_new(int fd, const struct net_config *cfg, const struct dma_as *as,
		   int (*set_offload)(void *ctx, unsigned int tun_flags), void *offload_ctx, struct virtio_net **out,
		   char *err, size_t errlen) __attribute__((warn_unused_result));
struct virtio_dev *virtio_net_dev(struct virtio_net *n);
/* Frees the device (virtio_dev_fini included); the fd stays open. NULL is fine. */
void virtio_net_free(struct virtio_net *n);
/*
 * One line of counters: rx/tx packets, bytes, drops (frames lost for want of guest buffers
 * or room) and errors (malformed frames, fd errors). Call with dev->lock held or with the
 * worker stopped.
 */
void virtio_net_stats(const struct virtio_net *n, char *buf, size_t len);
/* The same counters as numbers, with the same locking rule. */
void virtio_net_counters(const struct virtio_net *n, struct virtio_net_counters *out);

/*
 * Shared with other virtio-net back ends (vhost): the device features moat offers, the configuration
 * space for cfg (-EINVAL with err set for a bad MTU or MAC), reading it, and the TAP offloads
 * (TUN_F_*) that a guest with driver_features accepts.
 */
uint64_t virtio_net_features(void);
int virtio_net_config_init(uint8_t config[VIRTIO_NET_CFG_SIZE], const struct net_config *cfg, unsigned int npairs,
			   char *err, size_t errlen) __attribute__((warn_unused_result));
int virtio_net_config_read(const uint8_t config[VIRTIO_NET_CFG_SIZE], uint32_t off, void *buf, uint32_t len);
unsigned int virtio_net_tun_offloads(uint64_t driver_features);

#endif
