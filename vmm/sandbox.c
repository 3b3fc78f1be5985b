/*
 * seccomp allow-lists per thread kind (libseccomp) and the capability drop (libcap-ng).
 *
 * What a forbidden syscall does under --seccomp on: SECCOMP_RET_TRAP, not SECCOMP_RET_KILL_PROCESS.
 * KILL_PROCESS is the stronger action: the kernel kills every thread at once and nothing in the
 * process can intervene. TRAP delivers SIGSYS to the offending thread, whose handler writes one line
 * naming the thread kind and the syscall and calls _exit(1); until then the other threads run on,
 * and a compromised process could in principle interfere with the handler. We take TRAP because a
 * user (or a CI log) gets a message saying what happened instead of a bare "Bad system call", and the
 * subversion paths are closed off: the handler uses constant data only (the thread kind arrives in the
 * SIGSYS siginfo as SECCOMP_RET_DATA, patched into the filter below), rt_sigaction and sigaltstack are
 * not in any allow-list (no one can replace the handler once a filter is on), blocking SIGSYS does not
 * help (the kernel forces a blocked or ignored SIGSYS to its default action, which kills the process),
 * and the handler's own syscalls (write, exit_group) are ones every thread may already make. The
 * filters also carry SECCOMP_FILTER_FLAG_LOG, so the kernel logs the trap to audit/dmesg too.
 */
#include "vmm/sandbox.h"

#include <cap-ng.h>
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/kvm.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <linux/if_tun.h>
#include <linux/vhost.h>
#include <termios.h>
#include <unistd.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* One allow rule: the syscall, and at most one argument comparison (argc 0: any arguments). */
struct sandbox_rule {
	int nr;
	unsigned int argc;
	struct scmp_arg_cmp arg;
};

