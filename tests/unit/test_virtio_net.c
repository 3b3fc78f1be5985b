#include <net/if.h>

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "devices/net/tap.h"
#include "devices/virtio/net.h"
#include "devices/virtio/virtio.h"
#include "tests/unit/netns.h"
#include "tests/unit/virtq_mock.h"

/*
 * The device runs against a socketpair(AF_UNIX, SOCK_SEQPACKET) standing in for the TAP:
 * sv[0] is the device's, sv[1] is "the host". Both queues live in one mock guest memory:
 * receiveq rings at VQM_DESC, transmitq rings at VQM_DESC2.
 */

#define V1 VIRTIO_BIT(VIRTIO_F_VERSION_1)
#define NF(x) VIRTIO_BIT(VIRTIO_NET_F_##x)
#define IND VIRTIO_BIT(VIRTIO_RING_F_INDIRECT_DESC)
#define EVT VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX)
#define RXQ 0u
#define TXQ 1u
#define HDR VIRTIO_NET_HDR_LEN
#define NRS VIRTIO_STATUS_DEVICE_NEEDS_RESET
#define BIG_AREA 0x10000ull /* room for buffers larger than the mock's data area, below VQM_DESC2 */

struct tnet {
	struct vqm rx, tx;
	int sv[2];
	int ep; /* an epoll set like the worker's, for tests that need real edge-triggered events */
	struct virtio_net *n;
	struct virtio_dev *dev;
	int irq_queue[2], irq_config;
	int offload_calls, offload_ret;
	unsigned int offload_flags;
};

static int fake_irq(void *ctx, enum virtio_irq_kind kind, unsigned int queue)
{
	struct tnet *t = ctx;

	if (kind == VIRTIO_IRQ_CONFIG)
		t->irq_config++;
	else
		t->irq_queue[queue]++;
	return 0;
}

static int fake_offload(void *ctx, unsigned int flags)
{
	struct tnet *t = ctx;

	t->offload_calls++;
	t->offload_flags = flags;
	return t->offload_ret;
}

/* fd < 0: a socketpair stands in for the TAP; else the device runs on fd (not closed by the test). */
static void tnet_create_on(struct tnet *t, const struct net_config *cfg, unsigned int qsize, int fd,
			   int (*offload)(void *, unsigned int), void *offload_ctx)
{
	struct net_config def;
	char err[256] = "";

	memset(t, 0, sizeof(*t));
	if (!cfg) {
		cr_assert_eq(net_parse_opts("tap=test0", &def, err, sizeof(err)), 0, "%s", err);
		cfg = &def;
	}
	vqm_init(&t->rx, qsize);
	vqm_init_shared(&t->tx, &t->rx, qsize, VQM_DESC2);
	if (fd < 0) {
		cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, t->sv), 0);
	} else {
		t->sv[0] = fd;
		t->sv[1] = -1;
	}
	cr_assert_eq(virtio_net_new(t->sv[0], cfg, &t->rx.as, offload ? offload : fake_offload,
				    offload ? offload_ctx : t, &t->n, err, sizeof(err)),
		     0, "%s", err);
	t->dev = virtio_net_dev(t->n);
	t->dev->irq = (struct virtio_irq){ .fn = fake_irq, .ctx = t };
	t->ep = -1;
}

static void tnet_create(struct tnet *t, const struct net_config *cfg, unsigned int qsize)
{
	tnet_create_on(t, cfg, qsize, -1, NULL, NULL);
}

/* The driver's side of 3.1.1 up to FEATURES_OK with both queues enabled. */
static void tnet_negotiate(struct tnet *t, uint64_t features)
{
	struct virtio_dev *d = t->dev;
	struct vqm *q[2] = { &t->rx, &t->tx };

	cr_assert_eq(virtio_set_status(d, VIRTIO_STATUS_ACKNOWLEDGE), 0);
	cr_assert_eq(virtio_set_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER), 0);
	cr_assert_eq(virtio_set_driver_features(d, V1 | features), 0);
	cr_assert_eq(virtio_set_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
						  VIRTIO_STATUS_FEATURES_OK),
		     0);
	for (unsigned int i = 0; i < 2; i++) {
		if (q[i]->size != VIRTIO_NET_QUEUE_SIZE)
			cr_assert_eq(virtio_queue_set_size(d, i, q[i]->size), 0);
		cr_assert_eq(virtio_queue_set_addr(d, i, q[i]->desc, q[i]->avail, q[i]->used), 0);
		cr_assert_eq(virtio_queue_enable(d, i), 0);
	}
}

static int tnet_driver_ok(struct tnet *t)
{
	return virtio_set_status(t->dev, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
						 VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
}

static void tnet_up(struct tnet *t, const struct net_config *cfg, unsigned int qsize, uint64_t features)
{
	tnet_create(t, cfg, qsize);
	tnet_negotiate(t, features);
	cr_assert_eq(tnet_driver_ok(t), 0);
}

static void tnet_destroy(struct tnet *t)
{
	if (t->ep >= 0)
		close(t->ep);
	virtio_net_free(t->n);
	if (t->sv[1] >= 0) {
		close(t->sv[0]);
		close(t->sv[1]);
	}
	vqm_fini(&t->rx);
}

/* What the worker does when the fd reports events. */
static void backend(struct tnet *t, uint32_t events)
{
	struct virtio_backend_fd fds[VIRTIO_MAX_BACKEND_FDS];

	cr_assert_eq(t->dev->ops->backend_fds(t->dev, fds, VIRTIO_MAX_BACKEND_FDS), 1);
	fds[0].fn(t->dev, events);
}

/* Register the back-end fds in an epoll set the way the worker does. */
static void epoll_register(struct tnet *t)
{
	struct virtio_backend_fd fds[VIRTIO_MAX_BACKEND_FDS];
	struct epoll_event ev;

	cr_assert_eq(t->dev->ops->backend_fds(t->dev, fds, VIRTIO_MAX_BACKEND_FDS), 1);
	t->ep = epoll_create1(EPOLL_CLOEXEC);
	cr_assert_geq(t->ep, 0);
	ev = (struct epoll_event){ .events = fds[0].events };
	cr_assert_eq(epoll_ctl(t->ep, EPOLL_CTL_ADD, fds[0].fd, &ev), 0);
}

/* One round of the worker's loop: wait up to timeout_ms, dispatch; how many events there were. */
static int epoll_round(struct tnet *t, int timeout_ms)
{
	struct virtio_backend_fd fds[VIRTIO_MAX_BACKEND_FDS];
	struct epoll_event ev;
	int n = epoll_wait(t->ep, &ev, 1, timeout_ms);

	cr_assert_geq(n, 0);
	if (n == 1) {
		cr_assert_eq(t->dev->ops->backend_fds(t->dev, fds, VIRTIO_MAX_BACKEND_FDS), 1);
		fds[0].fn(t->dev, ev.events);
	}
	return n;
}

static struct virtio_net_counters counters(struct tnet *t)
{
	struct virtio_net_counters c;

	virtio_net_counters(t->n, &c);
	return c;
}

static void pattern(uint8_t *p, size_t len, unsigned int seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seed * 13 + i * 31 + (i >> 8));
}

static struct virtio_net_hdr hdr_of(uint8_t flags, uint8_t gso, uint16_t num_buffers)
{
	return (struct virtio_net_hdr){ .flags = flags,
					.gso_type = gso,
					.hdr_len = htole16(54),
					.gso_size = htole16(gso ? 1448 : 0),
					.csum_start = htole16(flags ? 34 : 0),
					.csum_offset = htole16(flags ? 16 : 0),
					.num_buffers = htole16(num_buffers) };
}

/* The host sends header + frame_len bytes of pattern(seed). */
static void peer_send(struct tnet *t, struct virtio_net_hdr h, size_t frame_len, unsigned int seed)
{
	uint8_t *buf = malloc(HDR + frame_len);

	cr_assert_not_null(buf);
	memcpy(buf, &h, HDR);
	pattern(buf + HDR, frame_len, seed);
	cr_assert_eq(send(t->sv[1], buf, HDR + frame_len, 0), (ssize_t)(HDR + frame_len));
	free(buf);
}

