#include "vmm/cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/memory.h"

#define STR_(x) #x
#define STR(x) STR_(x)
#define IOMMU_POLL_DEFAULT_STR STR(MOAT_IOMMU_POLL_DEFAULT_US)

static const char usage[] =
	"Usage: moat --kernel PATH [options]\n"
	"\n"
	"Boot a Linux guest on KVM.\n"
	"\n"
	"Options:\n"
	"  --kernel PATH        guest kernel (x86_64 bzImage)                     [required]\n"
	"  --initrd PATH        initial ramdisk\n"
	"  --cmdline STR        kernel command line  [default: \"" MOAT_DEFAULT_CMDLINE "\"]\n"
	"  --cpus N             number of vCPUs, 1-64                              [default: 1]\n"
	"  --memory SIZE        guest RAM, e.g. 512M, 2G                           [default: 512M]\n"
	"  --console MODE       stdio | file:PATH | none                           [default: stdio]\n"
	"  --timeout SECONDS    stop the guest after SECONDS and exit with 124     [default: none]\n"
	"  --log-level LEVEL    error | warn | info | debug                        [default: warn]\n"
	"  --seccomp MODE       on | log | off: per-thread syscall allow-lists and [default: on]\n"
	"                       no capabilities; on kills moat on a forbidden syscall, log only\n"
	"                       logs it (audit/dmesg), off runs unsandboxed (for debugging)\n"
	"  --user UID[:GID]     after setup, run as this numeric user (and group)  [default: stay]\n"
	"  --jail DIR           after setup, enter new mount/IPC/UTS/network namespaces with DIR\n"
	"                       (may be empty) as the read-only root; needs root   [default: none]\n"
	"  --disk path=FILE[,readonly=on][,serial=STR][,iommu=off]\n"
	"                       a virtio-blk disk backed by a raw image file or block device\n"
	"                       (repeatable, up to 8)\n"
	"  --net tap=NAME|auto[,host-ip=A.B.C.D/N][,mac=MAC][,mtu=N][,iommu=off]\n"
	"        [,vhost=on][,iotlb-prefetch=on|off|sync|queue]\n"
	"                       a virtio-net device on a TAP: NAME must exist; auto creates one,\n"
	"                       brings it up with host-ip, and it is gone when moat exits\n"
	"                       (repeatable, up to 4). vhost=on: packets go through the host\n"
	"                       kernel's vhost-net (/dev/vhost-net), never through moat; behind\n"
	"                       the IOMMU its IOTLB misses are answered from moat's page tables,\n"
	"                       and iotlb-prefetch pushes each guest MAP to it: on = sync, while\n"
	"                       the MAP is handled; queue = from the IOTLB thread [default: on]\n"
	"  --rng                a virtio-rng device fed from the host's getrandom()\n"
	"  --iommu              a virtio-iommu; every virtio device sits behind it (DMA only to\n"
	"                       what the guest maps) unless given iommu=off\n"
	"  --iommu-bypass       devices the guest has not attached to an IOMMU domain reach all of\n"
	"                       guest memory (for guests without a virtio-iommu driver); default: blocked\n"
	"  --iommu-poll US      after a request, the IOMMU's thread watches its queue with guest\n"
	"                       notifications off until US microseconds pass without one (0-100000):\n"
	"                       fewer guest exits, one host CPU busy meanwhile; 0 = off [default: " IOMMU_POLL_DEFAULT_STR "]\n"
	"  --vcpu-affinity CPUS the vCPU threads run only on these host CPUs (a list like 0-3,6)\n"
	"  --device-affinity CPUS\n"
	"                       the device threads (virtio workers, the IOMMU's poller, vhost IOTLB)\n"
	"                       run only on these; keeping them off the vCPUs' CPUs spares a vCPU the\n"
	"                       wait while a woken device thread runs in its place [default: anywhere]\n"
	"  -h, --help           show this help\n"
	"  -V, --version        show the version\n"
	"\n"
	"Exit status:\n"
	"  0    the guest powered off, or rebooted (moat stops; a note is printed on stderr)\n"
	"  1    moat failed (the message says why and how to fix it)\n"
	"  3    the guest kernel panicked (pvpanic) or crashed (triple fault)\n"
	"  124  --timeout expired\n"
	"  128+N  moat was stopped by signal N (SIGINT, SIGTERM)\n";

const char *cli_usage(void)
{
	return usage;
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int parse_uint(const char *s, unsigned long max, unsigned int *out)
{
	char *end;
	unsigned long v;

	if (!*s || *s == '-' || *s == '+')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v > max)
		return -EINVAL;
	*out = (unsigned int)v;
	return 0;
}

