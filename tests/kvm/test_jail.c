/*
 * --jail and Landlock (vmm/jail.c): each test jails a forked child, never the test runner. Entering
 * the jail needs root (CAP_SYS_ADMIN); without it those tests are skipped and say so.
 */
#include <cap-ng.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "devices/platform.h"
#include "devices/serial.h"
#include "vmm/jail.h"
#include "vmm/sandbox.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"

TestSuite(jail, .timeout = 30);

static char jail_dir[64];

static void make_jail_dir(void)
{
	strcpy(jail_dir, "/tmp/moat-jail-test.XXXXXX");
	cr_assert_not_null(mkdtemp(jail_dir), "mkdtemp: %s", strerror(errno));
}

static void remove_jail_dir(void)
{
	rmdir(jail_dir);
}

static bool have_sys_admin(void)
{
	return capng_get_caps_process() == 0 && capng_have_capability(CAPNG_EFFECTIVE, CAP_SYS_ADMIN);
}

#define NEED_ROOT()                                                                                  \
	do {                                                                                         \
		if (!have_sys_admin())                                                               \
			cr_skip_test("entering a jail needs root (CAP_SYS_ADMIN); run the tests as root"); \
	} while (0)

/* Fork; the child runs fn(arg) and exits with its return value; stderr comes back in out. */
static int in_child(int (*fn)(void *), void *arg, char *out, size_t outlen)
{
	int p[2], status = 0;
	size_t n = 0;
	ssize_t r;
	pid_t pid;

	cr_assert_eq(pipe(p), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		close(p[0]);
		dup2(p[1], STDERR_FILENO);
		_exit(fn(arg));
	}
	close(p[1]);
	while (n + 1 < outlen && (r = read(p[0], out + n, outlen - 1 - n)) > 0)
		n += (size_t)r;
	out[n] = '\0';
	close(p[0]);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	return status;
}

/* Run fn(jail_dir) in a child with a fresh empty jail_dir, removed before the verdict. */
static void expect_child_ok_in_dir(int (*fn)(void *))
{
	char msg[1024];
	int st;

	make_jail_dir();
	st = in_child(fn, jail_dir, msg, sizeof(msg));
	remove_jail_dir();
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child wait status 0x%x: %s", st, msg);
}

/* ------------------------------------------------------------------ jail_check */

Test(jail, check_names_a_missing_dir_and_the_fix)
{
	char err[512] = "";
	int r = jail_check("/nonexistent/moat-jail", err, sizeof(err));

	cr_assert_eq(r, -ENOENT, "got %d: %s", r, err);
	cr_assert(strstr(err, "'/nonexistent/moat-jail' does not exist"), "%s", err);
	cr_assert(strstr(err, "mkdir"), "the message should say how to fix it: %s", err);
}

Test(jail, check_refuses_a_file)
{
	char err[512] = "";
	int r = jail_check("/proc/self/status", err, sizeof(err));

	cr_assert_eq(r, -ENOTDIR, "got %d: %s", r, err);
	cr_assert(strstr(err, "is not a directory"), "%s", err);
}

Test(jail, check_accepts_an_empty_dir_as_root)
{
	char err[512] = "";
	int r;

	NEED_ROOT();
	make_jail_dir();
	r = jail_check(jail_dir, err, sizeof(err));
	remove_jail_dir();
	cr_assert_eq(r, 0, "%s", err);
}

/* Without CAP_SYS_ADMIN both the check and the jail itself say that root is needed. */
static int child_without_sys_admin(void *arg)
{
	char err[512] = "";

	capng_get_caps_process();
	capng_update(CAPNG_DROP, CAPNG_EFFECTIVE | CAPNG_PERMITTED, CAP_SYS_ADMIN);
	if (capng_apply(CAPNG_SELECT_CAPS))
		return 10;
	if (jail_check(arg, err, sizeof(err)) != -EPERM || !strstr(err, "--jail needs root")) {
		fprintf(stderr, "jail_check: %s\n", err);
		return 11;
	}
	err[0] = '\0';
	if (jail_enter(arg, NULL, err, sizeof(err)) != -EPERM || !strstr(err, "--jail needs root")) {
		fprintf(stderr, "jail_enter: %s\n", err);
		return 12;
	}
	return 0;
}