#define ALLOW(name) { .nr = __NR_##name }
#define ALLOW_ARG(name, idx, cmp, a, b)                                                              \
	{ .nr = __NR_##name, .argc = 1, .arg = { .arg = (idx), .op = (cmp), .datum_a = (a), .datum_b = (b) } }
#define ALLOW_IOCTL(req)  ALLOW_ARG(ioctl, 1, SCMP_CMP_EQ, (req), 0)
/* mmap/mprotect never with PROT_EXEC: nothing in moat makes code at run time. */
#define ALLOW_NOEXEC(name) ALLOW_ARG(name, 2, SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)

/* What glibc and moat's common code (logging, stop requests, malloc) need on every thread. */
static const struct sandbox_rule base_rules[] = {
	ALLOW(write),           /* log lines, console output, eventfd kicks (vm_request_stop) */
	ALLOW(futex),           /* mutexes, pthread_join */
	ALLOW(clock_gettime),   /* log timestamps, when the vDSO falls back to the syscall */
	ALLOW(gettimeofday),
	ALLOW(rt_sigreturn),    /* return from the vCPU kick handler */
	ALLOW(rt_sigprocmask),  /* glibc blocks signals around pthread_kill and thread exit */
	ALLOW(restart_syscall),
	ALLOW_NOEXEC(mmap),     /* malloc */
	ALLOW_NOEXEC(mprotect), /* malloc arenas */
	ALLOW(munmap),
	ALLOW(brk),
	ALLOW(madvise),         /* free(), thread exit releases its stack */
	ALLOW(exit),            /* thread exit */
	ALLOW(exit_group),      /* process exit, also from the SIGSYS handler */
};

/* The main thread once the vCPU threads run: event loop, signalfd, timerfd, console input, shutdown. */
static const struct sandbox_rule main_rules[] = {
#ifdef __NR_epoll_wait
	ALLOW(epoll_wait),
#endif
	ALLOW(epoll_pwait),
	ALLOW_ARG(epoll_ctl, 1, SCMP_CMP_EQ, EPOLL_CTL_DEL, 0), /* console input hit EOF */
	ALLOW_ARG(epoll_ctl, 1, SCMP_CMP_EQ, EPOLL_CTL_MOD, 0), /* console input paused/resumed */
	ALLOW(read),            /* signalfd, timerfd, eventfd, console input */
	ALLOW(pread64),         /* --timeout: the vCPUs' KVM statistics over their last second */
	ALLOW(close),           /* vm_destroy */
	ALLOW(getpid),          /* pthread_kill */
	ALLOW_ARG(tgkill, 2, SCMP_CMP_EQ, SIGUSR1, 0), /* vcpu_kick: only the kick signal */
	ALLOW_IOCTL(KVM_IRQ_LINE), /* the UART's interrupt on console input */
	ALLOW_IOCTL(TCGETS),    /* restoring the terminal */
	ALLOW_IOCTL(TCSETS),
	ALLOW_IOCTL(TCSETSW),
	ALLOW_IOCTL(TCSETSF),
};

/* vCPU threads: KVM_RUN and the devices behind exits (the UART raises its IRQ on the VM fd). */
static const struct sandbox_rule vcpu_rules[] = {
	ALLOW_IOCTL(KVM_RUN),
	ALLOW_IOCTL(KVM_IRQ_LINE),
	ALLOW_IOCTL(KVM_IOEVENTFD),      /* a PCI BAR placed or moved: queue notify addresses follow it */
	ALLOW_IOCTL(KVM_SET_GSI_ROUTING), /* the guest programmed an MSI-X vector */
	ALLOW_IOCTL(KVM_IRQFD),          /* ... and its irqfd follows the mask (vm_msi_set) */
	ALLOW_IOCTL(TUNSETOFFLOAD),      /* virtio-net DRIVER_OK: TAP offloads follow the negotiated features */
	/* vhost-net DRIVER_OK and reset: features, rings, the TAP as back end (never SET_OWNER or MEM_TABLE). */
	ALLOW_IOCTL(VHOST_SET_FEATURES),
	ALLOW_IOCTL(VHOST_SET_BACKEND_FEATURES),
	ALLOW_IOCTL(VHOST_SET_VRING_NUM),
	ALLOW_IOCTL(VHOST_SET_VRING_BASE),
	ALLOW_IOCTL(VHOST_GET_VRING_BASE),
	ALLOW_IOCTL(VHOST_SET_VRING_ADDR),
	ALLOW_IOCTL(VHOST_SET_VRING_KICK),
	ALLOW_IOCTL(VHOST_SET_VRING_CALL),
	ALLOW_IOCTL(VHOST_NET_SET_BACKEND),
	/* linux/kvm.h defines KVM_GET_SREGS on every architecture; only x86 implements it. */
#if defined(__x86_64__)
	ALLOW_IOCTL(KVM_GET_REGS),       /* a triple fault's or --timeout's report says where the guest was */
	ALLOW_IOCTL(KVM_GET_SREGS),
#else
	ALLOW_IOCTL(KVM_GET_ONE_REG),    /* arm64: a --timeout's report says where the guest was */
#endif
};

/* Device workers: kicks and back-end fds in, guest memory and the back end's file or TAP out. */
static const struct sandbox_rule device_rules[] = {
#ifdef __NR_epoll_wait
	ALLOW(epoll_wait),
#endif
	ALLOW(epoll_pwait),
	ALLOW(read),      /* eventfds, TAP frames */
	ALLOW(writev),    /* TAP frames */
#ifdef __NR_poll
	ALLOW(poll),      /* virtio-net: re-arm the TAP's EPOLLOUT after an EAGAIN */
#endif
	ALLOW(ppoll),
	ALLOW(preadv),    /* disk: straight between the file and guest memory */
	ALLOW(pwritev),
	ALLOW(fdatasync), /* virtio-blk FLUSH */
	ALLOW(fallocate), /* virtio-blk DISCARD, WRITE_ZEROES */
	ALLOW(getrandom), /* virtio-rng */
	ALLOW(sched_yield), /* virtio-iommu polling (--iommu-poll) gives way to the CPU's other threads */
};

/* vhost IOTLB threads: misses read from the vhost fd, UPDATEs written back; the stop eventfd. */
static const struct sandbox_rule vhost_rules[] = {
	ALLOW(read),
#ifdef __NR_poll
	ALLOW(poll),
#endif
	ALLOW(ppoll),
};

struct sandbox_policy {
	const char *name;
	const struct sandbox_rule *rules;
	size_t nrules;
};

static const struct sandbox_policy policies[THREAD_KIND_COUNT] = {
	[THREAD_MAIN] = { "main", main_rules, ARRAY_SIZE(main_rules) },
	[THREAD_VCPU] = { "vcpu", vcpu_rules, ARRAY_SIZE(vcpu_rules) },
	[THREAD_DEVICE] = { "device", device_rules, ARRAY_SIZE(device_rules) },
	[THREAD_VHOST] = { "vhost", vhost_rules, ARRAY_SIZE(vhost_rules) },
};

const char *sandbox_thread_kind_name(enum thread_kind kind)
{
	return (unsigned int)kind < THREAD_KIND_COUNT ? policies[kind].name : "unknown";
}

static bool listed(const struct sandbox_rule *rules, size_t n, int nr)
{
	for (size_t i = 0; i < n; i++)
		if (rules[i].nr == nr)
			return true;
	return false;
}

unsigned int sandbox_allowed_syscalls(enum thread_kind kind)
{
	const struct sandbox_policy *p;
	unsigned int count = ARRAY_SIZE(base_rules); /* base_rules lists each syscall once */

	if ((unsigned int)kind >= THREAD_KIND_COUNT)
		return 0;
	p = &policies[kind];
	for (size_t i = 0; i < p->nrules; i++)
		if (!listed(base_rules, ARRAY_SIZE(base_rules), p->rules[i].nr) && !listed(p->rules, i, p->rules[i].nr))
			count++;
	return count;
}

static int add_rules(scmp_filter_ctx ctx, const struct sandbox_rule *rules, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int r = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, rules[i].nr, rules[i].argc,
					       rules[i].argc ? &rules[i].arg : NULL);
		if (r)
			return r;
	}
	return 0;
}

