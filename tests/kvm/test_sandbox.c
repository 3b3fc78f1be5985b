/*
 * The seccomp sandbox (vmm/sandbox.c): the filters build, a real guest runs under them, and a thread
 * that makes a forbidden syscall takes the process down with a message naming the thread kind and the
 * syscall. Anything that loads a filter on a thread the test runner needs runs in a forked child.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "devices/platform.h"
#include "devices/serial.h"
#include "vmm/sandbox.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"

TestSuite(sandbox, .timeout = 30);

#define CODE_ADDR 0x1000
#define RAM_SIZE  0x10000

/* COM1 "ok\n", then ACPI S5 power-off (port 0x600, SLP_TYP 5 | SLP_EN); the irqchip keeps HLT in KVM. */
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

/* A real-mode guest with the UART and ACPI power-off; no Criterion asserts (also used in children). */
static int setup_guest(struct vm *vm, enum seccomp_mode mode, int console_fd)
{
	char err[256];
	struct kvm_sregs sregs;
	struct kvm_regs regs = { .rip = CODE_ADDR, .rflags = 2 };

	vm_init(vm);
	vm->cfg.cpus = 1;
	vm->cfg.seccomp = mode;
	log_init(&vm->log, LOG_ERROR, 2);
	vm->console_out = console_fd;
	if (event_loop_init(&vm->loop) || vm_open_kvm(vm, err, sizeof(err)) ||
	    gm_add_region(&vm->mem, 0, RAM_SIZE) || gm_alloc(&vm->mem) || vm_map_memory(vm) ||
	    ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0 ||
	    gm_write(&vm->mem, CODE_ADDR, poweroff_code, sizeof(poweroff_code)) ||
	    serial_create(vm, 0x3f8, 4) || acpi_pm_create(vm, 0x600, 0x601, 0x602, 1, 5) ||
	    vm_create_vcpus(vm, 1) || ioctl(vm->vcpus[0].fd, KVM_GET_SREGS, &sregs) < 0)
		return -1;
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	if (ioctl(vm->vcpus[0].fd, KVM_SET_SREGS, &sregs) < 0 || ioctl(vm->vcpus[0].fd, KVM_SET_REGS, &regs) < 0)
		return -1;
	vm->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vm->stop_efd < 0 || event_loop_add(&vm->loop, vm->stop_efd, EPOLLIN, on_stop, vm))
		return -1;
	return 0;
}

Test(sandbox, every_filter_builds)
{
	for (int k = 0; k < THREAD_KIND_COUNT; k++) {
		static const enum seccomp_mode modes[] = { SECCOMP_KILL, SECCOMP_LOG, SECCOMP_OFF };
		for (unsigned int m = 0; m < 3; m++) {
			scmp_filter_ctx ctx = (scmp_filter_ctx)1;
			int r = sandbox_filter_build((enum thread_kind)k, modes[m], &ctx);

			cr_assert_eq(r, 0, "kind %d mode %d: %s", k, modes[m], strerror(-r));
			if (modes[m] == SECCOMP_OFF)
				cr_assert_null(ctx);
			else
				cr_assert_not_null(ctx);
			seccomp_release(ctx);
		}
		cr_assert_str_neq(sandbox_thread_kind_name((enum thread_kind)k), "unknown");
	}
	cr_assert_str_eq(sandbox_thread_kind_name(THREAD_VCPU), "vcpu");
}

/* README.md's sandbox table gives these numbers: change both together. */
Test(sandbox, allowed_syscall_counts_match_the_readme)
{
	cr_assert_eq(sandbox_allowed_syscalls(THREAD_MAIN), 23);
	cr_assert_eq(sandbox_allowed_syscalls(THREAD_VCPU), 15);
	cr_assert_eq(sandbox_allowed_syscalls(THREAD_DEVICE), 26);
	cr_assert_eq(sandbox_allowed_syscalls(THREAD_VHOST), 17);
	cr_assert_eq(sandbox_allowed_syscalls(THREAD_KIND_COUNT), 0);
}

struct vcpu_job {
	struct vm *vm;
	int apply_rc;
};

static void *sandboxed_vcpu(void *arg)
{
	struct vcpu_job *j = arg;

	j->apply_rc = sandbox_apply(THREAD_VCPU, SECCOMP_KILL, &j->vm->log);
	if (j->apply_rc == 0)
		vcpu_run_loop(&j->vm->vcpus[0]);
	return NULL; /* thread exit runs under the filter too */
}

Test(sandbox, guest_runs_to_completion_on_a_sandboxed_vcpu_thread)
{
	struct vm vm;
	struct vcpu_job job = { .vm = &vm };
	pthread_t t;
	int p[2];
	char buf[16] = "";

	cr_assert_eq(pipe(p), 0);
	cr_assert_eq(setup_guest(&vm, SECCOMP_OFF, p[1]), 0, "cannot build the test guest");
	cr_assert_eq(pthread_create(&t, NULL, sandboxed_vcpu, &job), 0);
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert_eq(job.apply_rc, 0, "sandbox_apply: %s", strerror(-job.apply_rc));
	cr_assert_eq(vm_stop_reason(&vm), VM_STOP_POWEROFF, "stopped with %s", vm.stop_msg);
	close(p[1]);
	cr_assert_eq(read(p[0], buf, sizeof(buf) - 1), 3);
	cr_assert_str_eq(buf, "ok\n");
	close(p[0]);
	vm_destroy(&vm);
}

