#include <net/if.h> /* before any linux/ header, so libc-compat keeps the two from clashing */

#include "devices/net/tap.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "vmm/log.h"

/* struct virtio_net_hdr_mrg_rxbuf: what a VERSION_1 device puts before every frame. */
#define TAP_VNET_HDR_LEN 12

#define TUN_PATH "/dev/net/tun"

struct tap {
	int fd;
	char name[NET_IFNAMSIZ];
	struct nl_sock *nl; /* only during tap_open: after setup moat has neither the syscalls nor the rights */
};

/* libnl returns -NLE_*; callers above want -errno. */
static int nl_to_errno(int nlerr)
{
	switch (nlerr < 0 ? -nlerr : nlerr) {
	case NLE_PERM:
	case NLE_NOACCESS:
		return -EPERM;
	case NLE_NOMEM:
		return -ENOMEM;
	case NLE_EXIST:
		return -EEXIST;
	case NLE_OBJ_NOTFOUND:
	case NLE_NODEV:
		return -ENODEV;
	case NLE_BUSY:
		return -EBUSY;
	case NLE_INVAL:
	case NLE_RANGE:
		return -EINVAL;
	case NLE_OPNOTSUPP:
		return -EOPNOTSUPP;
	default:
		return -EIO;
	}
}

static int nl_open(struct nl_sock **out)
{
	struct nl_sock *nl = nl_socket_alloc();
	int err;

	if (!nl)
		return -ENOMEM;
	err = nl_connect(nl, NETLINK_ROUTE);
	if (err < 0) {
		nl_socket_free(nl);
		return nl_to_errno(err);
	}
	*out = nl;
	return 0;
}

static int open_tun(char *err, size_t errlen)
{
	int fd = open(TUN_PATH, O_RDWR | O_NONBLOCK | O_CLOEXEC);

	if (fd >= 0)
		return fd;
	switch (errno) {
	case ENOENT:
		return set_err(err, errlen, -ENOENT,
			       TUN_PATH " is missing; load the tun module (`modprobe tun`) or create the node "
			       "(`mknod " TUN_PATH " c 10 200`)");
	case ENODEV:
	case ENXIO:
		return set_err(err, errlen, -ENODEV,
			       TUN_PATH " has no driver behind it; load the tun module with `modprobe tun`");
	case EACCES:
	case EPERM:
		return set_err(err, errlen, -errno, "cannot open " TUN_PATH " (permission denied); run moat as root");
	default:
		return set_err(err, errlen, -errno, "cannot open " TUN_PATH ": %s", strerror(errno));
	}
}

/* TUNSETIFF on name (a template like "moat%d" for a new TAP); the kernel's choice comes back in name. */
static int attach(int fd, char name[NET_IFNAMSIZ], bool create, char *err, size_t errlen)
{
	struct ifreq ifr;
	int e;

	memset(&ifr, 0, sizeof(ifr));
	/* NO_PI: frames start with the vnet header, no packet-info word; VNET_HDR: offloads travel with them. */
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	memcpy(ifr.ifr_name, name, NET_IFNAMSIZ);
	if (ioctl(fd, TUNSETIFF, &ifr) == 0) {
		memcpy(name, ifr.ifr_name, NET_IFNAMSIZ);
		name[NET_IFNAMSIZ - 1] = '\0';
		return 0;
	}
	e = errno;
	if (e == EPERM && create)
		return set_err(err, errlen, -EPERM,
			       "creating a TAP needs CAP_NET_ADMIN; run moat as root, or create one beforehand with "
			       "`ip tuntap add dev NAME mode tap user $USER` and use tap=NAME");
	if (e == EPERM)
		return set_err(err, errlen, -EPERM,
			       "TAP %s belongs to another user; run moat as root or as its owner, or recreate it "
			       "with `ip tuntap add dev %s mode tap user $USER`",
			       name, name);
	if (e == EBUSY)
		return set_err(err, errlen, -EBUSY,
			       "TAP %s is already in use (by another VM?); give moat a free TAP or use tap=auto",
			       name);
	if (e == EINVAL && !create)
		return set_err(err, errlen, -EINVAL,
			       "%s cannot be attached as a TAP (it is a TUN device, a multi-queue TAP or another kind "
			       "of interface); create a plain one with `ip tuntap add dev NAME mode tap`",
			       name);
	return set_err(err, errlen, -e, "cannot %s TAP %s: %s", create ? "create" : "attach to", name, strerror(e));
}

