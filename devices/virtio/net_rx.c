/* virtio-net receive: back end -> guest (VIRTIO 1.2, 5.1.6.3-5.1.6.4). */
#include <endian.h>
#include <errno.h>
#include <unistd.h>

#include "devices/virtio/net_internal.h"

#define NET_ETH_HLEN 14u
#define NET_VLAN_HLEN 4u

/*
 * Fit the staged header to what the guest negotiated; false if the frame cannot be given
 * to this guest at all (an offload it did not accept, larger than its MTU).
 */
static bool rx_hdr_fix(const struct virtio_net *n, struct virtio_net_hdr *h, uint32_t frame_len)
{
	uint8_t gso = h->gso_type & ~VIRTIO_NET_HDR_GSO_ECN;

	if (!negotiated(n, VIRTIO_NET_F_GUEST_CSUM)) {
		/* 5.1.6.4: flags must be 0; a partial checksum cannot be completed by this guest. */
		if (h->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)
			return false;
		h->flags = 0;
	}
	h->flags &= VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID;
	if ((h->gso_type & VIRTIO_NET_HDR_GSO_ECN) &&
	    (gso == VIRTIO_NET_HDR_GSO_NONE || !negotiated(n, VIRTIO_NET_F_GUEST_ECN)))
		return false;
	switch (gso) {
	case VIRTIO_NET_HDR_GSO_NONE:
		/* 5.1.6.4: with MTU negotiated no unsegmented frame may exceed it (a VLAN tag allowed). */
		return !negotiated(n, VIRTIO_NET_F_MTU) || frame_len <= n->mtu + NET_ETH_HLEN + NET_VLAN_HLEN;
	case VIRTIO_NET_HDR_GSO_TCPV4:
		return negotiated(n, VIRTIO_NET_F_GUEST_TSO4);
	case VIRTIO_NET_HDR_GSO_TCPV6:
		return negotiated(n, VIRTIO_NET_F_GUEST_TSO6);
	default:
		return false;
	}
}

/*
 * Stage the next frame the back end has: 1 if one is staged, 0 if there is none now (EAGAIN,
 * EOF, or an fd error that would repeat). Frames that are unusable are counted and skipped.
 */
static int rx_read(struct virtio_net *n, struct net_pair *p)
{
	struct net_rx *rx = &p->rx;

	for (;;) {
		struct virtio_net_hdr *h = (struct virtio_net_hdr *)rx->buf;
		ssize_t r = read(p->fd, rx->buf, NET_RX_BUF);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			n->c.rx_errors++;
			/*
			 * EFAULT: tun dropped one frame too big for the buffer, the next may be fine. Anything
			 * else could repeat forever: stop, the next event or kick tries again.
			 */
			if (errno == EFAULT || errno == EMSGSIZE)
				continue;
			return 0;
		}
		if (r == 0)
			return 0; /* the peer closed (a socket back end); nothing more will come */
		if (r < (ssize_t)VIRTIO_NET_HDR_LEN || !rx_hdr_fix(n, h, (uint32_t)r - VIRTIO_NET_HDR_LEN)) {
			n->c.rx_errors++;
			continue;
		}
		rx->len = (uint32_t)r;
		rx->done = 0;
		rx->nheld = 0;
		return 1;
	}
}

static void rx_delivered(struct virtio_net *n, struct net_rx *rx)
{
	n->c.rx_packets++;
	n->c.rx_bytes += rx->len - VIRTIO_NET_HDR_LEN;
	rx->len = 0;
}

static void set_num_buffers(struct net_rx *rx, uint16_t num)
{
	struct virtio_net_hdr *h = (struct virtio_net_hdr *)rx->buf;

	h->num_buffers = htole16(num);
}

/*
 * Without MRG_RXBUF the whole frame goes into one buffer (5.1.6.3.2). 1: the staged frame
 * was delivered or dropped, 0: no buffer (stay staged), <0: the queue is broken.
 */