Test(jail, without_privileges_says_root_is_needed)
{
	NEED_ROOT(); /* to have something to drop */
	expect_child_ok_in_dir(child_without_sys_admin);
}

/* ------------------------------------------------------------------ jail_enter */

/* In the jail: "/" is the empty, read-only DIR; fds opened before still work; the UTS namespace is ours. */
static int child_in_jail(void *arg)
{
	char err[512] = "", buf[8];
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	struct dirent *de;
	struct stat st;
	DIR *d;

	if (fd < 0)
		return 9;
	if (jail_enter(arg, NULL, err, sizeof(err))) {
		fprintf(stderr, "jail_enter: %s\n", err);
		return 10;
	}
	d = opendir("/");
	if (!d)
		return 11;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
			fprintf(stderr, "the jail's root holds '%s'\n", de->d_name);
			return 12;
		}
	closedir(d);
	if (stat("/etc", &st) == 0 || stat("/proc/self", &st) == 0 || stat("/dev/kvm", &st) == 0) {
		fprintf(stderr, "a host path is visible in the jail\n");
		return 13;
	}
	if (mkdir("/x", 0700) == 0 || errno != EROFS) {
		fprintf(stderr, "mkdir in the jail: %s (expected EROFS)\n", strerror(errno));
		return 14;
	}
	if (read(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
		return 15;
	if (sethostname("moat-jail-test", 14) < 0)
		return 16;
	return 0;
}

Test(jail, enter_an_empty_dir)
{
	char host[64], after[64];

	NEED_ROOT();
	cr_assert_eq(gethostname(host, sizeof(host)), 0);
	expect_child_ok_in_dir(child_in_jail);
	cr_assert_eq(gethostname(after, sizeof(after)), 0);
	cr_assert_str_eq(after, host, "the jailed child changed the host's name: no UTS namespace");
}

/* Started in a chroot of a plain directory, "/" is no mount point and mounts cannot be made private:
 * moat mounts nothing (nothing may leak to the host) and only chroots. */
static int child_in_jail_after_chroot(void *arg)
{
	char outer[128], inner[160], err[512] = "";
	struct log log;
	struct stat st;

	log_init(&log, LOG_INFO, STDERR_FILENO);
	snprintf(outer, sizeof(outer), "%s/outer", (const char *)arg);
	snprintf(inner, sizeof(inner), "%s/jail", outer);
	if (mkdir(outer, 0755) || mkdir(inner, 0755) || creat(strcat(outer, "/marker"), 0644) < 0)
		return 9;
	outer[strlen(outer) - strlen("/marker")] = '\0';
	if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) || chroot(outer) || chdir("/"))
		return 10;
	if (jail_enter("/jail", &log, err, sizeof(err))) {
		fprintf(stderr, "jail_enter: %s\n", err);
		return 11;
	}
	if (stat("/marker", &st) == 0 || stat("/jail", &st) == 0) {
		fprintf(stderr, "the outer directory is still visible\n");
		return 12;
	}
	return 0;
}

