#include "vmm/devices.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "devices/net/tap.h"
#include "devices/virtio/blk.h"
#include "devices/virtio/net.h"
#include "devices/virtio/rng.h"
#include "devices/virtio/virtio_pci.h"
#include "vmm/vm.h"

/* A virtio-net device and the TAP behind it go together. */
struct net_pair {
	struct virtio_net *net;
	struct tap *tap;
	struct vm *vm;
};

static void net_pair_free(void *p)
{
	struct net_pair *np = p;
	char stats[256];

	if (np->net) {
		virtio_net_stats(np->net, stats, sizeof(stats));
		log_info(&np->vm->log, "virtio-net (%s): %s", np->tap ? tap_name(np->tap) : "?", stats);
	}
	virtio_net_free(np->net);
	tap_close(np->tap);
	free(np);
}

static int net_offload(void *ctx, unsigned int tun_flags)
{
	return tap_set_offload(ctx, tun_flags);
}

static int add_net(struct vm *vm, const struct net_config *cfg, char *err, size_t errlen)
{
	struct net_pair *np = calloc(1, sizeof(*np));
	int r;

	if (!np)
		return set_err(err, errlen, -ENOMEM, "out of memory adding virtio-net");
	np->vm = vm;
	r = tap_open(cfg, &np->tap, err, errlen);
	if (!r)
		r = virtio_net_new(tap_fd(np->tap), cfg, &vm->dma, net_offload, np->tap, &np->net, err, errlen);
	if (r) {
		net_pair_free(np);
		return r;
	}
	log_info(&vm->log, "virtio-net on TAP %s", tap_name(np->tap));
	return virtio_pci_add(vm, virtio_net_dev(np->net), net_pair_free, np, NULL, err, errlen);
}

struct blk_holder {
	struct virtio_blk *blk;
	struct vm *vm;
	const char *path;
};

static void blk_holder_free(void *p)
{
	struct blk_holder *h = p;
	char stats[256];

	virtio_blk_stats(h->blk, stats, sizeof(stats));
	log_info(&h->vm->log, "virtio-blk (%s): %s", h->path, stats);
	virtio_blk_free(h->blk);
	free(h);
}

static int add_disk(struct vm *vm, const struct blk_config *cfg, char *err, size_t errlen)
{
	struct blk_holder *h = calloc(1, sizeof(*h));
	int r;

	if (!h)
		return set_err(err, errlen, -ENOMEM, "out of memory adding virtio-blk");
	h->vm = vm;
	h->path = cfg->path;
	err[0] = '\0';
	r = virtio_blk_new(cfg, &vm->dma, &h->blk, err, errlen);
	if (r) {
		free(h);
		return r;
	}
	/* Success may come with a warning (an image size rounded down to whole sectors). */
	if (err[0]) {
		log_warn(&vm->log, "%s", err);
		err[0] = '\0';
	}
	return virtio_pci_add(vm, virtio_blk_dev(h->blk), blk_holder_free, h, NULL, err, errlen);
}

static void rng_free(void *p)
{
	virtio_rng_free(p);
}

static int add_rng(struct vm *vm, char *err, size_t errlen)
{
	struct virtio_rng *rng;
	int r = virtio_rng_new(&vm->dma, &rng, err, errlen);

	if (r)
		return r;
	return virtio_pci_add(vm, virtio_rng_dev(rng), rng_free, rng, NULL, err, errlen);
}

int vm_add_virtio_devices(struct vm *vm, char *err, size_t errlen)
{
	int r = 0;

	if ((vm->cfg.ndisks || vm->cfg.nnets || vm->cfg.rng) && !vm->pci)
		return set_err(err, errlen, -ENOTSUP, "this machine type has no PCI bus for virtio devices");
	for (unsigned int i = 0; i < vm->cfg.nnets && !r; i++)
		r = add_net(vm, &vm->cfg.nets[i], err, errlen);
	for (unsigned int i = 0; i < vm->cfg.ndisks && !r; i++)
		r = add_disk(vm, &vm->cfg.disks[i], err, errlen);
	if (!r && vm->cfg.rng)
		r = add_rng(vm, err, errlen);
	return r;
}