static ssize_t peer_recv(struct tnet *t, uint8_t *buf, size_t len)
{
	return recv(t->sv[1], buf, len, MSG_DONTWAIT);
}

/* One device-writable receive buffer of len bytes, published. */
static uint16_t post_rx(struct tnet *t, uint32_t len, uint64_t *addr)
{
	struct vqm_buf b = { 0, len, true };
	uint16_t head = vqm_chain(&t->rx, &b, 1);

	vqm_publish(&t->rx, head);
	if (addr)
		*addr = b.addr;
	return head;
}

/*
 * Copy content into the readable buffers of a chain built by vqm_chain/vqm_indirect, in order,
 * through the DMA API so that a buffer may run across two memory regions.
 */
static void fill_bufs(struct vqm *m, const struct vqm_buf *b, unsigned int n, const uint8_t *content)
{
	const struct dma_as *as = m->mem ? &m->mem->as : &m->as;

	for (unsigned int i = 0; i < n; i++) {
		if (b[i].write)
			continue;
		cr_assert_eq(dma_write(as, b[i].addr, content, b[i].len), 0);
		content += b[i].len;
	}
}

/* header + frame_len bytes of pattern(seed) in `out` (caller's buffer of HDR + frame_len). */
static void make_packet(uint8_t *out, struct virtio_net_hdr h, size_t frame_len, unsigned int seed)
{
	memcpy(out, &h, HDR);
	pattern(out + HDR, frame_len, seed);
}

/* A transmit chain of readable buffers with the given lengths holding `content`. */
static uint16_t tx_chain(struct tnet *t, const uint32_t *lens, unsigned int n, const uint8_t *content)
{
	struct vqm_buf b[8];
	uint16_t head;

	cr_assert_leq(n, 8);
	for (unsigned int i = 0; i < n; i++)
		b[i] = (struct vqm_buf){ 0, lens[i], false };
	head = vqm_chain(&t->tx, b, n);
	fill_bufs(&t->tx, b, n, content);
	vqm_publish(&t->tx, head);
	return head;
}

static void expect_used(struct vqm *m, uint16_t i, uint16_t head, uint32_t len)
{
	uint32_t id, l;

	vqm_used_elem(m, i, &id, &l);
	cr_assert_eq(id, head, "used[%u].id %u, expected %u", i, id, head);
	cr_assert_eq(l, len, "used[%u].len %u, expected %u", i, l, len);
}

static uint16_t guest_num_buffers(struct tnet *t, uint64_t addr)
{
	uint16_t v;

	memcpy(&v, vqm_host(&t->rx, addr + offsetof(struct virtio_net_hdr, num_buffers), 2), 2);
	return le16toh(v);
}

/* ---- configuration and setup ---- */

Test(virtio_net, features_and_config_space)
{
	struct tnet t;
	struct net_config cfg;
	char err[256];
	uint8_t buf[16], mac[6] = { 0x52, 0x54, 0x00, 0xab, 0xcd, 0xef };
	const uint64_t want = NF(CSUM) | NF(GUEST_CSUM) | NF(MTU) | NF(MAC) | NF(GUEST_TSO4) | NF(GUEST_TSO6) |
			      NF(GUEST_ECN) | NF(HOST_TSO4) | NF(HOST_TSO6) | NF(HOST_ECN) | NF(MRG_RXBUF) |
			      NF(STATUS) | IND | EVT | V1;

	cr_assert_eq(net_parse_opts("tap=t0,mac=52:54:00:ab:cd:ef,mtu=9000", &cfg, err, sizeof(err)), 0, "%s", err);
	tnet_create(&t, &cfg, 256);
	cr_assert_eq(t.dev->device_id, VIRTIO_ID_NET);
	cr_assert_eq(t.dev->nqueues, 2);
	cr_assert_eq(t.dev->queues[RXQ].max_size, 256);
	cr_assert_eq(t.dev->queues[TXQ].max_size, 256);
	cr_assert_str_eq(t.dev->ops->name, "net");
	cr_assert_eq(t.dev->device_features, want, "features 0x%llx", (unsigned long long)t.dev->device_features);

	cr_assert_eq(t.dev->ops->config_read(t.dev, 0, buf, 12), 0);
	cr_assert_eq(memcmp(buf, mac, 6), 0);
	cr_assert_eq(buf[6] | buf[7] << 8, VIRTIO_NET_S_LINK_UP, "status: link up");
	cr_assert_eq(buf[8] | buf[9] << 8, 1, "max_virtqueue_pairs");
	cr_assert_eq(buf[10] | buf[11] << 8, 9000, "mtu");
	cr_assert_eq(t.dev->ops->config_read(t.dev, 11, buf, 1), 0, "a byte of a field");
	cr_assert_eq(buf[0], 9000 >> 8);
	cr_assert_eq(t.dev->ops->config_read(t.dev, 12, buf, 0), 0, "empty read at the end");

	const struct {
		uint32_t off, len;
	} bad[] = { { 12, 1 }, { 11, 2 }, { 0, 13 }, { 13, 0 },
		    { UINT32_MAX, 2 }, { 4, UINT32_MAX }, { 8, 0xfffffff9u } };
	for (unsigned int i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(buf, 0xa5, sizeof(buf));
		cr_assert_eq(t.dev->ops->config_read(t.dev, bad[i].off, buf, bad[i].len), -EINVAL, "read %u+%u",
			     bad[i].off, bad[i].len);
		cr_assert_eq(buf[0], 0xa5, "nothing copied");
		cr_assert_eq(t.dev->ops->config_write(t.dev, bad[i].off, buf, bad[i].len), -EINVAL, "write %u+%u",
			     bad[i].off, bad[i].len);
	}
	memset(buf, 0xff, sizeof(buf));
	cr_assert_eq(t.dev->ops->config_write(t.dev, 0, buf, 6), 0, "writes are ignored");
	cr_assert_eq(t.dev->ops->config_read(t.dev, 0, buf, 6), 0);
	cr_assert_eq(memcmp(buf, mac, 6), 0, "the MAC is read-only");
	tnet_destroy(&t);
}

Test(virtio_net, default_mac_and_mtu)
{
	struct tnet t;
	uint8_t buf[12];
	const uint8_t def[6] = NET_DEFAULT_MAC;

	tnet_create(&t, NULL, 256);
	cr_assert_eq(t.dev->ops->config_read(t.dev, 0, buf, 12), 0);
	cr_assert_eq(memcmp(buf, def, 6), 0);
	cr_assert_eq(def[0] & 3, 2, "default MAC is unicast and locally administered");
	cr_assert_eq(buf[10] | buf[11] << 8, 1500);
	tnet_destroy(&t);
}

Test(virtio_net, new_validates_and_makes_fd_nonblocking)
{
	struct net_config cfg;
	struct virtio_net *n = NULL;
	struct vqm m;
	char err[256];
	int sv[2];

	vqm_init(&m, 8);
	cr_assert_eq(net_parse_opts("tap=t0", &cfg, err, sizeof(err)), 0);
	err[0] = '\0';
	cr_assert_eq(virtio_net_new(-1, &cfg, &m.as, NULL, NULL, &n, err, sizeof(err)), -EINVAL);
	cr_assert_neq(err[0], '\0', "says why");
	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	cfg.mtu = 67;
	cr_assert_eq(virtio_net_new(sv[0], &cfg, &m.as, NULL, NULL, &n, err, sizeof(err)), -EINVAL, "MTU too small");
	cfg.mtu = 0;
	cfg.has_mac = true;
	cfg.mac[0] = 0x01;
	cr_assert_eq(virtio_net_new(sv[0], &cfg, &m.as, NULL, NULL, &n, err, sizeof(err)), -EINVAL, "multicast MAC");
	cfg.mac[0] = 0x02;
	cr_assert_eq(virtio_net_new(sv[0], &cfg, NULL, NULL, NULL, &n, err, sizeof(err)), -EINVAL, "no memory");
	cr_assert_eq(fcntl(sv[0], F_GETFL) & O_NONBLOCK, 0);
	cr_assert_eq(virtio_net_new(sv[0], &cfg, &m.as, NULL, NULL, &n, err, sizeof(err)), 0, "%s", err);
	cr_assert_neq(fcntl(sv[0], F_GETFL) & O_NONBLOCK, 0, "the device never blocks its worker");
	virtio_net_free(n);
	virtio_net_free(NULL);
	cr_assert_geq(fcntl(sv[0], F_GETFD), 0, "the fd is the caller's: still open");
	close(sv[0]);
	close(sv[1]);
	vqm_fini(&m);
}

