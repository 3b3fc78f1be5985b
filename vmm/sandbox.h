/*
 * The sandbox: one seccomp allow-list per kind of thread, and dropping every capability.
 *
 * Filters are per thread (never TSYNC) and are inherited by threads cloned afterwards, where they stack
 * with the new thread's own filter. So a thread kind's filter goes on after that thread has created
 * every thread it will ever create: vCPU and device threads are started through sandbox_thread_start(),
 * which loads theirs before their body runs, and the main thread applies THREAD_MAIN right after
 * cloning the last vCPU thread (vm_start_vcpus()).
 * Capabilities are per thread too: drop them in main before any other thread is created.
 */
#ifndef MOAT_SANDBOX_H
#define MOAT_SANDBOX_H

#include <pthread.h>
#include <seccomp.h>

#include "vmm/config.h"
#include "vmm/log.h"

/* Adding a kind of thread: add it here and give it a rule table in vmm/sandbox.c. */
enum thread_kind {
	THREAD_MAIN, /* event loop, signals, timeout, console input, shutdown */
	THREAD_VCPU, /* KVM_RUN and the devices behind port I/O and MMIO exits */
	THREAD_DEVICE, /* a virtio device's worker: queues, back-end I/O */
	THREAD_VHOST,  /* a vhost device's IOTLB: misses in, translations and invalidations out */
	THREAD_KIND_COUNT,
};

const char *sandbox_thread_kind_name(enum thread_kind kind);

/* How many distinct syscalls a thread kind may make (common and own rules; README lists these). */
unsigned int sandbox_allowed_syscalls(enum thread_kind kind);

/*
 * Build the allow-list of a thread kind. mode SECCOMP_KILL: anything else traps (SIGSYS, one line on
 * stderr, exit status 1); SECCOMP_LOG: anything else is allowed and logged by the kernel;
 * SECCOMP_OFF: *out = NULL. Returns 0 or -errno; the caller releases *out with seccomp_release().
 */
int sandbox_filter_build(enum thread_kind kind, enum seccomp_mode mode, scmp_filter_ctx *out)
	__attribute__((warn_unused_result));

/* Set no_new_privs and load the kind's filter on the calling thread only. 0 or -errno (logged). */
int sandbox_apply(enum thread_kind kind, enum seccomp_mode mode, const struct log *log)
	__attribute__((warn_unused_result));

/*
 * Start one of moat's threads: every thread moat creates goes through here. The new thread names
 * itself (prctl: no /proc needed, so it works under --jail), loads its kind's allow-list, and only
 * then calls fn(arg). Returns 0 once the filter is on; -errno if the thread could not be created or
 * sandboxed, in which case fn never ran and the thread is gone. The caller words the error.
 */
int sandbox_thread_start(pthread_t *thread, enum thread_kind kind, enum seccomp_mode mode, const char *name,
			 void *(*fn)(void *), void *arg) __attribute__((warn_unused_result));

/*
 * Threads of this kind started from now on run only on these CPUs (NULL: anywhere). The set must hold a
 * CPU the process may run on, else such a thread fails to start with -EINVAL.
 */
void sandbox_set_affinity(enum thread_kind kind, const cpu_set_t *cpus);

/* Drop every capability (effective, permitted, inheritable, ambient; bounding set when allowed) of the
 * calling thread and set no_new_privs. Call after every fd is open, before creating threads. */
int sandbox_drop_caps(const struct log *log) __attribute__((warn_unused_result));

/*
 * --user: drop every capability and become uid/gid (no supplementary groups) in one step, through
 * libcap-ng (the bounding set is cleared while moat still may). Needs root or CAP_SETUID/CAP_SETGID.
 */
int sandbox_switch_user(uid_t uid, gid_t gid, const struct log *log) __attribute__((warn_unused_result));

#endif