int sandbox_filter_build(enum thread_kind kind, enum seccomp_mode mode, scmp_filter_ctx *out)
{
	scmp_filter_ctx ctx;
	uint32_t def;
	int r;

	*out = NULL;
	if ((unsigned int)kind >= THREAD_KIND_COUNT)
		return -EINVAL;
	switch (mode) {
	case SECCOMP_OFF:
		return 0;
	case SECCOMP_KILL:
		def = SCMP_ACT_TRAP; /* see the comment at the top of this file */
		break;
	case SECCOMP_LOG:
		def = SCMP_ACT_LOG;
		break;
	default:
		return -EINVAL;
	}
	ctx = seccomp_init(def);
	if (!ctx)
		return -ENOMEM;
	/* A syscall of another ABI (i386 int 0x80, x32) is never legitimate here. */
	r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	if (!r)
		r = add_rules(ctx, base_rules, ARRAY_SIZE(base_rules));
	if (!r)
		r = add_rules(ctx, policies[kind].rules, policies[kind].nrules);
	if (r) {
		seccomp_release(ctx);
		return r < 0 ? r : -EINVAL;
	}
	*out = ctx;
	return 0;
}

/* ------------------------------------------------------------------ SIGSYS report */

static const struct {
	int nr;
	const char *name;
} syscall_names[] = {
	{ __NR_execve, "execve" },       { __NR_execveat, "execveat" },   { __NR_socket, "socket" },
	{ __NR_connect, "connect" },     { __NR_bind, "bind" },           { __NR_ptrace, "ptrace" },
	{ __NR_openat, "openat" },       { __NR_clone, "clone" },         { __NR_clone3, "clone3" },
	{ __NR_kill, "kill" },           { __NR_tgkill, "tgkill" },       { __NR_ioctl, "ioctl" },
	{ __NR_mmap, "mmap" },           { __NR_mprotect, "mprotect" },   { __NR_read, "read" },
	{ __NR_rt_sigaction, "rt_sigaction" },                           { __NR_prctl, "prctl" },
	{ __NR_newfstatat, "newfstatat" }, { __NR_fstat, "fstat" },      { __NR_getpid, "getpid" },
	{ __NR_gettid, "gettid" },       { __NR_close, "close" },         { __NR_epoll_ctl, "epoll_ctl" },
	{ __NR_sched_yield, "sched_yield" }, { __NR_nanosleep, "nanosleep" },
	{ __NR_clock_nanosleep, "clock_nanosleep" },                     { __NR_getrandom, "getrandom" },
	{ __NR_rseq, "rseq" },           { __NR_set_robust_list, "set_robust_list" },
	{ __NR_sigaltstack, "sigaltstack" }, { __NR_seccomp, "seccomp" }, { __NR_capset, "capset" },
	{ __NR_setuid, "setuid" },       { __NR_mount, "mount" },         { __NR_unshare, "unshare" },
	{ __NR_readv, "readv" },         { __NR_writev, "writev" },       { __NR_pread64, "pread64" },
	{ __NR_pwrite64, "pwrite64" },   { __NR_preadv, "preadv" },       { __NR_pwritev, "pwritev" },
	{ __NR_fdatasync, "fdatasync" }, { __NR_fallocate, "fallocate" },
	/* What an attacker who took over moat would reach for first. */
	{ __NR_openat2, "openat2" },     { __NR_memfd_create, "memfd_create" }, { __NR_bpf, "bpf" },
	{ __NR_io_uring_setup, "io_uring_setup" },                       { __NR_userfaultfd, "userfaultfd" },
	{ __NR_process_vm_readv, "process_vm_readv" },                   { __NR_process_vm_writev, "process_vm_writev" },
	{ __NR_perf_event_open, "perf_event_open" },                     { __NR_setns, "setns" },
	{ __NR_chroot, "chroot" },       { __NR_pivot_root, "pivot_root" }, { __NR_sendto, "sendto" },
	{ __NR_sendmsg, "sendmsg" },     { __NR_accept4, "accept4" },     { __NR_listen, "listen" },
	{ __NR_getdents64, "getdents64" }, { __NR_pidfd_open, "pidfd_open" }, { __NR_init_module, "init_module" },
	{ __NR_finit_module, "finit_module" },                           { __NR_keyctl, "keyctl" },
#ifdef __NR_open /* the legacy calls newer arches (arm64) do not have */
	{ __NR_open, "open" },           { __NR_fork, "fork" },           { __NR_vfork, "vfork" },
	{ __NR_epoll_wait, "epoll_wait" },
#endif
};

