/*
 * Message-signalled interrupts into KVM: each MSI source gets a GSI with an irqfd, and its route
 * (address/data) is set in KVM's GSI routing table when the guest programs it. Writing the irqfd
 * is then the whole cost of an interrupt, from any thread, with no ioctl.
 *
 * KVM_SET_GSI_ROUTING replaces the whole table, so the arch's default routes (the irqchip pins)
 * are kept in it (arch_msi_default_routes()).
 */
#ifndef MOAT_MSI_H
#define MOAT_MSI_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct vm;
struct kvm_irq_routing_entry;

#define VM_MSI_MAX 256u

struct vm_msi_route {
	unsigned int gsi;
	int irqfd;
	bool enabled;
	uint64_t addr;
	uint32_t data;
	uint32_t devid;      /* requester id, for arches whose MSI controller needs it */
	bool connected;      /* the irqfd is registered in KVM */
	bool external;       /* handed to a back end (vm_msi_irqfd): connected only while the route is enabled */
	bool irqfd_pending;  /* enabled, but KVM_IRQFD waits for the irqchip (vm_msi_connect_pending) */
};

struct vm_msi {
	pthread_mutex_t lock;
	struct vm_msi_route routes[VM_MSI_MAX];
	unsigned int n;
	unsigned int first_gsi; /* GSIs below are the irqchip's pins */
};

void vm_msi_init(struct vm_msi *m, unsigned int first_gsi);
/* Close every irqfd. */
void vm_msi_fini(struct vm_msi *m);

/*
 * A new MSI source with its irqfd registered in KVM; *id is for vm_msi_set/vm_msi_fire. -errno.
 * Where KVM takes irqfds only once the irqchip is initialised (arm64's vGIC, after the vCPUs exist), the
 * registration waits for vm_msi_connect_pending(), which the arch calls then.
 */
int vm_msi_alloc(struct vm *vm, uint32_t devid, unsigned int *id) __attribute__((warn_unused_result));
/* Route source id to (addr, data), or remove its route (!enable). Commits the table to KVM. -errno. */
int vm_msi_set(struct vm *vm, unsigned int id, uint64_t addr, uint32_t data, bool enable)
	__attribute__((warn_unused_result));
/* Send source id (its route must be set). -errno. */
int vm_msi_fire(struct vm *vm, unsigned int id);
/* Register the irqfds that had to wait for the irqchip. -errno. */
int vm_msi_connect_pending(struct vm *vm) __attribute__((warn_unused_result));
/*
 * The irqfd of source id, for a back end that signals KVM directly (vhost). From then on the irqfd is
 * registered only while the source has a route; a write while it has none (a masked vector) stays pending in
 * the eventfd and is delivered when the route comes back. -1 for a bad id.
 */
int vm_msi_irqfd(struct vm *vm, unsigned int id);

/* Arch hook: the irqchip's default routes into out[0..max); returns how many. */
unsigned int arch_msi_default_routes(struct kvm_irq_routing_entry *out, unsigned int max);
/* Arch hook: the first GSI free for MSIs. */
unsigned int arch_msi_first_gsi(void);
/* Arch hook: the guest-physical window MSI writes go to (an IOMMU must not remap it), inclusive. */
uint64_t arch_msi_window_start(void);
uint64_t arch_msi_window_end(void);

#endif
