#include "vmm/kvmstats.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* What a stuck vCPU's report needs: exits by kind, and page faults (x86 and arm64 names; absent ones are skipped). */
static const char *const wanted[] = {
	"exits",       "io_exits",        "mmio_exits",      "mmio_exit_user", "mmio_exit_kernel", "halt_exits",
	"wfi_exit_stat", "irq_exits",     "signal_exits",    "pf_taken",       "pf_fixed",         "pf_spurious",
	"pf_emulate",  "insn_emulation",  "hvc_exit_stat",   "nested_run",
};
_Static_assert(sizeof(wanted) / sizeof(wanted[0]) <= KVM_STATS_WANTED, "room for every wanted counter");

void kvm_stats_open(struct kvm_vcpu_stats *s, int vcpu_fd)
{
	memset(s, 0, sizeof(*s));
	s->fd = -1;
#ifdef KVM_GET_STATS_FD
	s->fd = ioctl(vcpu_fd, KVM_GET_STATS_FD, NULL);
	if (s->fd >= 0 && kvm_stats_parse(s) < 0) {
		close(s->fd);
		s->fd = -1;
	}
#endif
}

int kvm_stats_parse(struct kvm_vcpu_stats *s)
{
	struct kvm_stats_header h;
	size_t dsize;
	uint8_t *descs;

	s->n = 0;
	s->marked = false;
	if (pread(s->fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h))
		return -EIO;
	/* A sane bound: KVM has ~70 vCPU counters with names of at most 48 bytes. */
	if (h.num_desc == 0 || h.num_desc > 4096 || h.name_size == 0 || h.name_size > 4096)
		return -EINVAL;
	dsize = sizeof(struct kvm_stats_desc) + h.name_size;
	descs = malloc(dsize * h.num_desc);
	if (!descs)
		return -ENOMEM;
	if (pread(s->fd, descs, dsize * h.num_desc, h.desc_offset) != (ssize_t)(dsize * h.num_desc)) {
		free(descs);
		return -EIO;
	}
	for (size_t w = 0; w < sizeof(wanted) / sizeof(wanted[0]); w++) {
		for (uint32_t i = 0; i < h.num_desc; i++) {
			const struct kvm_stats_desc *d = (const void *)(descs + i * dsize);

			if ((d->flags & KVM_STATS_TYPE_MASK) != KVM_STATS_TYPE_CUMULATIVE || d->size != 1 ||
			    strnlen(d->name, h.name_size) == h.name_size || strcmp(d->name, wanted[w]))
				continue;
			s->name[s->n] = wanted[w];
			s->off[s->n] = (uint64_t)h.data_offset + d->offset;
			s->n++;
			break;
		}
	}
	free(descs);
	return 0;
}

static bool read_value(const struct kvm_vcpu_stats *s, unsigned int i, uint64_t *v)
{
	return pread(s->fd, v, sizeof(*v), (off_t)s->off[i]) == (ssize_t)sizeof(*v);
}

void kvm_stats_mark(struct kvm_vcpu_stats *s)
{
	if (s->fd < 0)
		return;
	for (unsigned int i = 0; i < s->n; i++)
		if (!read_value(s, i, &s->mark[i]))
			return;
	s->marked = true;
}

void kvm_stats_since(const struct kvm_vcpu_stats *s, char *buf, size_t len)
{
	size_t pos = 0;

	if (!len)
		return;
	buf[0] = '\0';
	if (s->fd < 0 || !s->marked)
		return;
	for (unsigned int i = 0; i < s->n && pos < len; i++) {
		uint64_t v;
		int k;

		if (!read_value(s, i, &v) || v == s->mark[i])
			continue;
		k = snprintf(buf + pos, len - pos, "%s%s %llu", pos ? ", " : "", s->name[i],
			     (unsigned long long)(v - s->mark[i]));
		if (k < 0)
			break;
		pos += (size_t)k < len - pos ? (size_t)k : len - pos - 1;
	}
	if (!pos)
		snprintf(buf, len, "no counter moved");
}

void kvm_stats_close(struct kvm_vcpu_stats *s)
{
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
}
