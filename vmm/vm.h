/* The VM: everything hangs off struct vm. */
#ifndef MOAT_VM_H
#define MOAT_VM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "arch_vm.h" /* struct arch_vm, struct arch_vcpu: from arch/<arch>/ */
#include "vmm/bus.h"
#include "vmm/config.h"
#include "vmm/dma.h"
#include "vmm/event_loop.h"
#include "vmm/kvmstats.h"
#include "vmm/log.h"
#include "vmm/memory.h"
#include "vmm/msi.h"

struct kvm_run;
struct pci_bus;
struct serial;

struct vm_cleanup {
	void (*fn)(void *p);
	void *p;
	struct vm_cleanup *next;
};

/* A device's counters, printed at exit (--log-level info) and on SIGUSR2. */
struct vm_stats_source {
	const char *name;
	void (*fn)(void *p, char *buf, size_t len);
	void *p;
	struct vm_stats_source *next;
};

/* Something to start when the guest starts (device workers), after the sandbox drops capabilities. */
struct vm_start {
	int (*fn)(void *p);
	void *p;
	struct vm_start *next;
};

/* Why the guest stopped. */
enum vm_stop_reason {
	VM_RUNNING = 0,
	VM_STOP_POWEROFF,
	VM_STOP_REBOOT,
	VM_STOP_PANIC,
	VM_STOP_CRASH,   /* triple fault */
	VM_STOP_TIMEOUT,
	VM_STOP_SIGNAL,
	VM_STOP_ERROR,   /* moat or KVM failed while running */
};

struct vcpu {
	struct vm *vm;
	unsigned int id;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	bool started;
	uint64_t exits_io, exits_mmio, exits_other; /* written by the vCPU thread only */
	struct kvm_vcpu_stats kstats; /* KVM's own counters for this vCPU; read by the main thread */
	uint64_t exits_mark;          /* exits_* summed when kstats was marked (main thread) */
	struct arch_vcpu arch;
};

struct vm {
	struct vm_config cfg;
	int timeout_mark_fd;       /* main.c: a timerfd one second before --timeout, or -1 */
	struct log log;
	int kvm_fd;
	int vm_fd;
	long run_size;             /* KVM_GET_VCPU_MMAP_SIZE */
	struct guest_memory mem;
	struct bus pio;
	struct bus mmio;
	struct vcpu *vcpus;
	unsigned int nvcpus;
	struct event_loop loop;

	pthread_mutex_t stop_lock;
	enum vm_stop_reason stop_reason;
	int stop_signal;
	char stop_msg[256];
	int stop_efd;              /* eventfd: a vCPU or device asked the VM to stop */

	int console_out;           /* fd, -1: discard */
	int console_in;            /* fd, -1: none */
	struct serial *serial;
	struct vm_cleanup *cleanups; /* run in reverse order of registration by vm_destroy */
	struct vm_start *starts;     /* run in order of registration by vm_run, before the vCPUs */
	struct vm_stats_source *stats; /* in order of registration */
	struct pci_bus *pci;         /* the PCI root bus, NULL if the arch has none */
	struct vm_msi msi;           /* MSI sources routed into KVM */
	struct dma_as dma;           /* how devices reach guest memory (identity: IOVA == GPA) */
	bool msi_devid;              /* routes carry the requester id (KVM_MSI_VALID_DEVID) */
	/* Who sits behind the virtio-iommu, for the firmware tables (ACPI VIOT, device-tree iommu-map). */
	struct {
		bool present;
		uint16_t iommu_bdf;
		uint16_t endpoint_bdf[32];
		unsigned int nendpoints;
	} iommu_topo;
	struct arch_vm arch;
};

/* Build the VM described by cfg (opens /dev/kvm, allocates memory, loads the kernel); vm_init() first. */
int vm_create(struct vm *vm, const struct vm_config *cfg, char *err, size_t errlen)
	__attribute__((warn_unused_result));
/* Run until the guest stops; returns the stop reason. */
enum vm_stop_reason vm_run(struct vm *vm);
void vm_destroy(struct vm *vm);

/* Lower-level pieces, also used by the host-KVM tests. */
void vm_init(struct vm *vm); /* empty VM: fds -1, no memory */
int vm_open_kvm(struct vm *vm, char *err, size_t errlen) __attribute__((warn_unused_result));
int vm_map_memory(struct vm *vm) __attribute__((warn_unused_result));
int vm_create_vcpus(struct vm *vm, unsigned int n) __attribute__((warn_unused_result));
int vm_start_vcpus(struct vm *vm) __attribute__((warn_unused_result));
void vm_stop_vcpus(struct vm *vm);

/* First caller wins; thread-safe, callable from vCPU threads and devices. */
void vm_request_stop(struct vm *vm, enum vm_stop_reason reason, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
enum vm_stop_reason vm_stop_reason(struct vm *vm);

/* Free p with fn when the VM is destroyed (devices register their own state). */
int vm_add_cleanup(struct vm *vm, void (*fn)(void *p), void *p) __attribute__((warn_unused_result));

/* Call fn(p) when the guest starts, before the vCPUs run; a failure stops the VM. */
int vm_add_start(struct vm *vm, int (*fn)(void *p), void *p) __attribute__((warn_unused_result));
/* Register a device's counters (name and p must live as long as the VM). */
int vm_add_stats(struct vm *vm, const char *name, void (*fn)(void *p, char *buf, size_t len), void *p)
	__attribute__((warn_unused_result));
/* One line per registered source on fd: "moat: stats: NAME: ..." (safe while the guest runs). */
void vm_print_stats(struct vm *vm, int fd);

/* Run what vm_add_start() registered (vm_run() does it; tests without vCPUs call it themselves). */
int vm_start_devices(struct vm *vm) __attribute__((warn_unused_result));

/* Interrupt line for in-kernel irqchip (edge ISA lines: set 1 then 0). */
int vm_set_irq_line(struct vm *vm, unsigned int gsi, bool level);

/*
 * Open a guest input file given by a command-line flag (--kernel, --initrd) for the arch loaders: the fd
 * and *size (> 0), or -errno with err naming the file, the flag and the fix.
 */
int vm_open_input(const char *path, const char *flag, uint64_t *size, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Arch hooks: implemented once per arch/<arch>/. */
int arch_vm_init(struct vm *vm, char *err, size_t errlen);          /* irqchip, timers */
int arch_memory_layout(struct vm *vm, char *err, size_t errlen);    /* gm_add_region() calls */
int arch_add_devices(struct vm *vm, char *err, size_t errlen);      /* platform devices, PCI host */
int arch_load_guest(struct vm *vm, char *err, size_t errlen);       /* kernel, initrd, cmdline, tables */
int arch_vcpu_init(struct vm *vm, struct vcpu *vcpu, char *err, size_t errlen);
void arch_vm_destroy(struct vm *vm);
/*
 * What a guest reset (KVM_SYSTEM_EVENT_RESET) means: VM_STOP_REBOOT, or VM_STOP_PANIC on arches whose
 * guests report a panic through a reset of their own kind (*what then says which, for the user).
 */
enum vm_stop_reason arch_reset_reason(const struct kvm_run *run, const char **what);
/* Where a vCPU stopped, in a few words for a crash report ("rip=... cr3=..."); "" if unknown. */
void arch_vcpu_describe(struct vcpu *vcpu, char *buf, size_t len);

#endif