Test(virtio_net, backend_fd_is_edge_triggered_in_and_out)
{
	struct tnet t;
	struct virtio_backend_fd fds[VIRTIO_MAX_BACKEND_FDS];

	tnet_create(&t, NULL, 256);
	cr_assert_eq(t.dev->ops->backend_fds(t.dev, fds, VIRTIO_MAX_BACKEND_FDS), 1);
	cr_assert_eq(fds[0].fd, t.sv[0]);
	cr_assert_eq(fds[0].events, EPOLLIN | EPOLLOUT | EPOLLET);
	cr_assert_not_null(fds[0].fn);
	cr_assert_eq(t.dev->ops->backend_fds(t.dev, fds, 0), 0, "respects max");
	tnet_destroy(&t);
}

Test(virtio_net, activate_sets_tap_offloads_from_guest_features)
{
	const struct {
		uint64_t features;
		unsigned int flags;
	} cases[] = {
		{ 0, 0 },
		{ NF(CSUM) | NF(HOST_TSO4) | NF(HOST_TSO6), 0 }, /* HOST_* are about transmit: nothing for the TAP */
		{ NF(GUEST_CSUM), TUN_F_CSUM },
		{ NF(GUEST_CSUM) | NF(GUEST_TSO4) | NF(GUEST_ECN), TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO_ECN },
		{ NF(GUEST_CSUM) | NF(GUEST_TSO4) | NF(GUEST_TSO6), TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 },
		{ NF(GUEST_TSO4) | NF(GUEST_TSO6), 0 },          /* TSO without GUEST_CSUM is unusable */
		{ NF(GUEST_CSUM) | NF(GUEST_ECN), TUN_F_CSUM }, /* ECN without TSO */
	};

	for (unsigned int i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct tnet t;

		tnet_create(&t, NULL, 256);
		t.offload_flags = 0xdead;
		tnet_negotiate(&t, cases[i].features);
		cr_assert_eq(t.offload_calls, 0, "not before DRIVER_OK");
		cr_assert_eq(tnet_driver_ok(&t), 0);
		cr_assert_eq(t.offload_calls, 1);
		cr_assert_eq(t.offload_flags, cases[i].flags, "case %u: 0x%x", i, t.offload_flags);
		tnet_destroy(&t);
	}
}

Test(virtio_net, offload_failure_fails_activation)
{
	struct tnet t;

	tnet_create(&t, NULL, 256);
	t.offload_ret = -EINVAL;
	tnet_negotiate(&t, NF(GUEST_CSUM));
	cr_assert_eq(tnet_driver_ok(&t), -EINVAL);
	cr_assert(t.dev->status & NRS);
	cr_assert_eq(t.irq_config, 1);
	tnet_destroy(&t);
}

/* ---- transmit ---- */

Test(virtio_net, tx_split_and_indirect_arrive_byte_exact)
{
	struct tnet t;
	uint8_t p1[HDR + 100], p2[HDR + 120], got[512];
	const uint32_t lens1[] = { HDR, 40, 60 };
	struct vqm_buf ind[] = { { 0, 5, false }, { 0, 37, false }, { VQM_R1 - 20, 50, false }, { 0, 40, false } };
	uint16_t h1, h2;
	struct virtio_net_counters c;

	tnet_up(&t, NULL, 256, IND);
	make_packet(p1, hdr_of(0, 0, 0), 100, 1);
	make_packet(p2, hdr_of(0, 0, 0), 120, 2);
	h1 = tx_chain(&t, lens1, 3, p1);
	/* Header split over two entries; one entry runs across the R0/R1 boundary (two host runs). */
	h2 = vqm_indirect(&t.tx, ind, 4, NULL);
	fill_bufs(&t.tx, ind, 4, p2);
	vqm_publish(&t.tx, h2);

	virtio_queue_notify(t.dev, TXQ);
	cr_assert_eq(peer_recv(&t, got, sizeof(got)), (ssize_t)sizeof(p1));
	cr_assert_eq(memcmp(got, p1, sizeof(p1)), 0);
	cr_assert_eq(peer_recv(&t, got, sizeof(got)), (ssize_t)sizeof(p2));
	cr_assert_eq(memcmp(got, p2, sizeof(p2)), 0);
	cr_assert_eq(peer_recv(&t, got, sizeof(got)), -1);
	cr_assert_eq(errno, EAGAIN);

	cr_assert_eq(vqm_used_idx(&t.tx), 2);
	expect_used(&t.tx, 0, h1, 0);
	expect_used(&t.tx, 1, h2, 0);
	cr_assert_eq(t.irq_queue[TXQ], 1, "one interrupt for the batch");
	cr_assert_eq(t.irq_queue[RXQ], 0);
	c = counters(&t);
	cr_assert_eq(c.tx_packets, 2);
	cr_assert_eq(c.tx_bytes, 220);
	cr_assert_eq(c.tx_errors + c.tx_dropped, 0);
	tnet_destroy(&t);
}

Test(virtio_net, tx_rejects_bad_chains_and_keeps_going)
{
	struct tnet t;
	uint8_t pkt[HDR + 64], got[256];
	uint16_t heads[6];
	struct virtio_net_hdr csum = hdr_of(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0);
	struct virtio_net_hdr tso = hdr_of(0, VIRTIO_NET_HDR_GSO_TCPV4, 0);
	struct vqm_buf wr[] = { { 0, HDR + 64, false }, { 0, 16, true } };
	struct vqm_buf big = { BIG_AREA, HDR + VIRTIO_NET_MAX_FRAME + 1, false };
	const uint32_t short_len[] = { HDR - 4 }, one[] = { HDR + 64 };
	struct virtio_net_counters c;

	tnet_up(&t, NULL, 256, 0);
	make_packet(pkt, hdr_of(0, 0, 0), 64, 3);
	heads[0] = tx_chain(&t, short_len, 1, pkt); /* shorter than the header */
	heads[1] = vqm_chain(&t.tx, wr, 2);         /* a device-writable buffer on transmit */
	fill_bufs(&t.tx, wr, 2, pkt);
	vqm_publish(&t.tx, heads[1]);
	heads[2] = vqm_chain(&t.tx, &big, 1); /* one byte over the largest frame */
	vqm_publish(&t.tx, heads[2]);
	memcpy(pkt, &csum, HDR);
	heads[3] = tx_chain(&t, one, 1, pkt); /* NEEDS_CSUM without CSUM negotiated */
	memcpy(pkt, &tso, HDR);
	heads[4] = tx_chain(&t, one, 1, pkt); /* TSO without HOST_TSO4 */
	make_packet(pkt, hdr_of(0, 0, 0), 64, 4);
	heads[5] = tx_chain(&t, one, 1, pkt); /* fine */

	virtio_queue_notify(t.dev, TXQ);
	cr_assert_eq(peer_recv(&t, got, sizeof(got)), (ssize_t)sizeof(pkt), "only the good frame is sent");
	cr_assert_eq(memcmp(got, pkt, sizeof(pkt)), 0);
	cr_assert_eq(peer_recv(&t, got, sizeof(got)), -1);
	cr_assert_eq(vqm_used_idx(&t.tx), 6, "every chain goes back");
	for (unsigned int i = 0; i < 6; i++)
		expect_used(&t.tx, (uint16_t)i, heads[i], 0);
	c = counters(&t);
	cr_assert_eq(c.tx_errors, 5);
	cr_assert_eq(c.tx_packets, 1);
	cr_assert_eq(t.dev->status & NRS, 0, "bad frames are not a broken queue");
	tnet_destroy(&t);
}

