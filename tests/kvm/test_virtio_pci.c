/*
 * The virtio-pci transport, device workers and device models driven through the PCI bus by a test
 * driver (tests/kvm/vpci_driver.c), with rings in real guest memory and real KVM irqfds/MSI routes.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "devices/pci/pci.h"
#include "tests/kvm/vpci_driver.h"
#include "vmm/vm.h"

TestSuite(virtio_pci, .timeout = 30);

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

Test(virtio_pci, rng_serves_a_request_through_the_transport)
{
	struct vm_config cfg = { .rng = true };
	struct vm vm;
	struct vpd d;
	uint64_t buf;
	uint32_t len = 64, id, used_len;
	bool w = true;

	vpd_vm_create(&vm, &cfg);
	vpd_find(&d, &vm, 4);
	cr_assert_eq(vpd_cfg_read(&d, PCI_REVISION_ID, 4) >> 8, 0x00ff00);
	vpd_msix_enable(&d);
	cr_assert(vpd_negotiate(&d, 0));
	cr_assert_eq(vpd_bar_read(&d, d.common + 0x12, 2), 1, "one queue");
	vpd_queue_setup(&d, 0, 8);
	vpd_driver_ok(&d);
	cr_assert_eq(vpd_status(&d), 0xf);

	buf = vpd_alloc(&d, len);
	vpd_submit(&d, 0, &buf, &len, &w, 1);
	cr_assert_eq(vpd_wait_used(&d, 0, 1, 5000), 1, "the worker served the kick");
	vpd_used_elem(&d, 0, 0, &id, &used_len);
	cr_assert_eq(id, 0);
	cr_assert_eq(used_len, 64);
	cr_assert_not(all_zero(vpd_host(&d, buf, len), len), "random bytes were written");
	vm_destroy(&vm);
}

Test(virtio_pci, blk_writes_and_reads_the_image)
{
	char path[] = "/tmp/moat-vpci-XXXXXX";
	int fd = mkstemp(path);
	struct vm_config cfg = { .ndisks = 1 };
	struct vm vm;
	struct vpd d;
	uint8_t data[512], back[512];

	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, 1 << 20), 0);
	strcpy(cfg.disks[0].path, path);
	vpd_vm_create(&vm, &cfg);
	/* moat has the image open now: no name left behind, even when an assertion below ends the test. */
	unlink(path);
	vpd_find(&d, &vm, 2);
	vpd_msix_enable(&d);
	cr_assert(vpd_negotiate(&d, 1ull << 9 /* FLUSH */));
	cr_assert_eq(vpd_bar_read(&d, d.devcfg, 8), (1u << 20) / 512, "capacity in sectors");
	vpd_queue_setup(&d, 0, 16);
	vpd_driver_ok(&d);

	for (unsigned int i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7 + 3);
	uint64_t hdr = vpd_alloc(&d, 16), buf = vpd_alloc(&d, 512), st = vpd_alloc(&d, 1);
	uint8_t h[16] = { 1 /* OUT */, 0, 0, 0, 0, 0, 0, 0, 8 /* sector 8 */ };
	memcpy(vpd_host(&d, hdr, 16), h, 16);
	memcpy(vpd_host(&d, buf, 512), data, 512);
	*(uint8_t *)vpd_host(&d, st, 1) = 0xff;
	uint64_t a[3] = { hdr, buf, st };
	uint32_t l[3] = { 16, 512, 1 };
	bool w[3] = { false, false, true };
	vpd_submit(&d, 0, a, l, w, 3);
	cr_assert_eq(vpd_wait_used(&d, 0, 1, 5000), 1);
	cr_assert_eq(*(uint8_t *)vpd_host(&d, st, 1), 0, "VIRTIO_BLK_S_OK");
	cr_assert_eq(pread(fd, back, 512, 8 * 512), 512);
	cr_assert_eq(memcmp(back, data, 512), 0, "the image holds what the driver wrote");

	/* And back in: IN into a fresh buffer. */
	h[0] = 0;
	memcpy(vpd_host(&d, hdr, 16), h, 16);
	memset(vpd_host(&d, buf, 512), 0, 512);
	w[1] = true;
	vpd_submit(&d, 0, a, l, w, 3);
	cr_assert_eq(vpd_wait_used(&d, 0, 2, 5000), 2);
	cr_assert_eq(memcmp(vpd_host(&d, buf, 512), data, 512), 0);
	vm_destroy(&vm);
	close(fd);
}

Test(virtio_pci, hostile_rings_need_reset_and_the_device_recovers)
{
	struct vm_config cfg = { .rng = true };
	struct vm vm;
	struct vpd d;
	uint64_t buf;
	uint32_t len = 32;
	bool w = true;

	vpd_vm_create(&vm, &cfg);
	vpd_find(&d, &vm, 4);
	vpd_msix_enable(&d);

	/* A descriptor table outside guest RAM: the queue is refused and the device wants a reset. */
	cr_assert(vpd_negotiate(&d, 0));
	vpd_bar_write(&d, d.common + 0x16, 0, 2);
	vpd_bar_write(&d, d.common + 0x20, 0x40000000ull, 8);
	vpd_bar_write(&d, d.common + 0x28, 0x2000, 8);
	vpd_bar_write(&d, d.common + 0x30, 0x3000, 8);
	vpd_bar_write(&d, d.common + 0x1c, 1, 2);
	cr_assert_eq(vpd_bar_read(&d, d.common + 0x1c, 2), 0, "queue not enabled");
	cr_assert(vpd_status(&d) & 0x40, "DEVICE_NEEDS_RESET");

	/* A buffer outside RAM: the worker marks NEEDS_RESET instead of touching it. */
	cr_assert(vpd_negotiate(&d, 0));
	cr_assert_eq(vpd_status(&d) & 0x40, 0, "reset cleared it");
	vpd_queue_setup(&d, 0, 8);
	vpd_driver_ok(&d);
	buf = 0x7ffff000ull;
	vpd_submit(&d, 0, &buf, &len, &w, 1);
	cr_assert(vpd_wait_status(&d, 0x40, 5000), "DEVICE_NEEDS_RESET after the bad buffer");

	/* After a reset the same device works again. */
	cr_assert(vpd_negotiate(&d, 0));
	memset(d.q, 0, sizeof(d.q));
	vpd_queue_setup(&d, 0, 8);
	vpd_driver_ok(&d);
	buf = vpd_alloc(&d, len);
	vpd_submit(&d, 0, &buf, &len, &w, 1);
	cr_assert_eq(vpd_wait_used(&d, 0, 1, 5000), 1);
	vm_destroy(&vm);
}