static size_t put_str(char *buf, size_t at, size_t cap, const char *s)
{
	while (*s && at < cap)
		buf[at++] = *s++;
	return at;
}

static size_t put_uint(char *buf, size_t at, size_t cap, unsigned long v)
{
	char tmp[24];
	size_t n = 0;

	do
		tmp[n++] = (char)('0' + v % 10);
	while ((v /= 10) && n < sizeof(tmp));
	while (n && at < cap)
		buf[at++] = tmp[--n];
	return at;
}

/* Async-signal-safe: constant data, a stack buffer, write(2) and _exit(2). */
static void sigsys_handler(int sig, siginfo_t *si, void *uctx)
{
	char buf[160];
	size_t n = 0;
	int nr = si->si_syscall;
	unsigned int kind = (unsigned int)si->si_errno; /* SECCOMP_RET_DATA: the thread kind */
	const char *name = NULL;

	(void)sig;
	(void)uctx;
	for (size_t i = 0; i < ARRAY_SIZE(syscall_names); i++)
		if (syscall_names[i].nr == nr)
			name = syscall_names[i].name;
	n = put_str(buf, n, sizeof(buf), "moat: seccomp: thread ");
	n = put_str(buf, n, sizeof(buf), kind < THREAD_KIND_COUNT ? policies[kind].name : "unknown");
	n = put_str(buf, n, sizeof(buf), " made forbidden syscall ");
	n = put_uint(buf, n, sizeof(buf), (unsigned long)(unsigned int)nr);
	n = put_str(buf, n, sizeof(buf), " (");
	n = put_str(buf, n, sizeof(buf), name ? name : "see ausyscall --dump");
	n = put_str(buf, n, sizeof(buf), "); exiting (rerun with --seccomp log to list every missing syscall)\n");
	if (write(STDERR_FILENO, buf, n) < 0)
		_exit(1);
	_exit(1);
}