Test(virtio_net, tx_offload_header_passes_when_negotiated)
{
	struct tnet t;
	uint8_t pkt[HDR + 80], got[256];
	struct virtio_net_hdr h = hdr_of(VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID,
					 VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN, 7);
	const uint32_t one[] = { HDR + 80 };
	struct virtio_net_hdr *out = (struct virtio_net_hdr *)got;

	tnet_up(&t, NULL, 256, NF(CSUM) | NF(HOST_TSO4) | NF(HOST_ECN));
	make_packet(pkt, h, 80, 5);
	tx_chain(&t, one, 1, pkt);
	virtio_queue_notify(t.dev, TXQ);
	cr_assert_eq(peer_recv(&t, got, sizeof(got)), (ssize_t)sizeof(pkt));
	cr_assert_eq(out->flags, VIRTIO_NET_HDR_F_NEEDS_CSUM, "receive-only flags are not passed on");
	cr_assert_eq(out->gso_type, VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN);
	cr_assert_eq(out->gso_size, h.gso_size);
	cr_assert_eq(out->csum_start, h.csum_start);
	cr_assert_eq(out->csum_offset, h.csum_offset);
	cr_assert_eq(out->num_buffers, 0);
	cr_assert_eq(memcmp(got + HDR, pkt + HDR, 80), 0);
	tnet_destroy(&t);
}

