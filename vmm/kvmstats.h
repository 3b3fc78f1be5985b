/*
 * A vCPU's own KVM statistics (KVM_GET_STATS_FD, Linux 5.14 and later): the counters that tell what a
 * vCPU was doing, sampled twice to say what it did in between. A guest that stopped making progress
 * shows there whether it still exits to KVM (and why) or runs without exits.
 */
#ifndef MOAT_VMM_KVMSTATS_H
#define MOAT_VMM_KVMSTATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KVM_STATS_WANTED 16

struct kvm_vcpu_stats {
	int fd;                /* the stats fd; -1 when KVM has none */
	unsigned int n;        /* counters found */
	const char *name[KVM_STATS_WANTED];
	uint64_t off[KVM_STATS_WANTED];  /* each counter's place in the file */
	uint64_t mark[KVM_STATS_WANTED]; /* the values kvm_stats_mark read */
	bool marked;
};

/* Open vcpu_fd's statistics (before the sandbox: an ioctl). Without them s->fd is -1; never fails. */
void kvm_stats_open(struct kvm_vcpu_stats *s, int vcpu_fd);

/* Find the counters worth a report in an open stats fd (s->fd); 0, or -errno for a file not understood. */
int kvm_stats_parse(struct kvm_vcpu_stats *s);

/* Take the sample the next kvm_stats_since describes the time since. */
void kvm_stats_mark(struct kvm_vcpu_stats *s);

/* "exits 1234, pf_taken 1000, ..." for the counters that grew since the mark; "" without a mark or fd. */
void kvm_stats_since(const struct kvm_vcpu_stats *s, char *buf, size_t len);

void kvm_stats_close(struct kvm_vcpu_stats *s);

#endif