static int install_sigsys_handler(void)
{
	struct sigaction sa;
	sigset_t set;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = sigsys_handler;
	sa.sa_flags = SA_SIGINFO;
	sigfillset(&sa.sa_mask);
	if (sigaction(SIGSYS, &sa, NULL) < 0)
		return -errno;
	sigemptyset(&set);
	sigaddset(&set, SIGSYS);
	return -pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

/* ------------------------------------------------------------------ loading */

/*
 * libseccomp 2.5 accepts no data with SCMP_ACT_TRAP, so export the program and patch the thread kind
 * into the low 16 bits (SECCOMP_RET_DATA) of every TRAP return; the SIGSYS handler finds it in si_errno.
 */
static int load_filter(scmp_filter_ctx ctx, enum thread_kind kind, enum seccomp_mode mode)
{
	struct sock_filter *insns = NULL;
	struct sock_fprog prog;
	struct stat st;
	int fd, r = 0;

	fd = memfd_create("moat-seccomp", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = seccomp_export_bpf(ctx, fd);
	if (r)
		goto out;
	if (fstat(fd, &st) < 0 || st.st_size <= 0 || st.st_size % (off_t)sizeof(*insns) ||
	    st.st_size / (off_t)sizeof(*insns) > BPF_MAXINSNS) {
		r = -EINVAL;
		goto out;
	}
	insns = malloc((size_t)st.st_size);
	if (!insns) {
		r = -ENOMEM;
		goto out;
	}
	if (pread(fd, insns, (size_t)st.st_size, 0) != st.st_size) {
		r = -EIO;
		goto out;
	}
	close(fd); /* before the filter is on: close is not in every allow-list */
	fd = -1;
	prog.len = (unsigned short)(st.st_size / (off_t)sizeof(*insns));
	prog.filter = insns;
	for (unsigned int i = 0; i < prog.len; i++)
		if (insns[i].code == (BPF_RET | BPF_K) && insns[i].k == SECCOMP_RET_TRAP)
			insns[i].k = SECCOMP_RET_TRAP | ((uint32_t)kind & SECCOMP_RET_DATA);
	if (syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER,
		    mode == SECCOMP_KILL ? SECCOMP_FILTER_FLAG_LOG : 0u, &prog) < 0)
		r = -errno;
out:
	free(insns);
	if (fd >= 0)
		close(fd);
	return r;
}

int sandbox_apply(enum thread_kind kind, enum seccomp_mode mode, const struct log *log)
{
	scmp_filter_ctx ctx;
	int r;

	if (mode == SECCOMP_OFF)
		return 0;
	r = sandbox_filter_build(kind, mode, &ctx);
	if (r) {
		log_error(log, "cannot build the seccomp filter of the %s thread: %s; rerun with --seccomp off to "
			       "debug", sandbox_thread_kind_name(kind), strerror(-r));
		return r;
	}
	if (mode == SECCOMP_KILL) {
		r = install_sigsys_handler();
		if (r) {
			log_error(log, "cannot install the SIGSYS handler: %s", strerror(-r));
			goto out;
		}
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		r = -errno;
		log_error(log, "cannot set no_new_privs: %s; rerun with --seccomp off to debug", strerror(-r));
		goto out;
	}
	r = load_filter(ctx, kind, mode);
	if (r)
		log_error(log, "cannot load the seccomp filter of the %s thread: %s (does this kernel have "
			       "CONFIG_SECCOMP_FILTER?); rerun with --seccomp off to run without the sandbox",
			  sandbox_thread_kind_name(kind), strerror(-r));
out:
	seccomp_release(ctx);
	return r;
}

/* ------------------------------------------------------------------ threads */

/* Lives on the starter's stack until the new thread reports whether its filter is on. */
struct thread_start {
	enum thread_kind kind;
	enum seccomp_mode mode;
	const char *name;
	void *(*fn)(void *);
	void *arg;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int result;
};

/* sandbox_set_affinity: the CPUs of each thread kind; set once, before any thread of that kind starts. */
static struct {
	bool set;
	cpu_set_t cpus;
} affinity[THREAD_KIND_COUNT];

void sandbox_set_affinity(enum thread_kind kind, const cpu_set_t *cpus)
{
	if (kind >= THREAD_KIND_COUNT)
		return;
	affinity[kind].set = cpus != NULL;
	if (cpus)
		affinity[kind].cpus = *cpus;
}

static void *thread_trampoline(void *p)
{
	struct thread_start *s = p;
	void *(*fn)(void *) = s->fn;
	void *arg = s->arg;
	int r = 0;

	/* Before the filter: prctl is in no allow-list. Only fails for a bad pointer. */
	prctl(PR_SET_NAME, (unsigned long)s->name, 0, 0, 0);
	/* sched_setaffinity is in no allow-list either. main() checked the set has CPUs this process may use. */
	if (affinity[s->kind].set && sched_setaffinity(0, sizeof(cpu_set_t), &affinity[s->kind].cpus) < 0)
		r = -errno;
	if (!r)
		r = sandbox_apply(s->kind, s->mode, NULL);
	pthread_mutex_lock(&s->lock);
	s->result = r;
	s->done = true;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock); /* s may be gone from here on */
	return r ? NULL : fn(arg);
}