/* tap=NAME: the interface must exist and be a tun/tap; moat only attaches, the user configures. */
static int check_existing(struct tap *t, const struct net_config *cfg, char *err, size_t errlen)
{
	struct rtnl_link *link = NULL;
	const char *kind;
	unsigned int mtu;
	int r;

	r = nl_open(&t->nl);
	if (r)
		return set_err(err, errlen, r, "cannot open a netlink socket to look up TAP %s: %s", cfg->tap,
			       strerror(-r));
	r = rtnl_link_get_kernel(t->nl, 0, cfg->tap, &link);
	if (r < 0) {
		r = nl_to_errno(r);
		if (r == -ENODEV)
			return set_err(err, errlen, r,
				       "there is no interface %s; create the TAP with `ip tuntap add dev %s mode tap` "
				       "(and `ip link set %s up`), or use tap=auto",
				       cfg->tap, cfg->tap, cfg->tap);
		return set_err(err, errlen, r, "cannot look up interface %s: %s", cfg->tap, strerror(-r));
	}
	kind = rtnl_link_get_type(link);
	mtu = rtnl_link_get_mtu(link);
	if (kind && strcmp(kind, "tun")) {
		r = set_err(err, errlen, -EINVAL,
			    "%s is a %s interface, not a TAP; create one with `ip tuntap add dev NAME mode tap`",
			    cfg->tap, kind);
	} else if (cfg->mtu && mtu != cfg->mtu) {
		r = set_err(err, errlen, -EINVAL,
			    "TAP %s has MTU %u but mtu=%u was asked for; set it with `ip link set %s mtu %u` or "
			    "drop mtu=",
			    cfg->tap, mtu, cfg->mtu, cfg->tap, cfg->mtu);
	}
	rtnl_link_put(link);
	return r;
}

/* tap=auto: bring the new TAP up with the MTU and the host address. */
static int configure_new(struct tap *t, const struct net_config *cfg, char *err, size_t errlen)
{
	struct rtnl_link *link = NULL, *change = NULL;
	struct rtnl_addr *addr = NULL;
	struct nl_addr *local = NULL;
	uint32_t ip;
	int r;

	r = nl_open(&t->nl);
	if (r)
		return set_err(err, errlen, r, "cannot open a netlink socket to configure TAP %s: %s", t->name,
			       strerror(-r));
	r = rtnl_link_get_kernel(t->nl, 0, t->name, &link);
	if (r < 0)
		return set_err(err, errlen, nl_to_errno(r), "cannot find the new TAP %s: %s", t->name, nl_geterror(r));
	change = rtnl_link_alloc();
	if (!change) {
		r = set_err(err, errlen, -ENOMEM, "out of memory configuring TAP %s", t->name);
		goto out;
	}
	rtnl_link_set_flags(change, IFF_UP);
	rtnl_link_set_mtu(change, net_config_mtu(cfg));
	r = rtnl_link_change(t->nl, link, change, 0);
	if (r < 0) {
		r = set_err(err, errlen, nl_to_errno(r), "cannot bring TAP %s up with MTU %u: %s", t->name,
			    net_config_mtu(cfg), nl_geterror(r));
		goto out;
	}
	if (!cfg->has_host_ip)
		goto out;
	ip = htonl(cfg->host_ip);
	addr = rtnl_addr_alloc();
	local = nl_addr_build(AF_INET, &ip, sizeof(ip));
	if (!addr || !local) {
		r = set_err(err, errlen, -ENOMEM, "out of memory configuring TAP %s", t->name);
		goto out;
	}
	nl_addr_set_prefixlen(local, cfg->host_prefix);
	rtnl_addr_set_ifindex(addr, rtnl_link_get_ifindex(link));
	rtnl_addr_set_family(addr, AF_INET);
	r = rtnl_addr_set_local(addr, local);
	if (r >= 0)
		r = rtnl_addr_add(t->nl, addr, 0);
	if (r < 0) {
		char ipstr[INET_ADDRSTRLEN];

		inet_ntop(AF_INET, &ip, ipstr, sizeof(ipstr));
		r = set_err(err, errlen, nl_to_errno(r), "cannot give TAP %s the address %s/%u: %s", t->name, ipstr,
			    cfg->host_prefix, nl_geterror(r));
		goto out;
	}
out:
	nl_addr_put(local);
	rtnl_addr_put(addr);
	rtnl_link_put(change);
	rtnl_link_put(link);
	return r < 0 ? r : 0;
}

