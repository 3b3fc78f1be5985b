/* moat: boot a Linux guest on KVM. Only main() decides to exit. */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <termios.h>
#include <unistd.h>

#include "vmm/cli.h"
#include "vmm/jail.h"
#include "vmm/sandbox.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"

#ifndef MOAT_VERSION
#define MOAT_VERSION "0.1.0"
#endif

struct console_tty {
	int fd;
	int saved;
	struct termios orig;
};

/* Keep Ctrl-C working (ISIG) but stop the host terminal echoing and line-buffering: the guest echoes. */
static void tty_setup(struct console_tty *t, int fd)
{
	struct termios raw;

	t->fd = fd;
	t->saved = 0;
	if (!isatty(fd) || tcgetattr(fd, &t->orig) < 0)
		return;
	raw = t->orig;
	raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO | ECHONL | IEXTEN);
	raw.c_iflag &= ~(tcflag_t)(ICRNL | IXON);
	raw.c_cc[VMIN] = 1;
	raw.c_cc[VTIME] = 0;
	if (tcsetattr(fd, TCSANOW, &raw) == 0)
		t->saved = 1;
}

static void tty_restore(struct console_tty *t)
{
	if (t->saved)
		tcsetattr(t->fd, TCSANOW, &t->orig);
}

static uint64_t moat_exits(const struct vcpu *v)
{
	return __atomic_load_n(&v->exits_io, __ATOMIC_RELAXED) + __atomic_load_n(&v->exits_mmio, __ATOMIC_RELAXED) +
	       __atomic_load_n(&v->exits_other, __ATOMIC_RELAXED);
}

/* One second before the --timeout: sample each vCPU's KVM counters, for the report of what it did last. */
static void on_timeout_mark(void *ctx, uint32_t events)
{
	struct vm *vm = ctx;
	uint64_t n;

	if (read(vm->timeout_mark_fd, &n, sizeof(n)) < 0) {
		/* EAGAIN: nothing to clear */
	}
	for (unsigned int i = 0; i < vm->nvcpus; i++) {
		kvm_stats_mark(&vm->vcpus[i].kstats);
		vm->vcpus[i].exits_mark = moat_exits(&vm->vcpus[i]);
	}
}

static void on_timeout(void *ctx, uint32_t events)
{
	struct vm *vm = ctx;

	/* While the vCPUs still run: what each did in the last second (KVM's counters, and exits to moat). */
	for (unsigned int i = 0; i < vm->nvcpus; i++) {
		struct vcpu *v = &vm->vcpus[i];
		char what[512];

		kvm_stats_since(&v->kstats, what, sizeof(what));
		if (what[0])
			log_warn(&vm->log, "vCPU %u in the last second before the --timeout: KVM counted %s; %llu exits reached moat",
				 v->id, what, (unsigned long long)(moat_exits(v) - v->exits_mark));
	}
	vm_request_stop(vm, VM_STOP_TIMEOUT, "--timeout of %u s expired", vm->cfg.timeout_s);
}

struct sigctx {
	struct vm *vm;
	int fd;
};

static void on_signal(void *ctx, uint32_t events)
{
	struct sigctx *s = ctx;
	struct signalfd_siginfo si;

	if (read(s->fd, &si, sizeof(si)) != sizeof(si))
		return;
	if (si.ssi_signo == SIGUSR2) {
		vm_print_stats(s->vm, STDERR_FILENO);
		return;
	}
	pthread_mutex_lock(&s->vm->stop_lock);
	if (s->vm->stop_reason == VM_RUNNING)
		s->vm->stop_signal = (int)si.ssi_signo;
	pthread_mutex_unlock(&s->vm->stop_lock);
	vm_request_stop(s->vm, VM_STOP_SIGNAL, "stopped by signal %s", strsignal((int)si.ssi_signo));
}

