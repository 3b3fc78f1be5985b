#include "vmm/jail.h"

#include <cap-ng.h>
#include <errno.h>
#include <linux/landlock.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static int jail_fail(char *err, size_t errlen, int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return r;
}

#define NEED_ROOT                                                                                    \
	"--jail needs root (CAP_SYS_ADMIN) to create mount namespaces; run moat as root (add --user UID " \
	"to run as an unprivileged user once set up) or leave out --jail"

int jail_check(const char *dir, char *err, size_t errlen)
{
	struct stat st;

	if (stat(dir, &st) < 0) {
		int e = errno;
		if (e == ENOENT)
			return jail_fail(err, errlen, -e,
					 "--jail '%s' does not exist; create an empty directory for it (mkdir -p '%s'): "
					 "moat needs nothing inside",
					 dir, dir);
		return jail_fail(err, errlen, -e, "cannot use --jail '%s': %s", dir, strerror(e));
	}
	if (!S_ISDIR(st.st_mode))
		return jail_fail(err, errlen, -ENOTDIR,
				 "--jail '%s' is not a directory; give an empty directory (moat needs nothing inside)",
				 dir);
	if (capng_get_caps_process() < 0)
		return jail_fail(err, errlen, -EIO,
				 "cannot read this process's capabilities (libcap-ng); is /proc mounted?");
	if (!capng_have_capability(CAPNG_EFFECTIVE, CAP_SYS_ADMIN))
		return jail_fail(err, errlen, -EPERM, NEED_ROOT);
	return 0;
}

int jail_enter(const char *dir, const struct log *log, char *err, size_t errlen)
{
	/* Private mounts, no System V IPC or POSIX message queues of the host, its own host name, and an
	 * empty network stack (no new socket reaches the host's network; open TAP fds keep working). */
	const int ns = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET;
	const unsigned long ro = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
	const char *how = "pivot_root";

	if (unshare(ns) < 0) {
		int e = errno;
		if (e == EPERM)
			return jail_fail(err, errlen, -e, NEED_ROOT);
		return jail_fail(err, errlen, -e,
				 "--jail: cannot create new mount, IPC, UTS and network namespaces: %s (does this "
				 "kernel have CONFIG_NAMESPACES?)",
				 strerror(e));
	}
	/* Nothing done below may propagate back into the host's mount namespace. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
		if (errno != EINVAL)
			return jail_fail(err, errlen, -errno, "--jail: cannot make the mounts private: %s",
					 strerror(errno));
		/* moat was started in a chroot: "/" is no mount point, so mounts cannot be made private
		 * and any mount moat made could show up on the host. Mount nothing; a chroot holds once
		 * the capabilities are gone. */
		if (chroot(dir) < 0 || chdir("/") < 0)
			return jail_fail(err, errlen, -errno, "--jail: cannot change the root to '%s': %s", dir,
					 strerror(errno));
		log_info(log, "jail: new mount, IPC, UTS and network namespaces; root is '%s' (chroot: moat runs "
			      "in a chroot, so the jail is not made read-only)",
			 dir);
		return 0;
	}
	/* pivot_root wants a mount point; a plain (not recursive) bind leaves DIR's submounts outside. */
	if (mount(dir, dir, NULL, MS_BIND, NULL) < 0)
		return jail_fail(err, errlen, -errno, "--jail: cannot bind-mount '%s' onto itself: %s", dir,
				 strerror(errno));
	if (chdir(dir) < 0)
		return jail_fail(err, errlen, -errno, "--jail: cannot enter '%s': %s", dir, strerror(errno));
	if (syscall(__NR_pivot_root, ".", ".") == 0) {
		/* The old root is stacked on "."; detaching it leaves no path to the host's files. */
		if (umount2(".", MNT_DETACH) < 0)
			return jail_fail(err, errlen, -errno, "--jail: cannot detach the old root: %s",
					 strerror(errno));
	} else if (errno == EINVAL) {
		/* The host's root is the initramfs (rootfs), which cannot be pivoted: chroot into the bind
		 * mount; the old root stays in the namespace, out of reach without capabilities. */
		how = "chroot: the host's root cannot be pivoted (an initramfs?)";
		if (chroot(".") < 0)
			return jail_fail(err, errlen, -errno, "--jail: cannot change the root to '%s': %s", dir,
					 strerror(errno));
	} else {
		return jail_fail(err, errlen, -errno, "--jail: cannot change the root to '%s': %s", dir,
				 strerror(errno));
	}
	if (chdir("/") < 0)
		return jail_fail(err, errlen, -errno, "--jail: cannot enter the new root: %s", strerror(errno));
	if (mount(NULL, "/", NULL, ro, NULL) < 0)
		return jail_fail(err, errlen, -errno, "--jail: cannot make the new root read-only: %s",
				 strerror(errno));
	log_info(log, "jail: new mount, IPC, UTS and network namespaces; root is '%s' (read-only, %s)", dir, how);
	return 0;
}

