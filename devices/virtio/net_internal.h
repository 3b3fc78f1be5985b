/*
 * virtio-net internals shared by net.c (device, config, setup), net_tx.c and net_rx.c.
 * Nothing outside devices/virtio/net*.c includes this.
 */
#ifndef MOAT_VIRTIO_NET_INTERNAL_H
#define MOAT_VIRTIO_NET_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "devices/virtio/net.h"

/* One pair today; the state is per pair so multiqueue (VIRTIO_NET_F_MQ) only adds entries. */
#define NET_MAX_PAIRS 1u
/* Host-contiguous runs one TX frame may span: a maximal frame split at every 4 KiB page fits many times over. */
#define NET_TX_IOV 1024u
#define NET_RX_BUF (VIRTIO_NET_HDR_LEN + VIRTIO_NET_MAX_FRAME)

struct net_rx {
	uint8_t *buf;      /* staging: vnet header + frame, NET_RX_BUF bytes */
	uint32_t len;      /* bytes staged; 0: nothing staged */
	uint32_t done;     /* MRG_RXBUF: bytes of it already written into held buffers */
	unsigned int nheld;
	/* MRG_RXBUF: buffers popped for the staged frame, returned together once it is complete. */
	struct {
		uint16_t head;
		uint32_t len;
	} held[VIRTIO_NET_QUEUE_SIZE];
	struct virtq_chain first; /* the buffer holding the header: num_buffers is written last */
	struct virtq_chain chain;
};

struct net_tx {
	bool pending;      /* chain was popped but the back end said EAGAIN: send it before popping more */
	struct virtq_chain chain;
	struct iovec iov[NET_TX_IOV];
};

struct net_pair {
	int fd;
	struct net_rx rx;
	struct net_tx tx;
};

struct virtio_net {
	struct virtio_dev dev;
	uint8_t config[VIRTIO_NET_CFG_SIZE]; /* little endian, as the driver reads it */
	uint16_t mtu;
	int (*set_offload)(void *ctx, unsigned int tun_flags);
	void *offload_ctx;
	unsigned int npairs;
	struct net_pair pairs[NET_MAX_PAIRS];
	struct virtio_net_counters c;
};

static inline struct virtio_net *to_net(struct virtio_dev *dev)
{
	return (struct virtio_net *)((char *)dev - offsetof(struct virtio_net, dev));
}

static inline bool negotiated(const struct virtio_net *n, unsigned int bit)
{
	return n->dev.driver_features & VIRTIO_BIT(bit);
}

/* receiveqN is queue 2(N-1), transmitqN is 2(N-1)+1 (5.1.2). */
static inline unsigned int rx_queue(unsigned int pair)
{
	return 2 * pair;
}

static inline unsigned int tx_queue(unsigned int pair)
{
	return 2 * pair + 1;
}

/* Send what the guest queued on pair's transmitq (kick, or EPOLLOUT after EAGAIN). */
void net_tx_drain(struct virtio_net *n, unsigned int pair);
/* Move frames from pair's back end into its receiveq (EPOLLIN, or a receive kick). */
void net_rx_drain(struct virtio_net *n, unsigned int pair);

#endif
