#include "vmm/vm.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmm/devices.h"
#include "vmm/sandbox.h"
#include "vmm/vcpu.h"

int vm_open_kvm(struct vm *vm, char *err, size_t errlen)
{
	int version;

	vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm->kvm_fd < 0) {
		int e = errno;
		if (e == ENOENT)
			return set_err(err, errlen, -e,
				    "/dev/kvm does not exist: KVM is not available. Enable virtualization in the "
				    "firmware and load the module (modprobe kvm_intel or kvm_amd)");
		if (e == EACCES || e == EPERM)
			return set_err(err, errlen, -e,
				    "no permission to open /dev/kvm: add your user to the 'kvm' group "
				    "(sudo usermod -aG kvm $USER, then log in again) or run as root");
		return set_err(err, errlen, -e, "cannot open /dev/kvm: %s", strerror(e));
	}
	version = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);
	if (version < 0)
		return set_err(err, errlen, -errno,
			       "/dev/kvm does not answer KVM_GET_API_VERSION (%s): it is not a KVM device; check "
			       "that the kvm module created it (ls -l /dev/kvm shows char device 10,232)",
			       strerror(errno));
	if (version != KVM_API_VERSION)
		return set_err(err, errlen, -EINVAL, "/dev/kvm speaks KVM API %d, moat needs %d", version,
			    KVM_API_VERSION);
	if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_IMMEDIATE_EXIT) <= 0)
		return set_err(err, errlen, -ENOTSUP, "this kernel's KVM lacks KVM_CAP_IMMEDIATE_EXIT (Linux 4.11+ needed)");
	vm->run_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (vm->run_size <= 0)
		return set_err(err, errlen, -errno, "KVM_GET_VCPU_MMAP_SIZE failed: %s", strerror(errno));
	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0)
		return set_err(err, errlen, -errno, "cannot create a KVM VM: %s", strerror(errno));
	return 0;
}

int vm_map_memory(struct vm *vm)
{
	for (unsigned int i = 0; i < vm->mem.nregions; i++) {
		const struct gm_region *r = &vm->mem.regions[i];
		struct kvm_userspace_memory_region kr = {
			.slot = i,
			.guest_phys_addr = r->gpa,
			.memory_size = r->size,
			.userspace_addr = (uint64_t)(uintptr_t)r->host,
		};
		if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &kr) < 0)
			return -errno;
	}
	return 0;
}

int vm_create_vcpus(struct vm *vm, unsigned int n)
{
	vm->vcpus = calloc(n, sizeof(*vm->vcpus));
	if (!vm->vcpus)
		return -ENOMEM;
	for (unsigned int i = 0; i < n; i++) {
		struct vcpu *v = &vm->vcpus[i];
		void *run;

		v->vm = vm;
		v->id = i;
		v->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)i);
		if (v->fd < 0)
			return -errno;
		kvm_stats_open(&v->kstats, v->fd);
		vm->nvcpus = i + 1;
		run = mmap(NULL, (size_t)vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
		if (run == MAP_FAILED)
			return -errno;
		v->run = run;
	}
	return 0;
}

int vm_start_vcpus(struct vm *vm)
{
	int r;

	for (unsigned int i = 0; i < vm->nvcpus; i++) {
		r = vcpu_start(&vm->vcpus[i]);
		if (r)
			return r;
	}
	/*
	 * The main thread's allow-list goes on once the last vCPU thread is cloned, not earlier: a
	 * filter is inherited by threads cloned later and stacks with theirs, so the vCPU threads would
	 * need the main thread's syscalls allowed as well. Until then the main thread handles no guest
	 * input: it is here, not in the event loop.
	 */
	r = sandbox_apply(THREAD_MAIN, vm->cfg.seccomp, NULL);
	if (r)
		vm_request_stop(vm, VM_STOP_ERROR,
				"cannot apply the seccomp sandbox to the main thread: %s; rerun with --seccomp off to "
				"debug (this runs the guest unsandboxed)",
				strerror(-r));
	return r;
}

void vm_stop_vcpus(struct vm *vm)
{
	for (unsigned int i = 0; i < vm->nvcpus; i++)
		vcpu_kick(&vm->vcpus[i]);
	for (unsigned int i = 0; i < vm->nvcpus; i++)
		vcpu_join(&vm->vcpus[i]);
}

