/* virtio-net transmit: guest -> back end (VIRTIO 1.2, 5.1.6.2). */
#include <errno.h>
#include <poll.h>
#include <unistd.h>

#include "devices/virtio/net_internal.h"

/*
 * The header the guest wrote, checked against what it negotiated: the TAP would otherwise
 * act on offloads the guest never asked for. Flags other than NEEDS_CSUM mean nothing on
 * transmit and are cleared (5.1.6.2.2: ignore unknown flags).
 */
static bool tx_hdr_ok(const struct virtio_net *n, struct virtio_net_hdr *h)
{
	uint8_t gso = h->gso_type & ~VIRTIO_NET_HDR_GSO_ECN;

	h->flags &= VIRTIO_NET_HDR_F_NEEDS_CSUM;
	h->num_buffers = 0;
	if ((h->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) && !negotiated(n, VIRTIO_NET_F_CSUM))
		return false;
	if ((h->gso_type & VIRTIO_NET_HDR_GSO_ECN) &&
	    (gso == VIRTIO_NET_HDR_GSO_NONE || !negotiated(n, VIRTIO_NET_F_HOST_ECN)))
		return false;
	switch (gso) {
	case VIRTIO_NET_HDR_GSO_NONE:
		return true;
	case VIRTIO_NET_HDR_GSO_TCPV4:
		return negotiated(n, VIRTIO_NET_F_HOST_TSO4);
	case VIRTIO_NET_HDR_GSO_TCPV6:
		return negotiated(n, VIRTIO_NET_F_HOST_TSO6);
	default:
		return false; /* UDP and USO are not offered */
	}
}

/*
 * Host iovecs for the chain's readable bytes from `skip` on, one per contiguous run. The
 * pointers are used by the writev right after and never kept (the mapping may change).
 */
static int chain_iov(const struct dma_as *as, const struct virtq_chain *c, uint32_t skip, struct iovec *iov,
		     unsigned int max, unsigned int *count)
{
	unsigned int k = 0;

	for (unsigned int i = 0; i < c->nread; i++) {
		uint64_t iova = c->seg[i].iova, len = c->seg[i].len;

		if (skip >= len) {
			skip -= (uint32_t)len;
			continue;
		}
		iova += skip;
		len -= skip;
		skip = 0;
		while (len) {
			void *host = NULL;
			uint64_t run = 0;

			if (k == max)
				return -E2BIG;
			/* GUEST: dma_translate() checks [iova, iova+len) (wrap, mapping, permission) now, not at pop. */
			if (dma_translate(as, iova, len, DMA_READ, &host, &run))
				return -EFAULT;
			iov[k++] = (struct iovec){ .iov_base = host, .iov_len = run };
			iova += run;
			len -= run;
		}
	}
	*count = k;
	return 0;
}

/* 0: the chain is done with (sent or dropped), -EAGAIN: back end full, -EFAULT: guest memory gone. */
static int tx_send(struct virtio_net *n, struct net_pair *p, const struct virtq *q)
{
	const struct virtq_chain *c = &p->tx.chain;
	struct virtio_net_hdr hdr;
	unsigned int niov = 0, dma;
	ssize_t w = -1;
	int r, err = 0;

	/* GUEST: transmit buffers are read-only (2.7.4) and hold a header and at most one maximal frame. */
	if (c->nseg != c->nread || c->read_len < VIRTIO_NET_HDR_LEN ||
	    c->read_len > VIRTIO_NET_HDR_LEN + VIRTIO_NET_MAX_FRAME) {
		n->c.tx_errors++;
		return 0;
	}
	/* The header is copied out so that what is checked is what the back end gets. */
	r = virtq_chain_read(q, c, 0, &hdr, sizeof(hdr));
	if (r)
		return r;
	if (!tx_hdr_ok(n, &hdr)) {
		n->c.tx_errors++;
		return 0;
	}
	p->tx.iov[0] = (struct iovec){ .iov_base = &hdr, .iov_len = sizeof(hdr) };
	/* A read-side section (dma.h) from the translations to the end of the writev that reads through them. */
	dma = dma_begin(q->as);
	r = chain_iov(q->as, c, VIRTIO_NET_HDR_LEN, p->tx.iov + 1, NET_TX_IOV - 1, &niov);
	if (!r) {
		do {
			w = writev(p->fd, p->tx.iov, (int)niov + 1);
		} while (w < 0 && errno == EINTR);
		err = errno;
	}
	dma_end(q->as, dma);
	if (r == -E2BIG) {
		n->c.tx_errors++; /* scattered beyond reason */
		return 0;
	}
	if (r)
		return r;
	if (w < 0 && (err == EAGAIN || err == EWOULDBLOCK))
		return -EAGAIN;
	if (w != (ssize_t)c->read_len) {
		n->c.tx_dropped++;
		return 0;
	}
	n->c.tx_packets++;
	n->c.tx_bytes += c->read_len - VIRTIO_NET_HDR_LEN;
	return 0;
}

/*
 * After an EAGAIN: tun raises EPOLLOUT only for a writer that its poll saw blocked (it marks the
 * socket NOSPACE there), and an edge-triggered epoll never polls again by itself. So poll once now:
 * either the TAP has room already (true: retry at once) or the edge will come when it frees some.
 */
static bool tx_rearm(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLOUT };

	return poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLOUT);
}

/*
 * The pending chain, else the next one: 1 sent (or dropped) and returned to the driver, 0 nothing
 * available, -EAGAIN back end full (the chain stays pending), other -errno: the queue is broken.
 */
static int tx_one(struct virtio_net *n, unsigned int pair, struct virtq *q)
{
	struct net_tx *tx = &n->pairs[pair].tx;
	int r;

	if (!tx->pending) {
		r = virtq_pop(q, &tx->chain);
		if (r <= 0)
			return r;
		tx->pending = true;
	}
	r = tx_send(n, &n->pairs[pair], q);
	if (r == -EAGAIN)
		return r;
	if (r || virtq_push(q, tx->chain.head, 0))
		return r ? r : -EFAULT;
	tx->pending = false;
	return 1;
}

/*
 * Send every chain the guest has made available. On EAGAIN the chain stays popped and
 * pending; the fd's EPOLLOUT (or the next kick) resumes. Each chain goes back with used
 * length 0: the device wrote nothing into it.
 */
void net_tx_drain(struct virtio_net *n, unsigned int pair)
{
	struct virtio_dev *dev = &n->dev;
	struct virtq *q = virtio_queue(dev, tx_queue(pair));
	bool used = false;
	unsigned int rearms = 0;
	int r;

	if (!q || !virtio_dev_live(dev))
		return;
	for (;;) {
		/* Between two packets, outside any section: the IOMMU's requests may be waiting on this CPU. */
		dma_help(q->as);
		r = tx_one(n, pair, q);
		if (r == 0)
			break;
		if (r == -EAGAIN) {
			/* Bounded: a TAP that keeps saying "writable" then EAGAIN must not spin the worker. */
			if (tx_rearm(n->pairs[pair].fd) && ++rearms < 8)
				continue;
			break;
		}
		if (r < 0) {
			virtio_set_needs_reset(dev);
			return;
		}
		used = true;
	}
	if (used && virtio_notify_used(dev, tx_queue(pair)))
		return; /* a ring fault: notify_used marked the device NEEDS_RESET */
}