static int open_console(struct vm *vm, const struct vm_config *cfg, char *err, size_t errlen)
{
	switch (cfg->console) {
	case CONSOLE_STDIO:
		vm->console_out = STDOUT_FILENO;
		vm->console_in = STDIN_FILENO;
		return 0;
	case CONSOLE_FILE:
		vm->console_out = open(cfg->console_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (vm->console_out < 0) {
			snprintf(err, errlen, "cannot open console file '%s': %s; check --console file:PATH",
				 cfg->console_path, strerror(errno));
			return -errno;
		}
		return 0;
	case CONSOLE_NONE:
		return 0;
	}
	return -EINVAL;
}

/* --vcpu-affinity / --device-affinity: checked against the CPUs moat may use, then handed to the sandbox. */
static int set_affinity(const struct vm_config *cfg, char *err, size_t errlen)
{
	const struct {
		const char *arg, *opt;
		const cpu_set_t *cpus;
		enum thread_kind kinds[2];
	} sets[] = {
		{ cfg->vcpu_cpus_arg, "--vcpu-affinity", &cfg->vcpu_cpus, { THREAD_VCPU, THREAD_VCPU } },
		{ cfg->device_cpus_arg, "--device-affinity", &cfg->device_cpus, { THREAD_DEVICE, THREAD_VHOST } },
	};
	cpu_set_t allowed, both;

	if (!cfg->vcpu_cpus_arg && !cfg->device_cpus_arg)
		return 0;
	if (sched_getaffinity(0, sizeof(allowed), &allowed) < 0) {
		snprintf(err, errlen, "cannot read the CPUs moat may run on (sched_getaffinity): %s", strerror(errno));
		return -1;
	}
	for (unsigned int i = 0; i < 2; i++) {
		if (!sets[i].arg)
			continue;
		CPU_AND(&both, sets[i].cpus, &allowed);
		if (!CPU_COUNT(&both)) {
			snprintf(err, errlen,
				 "%s %s names no CPU moat may run on (%d online here, this process limited to %d of "
				 "them); pick from those (see taskset -p $$ or /sys/devices/system/cpu/online)",
				 sets[i].opt, sets[i].arg, (int)sysconf(_SC_NPROCESSORS_ONLN), CPU_COUNT(&allowed));
			return -1;
		}
		sandbox_set_affinity(sets[i].kinds[0], sets[i].cpus);
		sandbox_set_affinity(sets[i].kinds[1], sets[i].cpus);
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct vm_config cfg;
	enum cli_action action;
	char err[512] = "";
	struct vm vm;
	struct console_tty tty = { .fd = -1 };
	struct sigctx sig = { .vm = &vm, .fd = -1 };
	int timer_fd = -1;
	sigset_t mask;
	enum vm_stop_reason why;
	int status;
	uint64_t start_ns = log_now_ns();
	bool landlocked;

	if (cli_parse(argc, argv, &cfg, &action, err, sizeof(err))) {
		fprintf(stderr, "moat: %s\n", err);
		return MOAT_EXIT_ERROR;
	}
	if (action == CLI_HELP) {
		fputs(cli_usage(), stdout);
		return 0;
	}
	if (action == CLI_VERSION) {
		printf("moat %s\n", MOAT_VERSION);
		return 0;
	}

	/* Signals are taken by the event loop (signalfd); vCPU threads unblock only the kick signal. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGUSR1);
	sigaddset(&mask, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (vcpu_signal_setup()) {
		fprintf(stderr, "moat: cannot install the vCPU signal handler: %s\n", strerror(errno));
		return MOAT_EXIT_ERROR;
	}

	/* Resolved now: the password database is out of reach once jailed. Without an explicit group,
	 * the user's primary group, else the group of the same number. */
	if (cfg.switch_user && !cfg.gid_given) {
		struct passwd *pw = getpwuid(cfg.uid);

		cfg.gid = pw ? pw->pw_gid : (gid_t)cfg.uid;
	}
	/* Thread placement: a set with none of the CPUs this process may run on is refused now, by name. */
	if (set_affinity(&cfg, err, sizeof(err))) {
		fprintf(stderr, "moat: %s\n", err);
		return MOAT_EXIT_ERROR;
	}
	/* A bad --jail is found before the guest is built, not after. */
	if (cfg.jail && jail_check(cfg.jail, err, sizeof(err))) {
		fprintf(stderr, "moat: %s\n", err);
		return MOAT_EXIT_ERROR;
	}

	vm_init(&vm);
	vm.log.start_ns = start_ns;
	if (open_console(&vm, &cfg, err, sizeof(err)) || vm_create(&vm, &cfg, err, sizeof(err))) {
		fprintf(stderr, "moat: %s\n", err);
		vm_destroy(&vm);
		return MOAT_EXIT_ERROR;
	}

	sigdelset(&mask, SIGUSR1);
	sig.fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sig.fd < 0 || event_loop_add(&vm.loop, sig.fd, EPOLLIN, on_signal, &sig)) {
		fprintf(stderr, "moat: cannot set up signal handling: %s\n", strerror(errno));
		vm_destroy(&vm);
		return MOAT_EXIT_ERROR;
	}
	if (cfg.timeout_s) {
		struct itimerspec its = { .it_value = { .tv_sec = cfg.timeout_s } };
		timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
		if (timer_fd < 0 || timerfd_settime(timer_fd, 0, &its, NULL) < 0 ||
		    event_loop_add(&vm.loop, timer_fd, EPOLLIN, on_timeout, &vm)) {
			fprintf(stderr, "moat: cannot set up --timeout: %s\n", strerror(errno));
			vm_destroy(&vm);
			return MOAT_EXIT_ERROR;
		}
		/* Best effort: without it the report only lacks the vCPUs' last second. */
		if (cfg.timeout_s >= 2) {
			struct itimerspec mark = { .it_value = { .tv_sec = cfg.timeout_s - 1 } };

			vm.timeout_mark_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
			if (vm.timeout_mark_fd >= 0 &&
			    (timerfd_settime(vm.timeout_mark_fd, 0, &mark, NULL) < 0 ||
			     event_loop_add(&vm.loop, vm.timeout_mark_fd, EPOLLIN, on_timeout_mark, &vm))) {
				close(vm.timeout_mark_fd);
				vm.timeout_mark_fd = -1;
			}
		}
	}
	if (cfg.console == CONSOLE_STDIO)
		tty_setup(&tty, STDIN_FILENO);

	/*
	 * --- sandbox: every fd is open (console, KVM, memfd, epoll, eventfd, signalfd, timerfd, disks, TAP),
	 * no other thread exists yet. In this order: the jail (needs CAP_SYS_ADMIN and a single thread),
	 * then every capability dropped (so the vCPU and device threads start without any), then Landlock
	 * (after libcap-ng's last look at /proc). The seccomp filters go on per thread: each thread loads
	 * its own as it starts (sandbox_thread_start), the main thread once the last vCPU thread exists.
	 */
	if (cfg.jail && jail_enter(cfg.jail, &vm.log, err, sizeof(err))) {
		fprintf(stderr, "moat: %s\n", err);
		tty_restore(&tty);
		vm_destroy(&vm);
		return MOAT_EXIT_ERROR;
	}
	if (cfg.switch_user) {
		if (sandbox_switch_user(cfg.uid, cfg.gid, &vm.log)) {
			tty_restore(&tty);
			vm_destroy(&vm);
			return MOAT_EXIT_ERROR;
		}
		log_info(&vm.log, "running as user %u, group %u", (unsigned int)cfg.uid, (unsigned int)cfg.gid);
	}
	if (cfg.seccomp == SECCOMP_OFF) {
		fprintf(stderr, "moat: WARNING: --seccomp off: running WITHOUT the sandbox (no syscall filter, "
				"capabilities kept, no Landlock); a guest that compromises moat gets everything moat "
				"can do\n");
	} else if (sandbox_drop_caps(&vm.log) || jail_landlock(&landlocked, &vm.log, err, sizeof(err))) {
		if (err[0])
			fprintf(stderr, "moat: %s\n", err);
		tty_restore(&tty);
		vm_destroy(&vm);
		return MOAT_EXIT_ERROR;
	}
	/* --- end sandbox --- */

	why = vm_run(&vm);
	tty_restore(&tty);

	switch (why) {
	case VM_STOP_POWEROFF:
		log_info(&vm.log, "%s", vm.stop_msg);
		status = MOAT_EXIT_OK;
		break;
	case VM_STOP_REBOOT:
		fprintf(stderr, "moat: %s; moat does not restart guests, exiting with status 0\n", vm.stop_msg);
		status = MOAT_EXIT_OK;
		break;
	case VM_STOP_PANIC:
	case VM_STOP_CRASH:
		fprintf(stderr, "moat: %s (exit status %d)\n", vm.stop_msg, MOAT_EXIT_PANIC);
		status = MOAT_EXIT_PANIC;
		break;
	case VM_STOP_TIMEOUT:
		fprintf(stderr, "moat: %s; guest stopped (exit status %d)\n", vm.stop_msg, MOAT_EXIT_TIMEOUT);
		status = MOAT_EXIT_TIMEOUT;
		break;
	case VM_STOP_SIGNAL:
		fprintf(stderr, "moat: %s\n", vm.stop_msg);
		status = 128 + vm.stop_signal;
		break;
	default:
		fprintf(stderr, "moat: %s\n", vm.stop_msg[0] ? vm.stop_msg : "the VM stopped for an unknown reason");
		status = MOAT_EXIT_ERROR;
	}
	vm_destroy(&vm);
	if (timer_fd >= 0)
		close(timer_fd);
	if (vm.timeout_mark_fd >= 0)
		close(vm.timeout_mark_fd);
	if (sig.fd >= 0)
		close(sig.fd);
	if (cfg.console == CONSOLE_FILE && vm.console_out >= 0)
		close(vm.console_out);
	return status;
}