/* ------------------------------------------------------------------ Landlock */

/* Newer than the installed linux/landlock.h may be; the values are kernel ABI. */
#define LL_FS_ABI1 ((1ull << 13) - 1) /* EXECUTE .. MAKE_SYM */
#define LL_FS_REFER (1ull << 13)      /* ABI 2 */
#define LL_FS_TRUNCATE (1ull << 14)   /* ABI 3 */
#define LL_FS_IOCTL_DEV (1ull << 15)  /* ABI 5; fds opened before the restriction keep their ioctls */
#define LL_NET_TCP (3ull)             /* ABI 4: BIND_TCP | CONNECT_TCP */
#define LL_SCOPE_ALL (3ull)           /* ABI 6: abstract unix sockets and signals outside the domain */

struct ll_ruleset_attr {
	uint64_t handled_access_fs;
	uint64_t handled_access_net; /* ABI 4 */
	uint64_t scoped;             /* ABI 6 */
};

int jail_landlock(bool *restricted, const struct log *log, char *err, size_t errlen)
{
	struct ll_ruleset_attr attr = { 0 };
	size_t size = sizeof(attr.handled_access_fs);
	long abi;
	int fd;

	*restricted = false;
	abi = syscall(__NR_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
	if (abi < 1) {
		log_info(log, "landlock: not available on this kernel (%s); file-system confinement rests on "
			      "seccomp and --jail",
			 abi < 0 ? strerror(errno) : "ABI 0");
		return 0;
	}
	attr.handled_access_fs = LL_FS_ABI1;
	if (abi >= 2)
		attr.handled_access_fs |= LL_FS_REFER;
	if (abi >= 3)
		attr.handled_access_fs |= LL_FS_TRUNCATE;
	if (abi >= 4) {
		attr.handled_access_net = LL_NET_TCP;
		size = offsetof(struct ll_ruleset_attr, scoped);
	}
	if (abi >= 5)
		attr.handled_access_fs |= LL_FS_IOCTL_DEV;
	if (abi >= 6) {
		attr.scoped = LL_SCOPE_ALL;
		size = sizeof(attr);
	}
	fd = (int)syscall(__NR_landlock_create_ruleset, &attr, size, 0);
	if (fd < 0)
		return jail_fail(err, errlen, -errno, "landlock: cannot create a ruleset (ABI %ld): %s", abi,
				 strerror(errno));
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || syscall(__NR_landlock_restrict_self, fd, 0) < 0) {
		int e = errno;
		close(fd);
		return jail_fail(err, errlen, -e, "landlock: cannot restrict moat: %s", strerror(e));
	}
	close(fd);
	*restricted = true;
	log_info(log, "landlock: ABI %ld: no file-system access%s%s", abi, abi >= 4 ? ", no TCP bind/connect" : "",
		 abi >= 6 ? ", no abstract unix sockets or signals outside moat" : "");
	return 0;
}