int cli_parse_cpu_list(const char *s, cpu_set_t *set)
{
	CPU_ZERO(set);
	if (!*s)
		return -EINVAL;
	for (;;) {
		char *end;
		unsigned long lo, hi;

		if (*s < '0' || *s > '9')
			return -EINVAL;
		lo = strtoul(s, &end, 10);
		hi = lo;
		if (*end == '-') {
			s = end + 1;
			if (*s < '0' || *s > '9')
				return -EINVAL;
			hi = strtoul(s, &end, 10);
		}
		if (lo > hi || hi >= CPU_SETSIZE)
			return -EINVAL;
		for (unsigned long c = lo; c <= hi; c++)
			CPU_SET(c, set);
		if (!*end)
			return 0;
		if (*end != ',')
			return -EINVAL;
		s = end + 1;
	}
}

int cli_parse(int argc, char *const argv[], struct vm_config *cfg, enum cli_action *action, char *err,
	      size_t errlen)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->cmdline = MOAT_DEFAULT_CMDLINE;
	cfg->cpus = 1;
	cfg->mem_size = 512ull << 20;
	cfg->console = CONSOLE_STDIO;
	cfg->log_level = LOG_WARN;
	cfg->seccomp = SECCOMP_KILL;
	cfg->iommu_poll_us = MOAT_IOMMU_POLL_DEFAULT_US;
	*action = CLI_RUN;

	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		const char *val = NULL;
		char name[32];
		const char *eq;

		if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
			*action = CLI_HELP;
			return 0;
		}
		if (!strcmp(arg, "-V") || !strcmp(arg, "--version")) {
			*action = CLI_VERSION;
			return 0;
		}
		/* Flags without a value. */
		if (!strcmp(arg, "--rng")) {
			cfg->rng = true;
			continue;
		}
		if (!strcmp(arg, "--iommu")) {
			cfg->iommu = true;
			continue;
		}
		if (!strcmp(arg, "--iommu-bypass")) {
			cfg->iommu_bypass = true;
			continue;
		}
		if (strncmp(arg, "--", 2) != 0)
			return fail(err, errlen, "unexpected argument '%s'; options start with '--' (see moat --help)",
				    arg);
		/* Accept both "--opt value" and "--opt=value". */
		eq = strchr(arg, '=');
		if (eq) {
			size_t n = (size_t)(eq - arg);
			if (n >= sizeof(name))
				return fail(err, errlen, "unknown option '%s' (see moat --help)", arg);
			memcpy(name, arg, n);
			name[n] = '\0';
			val = eq + 1;
		} else {
			if (strlen(arg) >= sizeof(name))
				return fail(err, errlen, "unknown option '%s' (see moat --help)", arg);
			strcpy(name, arg);
			if (i + 1 < argc)
				val = argv[i + 1], i++;
		}

		static const char *const known[] = { "--kernel", "--initrd", "--cmdline", "--cpus", "--memory",
						      "--console", "--timeout", "--log-level", "--seccomp", "--user", "--disk", "--net",
						      "--jail", "--iommu-poll", "--vcpu-affinity", "--device-affinity" };
		int k = -1;
		for (unsigned int j = 0; j < sizeof(known) / sizeof(known[0]); j++)
			if (!strcmp(name, known[j]))
				k = (int)j;
		if (k < 0)
			return fail(err, errlen, "unknown option '%s' (see moat --help)", name);
		if (!val)
			return fail(err, errlen, "option %s needs a value (see moat --help)", name);

		switch (k) {
		case 0:
			if (!*val)
				return fail(err, errlen, "--kernel needs a path to a kernel image");
			cfg->kernel = val;
			break;
		case 1:
			if (!*val)
				return fail(err, errlen, "--initrd needs a path to an initrd file");
			cfg->initrd = val;
			break;
		case 2:
			cfg->cmdline = val;
			break;
		case 3:
			if (parse_uint(val, MOAT_MAX_CPUS, &cfg->cpus) || cfg->cpus == 0)
				return fail(err, errlen, "--cpus '%s' is not a number from 1 to %d", val,
					    MOAT_MAX_CPUS);
			break;
		case 4: {
			int r = parse_size(val, &cfg->mem_size);
			if (r == -ERANGE)
				return fail(err, errlen, "--memory '%s' is too large; give a size like 512M or 4G",
					    val);
			if (r)
				return fail(err, errlen,
					    "--memory '%s' is not a size; use a number with an optional K, M or G "
					    "suffix, e.g. 512M",
					    val);
			if (cfg->mem_size < (32ull << 20))
				return fail(err, errlen, "--memory '%s' is below the 32M a Linux guest needs", val);
			break;
		}
		case 5:
			if (!strcmp(val, "stdio")) {
				cfg->console = CONSOLE_STDIO;
			} else if (!strcmp(val, "none")) {
				cfg->console = CONSOLE_NONE;
			} else if (!strncmp(val, "file:", 5) && val[5]) {
				cfg->console = CONSOLE_FILE;
				cfg->console_path = val + 5;
			} else {
				return fail(err, errlen, "--console '%s' is not one of stdio, file:PATH, none", val);
			}
			break;
		case 6:
			if (parse_uint(val, 31u * 24 * 3600, &cfg->timeout_s) || cfg->timeout_s == 0)
				return fail(err, errlen,
					    "--timeout '%s' is not a whole number of seconds from 1 to 2678400", val);
			break;
		case 7:
			if (log_parse_level(val, &cfg->log_level))
				return fail(err, errlen, "--log-level '%s' is not one of error, warn, info, debug",
					    val);
			break;
		case 8:
			if (!strcmp(val, "on"))
				cfg->seccomp = SECCOMP_KILL;
			else if (!strcmp(val, "log"))
				cfg->seccomp = SECCOMP_LOG;
			else if (!strcmp(val, "off"))
				cfg->seccomp = SECCOMP_OFF;
			else
				return fail(err, errlen, "--seccomp '%s' is not one of on, log, off", val);
			break;
		case 9: {
			char *end;
			unsigned long u, g;

			errno = 0;
			u = strtoul(val, &end, 10);
			if (errno || end == val || *val == '-' || (*end && *end != ':') || u >= (unsigned long)(uid_t)-1)
				return fail(err, errlen, "--user '%s' is not UID or UID:GID (numbers, e.g. 65534:65534)",
					    val);
			cfg->uid = (uid_t)u;
			cfg->switch_user = true;
			if (*end == ':') {
				const char *gs = end + 1;
				errno = 0;
				g = strtoul(gs, &end, 10);
				if (errno || end == gs || *gs == '-' || *end || g >= (unsigned long)(gid_t)-1)
					return fail(err, errlen,
						    "--user '%s' is not UID or UID:GID (numbers, e.g. 65534:65534)", val);
				cfg->gid = (gid_t)g;
				cfg->gid_given = true;
			}
			break;
		}
		case 10: {
			char why[256];
			if (cfg->ndisks >= MOAT_MAX_DISKS)
				return fail(err, errlen, "too many --disk options (at most %d)", MOAT_MAX_DISKS);
			if (blk_parse_opts(val, &cfg->disks[cfg->ndisks], why, sizeof(why)))
				return fail(err, errlen, "--disk '%s': %s", val, why);
			cfg->ndisks++;
			break;
		}
		case 11: {
			char why[256];
			if (cfg->nnets >= MOAT_MAX_NETS)
				return fail(err, errlen, "too many --net options (at most %d)", MOAT_MAX_NETS);
			if (net_parse_opts(val, &cfg->nets[cfg->nnets], why, sizeof(why)))
				return fail(err, errlen, "--net '%s': %s", val, why);
			cfg->nnets++;
			break;
		}
		case 12:
			if (!*val)
				return fail(err, errlen, "--jail needs a directory (an empty one will do)");
			cfg->jail = val;
			break;
		case 13:
			if (parse_uint(val, MOAT_IOMMU_POLL_MAX_US, &cfg->iommu_poll_us))
				return fail(err, errlen, "--iommu-poll '%s' is not a number of microseconds from 0 to %u",
					    val, MOAT_IOMMU_POLL_MAX_US);
			cfg->iommu_poll_given = true;
			break;
		case 14:
		case 15: {
			cpu_set_t *set = k == 14 ? &cfg->vcpu_cpus : &cfg->device_cpus;

			if (cli_parse_cpu_list(val, set))
				return fail(err, errlen,
					    "%s '%s' is not a list of CPU numbers (like 0-3,6; each below %d)", name, val,
					    CPU_SETSIZE);
			*(k == 14 ? &cfg->vcpu_cpus_arg : &cfg->device_cpus_arg) = val;
			break;
		}
		}
	}
	if (!cfg->kernel)
		return fail(err, errlen, "no kernel given; use --kernel PATH (see moat --help)");
	if (cfg->iommu_bypass && !cfg->iommu)
		return fail(err, errlen, "--iommu-bypass needs --iommu");
	if (cfg->iommu_poll_given && !cfg->iommu)
		return fail(err, errlen, "--iommu-poll needs --iommu");
	for (unsigned int i = 0; i < cfg->ndisks; i++)
		if (cfg->disks[i].iommu == BLK_IOMMU_ON && !cfg->iommu)
			return fail(err, errlen, "--disk '%s' asks for iommu=on but there is no --iommu; add --iommu",
				    cfg->disks[i].path);
	for (unsigned int i = 0; i < cfg->nnets; i++)
		if (cfg->nets[i].iommu == NET_IOMMU_ON && !cfg->iommu)
			return fail(err, errlen, "--net %u asks for iommu=on but there is no --iommu; add --iommu", i + 1);
	return 0;
}
