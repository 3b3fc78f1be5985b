/* virtio-net: features, configuration space, the ops table and setup. Data paths: net_tx.c, net_rx.c. */
#include "devices/virtio/net.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "devices/virtio/net_internal.h"
#include "vmm/log.h"

#define BIT(f) VIRTIO_BIT(VIRTIO_NET_F_##f)

static const uint64_t net_features =
	BIT(CSUM) | BIT(GUEST_CSUM) | BIT(MTU) | BIT(MAC) | BIT(GUEST_TSO4) | BIT(GUEST_TSO6) | BIT(GUEST_ECN) |
	BIT(HOST_TSO4) | BIT(HOST_TSO6) | BIT(HOST_ECN) | BIT(MRG_RXBUF) | BIT(STATUS) |
	VIRTIO_BIT(VIRTIO_RING_F_INDIRECT_DESC) | VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX);

uint64_t virtio_net_features(void)
{
	return net_features;
}

/* TAP offloads describe what the reader (the guest) accepts, so they follow the GUEST_* bits. */
unsigned int virtio_net_tun_offloads(uint64_t driver_features)
{
	unsigned int f = 0;

	/* The tun driver ignores TSO without CSUM; leave out what the guest cannot use either. */
	if (!(driver_features & BIT(GUEST_CSUM)))
		return 0;
	f |= TUN_F_CSUM;
	if (driver_features & BIT(GUEST_TSO4))
		f |= TUN_F_TSO4;
	if (driver_features & BIT(GUEST_TSO6))
		f |= TUN_F_TSO6;
	if ((f & (TUN_F_TSO4 | TUN_F_TSO6)) && (driver_features & BIT(GUEST_ECN)))
		f |= TUN_F_TSO_ECN;
	return f;
}

static int net_activate(struct virtio_dev *dev)
{
	struct virtio_net *n = to_net(dev);

	return n->set_offload ? n->set_offload(n->offload_ctx, virtio_net_tun_offloads(dev->driver_features)) : 0;
}

static void net_reset(struct virtio_dev *dev)
{
	struct virtio_net *n = to_net(dev);

	/* The driver forgets its rings: a staged frame, held buffers and a pending send go too. */
	for (unsigned int i = 0; i < n->npairs; i++) {
		struct net_pair *p = &n->pairs[i];

		p->rx.len = p->rx.done = 0;
		p->rx.nheld = 0;
		p->tx.pending = false;
	}
}

static void net_queue_notify(struct virtio_dev *dev, unsigned int queue)
{
	struct virtio_net *n = to_net(dev);

	if (queue / 2 >= n->npairs)
		return;
	if (queue % 2)
		net_tx_drain(n, queue / 2);
	else
		net_rx_drain(n, queue / 2);
}

int virtio_net_config_read(const uint8_t config[VIRTIO_NET_CFG_SIZE], uint32_t off, void *buf, uint32_t len)
{
	/* GUEST: off and len bounded against the config size without overflowing. */
	if (off > VIRTIO_NET_CFG_SIZE || len > VIRTIO_NET_CFG_SIZE - off)
		return -EINVAL;
	memcpy(buf, config + off, len);
	return 0;
}

static int net_config_read(struct virtio_dev *dev, uint32_t off, void *buf, uint32_t len)
{
	return virtio_net_config_read(to_net(dev)->config, off, buf, len);
}

static int net_config_write(struct virtio_dev *dev, uint32_t off, const void *buf, uint32_t len)
{
	/* Every field is read-only for a VERSION_1 driver (the MAC is set with CTRL_MAC_ADDR, not offered). */
	if (off > VIRTIO_NET_CFG_SIZE || len > VIRTIO_NET_CFG_SIZE - off)
		return -EINVAL;
	return 0;
}

/* The worker calls this for fd events; both directions of every pair share the fd. */
static void net_backend_event(struct virtio_dev *dev, uint32_t events)
{
	struct virtio_net *n = to_net(dev);

	for (unsigned int i = 0; i < n->npairs; i++) {
		if ((events & EPOLLOUT) && n->pairs[i].tx.pending)
			net_tx_drain(n, i);
		if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
			net_rx_drain(n, i);
	}
}

static unsigned int net_backend_fds(struct virtio_dev *dev, struct virtio_backend_fd *out, unsigned int max)
{
	struct virtio_net *n = to_net(dev);
	unsigned int k = 0;

	/* Edge triggered: net_rx_drain reads until EAGAIN, and EPOLLOUT only matters after an EAGAIN. */
	for (unsigned int i = 0; i < n->npairs && k < max; i++)
		out[k++] = (struct virtio_backend_fd){ .fd = n->pairs[i].fd,
						       .events = EPOLLIN | EPOLLOUT | EPOLLET,
						       .fn = net_backend_event };
	return k;
}