Test(virtio_net, tx_eagain_waits_for_epollout)
{
	struct tnet t;
	const unsigned int nframes = 16, flen = 1500;
	uint8_t pkt[HDR + 1500], got[2048];
	const uint32_t one[] = { HDR + 1500 };
	int sndbuf = 1, received = 0;
	uint16_t used_first;

	tnet_up(&t, NULL, 256, 0);
	epoll_register(&t);
	while (epoll_round(&t, 0) > 0) /* the initial "writable" report; nothing is pending */
		;
	/* The smallest send buffer the kernel allows: a couple of frames in flight at most. */
	cr_assert_eq(setsockopt(t.sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
	for (unsigned int i = 0; i < nframes; i++) {
		make_packet(pkt, hdr_of(0, 0, 0), flen, 10 + i);
		tx_chain(&t, one, 1, pkt);
	}
	virtio_queue_notify(t.dev, TXQ);
	used_first = vqm_used_idx(&t.tx);
	cr_assert_lt(used_first, nframes, "the back end filled up");
	cr_assert_gt(used_first, 0);
	virtio_queue_notify(t.dev, TXQ);
	cr_assert_eq(vqm_used_idx(&t.tx), used_first, "no progress while it is full, and no frame lost");
	cr_assert_eq(epoll_round(&t, 0), 0, "nothing to do until the peer reads: no busy loop");

	/* The host reads; the fd's EPOLLOUT edge (not a kick) makes the device carry on. */
	for (int round = 0; round < 100 && received < (int)nframes; round++) {
		ssize_t r;

		while ((r = peer_recv(&t, got, sizeof(got))) > 0) {
			make_packet(pkt, hdr_of(0, 0, 0), flen, 10 + (unsigned int)received);
			cr_assert_eq(r, (ssize_t)sizeof(pkt));
			cr_assert_eq(memcmp(got, pkt, sizeof(pkt)), 0, "frame %d in order", received);
			received++;
		}
		if (received < (int)nframes)
			cr_assert_eq(epoll_round(&t, 1000), 1, "EPOLLOUT after the peer made room");
	}
	cr_assert_eq(received, (int)nframes);
	cr_assert_eq(vqm_used_idx(&t.tx), nframes);
	cr_assert_eq(counters(&t).tx_packets, nframes);
	cr_assert_eq(counters(&t).tx_dropped, 0);
	cr_assert_geq(t.irq_queue[TXQ], 2);
	tnet_destroy(&t);
}

Test(virtio_net, tx_malformed_chain_needs_reset)
{
	struct tnet t;
	uint8_t got[64];

	tnet_up(&t, NULL, 256, 0);
	vqm_set_desc(&t.tx, 0, vqm_alloc(&t.tx, 64, 8), 64, VIRTQ_DESC_F_NEXT, 999); /* next beyond the queue */
	vqm_publish(&t.tx, 0);
	virtio_queue_notify(t.dev, TXQ);
	cr_assert(t.dev->status & NRS);
	cr_assert_eq(t.irq_config, 1);
	cr_assert_eq(vqm_used_idx(&t.tx), 0);
	cr_assert_eq(peer_recv(&t, got, sizeof(got)), -1);
	tnet_destroy(&t);

	tnet_up(&t, NULL, 256, 0);
	{
		struct vqm_buf b = { 0, HDR + 20, false };
		vqm_publish(&t.tx, vqm_indirect(&t.tx, &b, 1, NULL)); /* INDIRECT_DESC not negotiated */
	}
	virtio_queue_notify(t.dev, TXQ);
	cr_assert(t.dev->status & NRS);
	tnet_destroy(&t);

	tnet_up(&t, NULL, 256, 0);
	{
		struct vqm_buf b = { VQM_HOLE, HDR + 20, false }; /* not guest RAM */
		vqm_publish(&t.tx, vqm_chain(&t.tx, &b, 1));
	}
	virtio_queue_notify(t.dev, TXQ);
	cr_assert(t.dev->status & NRS);
	cr_assert_eq(peer_recv(&t, got, sizeof(got)), -1);
	tnet_destroy(&t);
}

/* ---- receive ---- */

Test(virtio_net, rx_one_buffer_gets_frame_and_header)
{
	struct tnet t;
	struct vqm_buf b[] = { { 0, HDR, true }, { 0, 2036, true } };
	uint8_t want[HDR + 100];
	struct virtio_net_hdr *gh;
	uint16_t head;

	tnet_up(&t, NULL, 256, 0);
	head = vqm_chain(&t.rx, b, 2);
	vqm_publish(&t.rx, head);
	peer_send(&t, hdr_of(0, 0, 0x7777), 100, 7); /* whatever the back end leaves in num_buffers */
	backend(&t, EPOLLIN);

	cr_assert_eq(vqm_used_idx(&t.rx), 1);
	expect_used(&t.rx, 0, head, HDR + 100);
	gh = vqm_host(&t.rx, b[0].addr, HDR);
	cr_assert_eq(le16toh(gh->num_buffers), 1, "num_buffers is 1 without MRG_RXBUF");
	cr_assert_eq(gh->flags, 0);
	cr_assert_eq(gh->gso_type, 0);
	make_packet(want, hdr_of(0, 0, 0), 100, 7);
	cr_assert_eq(memcmp(vqm_host(&t.rx, b[1].addr, 100), want + HDR, 100), 0);
	cr_assert_eq(t.irq_queue[RXQ], 1);
	cr_assert_eq(counters(&t).rx_packets, 1);
	cr_assert_eq(counters(&t).rx_bytes, 100);
	tnet_destroy(&t);
}

Test(virtio_net, rx_batch_raises_one_interrupt)
{
	struct tnet t;

	tnet_up(&t, NULL, 256, 0);
	for (unsigned int i = 0; i < 3; i++) {
		post_rx(&t, 2048, NULL);
		peer_send(&t, hdr_of(0, 0, 0), 60 + i, i);
	}
	backend(&t, EPOLLIN);
	cr_assert_eq(vqm_used_idx(&t.rx), 3);
	cr_assert_eq(t.irq_queue[RXQ], 1);
	tnet_destroy(&t);
}

Test(virtio_net, rx_merged_buffers_set_num_buffers)
{
	struct tnet t;
	uint64_t addr[4];
	uint16_t head[4];
	uint8_t want[HDR + 150], got[HDR + 150];
	const uint32_t expect_len[3] = { 64, 64, 34 };

	tnet_up(&t, NULL, 256, NF(MRG_RXBUF));
	for (unsigned int i = 0; i < 4; i++)
		head[i] = post_rx(&t, 64, &addr[i]);
	peer_send(&t, hdr_of(0, 0, 0), 150, 9);
	backend(&t, EPOLLIN);

	cr_assert_eq(vqm_used_idx(&t.rx), 3);
	for (unsigned int i = 0, off = 0; i < 3; off += expect_len[i], i++) {
		expect_used(&t.rx, (uint16_t)i, head[i], expect_len[i]);
		memcpy(got + off, vqm_host(&t.rx, addr[i], expect_len[i]), expect_len[i]);
	}
	cr_assert_eq(guest_num_buffers(&t, addr[0]), 3);
	make_packet(want, hdr_of(0, 0, 3), 150, 9);
	cr_assert_eq(memcmp(got, want, sizeof(want)), 0, "frame spread over the buffers in order");
	cr_assert_eq(t.irq_queue[RXQ], 1);

	peer_send(&t, hdr_of(0, 0, 0), 20, 10);
	backend(&t, EPOLLIN);
	cr_assert_eq(vqm_used_idx(&t.rx), 4);
	expect_used(&t.rx, 3, head[3], HDR + 20);
	cr_assert_eq(guest_num_buffers(&t, addr[3]), 1);
	tnet_destroy(&t);
}

Test(virtio_net, rx_merged_waits_for_more_buffers)
{
	struct tnet t;
	uint64_t addr[3];
	uint16_t head[3];

	tnet_up(&t, NULL, 256, NF(MRG_RXBUF));
	head[0] = post_rx(&t, 64, &addr[0]);
	head[1] = post_rx(&t, 64, &addr[1]);
	peer_send(&t, hdr_of(0, 0, 0), 150, 11);
	backend(&t, EPOLLIN);
	cr_assert_eq(vqm_used_idx(&t.rx), 0, "half a frame is not handed over");
	cr_assert_eq(t.irq_queue[RXQ], 0);

	head[2] = post_rx(&t, 64, &addr[2]);
	virtio_queue_notify(t.dev, RXQ);
	cr_assert_eq(vqm_used_idx(&t.rx), 3);
	expect_used(&t.rx, 0, head[0], 64);
	expect_used(&t.rx, 1, head[1], 64);
	expect_used(&t.rx, 2, head[2], 34);
	cr_assert_eq(guest_num_buffers(&t, addr[0]), 3);
	cr_assert_eq(counters(&t).rx_packets, 1);
	tnet_destroy(&t);
}

Test(virtio_net, rx_merged_skips_buffer_smaller_than_header)
{
	struct tnet t;
	uint64_t addr;
	uint16_t small, good;

	tnet_up(&t, NULL, 256, NF(MRG_RXBUF));
	small = post_rx(&t, HDR - 1, NULL);
	good = post_rx(&t, 256, &addr);
	peer_send(&t, hdr_of(0, 0, 0), 100, 12);
	backend(&t, EPOLLIN);
	cr_assert_eq(vqm_used_idx(&t.rx), 2);
	expect_used(&t.rx, 0, small, 0);
	expect_used(&t.rx, 1, good, HDR + 100);
	cr_assert_eq(guest_num_buffers(&t, addr), 1);
	cr_assert_eq(counters(&t).rx_errors, 1);
	cr_assert_eq(counters(&t).rx_packets, 1);
	tnet_destroy(&t);
}

Test(virtio_net, rx_merged_ring_too_small_drops_frame)
{
	struct tnet t;
	uint16_t head[8];
	uint64_t addr;

	tnet_up(&t, NULL, 8, NF(MRG_RXBUF));
	for (unsigned int i = 0; i < 8; i++)
		head[i] = post_rx(&t, 16, NULL); /* 128 bytes in all */
	peer_send(&t, hdr_of(0, 0, 0), 200, 13);
	backend(&t, EPOLLIN);
	cr_assert_eq(vqm_used_idx(&t.rx), 8, "the whole ring goes back");
	for (unsigned int i = 0; i < 8; i++)
		expect_used(&t.rx, (uint16_t)i, head[i], 0);
	cr_assert_eq(counters(&t).rx_dropped, 1);
	cr_assert_eq(t.dev->status & NRS, 0);

	/* The driver reuses descriptor 0 for a bigger buffer: the next frame gets through. */
	addr = vqm_alloc(&t.rx, 256, 8);
	vqm_set_desc(&t.rx, 0, addr, 256, VIRTQ_DESC_F_WRITE, 0);
	vqm_publish(&t.rx, 0);
	peer_send(&t, hdr_of(0, 0, 0), 50, 14);
	virtio_queue_notify(t.dev, RXQ);
	cr_assert_eq(vqm_used_idx(&t.rx), 9);
	expect_used(&t.rx, 8, 0, HDR + 50);
	tnet_destroy(&t);
}

Test(virtio_net, rx_too_small_without_mrg_drops_and_counts)
{
	struct tnet t;
	uint16_t small, good;
	uint64_t addr;
	uint8_t want[HDR + 40];

	tnet_up(&t, NULL, 256, 0);
	small = post_rx(&t, 64, NULL);
	peer_send(&t, hdr_of(0, 0, 0), 100, 15);
	backend(&t, EPOLLIN);
	cr_assert_eq(vqm_used_idx(&t.rx), 1);
	expect_used(&t.rx, 0, small, 0);
	cr_assert_eq(counters(&t).rx_dropped, 1);
	cr_assert_eq(counters(&t).rx_packets, 0);

	good = post_rx(&t, 256, &addr);
	peer_send(&t, hdr_of(0, 0, 0), 40, 16);
	backend(&t, EPOLLIN);
	cr_assert_eq(vqm_used_idx(&t.rx), 2);
	expect_used(&t.rx, 1, good, HDR + 40);
	make_packet(want, hdr_of(0, 0, 1), 40, 16);
	cr_assert_eq(memcmp(vqm_host(&t.rx, addr, sizeof(want)), want, sizeof(want)), 0);
	tnet_destroy(&t);
}

Test(virtio_net, rx_full_size_frame_in_one_big_buffer)
{
	struct tnet t;
	uint8_t *want = malloc(HDR + VIRTIO_NET_MAX_FRAME);
	struct vqm_buf b = { BIG_AREA, HDR + VIRTIO_NET_MAX_FRAME, true };
	uint16_t head;

	cr_assert_not_null(want);
	tnet_up(&t, NULL, 256, NF(GUEST_CSUM) | NF(GUEST_TSO4));
	head = vqm_chain(&t.rx, &b, 1);
	vqm_publish(&t.rx, head);
	peer_send(&t, hdr_of(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 0), VIRTIO_NET_MAX_FRAME, 17);
	backend(&t, EPOLLIN);
	cr_assert_eq(vqm_used_idx(&t.rx), 1);
	expect_used(&t.rx, 0, head, HDR + VIRTIO_NET_MAX_FRAME);
	make_packet(want, hdr_of(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 1), VIRTIO_NET_MAX_FRAME, 17);
	cr_assert_eq(memcmp(vqm_host(&t.rx, BIG_AREA, HDR + VIRTIO_NET_MAX_FRAME), want, HDR + VIRTIO_NET_MAX_FRAME),
		     0);
	free(want);
	tnet_destroy(&t);
}

Test(virtio_net, rx_without_buffers_keeps_frame_staged)
{
	struct tnet t;
	uint64_t a1, a2;
	uint16_t h1, h2;
	uint8_t want[HDR + 80];

	tnet_up(&t, NULL, 256, 0);
	epoll_register(&t);
	peer_send(&t, hdr_of(0, 0, 0), 70, 20);
	peer_send(&t, hdr_of(0, 0, 0), 80, 21);
	cr_assert_eq(epoll_round(&t, 1000), 1);
	cr_assert_eq(epoll_round(&t, 0), 0, "edge consumed: the worker sleeps although a frame waits (no spin)");
	backend(&t, EPOLLIN); /* a spurious event with still no buffer: nothing happens, nothing is lost */
	cr_assert_eq(vqm_used_idx(&t.rx), 0);
	cr_assert_eq(t.irq_queue[RXQ], 0);
	cr_assert_eq(counters(&t).rx_dropped, 0);

	h1 = post_rx(&t, 2048, &a1);
	virtio_queue_notify(t.dev, RXQ); /* the driver's kick resumes: no fd event needed */
	cr_assert_eq(vqm_used_idx(&t.rx), 1);
	expect_used(&t.rx, 0, h1, HDR + 70);
	make_packet(want, hdr_of(0, 0, 1), 70, 20);
	cr_assert_eq(memcmp(vqm_host(&t.rx, a1, HDR + 70), want, HDR + 70), 0);

	h2 = post_rx(&t, 2048, &a2);
	virtio_queue_notify(t.dev, RXQ);
	cr_assert_eq(vqm_used_idx(&t.rx), 2);
	expect_used(&t.rx, 1, h2, HDR + 80);
	make_packet(want, hdr_of(0, 0, 1), 80, 21);
	cr_assert_eq(memcmp(vqm_host(&t.rx, a2, HDR + 80), want, HDR + 80), 0);
	cr_assert_eq(t.irq_queue[RXQ], 2);

	/* Drained to EAGAIN with buffers to spare: the next frame raises a new edge. */
	post_rx(&t, 2048, NULL);
	cr_assert_eq(epoll_round(&t, 0), 0);
	peer_send(&t, hdr_of(0, 0, 0), 90, 22);
	cr_assert_eq(epoll_round(&t, 1000), 1);
	cr_assert_eq(vqm_used_idx(&t.rx), 3);
	tnet_destroy(&t);
}

Test(virtio_net, rx_waits_for_driver_ok)
{
	struct tnet t;
	uint16_t head;

	tnet_create(&t, NULL, 256);
	tnet_negotiate(&t, 0);
	head = post_rx(&t, 2048, NULL);
	peer_send(&t, hdr_of(0, 0, 0), 60, 22);
	backend(&t, EPOLLIN);
	virtio_queue_notify(t.dev, RXQ);
	cr_assert_eq(vqm_used_idx(&t.rx), 0, "no queue access before DRIVER_OK");
	cr_assert_eq(tnet_driver_ok(&t), 0);
	virtio_queue_notify(t.dev, RXQ);
	cr_assert_eq(vqm_used_idx(&t.rx), 1, "the frame was left in the back end, not lost");
	expect_used(&t.rx, 0, head, HDR + 60);
	tnet_destroy(&t);
}

Test(virtio_net, rx_header_follows_negotiated_offloads)
{
	struct tnet t;
	uint64_t addr;
	struct virtio_net_hdr *gh;

	/* No GUEST_CSUM: flags must be 0; a partial checksum or a TSO frame cannot be delivered. */
	tnet_up(&t, NULL, 256, NF(MTU));
	post_rx(&t, 2048, &addr);
	peer_send(&t, hdr_of(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0), 60, 30);
	peer_send(&t, hdr_of(0, VIRTIO_NET_HDR_GSO_TCPV4, 0), 60, 31);
	peer_send(&t, hdr_of(0, 0, 0), 1500 + 14 + 4 + 1, 32); /* over the MTU */
	peer_send(&t, hdr_of(VIRTIO_NET_HDR_F_DATA_VALID, 0, 0), 1500 + 14 + 4, 33);
	backend(&t, EPOLLIN);
	cr_assert_eq(vqm_used_idx(&t.rx), 1, "rejected frames use no buffer");
	cr_assert_eq(counters(&t).rx_errors, 3);
	gh = vqm_host(&t.rx, addr, HDR);
	cr_assert_eq(gh->flags, 0, "DATA_VALID cleared without GUEST_CSUM");
	tnet_destroy(&t);

	tnet_up(&t, NULL, 256, NF(GUEST_CSUM) | NF(GUEST_TSO6));
	post_rx(&t, 2048, &addr);
	peer_send(&t, hdr_of(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 0), 60, 34); /* TSO4 not taken */
	peer_send(&t, hdr_of(VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_RSC_INFO, VIRTIO_NET_HDR_GSO_TCPV6, 0), 60,
		  35);
	backend(&t, EPOLLIN);
	cr_assert_eq(vqm_used_idx(&t.rx), 1);
	cr_assert_eq(counters(&t).rx_errors, 1);
	gh = vqm_host(&t.rx, addr, HDR);
	cr_assert_eq(gh->flags, VIRTIO_NET_HDR_F_NEEDS_CSUM, "RSC_INFO is not negotiable here");
	cr_assert_eq(gh->gso_type, VIRTIO_NET_HDR_GSO_TCPV6);
	cr_assert_eq(le16toh(gh->gso_size), 1448);
	cr_assert_eq(le16toh(gh->csum_start), 34);
	tnet_destroy(&t);
}

Test(virtio_net, rx_runt_from_backend_is_skipped)
{
	struct tnet t;
	uint8_t runt[5] = { 0 };
	uint16_t head;

	tnet_up(&t, NULL, 256, 0);
	head = post_rx(&t, 2048, NULL);
	cr_assert_eq(send(t.sv[1], runt, sizeof(runt), 0), 5);
	peer_send(&t, hdr_of(0, 0, 0), 60, 36);
	backend(&t, EPOLLIN);
	cr_assert_eq(vqm_used_idx(&t.rx), 1);
	expect_used(&t.rx, 0, head, HDR + 60);
	cr_assert_eq(counters(&t).rx_errors, 1);
	tnet_destroy(&t);
}

Test(virtio_net, event_idx_suppresses_interrupts)
{
	struct tnet t;

	tnet_up(&t, NULL, 256, EVT);
	for (unsigned int i = 0; i < 3; i++)
		post_rx(&t, 2048, NULL);
	vqm_set_used_event(&t.rx, 0);
	peer_send(&t, hdr_of(0, 0, 0), 60, 40);
	backend(&t, EPOLLIN);
	cr_assert_eq(vqm_used_idx(&t.rx), 1);
	cr_assert_eq(t.irq_queue[RXQ], 1);
	cr_assert_eq(vqm_avail_event(&t.rx), 1, "avail_event follows what the device took");

	vqm_set_used_event(&t.rx, 2); /* "interrupt me once used entry 2 is filled" */
	peer_send(&t, hdr_of(0, 0, 0), 60, 41);
	backend(&t, EPOLLIN);
	cr_assert_eq(vqm_used_idx(&t.rx), 2);
	cr_assert_eq(t.irq_queue[RXQ], 1, "suppressed");
	peer_send(&t, hdr_of(0, 0, 0), 60, 42);
	backend(&t, EPOLLIN);
	cr_assert_eq(vqm_used_idx(&t.rx), 3);
	cr_assert_eq(t.irq_queue[RXQ], 2, "used_event passed");
	tnet_destroy(&t);
}

Test(virtio_net, rx_malformed_or_unmapped_chain_needs_reset)
{
	struct tnet t;

	tnet_up(&t, NULL, 256, 0);
	{
		struct vqm_buf b = { VQM_HOLE, 2048, true };
		vqm_publish(&t.rx, vqm_chain(&t.rx, &b, 1));
	}
	peer_send(&t, hdr_of(0, 0, 0), 60, 50);
	backend(&t, EPOLLIN);
	cr_assert(t.dev->status & NRS);
	cr_assert_eq(t.irq_config, 1);
	cr_assert_eq(vqm_used_idx(&t.rx), 0);
	backend(&t, EPOLLIN); /* a broken device ignores its fd */
	virtio_queue_notify(t.dev, RXQ);
	cr_assert_eq(t.irq_config, 1);
	tnet_destroy(&t);

	tnet_up(&t, NULL, 256, NF(MRG_RXBUF));
	vqm_set_avail_idx(&t.rx, 1000); /* more entries than the ring has */
	peer_send(&t, hdr_of(0, 0, 0), 60, 51);
	backend(&t, EPOLLIN);
	cr_assert(t.dev->status & NRS);
	cr_assert_eq(vqm_used_idx(&t.rx), 0);
	tnet_destroy(&t);

	/* Readable-after-writable inside a receive chain. */
	tnet_up(&t, NULL, 256, 0);
	{
		struct vqm_buf b[] = { { 0, 64, true }, { 0, 64, false } };
		vqm_publish(&t.rx, vqm_chain(&t.rx, b, 2));
	}
	peer_send(&t, hdr_of(0, 0, 0), 60, 52);
	backend(&t, EPOLLIN);
	cr_assert(t.dev->status & NRS);
	tnet_destroy(&t);
}

Test(virtio_net, reset_drops_staged_frame)
{
	struct tnet t;
	uint64_t addr;
	uint16_t head;
	uint8_t want[HDR + 90];

	tnet_up(&t, NULL, 256, 0);
	peer_send(&t, hdr_of(0, 0, 0), 70, 60);
	backend(&t, EPOLLIN); /* staged: no buffers */
	cr_assert_eq(virtio_set_status(t.dev, 0), 0);
	tnet_negotiate(&t, 0);
	cr_assert_eq(tnet_driver_ok(&t), 0);
	head = post_rx(&t, 2048, &addr);
	peer_send(&t, hdr_of(0, 0, 0), 90, 61);
	virtio_queue_notify(t.dev, RXQ);
	cr_assert_eq(vqm_used_idx(&t.rx), 1);
	expect_used(&t.rx, 0, head, HDR + 90);
	make_packet(want, hdr_of(0, 0, 1), 90, 61);
	cr_assert_eq(memcmp(vqm_host(&t.rx, addr, sizeof(want)), want, sizeof(want)), 0,
		     "the frame from before the reset is gone");
	tnet_destroy(&t);
}

Test(virtio_net, stats_line)
{
	struct tnet t;
	char line[256];
	const uint32_t one[] = { HDR + 30 };
	uint8_t pkt[HDR + 30];

	tnet_up(&t, NULL, 256, 0);
	post_rx(&t, 64, NULL);
	peer_send(&t, hdr_of(0, 0, 0), 40, 70);
	peer_send(&t, hdr_of(0, 0, 0), 100, 71);
	backend(&t, EPOLLIN);
	make_packet(pkt, hdr_of(0, 0, 0), 30, 72);
	tx_chain(&t, one, 1, pkt);
	virtio_queue_notify(t.dev, TXQ);
	virtio_net_stats(t.n, line, sizeof(line));
	cr_assert_str_eq(line, "rx 1 packets 40 bytes 0 dropped 0 errors, tx 1 packets 30 bytes 0 dropped 0 errors");
	tnet_destroy(&t);
}

/* ---- over a real TAP ---- */

static int tap_offload(void *ctx, unsigned int flags)
{
	return tap_set_offload(ctx, flags);
}

static uint16_t ip_checksum(const uint8_t *p, size_t len)
{
	uint32_t sum = 0;

	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static void put16be(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* Ethernet + IPv4 + UDP (checksum 0: "none", allowed for IPv4) from the guest to the host. */
static size_t udp_frame(uint8_t *f, const uint8_t dst_mac[6], const uint8_t src_mac[6], uint32_t src_ip,
			uint32_t dst_ip, uint16_t sport, uint16_t dport, const char *payload)
{
	size_t plen = strlen(payload), iplen = 20 + 8 + plen;
	uint8_t *ip = f + 14, *udp = ip + 20;

	memcpy(f, dst_mac, 6);
	memcpy(f + 6, src_mac, 6);
	put16be(f + 12, 0x0800);
	memset(ip, 0, 20);
	ip[0] = 0x45;
	put16be(ip + 2, (uint16_t)iplen);
	put16be(ip + 4, 0x1234);
	ip[8] = 64;
	ip[9] = IPPROTO_UDP;
	put16be(ip + 12, (uint16_t)(src_ip >> 16));
	put16be(ip + 14, (uint16_t)src_ip);
	put16be(ip + 16, (uint16_t)(dst_ip >> 16));
	put16be(ip + 18, (uint16_t)dst_ip);
	put16be(ip + 10, ip_checksum(ip, 20));
	put16be(udp, sport);
	put16be(udp + 2, dport);
	put16be(udp + 4, (uint16_t)(8 + plen));
	put16be(udp + 6, 0);
	memcpy(udp + 8, payload, plen);
	return 14 + iplen;
}

/*
 * The whole path in a namespace of the test's own: the host's ARP request for the guest
 * reaches the guest's receive buffers through the TAP, and a UDP datagram the guest
 * transmits reaches a host socket.
 */
Test(virtio_net, over_an_auto_tap_in_a_namespace)
{
	const uint32_t host_ip = 0x0a0b0c01, guest_ip = 0x0a0b0c02;
	const uint8_t guest_mac[6] = { 0x52, 0x54, 0x00, 0x00, 0x00, 0x02 };
	const char *msg = "hello from the guest";
	struct net_config cfg;
	struct tap *tap = NULL;
	struct tnet t;
	struct ifreq ifr;
	struct sockaddr_in host = { .sin_family = AF_INET, .sin_port = htons(5555), .sin_addr.s_addr = htonl(host_ip) };
	struct sockaddr_in guest = { .sin_family = AF_INET,
				     .sin_port = htons(7777),
				     .sin_addr.s_addr = htonl(guest_ip) };
	struct sockaddr_in from;
	socklen_t fromlen = sizeof(from);
	uint64_t addr[256] = { 0 };
	uint8_t tap_mac[6], frame[HDR + 128], got[64];
	uint16_t seen = 0;
	bool arp = false;
	char err[256] = "";
	int s;

	netns_enter_or_skip();
	cr_assert_eq(net_parse_opts("tap=auto,host-ip=10.11.12.1/24,mac=52:54:00:00:00:02", &cfg, err, sizeof(err)),
		     0);
	cr_assert_eq(tap_open(&cfg, &tap, err, sizeof(err)), 0, "%s", err);
	tnet_create_on(&t, &cfg, 256, tap_fd(tap), tap_offload, tap);
	tnet_negotiate(&t, NF(MAC) | NF(STATUS) | NF(MTU) | NF(GUEST_CSUM));
	cr_assert_eq(tnet_driver_ok(&t), 0, "activation sets the TAP's offloads");
	for (unsigned int i = 0; i < 24; i++) {
		uint64_t a;
		uint16_t head = post_rx(&t, 1600, &a);

		addr[head] = a;
	}

	s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(s, 0);
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", tap_name(tap));
	cr_assert_eq(ioctl(s, SIOCGIFHWADDR, &ifr), 0);
	memcpy(tap_mac, ifr.ifr_hwaddr.sa_data, 6);
	cr_assert_eq(bind(s, (struct sockaddr *)&host, sizeof(host)), 0);
	/* Unresolved neighbour: the host asks for the guest's MAC through the TAP. */
	cr_assert_eq(sendto(s, "ping", 4, 0, (struct sockaddr *)&guest, sizeof(guest)), 4);

	for (int round = 0; round < 50 && !arp; round++) {
		struct pollfd pfd = { .fd = tap_fd(tap), .events = POLLIN };

		if (poll(&pfd, 1, 100) > 0)
			backend(&t, EPOLLIN);
		for (; seen != vqm_used_idx(&t.rx); seen++) {
			uint32_t id, len;
			const uint8_t *f;

			vqm_used_elem(&t.rx, seen, &id, &len);
			cr_assert_lt(id, 256);
			cr_assert_geq(len, HDR + 14);
			f = vqm_host(&t.rx, addr[id] + HDR, len - HDR);
			cr_assert_eq(guest_num_buffers(&t, addr[id]), 1);
			if (f[12] != 0x08 || f[13] != 0x06 || len < HDR + 42 || f[21] != 1)
				continue; /* not an ARP request */
			cr_assert_eq(memcmp(f, "\xff\xff\xff\xff\xff\xff", 6), 0, "broadcast");
			cr_assert_eq(memcmp(f + 6, tap_mac, 6), 0, "from the TAP");
			cr_assert_eq(memcmp(f + 28, &host.sin_addr, 4), 0, "sender is host-ip");
			cr_assert_eq(memcmp(f + 38, &guest.sin_addr, 4), 0, "asks for the guest");
			arp = true;
		}
	}
	cr_assert(arp, "the host's ARP request reached the guest");
	cr_assert_gt(t.irq_queue[RXQ], 0, "and raised an interrupt");

	{
		struct virtio_net_hdr h = hdr_of(0, 0, 0);
		size_t flen = udp_frame(frame + HDR, tap_mac, guest_mac, guest_ip, host_ip, 7777, 5555, msg);
		const uint32_t lens[] = { HDR, (uint32_t)flen };
		struct pollfd pfd = { .fd = s, .events = POLLIN };

		memcpy(frame, &h, HDR);
		tx_chain(&t, lens, 2, frame);
		virtio_queue_notify(t.dev, TXQ);
		cr_assert_eq(vqm_used_idx(&t.tx), 1);
		cr_assert_eq(counters(&t).tx_packets, 1, "%llu dropped", (unsigned long long)counters(&t).tx_dropped);
		cr_assert_eq(poll(&pfd, 1, 2000), 1, "the guest's datagram reached the host");
		cr_assert_eq(recvfrom(s, got, sizeof(got), 0, (struct sockaddr *)&from, &fromlen),
			     (ssize_t)strlen(msg));
		cr_assert_eq(memcmp(got, msg, strlen(msg)), 0);
		cr_assert_eq(from.sin_addr.s_addr, guest.sin_addr.s_addr);
		cr_assert_eq(from.sin_port, htons(7777));
	}
	close(s);
	tnet_destroy(&t);
	tap_close(tap);
}

/* ---- --net option ---- */

Test(virtio_net, parse_opts_good)
{
	struct net_config c;
	char err[256];
	const uint8_t def[6] = NET_DEFAULT_MAC, mac[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };

	cr_assert_eq(net_parse_opts("tap=tap0", &c, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(c.tap, "tap0");
	cr_assert_not(c.tap_auto);
	cr_assert_not(c.has_mac);
	cr_assert_eq(memcmp(c.mac, def, 6), 0);
	cr_assert_eq(c.mtu, 0);
	cr_assert_eq(net_config_mtu(&c), 1500);

	cr_assert_eq(net_parse_opts("tap=auto,host-ip=10.0.2.1/24,mac=52:54:00:12:34:56,mtu=9000", &c, err,
				    sizeof(err)),
		     0, "%s", err);
	cr_assert(c.tap_auto);
	cr_assert_str_eq(c.tap, "");
	cr_assert(c.has_host_ip);
	cr_assert_eq(c.host_ip, 0x0a000201);
	cr_assert_eq(c.host_prefix, 24);
	cr_assert(c.has_mac);
	cr_assert_eq(memcmp(c.mac, mac, 6), 0);
	cr_assert_eq(c.mtu, 9000);

	cr_assert_eq(net_parse_opts("mtu=68,tap=abcdefghijklmno", &c, err, sizeof(err)), 0, "any order, 15 chars");
	cr_assert_str_eq(c.tap, "abcdefghijklmno");
	cr_assert_eq(net_parse_opts("tap=auto,host-ip=192.168.7.9/32,mac=02:AB:cd:00:00:01,mtu=65521", &c, err,
				    sizeof(err)),
		     0, "%s", err);
	cr_assert_eq(c.mac[1], 0xab);
}

Test(virtio_net, parse_opts_bad)
{
	const struct {
		const char *arg, *says;
	} bad[] = {
		{ "", "tap=" },
		{ "tap=", "interface name" },
		{ "tap=abcdefghijklmnop", "1 to 15" },
		{ "tap=a/b", "interface name" },
		{ "tap=a b", "interface name" },
		{ "tap=tap%d", "interface name" },
		{ "tap=..", "interface name" },
		{ "mtu=1500", "no TAP" },
		{ "tap=t0,tap=t1", "twice" },
		{ "tap=t0,,mtu=1500", "empty" },
		{ "tap=t0,", "empty" },
		{ "tap=t0,mtu", "key=value" },
		{ "tap=t0,speed=10", "unknown key 'speed'" },
		{ "tap=t0,host-ip=10.0.0.1/24", "only works with tap=auto" },
		{ "tap=auto,host-ip=10.0.0.1", "A.B.C.D/N" },
		{ "tap=auto,host-ip=10.0.0.1/33", "A.B.C.D/N" },
		{ "tap=auto,host-ip=10.0.0.1/0", "A.B.C.D/N" },
		{ "tap=auto,host-ip=10.0.0.1/", "A.B.C.D/N" },
		{ "tap=auto,host-ip=300.0.0.1/24", "A.B.C.D/N" },
		{ "tap=auto,host-ip=10.0.0.0/24", "A.B.C.D/N" },
		{ "tap=auto,host-ip=10.0.0.255/24", "A.B.C.D/N" },
		{ "tap=auto,host-ip=224.0.0.1/24", "A.B.C.D/N" },
		{ "tap=auto,host-ip=127.0.0.2/8", "A.B.C.D/N" },
		{ "tap=t0,mac=01:00:5e:00:00:01", "multicast" },
		{ "tap=t0,mac=00:00:00:00:00:00", "not a usable" },
		{ "tap=t0,mac=52:54:00:12:34", "six hex bytes" },
		{ "tap=t0,mac=52:54:00:12:34:5g", "six hex bytes" },
		{ "tap=t0,mac=52-54-00-12-34-56", "six hex bytes" },
		{ "tap=t0,mtu=67", "from 68 to 65521" },
		{ "tap=t0,mtu=65522", "from 68 to 65521" },
		{ "tap=t0,mtu=abc", "from 68 to 65521" },
		{ "tap=t0,mtu=-1", "from 68 to 65521" },
		{ "tap=t0,mtu=99999999999", "from 68 to 65521" },
		{ "tap=t0,vhost=yes", "vhost='yes' is not on or off" },
		{ "tap=t0,vhost=on,iotlb-prefetch=1", "iotlb-prefetch='1' is not on, off, sync or queue" },
		{ "tap=t0,iotlb-prefetch=on", "only applies to vhost=on" },
		{ "tap=t0,vhost=off,iotlb-prefetch=off", "only applies to vhost=on" },
		{ "tap=t0,vhost=on,vhost=off", "twice" },
	};

	for (unsigned int i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct net_config c;
		char err[256] = "";

		cr_assert_eq(net_parse_opts(bad[i].arg, &c, err, sizeof(err)), -EINVAL, "'%s' accepted", bad[i].arg);
		cr_assert_not_null(strstr(err, bad[i].says), "'%s': message '%s' should mention '%s'", bad[i].arg,
				   err, bad[i].says);
		cr_assert_not_null(strstr(err, "--net"), "'%s': message names the option", bad[i].arg);
	}
}

Test(virtio_net, parse_opts_vhost)
{
	struct net_config c;
	char err[256] = "";

	cr_assert_eq(net_parse_opts("tap=t0", &c, err, sizeof(err)), 0, "%s", err);
	cr_assert(!c.vhost);
	cr_assert_eq(c.prefetch, NET_PREFETCH_DEFAULT);
	cr_assert_eq(net_parse_opts("tap=t0,vhost=on", &c, err, sizeof(err)), 0, "%s", err);
	cr_assert(c.vhost);
	cr_assert_eq(c.prefetch, NET_PREFETCH_DEFAULT);
	cr_assert_eq(net_parse_opts("tap=auto,vhost=on,iotlb-prefetch=off,iommu=on", &c, err, sizeof(err)), 0, "%s", err);
	cr_assert(c.vhost);
	cr_assert_eq(c.prefetch, NET_PREFETCH_OFF);
	cr_assert_eq(c.iommu, NET_IOMMU_ON);
	cr_assert_eq(net_parse_opts("tap=t0,iotlb-prefetch=on,vhost=on", &c, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.prefetch, NET_PREFETCH_ON);
	cr_assert_eq(net_parse_opts("tap=t0,vhost=on,iotlb-prefetch=sync", &c, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.prefetch, NET_PREFETCH_SYNC);
	cr_assert_eq(net_parse_opts("tap=t0,vhost=on,iotlb-prefetch=queue", &c, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.prefetch, NET_PREFETCH_QUEUE);
	cr_assert_eq(net_parse_opts("tap=t0,vhost=off", &c, err, sizeof(err)), 0, "%s", err);
	cr_assert(!c.vhost);
}
