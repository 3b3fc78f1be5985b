#include <net/if.h>

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "devices/net/tap.h"
#include "tests/unit/netns.h"

/* Every test here runs in its own network namespace (netns_enter_or_skip). */

static struct nl_sock *nl_or_die(void)
{
	struct nl_sock *nl = nl_socket_alloc();

	cr_assert_not_null(nl);
	cr_assert_eq(nl_connect(nl, NETLINK_ROUTE), 0);
	return nl;
}

/* The link as the kernel sees it now, or NULL if there is none of that name. */
static struct rtnl_link *link_get(struct nl_sock *nl, const char *name)
{
	struct rtnl_link *link = NULL;
	int r = rtnl_link_get_kernel(nl, 0, name, &link);

	cr_assert(r == 0 || r == -NLE_OBJ_NOTFOUND || r == -NLE_NODEV, "lookup of %s: %s", name, nl_geterror(r));
	return r == 0 ? link : NULL;
}

/* IPv4 addresses on ifindex (0: any interface) matching ip/prefix. */
static int count_addr(struct nl_sock *nl, int ifindex, uint32_t ip, unsigned int prefix)
{
	struct nl_cache *cache = NULL;
	int found = 0;

	cr_assert_eq(rtnl_addr_alloc_cache(nl, &cache), 0);
	for (struct nl_object *o = nl_cache_get_first(cache); o; o = nl_cache_get_next(o)) {
		struct rtnl_addr *a = (struct rtnl_addr *)o;
		struct nl_addr *local = rtnl_addr_get_local(a);
		uint32_t be = htonl(ip);

		if ((ifindex && rtnl_addr_get_ifindex(a) != ifindex) || rtnl_addr_get_family(a) != AF_INET || !local)
			continue;
		if (nl_addr_get_len(local) == 4 && !memcmp(nl_addr_get_binary_addr(local), &be, 4) &&
		    (unsigned int)rtnl_addr_get_prefixlen(a) == prefix)
			found++;
	}
	nl_cache_free(cache);
	return found;
}

static void parse_ok(const char *arg, struct net_config *cfg)
{
	char err[256] = "";

	cr_assert_eq(net_parse_opts(arg, cfg, err, sizeof(err)), 0, "%s: %s", arg, err);
}

/* A persistent TAP as `ip tuntap add dev NAME mode tap` makes it. */
static void make_persistent_tap(const char *name, short extra_flags)
{
	struct ifreq ifr;
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);

	cr_assert_geq(fd, 0);
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | extra_flags;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	cr_assert_eq(ioctl(fd, TUNSETIFF, &ifr), 0, "%s", strerror(errno));
	cr_assert_eq(ioctl(fd, TUNSETPERSIST, 1), 0);
	close(fd);
}