Test(jail, enter_when_pivot_root_is_impossible)
{
	char msg[1024], path[160];
	int st;

	NEED_ROOT();
	make_jail_dir();
	st = in_child(child_in_jail_after_chroot, jail_dir, msg, sizeof(msg));
	snprintf(path, sizeof(path), "%s/outer/marker", jail_dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/outer/jail", jail_dir);
	rmdir(path);
	snprintf(path, sizeof(path), "%s/outer", jail_dir);
	rmdir(path);
	remove_jail_dir();
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child wait status 0x%x: %s", st, msg);
	cr_assert(strstr(msg, "(chroot: moat runs in a chroot"), "expected the chroot fallback: %s", msg);
}

/* ------------------------------------------------------------------ Landlock */

static int child_landlocked(void *arg)
{
	char err[512] = "", buf[8];
	int before = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	bool restricted;
	int r = jail_landlock(&restricted, NULL, err, sizeof(err));

	if (!r && !restricted)
		return 77; /* no Landlock on this kernel */
	if (r) {
		fprintf(stderr, "jail_landlock: %s\n", err);
		return 10;
	}
	if (open("/proc/self/status", O_RDONLY | O_CLOEXEC) >= 0 || errno != EACCES) {
		fprintf(stderr, "open after Landlock: %s (expected EACCES)\n", strerror(errno));
		return 11;
	}
	if (mkdir("/tmp/moat-landlock-must-not-exist", 0700) == 0 || errno != EACCES)
		return 12;
	if (before < 0 || read(before, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
		return 13;
	return 0;
}

Test(jail, landlock_forbids_opening_files)
{
	char msg[512];
	int st = in_child(child_landlocked, NULL, msg, sizeof(msg));

	if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
		cr_skip_test("this kernel has no Landlock (jail_landlock skips it)");
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child wait status 0x%x: %s", st, msg);
}

/* ------------------------------------------------------------------ a guest in the jail */

#define CODE_ADDR 0x1000
#define RAM_SIZE 0x10000

/* COM1 "ok\n", then ACPI S5 power-off. */
static const uint8_t poweroff_code[] = {
	0xba, 0xf8, 0x03, 0xb0, 'o', 0xee, 0xb0, 'k', 0xee, 0xb0, '\n', 0xee,
	0xba, 0x00, 0x06, 0xb0, 0x34, 0xee, 0xeb, 0xfe,
};

static void on_stop(void *ctx, uint32_t events)
{
	struct vm *vm = ctx;
	uint64_t v;

	if (read(vm->stop_efd, &v, sizeof(v)) < 0)
		return;
}

/* main()'s order: build the VM, jail, drop capabilities, Landlock, then run under the seccomp filters. */
static int child_guest_in_jail(void *arg)
{
	char err[512] = "", buf[16] = "";
	struct kvm_sregs sregs;
	struct kvm_regs regs = { .rip = CODE_ADDR, .rflags = 2 };
	struct vm vm;
	sigset_t mask;
	bool restricted;
	int p[2];

	sigemptyset(&mask);
	sigaddset(&mask, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	if (pipe(p) || vcpu_signal_setup())
		return 9;
	vm_init(&vm);
	vm.cfg.cpus = 1;
	vm.cfg.seccomp = SECCOMP_KILL;
	log_init(&vm.log, LOG_ERROR, 2);
	vm.console_out = p[1];
	if (event_loop_init(&vm.loop) || vm_open_kvm(&vm, err, sizeof(err)) || gm_add_region(&vm.mem, 0, RAM_SIZE) ||
	    gm_alloc(&vm.mem) || vm_map_memory(&vm) || ioctl(vm.vm_fd, KVM_CREATE_IRQCHIP, 0) < 0 ||
	    gm_write(&vm.mem, CODE_ADDR, poweroff_code, sizeof(poweroff_code)) || serial_create(&vm, 0x3f8, 4) ||
	    acpi_pm_create(&vm, 0x600, 0x601, 0x602, 1, 5) || vm_create_vcpus(&vm, 1) ||
	    ioctl(vm.vcpus[0].fd, KVM_GET_SREGS, &sregs) < 0) {
		fprintf(stderr, "cannot build the test guest: %s\n", err);
		return 10;
	}
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	if (ioctl(vm.vcpus[0].fd, KVM_SET_SREGS, &sregs) < 0 || ioctl(vm.vcpus[0].fd, KVM_SET_REGS, &regs) < 0)
		return 11;
	vm.stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vm.stop_efd < 0 || event_loop_add(&vm.loop, vm.stop_efd, EPOLLIN, on_stop, &vm))
		return 12;
	if (jail_enter(arg, NULL, err, sizeof(err)) || sandbox_drop_caps(&vm.log) ||
	    jail_landlock(&restricted, NULL, err, sizeof(err))) {
		fprintf(stderr, "sandbox: %s\n", err);
		return 13;
	}
	if (vm_run(&vm) != VM_STOP_POWEROFF) {
		fprintf(stderr, "stopped with: %s\n", vm.stop_msg);
		return 14;
	}
	vm_destroy(&vm);
	if (read(p[0], buf, sizeof(buf) - 1) != 3 || strcmp(buf, "ok\n"))
		return 15;
	return 0;
}

Test(jail, guest_runs_to_completion_in_the_jail)
{
	NEED_ROOT();
	expect_child_ok_in_dir(child_guest_in_jail);
}