Test(virtio_pci, bar_moves_with_the_guest)
{
	struct vm_config cfg = { .rng = true };
	struct vm vm;
	struct vpd d;
	uint64_t old;

	vpd_vm_create(&vm, &cfg);
	vpd_find(&d, &vm, 4);
	old = d.bar;
	cr_assert_eq(vpd_bar_read(&d, d.common + 0x12, 2), 1);
	/* Size the BAR as a guest does, then place it 1 MiB higher. */
	vpd_cfg_write(&d, PCI_BAR0, 0xffffffffu, 4);
	cr_assert_eq(vpd_cfg_read(&d, PCI_BAR0, 4) & ~0xfu, ~(0x8000u - 1));
	vpd_cfg_write(&d, PCI_BAR0, (uint32_t)(old + 0x100000), 4);
	d.bar = old + 0x100000;
	cr_assert_eq(vpd_bar_read(&d, d.common + 0x12, 2), 1, "registers at the new address");
	d.bar = old;
	cr_assert_eq(vpd_bar_read(&d, d.common + 0x12, 2), 0xffff, "nothing at the old one");
	vm_destroy(&vm);
}

/* True if KVM already has an ioeventfd on this port (registering a second one there fails with EEXIST). */
static bool port_has_ioeventfd(struct vm *vm, uint32_t port)
{
	int fd = eventfd(0, EFD_CLOEXEC);
	struct kvm_ioeventfd ev = { .addr = port, .len = 2, .fd = fd, .flags = KVM_IOEVENTFD_FLAG_PIO };
	bool busy;

	cr_assert_geq(fd, 0);
	busy = ioctl(vm->vm_fd, KVM_IOEVENTFD, &ev) < 0;
	cr_assert(!busy || errno == EEXIST, "KVM_IOEVENTFD: %s", strerror(errno));
	if (!busy) {
		ev.flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
		cr_assert_eq(ioctl(vm->vm_fd, KVM_IOEVENTFD, &ev), 0);
	}
	close(fd);
	return busy;
}

Test(virtio_pci, kicks_go_through_a_port_where_the_bus_has_port_io)
{
	struct vm_config cfg = { .rng = true };
	struct vm vm;
	struct vpd d;
	uint64_t buf;
	uint32_t len = 64, port, io_bar = 0, nnotify = 0;
	bool w = true;

	vpd_vm_create(&vm, &cfg);
	if (!vm.pci->io_size) {
		vm_destroy(&vm);
		cr_skip_test("this arch's PCI bus has no I/O window: kicks are MMIO writes only");
	}
	vpd_find(&d, &vm, 4);
	/* Two notify structures: the first (the one drivers take) in an I/O BAR, then the MMIO one. */
	for (uint8_t p = (uint8_t)vpd_cfg_read(&d, PCI_CAPABILITY_LIST, 1); p; p = (uint8_t)vpd_cfg_read(&d, p + 1, 1))
		if (vpd_cfg_read(&d, p, 1) == PCI_CAP_ID_VNDR && vpd_cfg_read(&d, p + 3, 1) == 2 && !nnotify++)
			io_bar = vpd_cfg_read(&d, p + 4, 1);
	cr_assert_eq(nnotify, 2);
	cr_assert(d.notify_io, "the first notify structure is in BAR %u, not an I/O BAR", io_bar);
	port = d.notify_port;
	cr_assert(port >= vm.pci->io_base && port < vm.pci->io_base + vm.pci->io_size, "port 0x%x", port);
	cr_assert(vpd_cfg_read(&d, PCI_COMMAND, 2) & PCI_COMMAND_IO);
	/* KVM takes the kick itself: the queue's port has the worker's ioeventfd. */
	cr_assert(port_has_ioeventfd(&vm, port + d.notify));

	vpd_msix_enable(&d);
	cr_assert(vpd_negotiate(&d, 0));
	vpd_queue_setup(&d, 0, 8);
	vpd_driver_ok(&d);
	buf = vpd_alloc(&d, len);
	vpd_submit(&d, 0, &buf, &len, &w, 1);
	cr_assert_eq(vpd_wait_used(&d, 0, 1, 5000), 1, "a kick through the port reached the worker");

	/* The guest moves the I/O BAR: the ioeventfd follows it. */
	vpd_cfg_write(&d, PCI_BAR0 + 4 * io_bar, port + 0x100, 4);
	cr_assert(!port_has_ioeventfd(&vm, port + d.notify), "nothing left at the old port");
	cr_assert(port_has_ioeventfd(&vm, port + 0x100 + d.notify), "registered at the new port");
	d.notify_port = port + 0x100;
	vpd_submit(&d, 0, &buf, &len, &w, 1);
	cr_assert_eq(vpd_wait_used(&d, 0, 2, 5000), 2, "kicks at the new port are served");
	vm_destroy(&vm);
}