int tap_open(const struct net_config *cfg, struct tap **out, char *err, size_t errlen)
{
	struct tap *t = calloc(1, sizeof(*t));
	int hdr = TAP_VNET_HDR_LEN, r;

	if (!t)
		return set_err(err, errlen, -ENOMEM, "out of memory for the TAP");
	t->fd = -1;
	if (cfg->tap_auto) {
		/* The kernel replaces %d with the first free number. */
		snprintf(t->name, sizeof(t->name), "moat%%d");
	} else {
		snprintf(t->name, sizeof(t->name), "%s", cfg->tap);
		r = check_existing(t, cfg, err, errlen);
		if (r)
			goto fail;
	}
	r = open_tun(err, errlen);
	if (r < 0)
		goto fail;
	t->fd = r;
	/*
	 * A new TAP is not made persistent (no TUNSETPERSIST): the kernel deletes it, with the
	 * address and routes configure_new() gives it, when moat's fd is closed, even if moat is
	 * killed. That is how tap_close() undoes the setup.
	 */
	r = attach(t->fd, t->name, cfg->tap_auto, err, errlen);
	if (r)
		goto fail;
	if (ioctl(t->fd, TUNSETVNETHDRSZ, &hdr) < 0) {
		r = set_err(err, errlen, -errno, "cannot set the virtio-net header size on TAP %s: %s", t->name,
			    strerror(errno));
		goto fail;
	}
	/* A named TAP may carry a previous user's offloads; none until the guest says what it accepts. */
	r = tap_set_offload(t, 0);
	if (r) {
		r = set_err(err, errlen, r, "cannot reset the offloads of TAP %s: %s", t->name, strerror(-r));
		goto fail;
	}
	if (cfg->tap_auto) {
		r = configure_new(t, cfg, err, errlen);
		if (r)
			goto fail;
	}
	nl_socket_free(t->nl);
	t->nl = NULL;
	*out = t;
	return 0;
fail:
	tap_close(t);
	return r;
}

int tap_fd(const struct tap *t)
{
	return t->fd;
}

const char *tap_name(const struct tap *t)
{
	return t->name;
}

int tap_set_offload(struct tap *t, unsigned int tun_flags)
{
	return ioctl(t->fd, TUNSETOFFLOAD, (unsigned long)tun_flags) < 0 ? -errno : 0;
}

/*
 * Only close(): for a TAP moat created, the kernel then removes the interface together with
 * its address and routes (it is not persistent), so nothing is left to undo by netlink, which
 * at teardown would need syscalls the main thread's seccomp list does not allow and the
 * CAP_NET_ADMIN moat dropped after setup. A named TAP is the user's and stays as it was.
 */
void tap_close(struct tap *t)
{
	if (!t)
		return;
	if (t->nl)
		nl_socket_free(t->nl);
	if (t->fd >= 0)
		close(t->fd);
	free(t);
}
