#include "vmm/msi.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "vmm/vm.h"

#define DEFAULT_ROUTES_MAX 64u

void vm_msi_init(struct vm_msi *m, unsigned int first_gsi)
{
	memset(m, 0, sizeof(*m));
	pthread_mutex_init(&m->lock, NULL);
	m->first_gsi = first_gsi;
}

void vm_msi_fini(struct vm_msi *m)
{
	for (unsigned int i = 0; i < m->n; i++)
		if (m->routes[i].irqfd >= 0)
			close(m->routes[i].irqfd);
	m->n = 0;
	pthread_mutex_destroy(&m->lock);
}

/* The whole table: the arch's pins, then every enabled MSI. Lock held. */
static int commit(struct vm *vm)
{
	struct vm_msi *m = &vm->msi;
	size_t max = DEFAULT_ROUTES_MAX + m->n;
	struct kvm_irq_routing *t = calloc(1, sizeof(*t) + max * sizeof(t->entries[0]));
	unsigned int n;
	int r = 0;

	if (!t)
		return -ENOMEM;
	n = arch_msi_default_routes(t->entries, DEFAULT_ROUTES_MAX);
	for (unsigned int i = 0; i < m->n; i++) {
		const struct vm_msi_route *rt = &m->routes[i];
		struct kvm_irq_routing_entry *e = &t->entries[n];

		if (!rt->enabled)
			continue;
		e->gsi = rt->gsi;
		e->type = KVM_IRQ_ROUTING_MSI;
		e->u.msi.address_lo = (uint32_t)rt->addr;
		e->u.msi.address_hi = (uint32_t)(rt->addr >> 32);
		e->u.msi.data = rt->data;
		if (vm->msi_devid) {
			e->flags = KVM_MSI_VALID_DEVID;
			e->u.msi.devid = rt->devid;
		}
		n++;
	}
	t->nr = n;
	if (ioctl(vm->vm_fd, KVM_SET_GSI_ROUTING, t) < 0)
		r = -errno;
	free(t);
	return r;
}

/*
 * Connect rt's irqfd to its GSI. KVM looks at the eventfd when it connects and injects at once if it was
 * written while disconnected: that is how a masked vector's interrupt stays pending (see vm_msi_set).
 * EAGAIN: the irqchip is not initialised yet; vm_msi_connect_pending() connects it later. Lock held.
 */
static int irqfd_connect(struct vm *vm, struct vm_msi_route *rt)
{
	struct kvm_irqfd irqfd = { .fd = (uint32_t)rt->irqfd, .gsi = rt->gsi };

	if (rt->connected)
		return 0;
	if (ioctl(vm->vm_fd, KVM_IRQFD, &irqfd) < 0) {
		if (errno != EAGAIN)
			return -errno;
		rt->irqfd_pending = true;
		return 0;
	}
	rt->connected = true;
	rt->irqfd_pending = false;
	return 0;
}

/* Disconnect rt's irqfd: from now on writes only count up in the eventfd. Lock held. */
static int irqfd_disconnect(struct vm *vm, struct vm_msi_route *rt)
{
	struct kvm_irqfd irqfd = { .fd = (uint32_t)rt->irqfd, .gsi = rt->gsi, .flags = KVM_IRQFD_FLAG_DEASSIGN };

	rt->irqfd_pending = false;
	if (!rt->connected)
		return 0;
	if (ioctl(vm->vm_fd, KVM_IRQFD, &irqfd) < 0)
		return -errno;
	rt->connected = false;
	return 0;
}

int vm_msi_alloc(struct vm *vm, uint32_t devid, unsigned int *id)
{
	struct vm_msi *m = &vm->msi;
	struct vm_msi_route *rt;
	int fd, r = 0;

	pthread_mutex_lock(&m->lock);
	if (m->n >= VM_MSI_MAX) {
		r = -ENOSPC;
		goto out;
	}
	fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	rt = &m->routes[m->n];
	memset(rt, 0, sizeof(*rt));
	rt->gsi = m->first_gsi + m->n;
	rt->irqfd = fd;
	rt->devid = devid;
	/* moat's own devices never signal a masked vector (msix.c keeps it pending), so it stays connected. */
	r = irqfd_connect(vm, rt);
	if (r) {
		close(fd);
		goto out;
	}
	*id = m->n++;
out:
	pthread_mutex_unlock(&m->lock);
	return r;
}

int vm_msi_connect_pending(struct vm *vm)
{
	struct vm_msi *m = &vm->msi;
	int r = 0;

	pthread_mutex_lock(&m->lock);
	for (unsigned int i = 0; i < m->n && !r; i++) {
		struct vm_msi_route *rt = &m->routes[i];

		if (rt->irqfd_pending && (rt->enabled || !rt->external))
			r = irqfd_connect(vm, rt);
	}
	pthread_mutex_unlock(&m->lock);
	return r;
}

int vm_msi_set(struct vm *vm, unsigned int id, uint64_t addr, uint32_t data, bool enable)
{
	struct vm_msi *m = &vm->msi;
	struct vm_msi_route *rt;
	int r;

	pthread_mutex_lock(&m->lock);
	if (id >= m->n) {
		pthread_mutex_unlock(&m->lock);
		return -EINVAL;
	}
	rt = &m->routes[id];
	rt->enabled = enable;
	rt->addr = addr;
	rt->data = data;
	log_debug(&vm->log, "MSI source %u (GSI %u, requester 0x%x): %s addr 0x%llx data 0x%x", id, rt->gsi, rt->devid,
		  enable ? "routed" : "unrouted", (unsigned long long)addr, data);
	/*
	 * A back end that writes the irqfd itself (vhost, vm_msi_irqfd) does not know about masking. So its
	 * irqfd is connected only while the route exists: disconnected first when it goes (a write in between
	 * counts up in the eventfd instead of reaching a GSI with no route and vanishing), connected again after
	 * the new route is in, when KVM delivers what was written meanwhile. A masked vector's interrupt is so
	 * held pending, not dropped. moat's own devices keep theirs connected: msix.c holds their pending bit.
	 */
	if (!rt->external) {
		r = commit(vm);
	} else if (enable) {
		r = commit(vm);
		if (!r)
			r = irqfd_connect(vm, rt);
	} else {
		r = irqfd_disconnect(vm, rt);
		if (!r)
			r = commit(vm);
	}
	pthread_mutex_unlock(&m->lock);
	return r;
}

int vm_msi_fire(struct vm *vm, unsigned int id)
{
	uint64_t one = 1;

	/* Sources are only added while the VM is built, so reading the table needs no lock. */
	if (id >= vm->msi.n)
		return -EINVAL;
	return write(vm->msi.routes[id].irqfd, &one, sizeof(one)) == sizeof(one) ? 0 : -errno;
}

int vm_msi_irqfd(struct vm *vm, unsigned int id)
{
	struct vm_msi *m = &vm->msi;
	struct vm_msi_route *rt;
	int fd;

	pthread_mutex_lock(&m->lock);
	if (id >= m->n) {
		pthread_mutex_unlock(&m->lock);
		return -1;
	}
	rt = &m->routes[id];
	rt->external = true;
	/* From now on connected only while routed (vm_msi_set). */
	if (!rt->enabled && irqfd_disconnect(vm, rt))
		log_warn(&vm->log, "MSI source %u: cannot disconnect its irqfd; an interrupt while masked may be lost",
			 id);
	fd = rt->irqfd;
	pthread_mutex_unlock(&m->lock);
	return fd;
}
