/*
 * Host side of a network device: a Linux TAP interface, attached through /dev/net/tun
 * and configured with rtnetlink (libnl-route).
 *
 * The TAP carries Ethernet frames prefixed by a 12-byte virtio-net header (the VERSION_1
 * struct virtio_net_hdr_mrg_rxbuf), so a virtio-net device can pass headers through and let
 * the host kernel do checksum and segmentation offloads for the guest.
 *
 * Setup (tap_open) needs CAP_NET_ADMIN unless the user owns an existing TAP; afterwards
 * the fd is used with read/write(v) and one ioctl (TUNSETOFFLOAD), nothing else.
 */
#ifndef MOAT_NET_TAP_H
#define MOAT_NET_TAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Interface names: IFNAMSIZ with the NUL; a name longer than 15 characters is refused. */
#define NET_IFNAMSIZ 16

/* MTU limits a TAP accepts (ETH_MIN_MTU, and the largest the tun driver allows). */
#define NET_MTU_MIN 68u
#define NET_MTU_MAX 65521u
#define NET_MTU_DEFAULT 1500u

/*
 * MAC the guest gets without mac=: 02:6d:6f:61:74:00, i.e. 0x02 (unicast, locally administered,
 * so it never collides with a vendor's address) then "moat" in ASCII. Fixed, so a guest keeps
 * its address across boots; two moat guests on one bridge each need their own mac=.
 */
#define NET_DEFAULT_MAC { 0x02, 0x6d, 0x6f, 0x61, 0x74, 0x00 }

/* iommu=: behind the virtio-iommu when there is one (the default), or not. */
enum { NET_IOMMU_DEFAULT = 0, NET_IOMMU_ON, NET_IOMMU_OFF };
/* iotlb-prefetch=: on or off, or moat's default (see devices/net/opts.c). */
enum { NET_PREFETCH_DEFAULT = 0, NET_PREFETCH_ON, NET_PREFETCH_OFF, NET_PREFETCH_SYNC, NET_PREFETCH_QUEUE };

struct net_config {
	char tap[NET_IFNAMSIZ]; /* the interface to attach; empty with tap_auto */
	bool tap_auto;          /* create one, name chosen by the kernel (moat%d) */
	bool has_host_ip;       /* host-ip=A.B.C.D/N: give the TAP this address (only with tap=auto) */
	uint32_t host_ip;       /* host byte order */
	uint8_t host_prefix;    /* 0..32 */
	bool has_mac;
	uint8_t mac[6];         /* the guest's MAC; NET_DEFAULT_MAC when !has_mac */
	uint16_t mtu;           /* 0: NET_MTU_DEFAULT */
	int iommu;              /* NET_IOMMU_*: used by the VM builder, not by the device */
	bool vhost;             /* vhost=on: the data path is the host kernel's vhost-net */
	int prefetch;           /* NET_PREFETCH_*: vhost=on behind the IOMMU: push MAPs into vhost's IOTLB */
};

/*
 * Parse the value of --net: "tap=NAME|auto[,host-ip=A.B.C.D/N][,mac=XX:XX:XX:XX:XX:XX][,mtu=N]
 * [,iommu=on|off][,vhost=on|off][,iotlb-prefetch=on|off]".
 * Fills every field of cfg (mac with the default when not given). -EINVAL with one sentence
 * in err that names the problem and the fix.
 */
int net_parse_opts(const char *arg, struct net_config *cfg, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* The MTU cfg asks for, with the default applied. */
uint16_t net_config_mtu(const struct net_config *cfg);

struct tap;

/*
 * Attach to or create the TAP cfg names (see net_config). The fd is non-blocking, close-on-exec,
 * carries 12-byte vnet headers and starts with every offload off. -errno with err saying what
 * failed and how to fix it (missing /dev/net/tun, no CAP_NET_ADMIN, interface missing or busy).
 */
int tap_open(const struct net_config *cfg, struct tap **out, char *err, size_t errlen)
	__attribute__((warn_unused_result));
int tap_fd(const struct tap *t);
const char *tap_name(const struct tap *t);
/*
 * TUNSETOFFLOAD: which offloads the reader of the TAP (the guest) accepts, TUN_F_* bits. The
 * tun driver ignores TSO without CSUM and refuses bits it does not know (-EINVAL).
 */
int tap_set_offload(struct tap *t, unsigned int tun_flags) __attribute__((warn_unused_result));
/*
 * Close the fd. A TAP moat created is not persistent, so the kernel removes it with the
 * address and link state tap_open gave it; a named TAP stays as its owner left it. Only
 * close(2), so it is safe under any seccomp list. NULL is fine.
 */
void tap_close(struct tap *t);

#endif