static int rx_put_one(struct virtio_net *n, struct net_rx *rx, struct virtq *q, bool *used)
{
	int r = virtq_pop(q, &rx->chain);

	if (r <= 0)
		return r;
	*used = true;
	if (rx->chain.write_len < rx->len) {
		/* GUEST: too small for this frame; it goes back unused and the frame is lost. */
		n->c.rx_dropped++;
		rx->len = 0;
		return virtq_push(q, rx->chain.head, 0) ? -EFAULT : 1;
	}
	set_num_buffers(rx, 1);
	r = virtq_chain_write(q, &rx->chain, 0, rx->buf, rx->len);
	if (!r)
		r = virtq_push(q, rx->chain.head, rx->len);
	if (r)
		return r;
	rx_delivered(n, rx);
	return 1;
}

/*
 * With MRG_RXBUF the frame spreads over as many buffers as it needs, num_buffers saying how
 * many (5.1.6.4). Buffers are filled as they are popped and returned together at the end;
 * when the ring runs dry halfway they stay held and the next kick carries on.
 */
static int rx_put_merged(struct virtio_net *n, struct net_rx *rx, struct virtq *q, bool *used)
{
	uint16_t num;
	int r;

	while (rx->done < rx->len) {
		struct virtq_chain *c = rx->nheld ? &rx->chain : &rx->first;
		uint32_t take;

		if (rx->nheld == q->size) {
			/* GUEST: every buffer of the ring together is too small: give them back unused. */
			for (unsigned int i = 0; i < rx->nheld; i++)
				if (virtq_push(q, rx->held[i].head, 0))
					return -EFAULT;
			*used = true;
			n->c.rx_dropped++;
			rx->len = 0;
			return 1;
		}
		r = virtq_pop(q, c);
		if (r <= 0)
			return r;
		if (c->write_len < VIRTIO_NET_HDR_LEN) {
			/* GUEST: 5.1.6.3.1 wants every buffer to fit a header; return it unused, keep going. */
			n->c.rx_errors++;
			*used = true;
			if (virtq_push(q, c->head, 0))
				return -EFAULT;
			continue;
		}
		take = c->write_len < rx->len - rx->done ? c->write_len : rx->len - rx->done;
		r = virtq_chain_write(q, c, 0, rx->buf + rx->done, take);
		if (r)
			return r;
		rx->held[rx->nheld].head = c->head;
		rx->held[rx->nheld].len = take;
		rx->nheld++;
		rx->done += take;
	}
	/* nheld <= queue size <= 256: fits. */
	num = (uint16_t)rx->nheld;
	set_num_buffers(rx, num);
	r = virtq_chain_write(q, &rx->first, offsetof(struct virtio_net_hdr, num_buffers),
			      rx->buf + offsetof(struct virtio_net_hdr, num_buffers), sizeof(num));
	for (unsigned int i = 0; !r && i < rx->nheld; i++)
		r = virtq_push(q, rx->held[i].head, rx->held[i].len);
	if (r)
		return r;
	*used = true;
	rx->nheld = 0;
	rx_delivered(n, rx);
	return 1;
}

/*
 * Move frames from the back end into the guest while it has buffers. The fd is edge
 * triggered, so this reads until EAGAIN; when buffers run out first, the frame in hand stays
 * staged and the guest's next receive kick calls this again.
 */
void net_rx_drain(struct virtio_net *n, unsigned int pair)
{
	struct virtio_dev *dev = &n->dev;
	struct virtq *q = virtio_queue(dev, rx_queue(pair));
	struct net_pair *p = &n->pairs[pair];
	bool mrg = negotiated(n, VIRTIO_NET_F_MRG_RXBUF), used = false;
	int r;

	if (!q || !virtio_dev_live(dev))
		return;
	for (;;) {
		/* Between two frames, outside any section: the IOMMU's requests may be waiting on this CPU. */
		dma_help(q->as);
		if (!p->rx.len && !rx_read(n, p))
			break;
		r = mrg ? rx_put_merged(n, &p->rx, q, &used) : rx_put_one(n, &p->rx, q, &used);
		if (r < 0) {
			virtio_set_needs_reset(dev);
			return;
		}
		if (r == 0)
			break;
	}
	if (used && virtio_notify_used(dev, rx_queue(pair)))
		return; /* a ring fault: notify_used marked the device NEEDS_RESET */
}