int sandbox_thread_start(pthread_t *thread, enum thread_kind kind, enum seccomp_mode mode, const char *name,
			 void *(*fn)(void *), void *arg)
{
	struct thread_start s = { .kind = kind, .mode = mode, .name = name, .fn = fn, .arg = arg };
	int r;

	pthread_mutex_init(&s.lock, NULL);
	pthread_cond_init(&s.cond, NULL);
	r = -pthread_create(thread, NULL, thread_trampoline, &s);
	if (!r) {
		pthread_mutex_lock(&s.lock);
		while (!s.done)
			pthread_cond_wait(&s.cond, &s.lock);
		r = s.result;
		pthread_mutex_unlock(&s.lock);
		if (r)
			pthread_join(*thread, NULL);
	}
	pthread_cond_destroy(&s.cond);
	pthread_mutex_destroy(&s.lock);
	return r;
}

/* ------------------------------------------------------------------ capabilities */

static int set_no_new_privs(const struct log *log)
{
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		int r = -errno;
		log_error(log, "cannot set no_new_privs: %s", strerror(-r));
		return r;
	}
	return 0;
}

int sandbox_drop_caps(const struct log *log)
{
	int set = CAPNG_SELECT_CAPS | CAPNG_SELECT_AMBIENT;
	int r;

	if (capng_get_caps_process() < 0) {
		log_error(log, "cannot read this process's capabilities (libcap-ng); is /proc mounted?");
		return -EIO;
	}
	/* Dropping from the bounding set needs CAP_SETPCAP; an unprivileged user has nothing to drop there. */
	if (capng_have_capability(CAPNG_EFFECTIVE, CAP_SETPCAP))
		set |= CAPNG_SELECT_BOUNDS;
	capng_clear((capng_select_t)set);
	r = capng_apply((capng_select_t)set);
	if (r < 0) {
		log_error(log, "cannot drop capabilities (libcap-ng error %d); rerun with --seccomp off to debug", r);
		return -EPERM;
	}
	return set_no_new_privs(log);
}

int sandbox_switch_user(uid_t uid, gid_t gid, const struct log *log)
{
	int r;

	if (capng_get_caps_process() < 0) {
		log_error(log, "cannot read this process's capabilities (libcap-ng); is /proc mounted?");
		return -EIO;
	}
	capng_clear(CAPNG_SELECT_BOTH);
	r = capng_change_id((int)uid, (int)gid, CAPNG_DROP_SUPP_GRP | CAPNG_CLEAR_BOUNDING);
	if (r < 0) {
		log_error(log,
			  "cannot switch to user %u, group %u (libcap-ng error %d): --user needs moat to start as "
			  "root or with CAP_SETUID and CAP_SETGID",
			  (unsigned int)uid, (unsigned int)gid, r);
		return -EPERM;
	}
	if (getuid() != uid || geteuid() != uid || getgid() != gid || getegid() != gid) {
		log_error(log, "switching to user %u, group %u did not take effect", (unsigned int)uid,
			  (unsigned int)gid);
		return -EPERM;
	}
	return set_no_new_privs(log);
}