/* Fork; the child runs fn with stderr on a pipe. Returns the wait status and the child's stderr. */
static int in_child(void (*fn)(void), char *out, size_t outlen)
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
		fn();
		_exit(0);
	}
	close(p[1]);
	while (n + 1 < outlen && (r = read(p[0], out + n, outlen - 1 - n)) > 0)
		n += (size_t)r;
	out[n] = '\0';
	close(p[0]);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	return status;
}

/* The whole of main()'s path: vm_run() applies both filters (vCPU thread, then main), runs, shuts down. */
static void child_full_vm_run(void)
{
	struct vm vm;
	int p[2];
	char buf[16] = "";
	sigset_t mask;

	sigemptyset(&mask);
	sigaddset(&mask, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	if (pipe(p) || vcpu_signal_setup() || setup_guest(&vm, SECCOMP_KILL, p[1]))
		_exit(10);
	if (vm_run(&vm) != VM_STOP_POWEROFF)
		_exit(11);
	vm_destroy(&vm);
	if (read(p[0], buf, sizeof(buf) - 1) != 3 || strcmp(buf, "ok\n"))
		_exit(12);
	_exit(0);
}

Test(sandbox, vm_run_under_the_main_and_vcpu_filters)
{
	char msg[512];
	int st = in_child(child_full_vm_run, msg, sizeof(msg));

	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status 0x%x, stderr: %s", st, msg);
}

static void *forbidden(void *arg)
{
	long nr = (long)(intptr_t)arg;

	if (sandbox_apply(THREAD_VCPU, SECCOMP_KILL, NULL))
		_exit(20);
	switch (nr) {
	case __NR_execve:
		syscall(__NR_execve, "/bin/true", NULL, NULL);
		break;
	case __NR_socket:
		syscall(__NR_socket, AF_INET, SOCK_STREAM, 0);
		break;
	case __NR_ptrace:
		syscall(__NR_ptrace, 0 /* PTRACE_TRACEME */, 0, 0, 0);
		break;
	case __NR_memfd_create:
		syscall(__NR_memfd_create, "x", 0);
		break;
	case __NR_ioctl:
		/* An ioctl request the vCPU thread does not need: the argument filter refuses it. */
		syscall(__NR_ioctl, 0, (unsigned long)KVM_CREATE_VM, 0);
		break;
	}
	_exit(21); /* still alive: the filter let it through */
}

#define FORBIDDEN_CHILD(nr)                                                                          \
	static void child_##nr(void)                                                                 \
	{                                                                                            \
		pthread_t t;                                                                         \
		if (pthread_create(&t, NULL, forbidden, (void *)(intptr_t)__NR_##nr) == 0)           \
			pthread_join(t, NULL);                                                       \
		_exit(22);                                                                           \
	}
FORBIDDEN_CHILD(execve)
FORBIDDEN_CHILD(socket)
FORBIDDEN_CHILD(ptrace)
FORBIDDEN_CHILD(ioctl)
FORBIDDEN_CHILD(memfd_create)

static void expect_killed_as(void (*child)(void), const char *kind, const char *name)
{
	char msg[512];
	char want[96];
	int st = in_child(child, msg, sizeof(msg));

	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1, "%s: expected exit status 1, got wait status 0x%x; stderr: %s",
		  name, st, msg);
	snprintf(want, sizeof(want), "moat: seccomp: thread %s made forbidden syscall", kind);
	cr_assert(strstr(msg, want), "%s: the message should name the thread kind %s: %s", name, kind, msg);
	snprintf(want, sizeof(want), "(%s)", name);
	cr_assert(strstr(msg, want), "%s: the message should name the syscall: %s", name, msg);
	cr_assert_eq(strchr(msg, '\n'), msg + strlen(msg) - 1, "expected exactly one line: %s", msg);
}

static void expect_killed(void (*child)(void), const char *name)
{
	expect_killed_as(child, "vcpu", name);
}

Test(sandbox, forbidden_execve_kills_with_a_message)
{
	expect_killed(child_execve, "execve");
}

Test(sandbox, forbidden_socket_kills_with_a_message)
{
	expect_killed(child_socket, "socket");
}

Test(sandbox, forbidden_ptrace_kills_with_a_message)
{
	expect_killed(child_ptrace, "ptrace");
}

Test(sandbox, forbidden_memfd_create_kills_with_a_message)
{
	expect_killed(child_memfd_create, "memfd_create");
}

Test(sandbox, unlisted_ioctl_request_kills_with_a_message)
{
	expect_killed(child_ioctl, "ioctl");
}

/* --seccomp log: the same forbidden syscall goes through (the kernel only logs it). */
static void *logged(void *arg)
{
	if (sandbox_apply(THREAD_VCPU, SECCOMP_LOG, NULL))
		_exit(20);
	if (syscall(__NR_socket, AF_INET, SOCK_STREAM, 0) < 0)
		_exit(23);
	_exit(0);
}

static void child_logged(void)
{
	pthread_t t;

	if (pthread_create(&t, NULL, logged, NULL) == 0)
		pthread_join(t, NULL);
	_exit(22);
}

Test(sandbox, log_mode_lets_forbidden_syscalls_through)
{
	char msg[512];
	int st = in_child(child_logged, msg, sizeof(msg));

	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "wait status 0x%x; stderr: %s", st, msg);
}

/* ------------------------------------------------------------------ sandbox_thread_start */

static void *open_a_socket(void *arg)
{
	syscall(__NR_socket, AF_INET, SOCK_STREAM, 0);
	_exit(21); /* still alive: the filter let it through */
}

/* The kind of the thread the helper started is the one the report names. */
#define HELPER_CHILD(kind, tk)                                                                       \
	static void child_helper_##kind(void)                                                        \
	{                                                                                            \
		pthread_t t;                                                                         \
		if (sandbox_thread_start(&t, tk, SECCOMP_KILL, "moat-test", open_a_socket, NULL))    \
			_exit(20);                                                                   \
		pthread_join(t, NULL);                                                               \
		_exit(22);                                                                           \
	}
HELPER_CHILD(vcpu, THREAD_VCPU)
HELPER_CHILD(device, THREAD_DEVICE)
HELPER_CHILD(main, THREAD_MAIN)

Test(sandbox, helper_thread_vcpu_socket_kills_naming_vcpu)
{
	expect_killed_as(child_helper_vcpu, "vcpu", "socket");
}

Test(sandbox, helper_thread_device_socket_kills_naming_device)
{
	expect_killed_as(child_helper_device, "device", "socket");
}

Test(sandbox, helper_thread_main_socket_kills_naming_main)
{
	expect_killed_as(child_helper_main, "main", "socket");
}

struct named_job {
	int fd; /* the thread blocks reading it until the test has looked at the thread */
};

static void *wait_on_pipe(void *arg)
{
	struct named_job *j = arg;
	char c;

	/* read is in the device allow-list: the thread stays alive under its filter. */
	if (read(j->fd, &c, 1) != 1)
		_exit(24);
	return NULL;
}

/* The thread is named before its filter goes on, and runs fn under it. Exit 0: all held. */
static void child_named_thread(void)
{
	struct named_job j;
	char name[16] = "", path[300], status[4096];
	struct dirent *de;
	DIR *dir;
	int p[2], fd;
	ssize_t n;
	pthread_t t;

	if (pipe(p))
		_exit(30);
	j.fd = p[0];
	if (sandbox_thread_start(&t, THREAD_DEVICE, SECCOMP_KILL, "moat-named", wait_on_pipe, &j))
		_exit(31);
	if (pthread_getname_np(t, name, sizeof(name)) || strcmp(name, "moat-named")) {
		fprintf(stderr, "thread name '%s'\n", name);
		_exit(32);
	}
	/* Seccomp: 2 (filter) on the new thread: find it by name among the tasks. */
	dir = opendir("/proc/self/task");
	while (dir && (de = readdir(dir))) {
		snprintf(path, sizeof(path), "/proc/self/task/%s/status", de->d_name);
		fd = open(path, O_RDONLY);
		if (fd < 0)
			continue;
		n = read(fd, status, sizeof(status) - 1);
		close(fd);
		if (n <= 0)
			continue;
		status[n] = '\0';
		if (!strstr(status, "Name:\tmoat-named\n"))
			continue;
		if (!strstr(status, "Seccomp:\t2\n")) {
			fprintf(stderr, "the new thread is not under a seccomp filter:\n%s", status);
			_exit(33);
		}
		if (write(p[1], "x", 1) != 1 || pthread_join(t, NULL))
			_exit(34);
		_exit(0);
	}
	fprintf(stderr, "the thread moat-named is not in /proc/self/task\n");
	_exit(35);
}

Test(sandbox, helper_names_the_thread_and_filters_it)
{
	char msg[512];
	int st = in_child(child_named_thread, msg, sizeof(msg));

	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "wait status 0x%x; stderr: %s", st, msg);
}

static void *must_not_run(void *arg)
{
	*(int *)arg = 1;
	return NULL;
}

/* A filter that cannot be built: an error back, and the function never ran. No filter is loaded. */
Test(sandbox, helper_reports_a_filter_it_cannot_load)
{
	int ran = 0;
	pthread_t t;
	int r = sandbox_thread_start(&t, THREAD_VCPU, (enum seccomp_mode)42, "moat-bad", must_not_run, &ran);

	cr_assert_eq(r, -EINVAL, "got %d (%s)", r, strerror(-r));
	cr_assert_eq(ran, 0, "fn ran although its thread could not be sandboxed");
}
