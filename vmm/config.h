/* What the user asked for, parsed from the command line (vmm/cli.c). */
#ifndef MOAT_CONFIG_H
#define MOAT_CONFIG_H

#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "devices/net/tap.h"
#include "devices/virtio/blk.h"
#include "vmm/log.h"

enum console_mode { CONSOLE_STDIO, CONSOLE_FILE, CONSOLE_NONE };

/* --seccomp: on (SECCOMP_KILL, the CLI default), log, off. Zero is off so that a zeroed config (the
 * host-KVM tests build VMs without the CLI) never sandboxes a test runner by surprise. */
enum seccomp_mode { SECCOMP_OFF = 0, SECCOMP_KILL, SECCOMP_LOG };

#define MOAT_MAX_CPUS 64
#define MOAT_MAX_DISKS 8
#define MOAT_MAX_NETS 4
#define MOAT_DEFAULT_CMDLINE "console=ttyS0 panic=-1"

struct vm_config {
	const char *kernel;
	const char *initrd;       /* NULL: none */
	const char *cmdline;
	unsigned int cpus;
	uint64_t mem_size;
	enum console_mode console;
	const char *console_path; /* CONSOLE_FILE */
	unsigned int timeout_s;   /* 0: no timeout */
	enum log_level log_level;
	enum seccomp_mode seccomp;
	bool switch_user;         /* --user given */
	uid_t uid;
	gid_t gid;                /* --user UID:GID, or UID's primary group, resolved by main() */
	bool gid_given;
	const char *jail;         /* --jail DIR: NULL none */
	struct blk_config disks[MOAT_MAX_DISKS]; /* --disk, in order */
	unsigned int ndisks;
	struct net_config nets[MOAT_MAX_NETS];   /* --net, in order */
	unsigned int nnets;
	bool rng;                                /* --rng */
	bool iommu;                              /* --iommu: a virtio-iommu, devices behind it unless iommu=off */
	bool iommu_bypass;                       /* --iommu-bypass: unattached endpoints bypass (else blocked) */
	unsigned int iommu_poll_us;              /* --iommu-poll: request-queue polling, 0 = off */
	bool iommu_poll_given;
	/* --vcpu-affinity / --device-affinity: CPUs for the vCPU threads, and for the device and IOTLB threads. */
	cpu_set_t vcpu_cpus, device_cpus;
	const char *vcpu_cpus_arg, *device_cpus_arg; /* as given; NULL: not given, the threads run anywhere */
};

/* --iommu-poll: default and most, in microseconds (devices/virtio/iommu.h, viommu_config.poll_us). */
#define MOAT_IOMMU_POLL_DEFAULT_US 500
#define MOAT_IOMMU_POLL_MAX_US 100000u

/* Exit statuses, documented in --help and README.md. */
enum moat_exit {
	MOAT_EXIT_OK = 0,        /* guest powered off or rebooted */
	MOAT_EXIT_ERROR = 1,     /* moat itself failed (bad flag, missing /dev/kvm, ...) */
	MOAT_EXIT_PANIC = 3,     /* guest kernel panicked (pvpanic) or crashed (triple fault) */
	MOAT_EXIT_TIMEOUT = 124, /* --timeout expired */
};

#endif