static const struct virtio_dev_ops net_ops = {
	.name = "net",
	.activate = net_activate,
	.reset = net_reset,
	.queue_notify = net_queue_notify,
	.config_read = net_config_read,
	.config_write = net_config_write,
	.backend_fds = net_backend_fds,
};


static void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

int virtio_net_config_init(uint8_t config[VIRTIO_NET_CFG_SIZE], const struct net_config *cfg, unsigned int npairs,
			   char *err, size_t errlen)
{
	static const uint8_t default_mac[6] = NET_DEFAULT_MAC;
	uint16_t mtu = net_config_mtu(cfg);

	if (mtu < NET_MTU_MIN || mtu > NET_MTU_MAX)
		return set_err(err, errlen, -EINVAL, "virtio-net: MTU %u is not from %u to %u", mtu, NET_MTU_MIN,
			       NET_MTU_MAX);
	if (cfg->has_mac && (cfg->mac[0] & 1))
		return set_err(err, errlen, -EINVAL, "virtio-net: the MAC address must be unicast (first byte even)");
	memset(config, 0, VIRTIO_NET_CFG_SIZE);
	memcpy(config + VIRTIO_NET_CFG_MAC, cfg->has_mac ? cfg->mac : default_mac, 6);
	put_le16(config + VIRTIO_NET_CFG_STATUS, VIRTIO_NET_S_LINK_UP);
	put_le16(config + VIRTIO_NET_CFG_MAX_PAIRS, (uint16_t)npairs);
	put_le16(config + VIRTIO_NET_CFG_MTU, mtu);
	return 0;
}

int virtio_net_new(int fd, const struct net_config *cfg, const struct dma_as *as,
		   int (*set_offload)(void *ctx, unsigned int tun_flags), void *offload_ctx, struct virtio_net **out,
		   char *err, size_t errlen)
{
	uint16_t sizes[2 * NET_MAX_PAIRS];
	struct virtio_net *n;
	uint8_t config[VIRTIO_NET_CFG_SIZE];
	int flags, r;

	if (fd < 0 || !cfg || !as)
		return set_err(err, errlen, -EINVAL,
			       "virtio-net needs a back-end fd, a configuration and guest memory");
	r = virtio_net_config_init(config, cfg, NET_MAX_PAIRS, err, errlen);
	if (r)
		return r;
	/* Never block the worker: EAGAIN is handled on both directions. */
	flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
		return set_err(err, errlen, -errno, "virtio-net: cannot make the back-end fd non-blocking: %s",
			       strerror(errno));
	n = calloc(1, sizeof(*n));
	if (!n)
		return set_err(err, errlen, -ENOMEM, "virtio-net: out of memory");
	n->npairs = NET_MAX_PAIRS;
	for (unsigned int i = 0; i < n->npairs; i++) {
		n->pairs[i].fd = fd;
		n->pairs[i].rx.buf = malloc(NET_RX_BUF);
		if (!n->pairs[i].rx.buf) {
			virtio_net_free(n);
			return set_err(err, errlen, -ENOMEM, "virtio-net: out of memory");
		}
		sizes[rx_queue(i)] = sizes[tx_queue(i)] = VIRTIO_NET_QUEUE_SIZE;
	}
	n->mtu = net_config_mtu(cfg);
	n->set_offload = set_offload;
	n->offload_ctx = offload_ctx;
	memcpy(n->config, config, sizeof(config));
	r = virtio_dev_init(&n->dev, &net_ops, VIRTIO_ID_NET, net_features, 2 * n->npairs, sizes, as,
			    (struct virtio_irq){ 0 });
	if (r) {
		virtio_net_free(n); /* dev.ops is still NULL: no virtio_dev_fini */
		return set_err(err, errlen, r, "virtio-net: cannot set up the device: %s", strerror(-r));
	}
	*out = n;
	return 0;
}

struct virtio_dev *virtio_net_dev(struct virtio_net *n)
{
	return &n->dev;
}

void virtio_net_free(struct virtio_net *n)
{
	if (!n)
		return;
	if (n->dev.ops)
		virtio_dev_fini(&n->dev);
	for (unsigned int i = 0; i < n->npairs; i++)
		free(n->pairs[i].rx.buf);
	free(n);
}

void virtio_net_counters(const struct virtio_net *n, struct virtio_net_counters *out)
{
	*out = n->c;
}

void virtio_net_stats(const struct virtio_net *n, char *buf, size_t len)
{
	const struct virtio_net_counters *c = &n->c;

	snprintf(buf, len,
		 "rx %llu packets %llu bytes %llu dropped %llu errors, tx %llu packets %llu bytes %llu dropped %llu "
		 "errors",
		 (unsigned long long)c->rx_packets, (unsigned long long)c->rx_bytes, (unsigned long long)c->rx_dropped,
		 (unsigned long long)c->rx_errors, (unsigned long long)c->tx_packets, (unsigned long long)c->tx_bytes,
		 (unsigned long long)c->tx_dropped, (unsigned long long)c->tx_errors);
}
