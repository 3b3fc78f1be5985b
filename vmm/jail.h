/*
 * What moat can see of the host once the guest runs: --jail DIR (namespaces and a new root) and
 * Landlock (no file-system access at all, where the kernel has it).
 *
 * --jail DIR: moat moves into new mount, IPC, UTS and network namespaces, makes every mount private,
 * pivots into DIR (bind-mounted read-only, nosuid, nodev, noexec) and detaches the old root, so the
 * host's file system is no longer reachable by any path. DIR may be empty: everything moat needs is
 * open before (kernel, initrd, disks, /dev/kvm, TAP, /dev/vhost-net, console file). The namespaces
 * are the ones that act on the calling process at once; a PID namespace would only apply to children,
 * and moat starts none. Needs CAP_SYS_ADMIN (root); capabilities are dropped right after, which is
 * what makes the fallbacks hold: where the root cannot be pivoted (an initramfs root) moat chroots
 * into the read-only bind mount, and where moat itself runs in a chroot ("/" is no mount point, so
 * mounts cannot be made private) it mounts nothing and only chroots into DIR.
 *
 * Landlock: a ruleset that handles every file-system access right this kernel knows and allows none,
 * so no thread can open, create, remove, rename or execute any file afterwards, whether or not seccomp
 * is on and without privileges. Skipped, with an info line, on kernels without it.
 */
#ifndef MOAT_JAIL_H
#define MOAT_JAIL_H

#include <stdbool.h>
#include <stddef.h>

#include "vmm/log.h"

/* Before building the VM: DIR exists, is a directory, and moat may create namespaces. 0, or -errno with
 * a one-line message in err naming the problem and the fix. */
int jail_check(const char *dir, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Enter the jail. Call once every file is open, before dropping capabilities and before creating any
 * thread (unsharing the mount namespace needs a single-threaded process). 0, or -errno with err. */
int jail_enter(const char *dir, const struct log *log, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/*
 * Forbid all file-system access to this thread and the threads it creates later (Landlock). Sets
 * no_new_privs. Returns 0, with *restricted false when this kernel has no Landlock (logged at info),
 * or -errno with err. Call after dropping capabilities (libcap-ng reads /proc/self/status).
 */
int jail_landlock(bool *restricted, const struct log *log, char *err, size_t errlen)
	__attribute__((warn_unused_result));

#endif