void vm_request_stop(struct vm *vm, enum vm_stop_reason reason, const char *fmt, ...)
{
	uint64_t one = 1;
	va_list ap;

	pthread_mutex_lock(&vm->stop_lock);
	if (vm->stop_reason == VM_RUNNING) {
		vm->stop_reason = reason;
		va_start(ap, fmt);
		vsnprintf(vm->stop_msg, sizeof(vm->stop_msg), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&vm->stop_lock);
	if (vm->stop_efd >= 0 && write(vm->stop_efd, &one, sizeof(one)) < 0)
		return;
}

enum vm_stop_reason vm_stop_reason(struct vm *vm)
{
	enum vm_stop_reason r;

	pthread_mutex_lock(&vm->stop_lock);
	r = vm->stop_reason;
	pthread_mutex_unlock(&vm->stop_lock);
	return r;
}

int vm_set_irq_line(struct vm *vm, unsigned int gsi, bool level)
{
	struct kvm_irq_level irq = { .irq = gsi, .level = level };

	return ioctl(vm->vm_fd, KVM_IRQ_LINE, &irq) < 0 ? -errno : 0;
}

void vm_init(struct vm *vm)
{
	memset(vm, 0, sizeof(*vm));
	vm->kvm_fd = -1;
	vm->timeout_mark_fd = -1;
	vm->vm_fd = -1;
	vm->stop_efd = -1;
	vm->console_in = -1;
	vm->console_out = -1;
	vm->loop.epfd = -1;
	gm_init(&vm->mem);
	bus_init(&vm->pio);
	bus_init(&vm->mmio);
	pthread_mutex_init(&vm->stop_lock, NULL);
	vm_msi_init(&vm->msi, arch_msi_first_gsi());
}

int vm_add_start(struct vm *vm, int (*fn)(void *p), void *p)
{
	struct vm_start *s = malloc(sizeof(*s)), **tail = &vm->starts;

	if (!s)
		return -ENOMEM;
	s->fn = fn;
	s->p = p;
	s->next = NULL;
	while (*tail)
		tail = &(*tail)->next;
	*tail = s;
	return 0;
}

int vm_add_cleanup(struct vm *vm, void (*fn)(void *p), void *p)
{
	struct vm_cleanup *c = malloc(sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->fn = fn;
	c->p = p;
	c->next = vm->cleanups;
	vm->cleanups = c;
	return 0;
}

static void on_stop_event(void *ctx, uint32_t events)
{
	struct vm *vm = ctx;
	uint64_t v;

	if (read(vm->stop_efd, &v, sizeof(v)) < 0)
		return;
}

int vm_create(struct vm *vm, const struct vm_config *cfg, char *err, size_t errlen)
{
	int r;

	/* The caller ran vm_init() and may have set the console fds. */
	vm->cfg = *cfg;
	{
		/* Keep the caller's start time (main() takes it first thing) for start-up figures. */
		uint64_t start = vm->log.start_ns;
		log_init(&vm->log, cfg->log_level, 2);
		if (start)
			vm->log.start_ns = start;
	}

	r = event_loop_init(&vm->loop);
	if (r)
		return set_err(err, errlen, r, "epoll_create1 failed: %s", strerror(-r));
	vm->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vm->stop_efd < 0)
		return set_err(err, errlen, -errno, "eventfd failed: %s", strerror(errno));
	r = event_loop_add(&vm->loop, vm->stop_efd, EPOLLIN, on_stop_event, vm);
	if (r)
		return set_err(err, errlen, r, "epoll_ctl failed: %s", strerror(-r));

	r = vm_open_kvm(vm, err, errlen);
	if (r)
		return r;
	r = arch_memory_layout(vm, err, errlen);
	if (r)
		return r;
	r = gm_alloc(&vm->mem);
	if (r)
		return set_err(err, errlen, r,
			    "cannot allocate %llu MiB of guest memory: %s; choose a smaller --memory",
			    (unsigned long long)(cfg->mem_size >> 20), strerror(-r));
	r = vm_map_memory(vm);
	if (r)
		return set_err(err, errlen, r, "KVM_SET_USER_MEMORY_REGION failed: %s; choose a smaller --memory",
			    strerror(-r));
	log_debug(&vm->log, "VM created, %llu MiB of guest RAM mapped", (unsigned long long)(cfg->mem_size >> 20));
	r = arch_vm_init(vm, err, errlen);
	if (r)
		return r;
	dma_as_init_identity(&vm->dma, &vm->mem);
	r = arch_add_devices(vm, err, errlen);
	if (r)
		return r;
	r = vm_add_virtio_devices(vm, err, errlen);
	if (r)
		return r;
	log_debug(&vm->log, "devices added");
	r = arch_load_guest(vm, err, errlen);
	if (r)
		return r;
	r = vm_create_vcpus(vm, cfg->cpus);
	if (r)
		return set_err(err, errlen, r, "cannot create vCPU %u: %s", vm->nvcpus, strerror(-r));
	for (unsigned int i = 0; i < vm->nvcpus; i++) {
		r = arch_vcpu_init(vm, &vm->vcpus[i], err, errlen);
		if (r)
			return r;
	}
	return 0;
}

int vm_add_stats(struct vm *vm, const char *name, void (*fn)(void *p, char *buf, size_t len), void *p)
{
	struct vm_stats_source *s = malloc(sizeof(*s)), **tail = &vm->stats;

	if (!s)
		return -ENOMEM;
	*s = (struct vm_stats_source){ .name = name, .fn = fn, .p = p };
	while (*tail)
		tail = &(*tail)->next;
	*tail = s;
	return 0;
}

void vm_print_stats(struct vm *vm, int fd)
{
	char line[2048];

	for (struct vm_stats_source *s = vm->stats; s; s = s->next) {
		int n = snprintf(line, sizeof(line), "moat: stats: %s: ", s->name);

		if (n < 0 || (size_t)n >= sizeof(line))
			continue;
		s->fn(s->p, line + n, sizeof(line) - (size_t)n - 1);
		n = (int)strlen(line);
		line[n++] = '\n';
		if (write(fd, line, (size_t)n) < 0)
			return;
	}
}

int vm_start_devices(struct vm *vm)
{
	int r = 0;

	for (struct vm_start *s = vm->starts; s && !r; s = s->next)
		r = s->fn(s->p);
	return r;
}

enum vm_stop_reason vm_run(struct vm *vm)
{
	/* Device workers first: they must exist before the main thread's filter goes on (see sandbox.h). */
	int r = vm_start_devices(vm);

	if (r)
		vm_request_stop(vm, VM_STOP_ERROR, "cannot start device threads: %s", strerror(-r));
	else if ((r = vm_start_vcpus(vm)))
		vm_request_stop(vm, VM_STOP_ERROR, "cannot start vCPU threads: %s", strerror(-r));
	while (vm_stop_reason(vm) == VM_RUNNING) {
		r = event_loop_poll(&vm->loop, -1);
		if (r < 0)
			vm_request_stop(vm, VM_STOP_ERROR, "event loop failed: %s", strerror(-r));
	}
	vm_stop_vcpus(vm);
	if (vm->log.level >= LOG_INFO)
		vm_print_stats(vm, vm->log.fd);
	for (unsigned int i = 0; i < vm->nvcpus; i++)
		log_info(&vm->log, "vCPU %u: %llu port-I/O exits, %llu MMIO exits, %llu other exits", i,
			 (unsigned long long)vm->vcpus[i].exits_io, (unsigned long long)vm->vcpus[i].exits_mmio,
			 (unsigned long long)vm->vcpus[i].exits_other);
	return vm_stop_reason(vm);
}

void vm_destroy(struct vm *vm)
{
	vm_stop_vcpus(vm);
	arch_vm_destroy(vm);
	while (vm->cleanups) {
		struct vm_cleanup *c = vm->cleanups;
		vm->cleanups = c->next;
		c->fn(c->p);
		free(c);
	}
	while (vm->stats) {
		struct vm_stats_source *s = vm->stats;
		vm->stats = s->next;
		free(s);
	}
	while (vm->starts) {
		struct vm_start *s = vm->starts;
		vm->starts = s->next;
		free(s);
	}
	for (unsigned int i = 0; i < vm->nvcpus; i++) {
		if (vm->vcpus[i].run)
			munmap(vm->vcpus[i].run, (size_t)vm->run_size);
		if (vm->vcpus[i].fd >= 0)
			close(vm->vcpus[i].fd);
		kvm_stats_close(&vm->vcpus[i].kstats);
	}
	free(vm->vcpus);
	vm->vcpus = NULL;
	vm->nvcpus = 0;
	event_loop_free(&vm->loop);
	vm_msi_fini(&vm->msi);
	if (vm->stop_efd >= 0)
		close(vm->stop_efd);
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	gm_free(&vm->mem);
	bus_free(&vm->pio);
	bus_free(&vm->mmio);
	vm->vm_fd = vm->kvm_fd = vm->stop_efd = -1;
}

int vm_open_input(const char *path, const char *flag, uint64_t *size, char *err, size_t errlen)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return set_err(err, errlen, -errno, "cannot open %s '%s': %s; check the %s path", flag + 2, path,
			    strerror(errno), flag);
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size == 0) {
		close(fd);
		return set_err(err, errlen, -EINVAL, "%s '%s' is not a non-empty regular file; give the path of a file",
			    flag, path);
	}
	*size = (uint64_t)st.st_size;
	return fd;
}
