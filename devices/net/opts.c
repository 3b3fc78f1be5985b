/*
 * The --net option: "tap=NAME|auto[,host-ip=A.B.C.D/N][,mac=XX:XX:XX:XX:XX:XX][,mtu=N][,iommu=on|off]
 * [,vhost=on|off][,iotlb-prefetch=on|off|sync|queue]".
 */
#include "devices/net/tap.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

uint16_t net_config_mtu(const struct net_config *cfg)
{
	return cfg->mtu ? cfg->mtu : NET_MTU_DEFAULT;
}

/* The kernel's rule (dev_valid_name) plus '%', which would make TUNSETIFF pick a name itself. */
static bool ifname_ok(const char *s, size_t n)
{
	if (n == 0 || n >= NET_IFNAMSIZ || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isgraph((unsigned char)s[i]) || s[i] == '/' || s[i] == ':' || s[i] == '%')
			return false;
	return true;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)tolower((unsigned char)c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int parse_mac(const char *s, size_t n, uint8_t mac[6])
{
	if (n != 17)
		return -EINVAL;
	for (int i = 0; i < 6; i++) {
		int hi = hexval(s[3 * i]), lo = hexval(s[3 * i + 1]);

		if (hi < 0 || lo < 0 || (i < 5 && s[3 * i + 2] != ':'))
			return -EINVAL;
		mac[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

static int parse_dec(const char *s, size_t n, unsigned long max, unsigned long *out)
{
	unsigned long v = 0;

	if (n == 0 || n > 10)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -EINVAL;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

/* A.B.C.D/N for the host end of the link: a unicast address that is not its subnet's network or broadcast. */
static int parse_host_ip(const char *s, size_t n, struct net_config *cfg)
{
	char ip[INET_ADDRSTRLEN];
	const char *slash = memchr(s, '/', n);
	struct in_addr a;
	unsigned long prefix;
	uint32_t h, mask;

	if (!slash || (size_t)(slash - s) >= sizeof(ip))
		return -EINVAL;
	memcpy(ip, s, (size_t)(slash - s));
	ip[slash - s] = '\0';
	if (inet_pton(AF_INET, ip, &a) != 1)
		return -EINVAL;
	if (parse_dec(slash + 1, n - (size_t)(slash + 1 - s), 32, &prefix) || prefix == 0)
		return -EINVAL;
	h = ntohl(a.s_addr);
	if (h == 0 || h == UINT32_MAX || (h >> 24) == 127 || (h >> 28) == 0xe)
		return -EINVAL;
	mask = (uint32_t)(UINT64_MAX << (32 - prefix));
	if (prefix <= 30 && ((h & ~mask) == 0 || (h & ~mask) == ~mask))
		return -EINVAL;
	cfg->host_ip = h;
	cfg->host_prefix = (uint8_t)prefix;
	cfg->has_host_ip = true;
	return 0;
}

enum { KEY_TAP, KEY_HOST_IP, KEY_MAC, KEY_MTU, KEY_IOMMU, KEY_VHOST, KEY_PREFETCH, NKEYS };
static const char *const keys[NKEYS] = { "tap", "host-ip", "mac", "mtu", "iommu", "vhost", "iotlb-prefetch" };

/* on/off values: 1, 0, or -1 for anything else. */
static int on_off(const char *val, size_t vlen)
{
	if (vlen == 2 && !memcmp(val, "on", 2))
		return 1;
	if (vlen == 3 && !memcmp(val, "off", 3))
		return 0;
	return -1;
}

static int parse_item(const char *key, size_t klen, const char *val, size_t vlen, struct net_config *cfg, bool seen[],
		      char *err, size_t errlen)
{
	unsigned long v;
	int k = -1;

	for (int i = 0; i < NKEYS; i++)
		if (strlen(keys[i]) == klen && !memcmp(keys[i], key, klen))
			k = i;
	if (k < 0)
		return fail(err, errlen, "--net: unknown key '%.*s'; use tap=, host-ip=, mac=, mtu=, iommu=, vhost= or "
			    "iotlb-prefetch=", (int)klen, key);
	if (seen[k])
		return fail(err, errlen, "--net: %s= is given twice; give it once", keys[k]);
	seen[k] = true;
	switch (k) {
	case KEY_TAP:
		if (vlen == 4 && !memcmp(val, "auto", 4)) {
			cfg->tap_auto = true;
			return 0;
		}
		if (!ifname_ok(val, vlen))
			return fail(err, errlen,
				    "--net: tap='%.*s' is not an interface name; use 1 to 15 characters without "
				    "spaces, '/', ':' or '%%', or tap=auto",
				    (int)vlen, val);
		memcpy(cfg->tap, val, vlen);
		cfg->tap[vlen] = '\0';
		return 0;
	case KEY_HOST_IP:
		if (parse_host_ip(val, vlen, cfg))
			return fail(err, errlen,
				    "--net: host-ip='%.*s' is not a host address with a prefix length; use "
				    "A.B.C.D/N, e.g. 10.0.2.1/24",
				    (int)vlen, val);
		return 0;
	case KEY_MAC:
		if (parse_mac(val, vlen, cfg->mac))
			return fail(err, errlen, "--net: mac='%.*s' is not a MAC address; use six hex bytes like "
				    "52:54:00:12:34:56", (int)vlen, val);
		if (cfg->mac[0] & 1)
			return fail(err, errlen, "--net: mac='%.*s' is a multicast address; a NIC needs a unicast one "
				    "(first byte even), e.g. 52:54:00:12:34:56", (int)vlen, val);
		if (!memcmp(cfg->mac, (uint8_t[6]){ 0 }, 6))
			return fail(err, errlen, "--net: mac=00:00:00:00:00:00 is not a usable address; pick another, "
				    "e.g. 52:54:00:12:34:56");
		cfg->has_mac = true;
		return 0;
	case KEY_MTU:
		if (parse_dec(val, vlen, NET_MTU_MAX, &v) || v < NET_MTU_MIN)
			return fail(err, errlen, "--net: mtu='%.*s' is not a number from %u to %u", (int)vlen, val,
				    NET_MTU_MIN, NET_MTU_MAX);
		cfg->mtu = (uint16_t)v;
		return 0;
	case KEY_IOMMU:
		if (vlen == 2 && !memcmp(val, "on", 2))
			cfg->iommu = NET_IOMMU_ON;
		else if (vlen == 3 && !memcmp(val, "off", 3))
			cfg->iommu = NET_IOMMU_OFF;
		else
			return fail(err, errlen, "--net: iommu='%.*s' is not on or off", (int)vlen, val);
		return 0;
	case KEY_VHOST:
		if (on_off(val, vlen) < 0)
			return fail(err, errlen, "--net: vhost='%.*s' is not on or off", (int)vlen, val);
		cfg->vhost = on_off(val, vlen);
		return 0;
	default:
		if (vlen == 4 && !memcmp(val, "sync", 4)) {
			cfg->prefetch = NET_PREFETCH_SYNC;
			return 0;
		}
		if (vlen == 5 && !memcmp(val, "queue", 5)) {
			cfg->prefetch = NET_PREFETCH_QUEUE;
			return 0;
		}
		if (on_off(val, vlen) < 0)
			return fail(err, errlen, "--net: iotlb-prefetch='%.*s' is not on, off, sync or queue", (int)vlen,
				    val);
		cfg->prefetch = on_off(val, vlen) ? NET_PREFETCH_ON : NET_PREFETCH_OFF;
		return 0;
	}
}

int net_parse_opts(const char *arg, struct net_config *cfg, char *err, size_t errlen)
{
	static const uint8_t default_mac[6] = NET_DEFAULT_MAC;
	bool seen[NKEYS] = { false };
	const char *p = arg;
	int r;

	memset(cfg, 0, sizeof(*cfg));
	memcpy(cfg->mac, default_mac, sizeof(cfg->mac));
	if (!arg || !*arg)
		return fail(err, errlen, "--net needs a value; use tap=NAME or tap=auto");
	for (;;) {
		const char *end = strchrnul(p, ','), *eq = memchr(p, '=', (size_t)(end - p));

		if (end == p)
			return fail(err, errlen, "--net: empty item in '%s'; separate key=value pairs with one ','",
				    arg);
		if (!eq)
			return fail(err, errlen, "--net: '%.*s' is not key=value; e.g. tap=auto,mtu=1500",
				    (int)(end - p), p);
		r = parse_item(p, (size_t)(eq - p), eq + 1, (size_t)(end - eq - 1), cfg, seen, err, errlen);
		if (r)
			return r;
		if (!*end)
			break;
		p = end + 1;
	}
	if (!seen[KEY_TAP])
		return fail(err, errlen, "--net: no TAP given; add tap=NAME (an existing TAP) or tap=auto");
	if (seen[KEY_PREFETCH] && !cfg->vhost)
		return fail(err, errlen, "--net: iotlb-prefetch= only applies to vhost=on; add vhost=on or drop it");
	if (cfg->has_host_ip && !cfg->tap_auto)
		return fail(err, errlen,
			    "--net: host-ip= only works with tap=auto; moat leaves a TAP it did not create alone, so "
			    "give %s its address with `ip addr add A.B.C.D/N dev %s`",
			    cfg->tap, cfg->tap);
	return 0;
}