Test(tap, auto_tap_is_up_with_address_and_mtu)
{
	struct net_config cfg;
	struct tap *t = NULL;
	struct nl_sock *nl;
	struct rtnl_link *link;
	struct ifreq ifr;
	char err[256] = "", name[NET_IFNAMSIZ];
	int ifindex, hdr = 0;
	unsigned int feat = 0;

	netns_enter_or_skip();
	parse_ok("tap=auto,host-ip=10.11.12.1/24,mtu=1400", &cfg);
	cr_assert_eq(tap_open(&cfg, &t, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(strncmp(tap_name(t), "moat", 4), 0, "kernel-chosen name, got %s", tap_name(t));
	snprintf(name, sizeof(name), "%s", tap_name(t));

	nl = nl_or_die();
	link = link_get(nl, name);
	cr_assert_not_null(link);
	cr_assert(rtnl_link_get_flags(link) & IFF_UP);
	cr_assert_eq(rtnl_link_get_mtu(link), 1400);
	ifindex = rtnl_link_get_ifindex(link);
	rtnl_link_put(link);
	cr_assert_eq(count_addr(nl, ifindex, 0x0a0b0c01, 24), 1, "host-ip on the TAP");

	/* The fd as the device needs it. */
	memset(&ifr, 0, sizeof(ifr));
	cr_assert_eq(ioctl(tap_fd(t), TUNGETIFF, &ifr), 0);
	cr_assert_eq(ifr.ifr_flags & (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_TUN),
		     IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
	cr_assert_eq(ioctl(tap_fd(t), TUNGETVNETHDRSZ, &hdr), 0);
	cr_assert_eq(hdr, 12, "VERSION_1 header size");
	cr_assert_neq(fcntl(tap_fd(t), F_GETFL) & O_NONBLOCK, 0);
	cr_assert_neq(fcntl(tap_fd(t), F_GETFD) & FD_CLOEXEC, 0);
	cr_assert_eq(ioctl(tap_fd(t), TUNGETFEATURES, &feat), 0);
	cr_assert(feat & IFF_VNET_HDR);

	cr_assert_eq(tap_set_offload(t, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN), 0);
	cr_assert_eq(tap_set_offload(t, 0x80000000u), -EINVAL, "unknown offload bits are refused");
	cr_assert_eq(tap_set_offload(t, 0), 0);

	tap_close(t);
	cr_assert_null(link_get(nl, name), "an auto TAP is gone once moat closes it");
	cr_assert_eq(count_addr(nl, 0, 0x0a0b0c01, 24), 0, "and its address with it");
	nl_socket_free(nl);
}

Test(tap, auto_tap_defaults_and_distinct_names)
{
	struct net_config cfg;
	struct tap *a = NULL, *b = NULL;
	struct nl_sock *nl;
	struct rtnl_link *link;
	char err[256] = "";

	netns_enter_or_skip();
	parse_ok("tap=auto", &cfg);
	cr_assert_eq(tap_open(&cfg, &a, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(tap_open(&cfg, &b, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_neq(tap_name(a), tap_name(b));
	nl = nl_or_die();
	link = link_get(nl, tap_name(a));
	cr_assert_not_null(link);
	cr_assert_eq(rtnl_link_get_mtu(link), 1500, "default MTU");
	cr_assert(rtnl_link_get_flags(link) & IFF_UP);
	rtnl_link_put(link);
	tap_close(a);
	tap_close(b);
	tap_close(NULL);
	nl_socket_free(nl);
}

Test(tap, named_tap_must_exist)
{
	struct net_config cfg;
	struct tap *t = NULL;
	char err[256] = "";

	netns_enter_or_skip();
	parse_ok("tap=nosuch0", &cfg);
	cr_assert_eq(tap_open(&cfg, &t, err, sizeof(err)), -ENODEV);
	cr_assert_null(t);
	cr_assert_not_null(strstr(err, "ip tuntap add dev nosuch0 mode tap"), "says how to create it: %s", err);
}

Test(tap, named_tap_attaches_once_and_stays)
{
	struct net_config cfg;
	struct tap *t = NULL, *again = NULL;
	struct nl_sock *nl;
	struct rtnl_link *link;
	char err[256] = "";
	int hdr = 0;

	netns_enter_or_skip();
	make_persistent_tap("mt0", 0);
	parse_ok("tap=mt0", &cfg);
	cr_assert_eq(tap_open(&cfg, &t, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(tap_name(t), "mt0");
	cr_assert_eq(ioctl(tap_fd(t), TUNGETVNETHDRSZ, &hdr), 0);
	cr_assert_eq(hdr, 12);

	cr_assert_eq(tap_open(&cfg, &again, err, sizeof(err)), -EBUSY, "one user at a time");
	cr_assert_not_null(strstr(err, "in use"), "%s", err);

	nl = nl_or_die();
	link = link_get(nl, "mt0");
	cr_assert_not_null(link);
	cr_assert_not(rtnl_link_get_flags(link) & IFF_UP, "moat leaves a TAP it did not create as it was");
	rtnl_link_put(link);
	tap_close(t);
	link = link_get(nl, "mt0");
	cr_assert_not_null(link, "and does not remove it");
	rtnl_link_put(link);
	nl_socket_free(nl);

	parse_ok("tap=mt0,mtu=9000", &cfg);
	cr_assert_eq(tap_open(&cfg, &t, err, sizeof(err)), -EINVAL);
	cr_assert_not_null(strstr(err, "ip link set mt0 mtu 9000"), "%s", err);
}

Test(tap, named_interface_that_is_not_a_tap)
{
	struct net_config cfg;
	struct tap *t = NULL;
	char err[256] = "";

	netns_enter_or_skip();
	parse_ok("tap=lo", &cfg);
	cr_assert_eq(tap_open(&cfg, &t, err, sizeof(err)), -EINVAL);
	cr_assert_not_null(strstr(err, "ip tuntap add"), "%s", err);

	make_persistent_tap("mq0", IFF_MULTI_QUEUE);
	parse_ok("tap=mq0", &cfg);
	cr_assert_eq(tap_open(&cfg, &t, err, sizeof(err)), -EINVAL, "a multi-queue TAP needs IFF_MULTI_QUEUE");
	cr_assert_not_null(strstr(err, "multi-queue"), "%s", err);
}
