/* --disk option parsing: "path=FILE[,readonly=on|off][,serial=STR][,iommu=on|off]". */
#include "devices/virtio/blk.h"

#include <errno.h>
#include <string.h>

#include "vmm/log.h"

enum { KEY_PATH, KEY_READONLY, KEY_SERIAL, KEY_IOMMU, KEY_COUNT };
static const char *const keys[KEY_COUNT] = { "path", "readonly", "serial", "iommu" };

#define USAGE "path=FILE[,readonly=on|off][,serial=STR][,iommu=on|off]"

static int key_index(const char *s, size_t len)
{
	for (int i = 0; i < KEY_COUNT; i++)
		if (strlen(keys[i]) == len && !strncmp(s, keys[i], len))
			return i;
	return -1;
}

/*
 * Copy the value at s into dst (cap bytes with the NUL): it ends at a single comma or the end,
 * and ",," is a literal comma. *end gets where it stopped. -ENAMETOOLONG if it does not fit.
 */
static int take_value(const char *s, char *dst, size_t cap, const char **end)
{
	size_t n = 0;

	for (; *s; s++) {
		if (*s == ',') {
			if (s[1] != ',')
				break;
			s++;
		}
		if (n + 1 >= cap)
			return -ENAMETOOLONG;
		dst[n++] = *s;
	}
	dst[n] = '\0';
	*end = s;
	return 0;
}

static int parse_value(int key, const char *v, struct blk_config *cfg, const char **end, char *err, size_t errlen)
{
	char onoff[4];

	switch (key) {
	case KEY_PATH:
		if (take_value(v, cfg->path, sizeof(cfg->path), end))
			return set_err(err, errlen, -EINVAL,
				       "--disk: path= is longer than %zu bytes; use a shorter path",
				       sizeof(cfg->path) - 1);
		if (!cfg->path[0])
			return set_err(err, errlen, -EINVAL,
				       "--disk: path= is empty; name the disk image, e.g. path=disk.img");
		return 0;
	case KEY_READONLY:
		if (take_value(v, onoff, sizeof(onoff), end) || (strcmp(onoff, "on") && strcmp(onoff, "off")))
			return set_err(err, errlen, -EINVAL,
				       "--disk: readonly= takes on or off; write readonly=on or readonly=off");
		cfg->readonly = !strcmp(onoff, "on");
		return 0;
	case KEY_IOMMU:
		if (take_value(v, onoff, sizeof(onoff), end) || (strcmp(onoff, "on") && strcmp(onoff, "off")))
			return set_err(err, errlen, -EINVAL, "--disk: iommu= takes on or off; write iommu=on or iommu=off");
		cfg->iommu = !strcmp(onoff, "on") ? BLK_IOMMU_ON : BLK_IOMMU_OFF;
		return 0;
	default:
		if (take_value(v, cfg->serial, sizeof(cfg->serial), end))
			return set_err(err, errlen, -EINVAL, "--disk: serial= is longer than %u characters; shorten it",
				       BLK_SERIAL_MAX);
		if (!cfg->serial[0])
			return set_err(err, errlen, -EINVAL,
				       "--disk: serial= is empty; give 1 to %u characters or leave serial out",
				       BLK_SERIAL_MAX);
		/* The guest shows it as an ASCII string (VIRTIO 1.2 5.2.6). */
		for (const unsigned char *p = (const unsigned char *)cfg->serial; *p; p++)
			if (*p < 0x20 || *p > 0x7e)
				return set_err(err, errlen, -EINVAL,
					       "--disk: serial= may hold only printable ASCII characters; change it");
		return 0;
	}
}

int blk_parse_opts(const char *arg, struct blk_config *cfg, char *err, size_t errlen)
{
	bool seen[KEY_COUNT] = { false };
	const char *p = arg;

	memset(cfg, 0, sizeof(*cfg));
	if (!arg || !*arg)
		return set_err(err, errlen, -EINVAL, "--disk needs a value: " USAGE);
	for (;;) {
		size_t klen = strcspn(p, "=,");
		int key = key_index(p, klen), r;

		if (klen == 0)
			return set_err(err, errlen, -EINVAL, "--disk: empty option in '%s'; remove the extra comma",
				       arg);
		if (p[klen] != '=' && key < 0 && p == arg)
			return set_err(err, errlen, -EINVAL,
				       "--disk takes options, not a bare file name; write --disk path=%.*s",
				       (int)klen, p);
		if (key < 0)
			return set_err(err, errlen, -EINVAL, "--disk: unknown option '%.*s'; the options are " USAGE,
				       (int)klen, p);
		if (p[klen] != '=')
			return set_err(err, errlen, -EINVAL, "--disk: %s has no value; the options are " USAGE,
				       keys[key]);
		if (seen[key])
			return set_err(err, errlen, -EINVAL, "--disk: %s= is given twice; give it once", keys[key]);
		seen[key] = true;
		r = parse_value(key, p + klen + 1, cfg, &p, err, errlen);
		if (r)
			return r;
		if (!*p)
			break;
		p++; /* the comma */
	}
	if (!seen[KEY_PATH])
		return set_err(err, errlen, -EINVAL, "--disk needs path=FILE, e.g. --disk path=disk.img,%s", arg);
	return 0;
}
