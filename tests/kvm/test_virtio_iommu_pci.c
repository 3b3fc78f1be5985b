/*
 * virtio-iommu and a device behind it, both driven through the PCI transport by the test driver: the
 * driver maps the device's rings, points a buffer at a read-only or unmapped IOVA, and the fault must
 * reach the IOMMU's event queue while moat goes on serving requests.
 */
#include <criterion/criterion.h>
#include <linux/virtio_iommu.h>
#include <string.h>

#include "tests/kvm/vpci_driver.h"
#include "vmm/vm.h"

TestSuite(virtio_iommu_pci, .timeout = 30);

#define F_ACCESS_PLATFORM (1ull << 33)
#define NEEDS_RESET 0x40
#define DOMAIN 1
#define RO_IOVA 0x80000000ull
#define HOLE_IOVA 0x90000000ull

/* Send one request on the IOMMU's request queue; returns its status byte. */
static uint8_t iommu_req(struct vpd *io, const void *req, uint32_t len)
{
	uint64_t a[2] = { vpd_alloc(io, len - 4), vpd_alloc(io, 4) };
	uint32_t l[2] = { len - 4, 4 };
	bool w[2] = { false, true };
	uint16_t want = (uint16_t)(io->q[0].avail_idx + 1);

	memcpy(vpd_host(io, a[0], len - 4), req, len - 4);
	memset(vpd_host(io, a[1], 4), 0xee, 4);
	vpd_submit(io, 0, a, l, w, 2);
	cr_assert_eq(vpd_wait_used(io, 0, want, 5000), want, "request answered");
	return *(uint8_t *)vpd_host(io, a[1], 1);
}

static uint8_t map(struct vpd *io, uint64_t iova, uint64_t gpa, uint64_t len, uint32_t flags)
{
	struct virtio_iommu_req_map m = {
		.head.type = VIRTIO_IOMMU_T_MAP,
		.domain = DOMAIN,
		.virt_start = iova,
		.virt_end = iova + len - 1,
		.phys_start = gpa,
		.flags = flags,
	};
	return iommu_req(io, &m, sizeof(m));
}

struct bed {
	struct vm vm;
	struct vpd io, rng;
	uint64_t events;
};

/* The IOMMU up with 4 event buffers, the rng attached to DOMAIN with its rings identity-mapped. */
static void setup(struct bed *b)
{
	struct vm_config cfg = { .rng = true, .iommu = true };
	struct virtio_iommu_req_attach at = { .head.type = VIRTIO_IOMMU_T_ATTACH, .domain = DOMAIN };

	vpd_vm_create(&b->vm, &cfg);
	vpd_find(&b->io, &b->vm, 23);
	vpd_find(&b->rng, &b->vm, 4);
	b->rng.heap = 0x800000; /* its own part of guest memory */
	vpd_msix_enable(&b->io);
	cr_assert(vpd_negotiate(&b->io, 1ull << VIRTIO_IOMMU_F_INPUT_RANGE | 1ull << VIRTIO_IOMMU_F_DOMAIN_RANGE |
						1ull << VIRTIO_IOMMU_F_MAP_UNMAP | 1ull << VIRTIO_IOMMU_F_PROBE));
	vpd_queue_setup(&b->io, 0, 64);
	vpd_queue_setup(&b->io, 1, 16);
	vpd_driver_ok(&b->io);
	b->events = vpd_alloc(&b->io, 4 * 4096);
	for (unsigned int i = 0; i < 4; i++) {
		uint64_t a = b->events + i * 4096;
		uint32_t l = sizeof(struct virtio_iommu_fault);
		bool w = true;
		vpd_submit(&b->io, 1, &a, &l, &w, 1);
	}

	at.endpoint = b->rng.slot << 3;
	cr_assert_eq(iommu_req(&b->io, &at, sizeof(at)), VIRTIO_IOMMU_S_OK, "ATTACH");
	/* The rng's own memory, IOVA == GPA, read-write. */
	cr_assert_eq(map(&b->io, 0x800000, 0x800000, 0x800000, VIRTIO_IOMMU_MAP_F_READ | VIRTIO_IOMMU_MAP_F_WRITE),
		     VIRTIO_IOMMU_S_OK);
	vpd_msix_enable(&b->rng);
}

static void fault_event(struct bed *b, unsigned int i, struct virtio_iommu_fault *f)
{
	cr_assert_eq(vpd_wait_used(&b->io, 1, (uint16_t)(i + 1), 5000), i + 1, "fault event %u posted", i);
	memcpy(f, vpd_host(&b->io, b->events + i * 4096, sizeof(*f)), sizeof(*f));
}

Test(virtio_iommu_pci, access_platform_is_required_behind_the_iommu)
{
	struct bed b;

	setup(&b);
	cr_assert_not(vpd_negotiate(&b.rng, 0), "FEATURES_OK refused without ACCESS_PLATFORM");
	cr_assert(vpd_negotiate(&b.rng, F_ACCESS_PLATFORM));
	vm_destroy(&b.vm);
}

Test(virtio_iommu_pci, dma_goes_through_the_mappings)
{
	struct bed b;
	uint64_t buf;
	uint32_t len = 64, id, used;
	bool w = true;

	setup(&b);
	cr_assert(vpd_negotiate(&b.rng, F_ACCESS_PLATFORM));
	vpd_queue_setup(&b.rng, 0, 8);
	vpd_driver_ok(&b.rng);
	/* A buffer at an IOVA far from its GPA: the device must follow the mapping. */
	buf = vpd_alloc(&b.rng, 4096);
	memset(vpd_host(&b.rng, buf, 4096), 0, 4096);
	cr_assert_eq(map(&b.io, 0x40000000, buf, 4096, VIRTIO_IOMMU_MAP_F_WRITE), VIRTIO_IOMMU_S_OK);
	uint64_t iova = 0x40000000;
	vpd_submit(&b.rng, 0, &iova, &len, &w, 1);
	cr_assert_eq(vpd_wait_used(&b.rng, 0, 1, 5000), 1);
	vpd_used_elem(&b.rng, 0, 0, &id, &used);
	cr_assert_eq(used, 64);
	const uint8_t *p = vpd_host(&b.rng, buf, 64);
	bool any = false;
	for (int i = 0; i < 64; i++)
		any |= p[i] != 0;
	cr_assert(any, "the bytes landed at the mapped GPA");
	vm_destroy(&b.vm);
}

Test(virtio_iommu_pci, write_to_read_only_iova_faults_and_moat_goes_on)
{
	struct bed b;
	struct virtio_iommu_fault f;
	uint32_t len = 32;
	bool w = true;
	uint64_t iova;

	setup(&b);
	cr_assert(vpd_negotiate(&b.rng, F_ACCESS_PLATFORM));
	vpd_queue_setup(&b.rng, 0, 8);
	vpd_driver_ok(&b.rng);
	cr_assert_eq(map(&b.io, RO_IOVA, vpd_alloc(&b.rng, 4096), 4096, VIRTIO_IOMMU_MAP_F_READ), VIRTIO_IOMMU_S_OK);

	iova = RO_IOVA;
	vpd_submit(&b.rng, 0, &iova, &len, &w, 1);
	fault_event(&b, 0, &f);
	cr_assert_eq(f.reason, VIRTIO_IOMMU_FAULT_R_MAPPING);
	cr_assert(f.flags & VIRTIO_IOMMU_FAULT_F_WRITE);
	cr_assert(f.flags & VIRTIO_IOMMU_FAULT_F_ADDRESS);
	cr_assert_eq(f.endpoint, b.rng.slot << 3);
	cr_assert_eq(f.address, RO_IOVA);
	cr_assert(vpd_wait_status(&b.rng, NEEDS_RESET, 5000), "the faulting device asks for a reset");
	cr_assert_eq(vpd_bar_read(&b.rng, b.rng.common + 0x14, 1) & 0x4, 0x4, "and keeps its DRIVER_OK");

	/* The IOMMU keeps serving; the device works again after its reset. */
	cr_assert_eq(map(&b.io, 0x50000000, 0x900000, 4096, VIRTIO_IOMMU_MAP_F_WRITE), VIRTIO_IOMMU_S_OK);
	cr_assert(vpd_negotiate(&b.rng, F_ACCESS_PLATFORM));
	memset(b.rng.q, 0, sizeof(b.rng.q));
	vpd_queue_setup(&b.rng, 0, 8);
	vpd_driver_ok(&b.rng);
	iova = 0x50000000;
	vpd_submit(&b.rng, 0, &iova, &len, &w, 1);
	cr_assert_eq(vpd_wait_used(&b.rng, 0, 1, 5000), 1, "served after the reset");
	vm_destroy(&b.vm);
}

Test(virtio_iommu_pci, unmapped_rings_and_buffers_fault)
{
	struct bed b;
	struct virtio_iommu_fault f;
	uint32_t len = 32;
	bool w = true;
	uint64_t iova = HOLE_IOVA;

	setup(&b);
	/* Rings at IOVAs nobody mapped: the queue is refused, and the fault names the endpoint. */
	cr_assert(vpd_negotiate(&b.rng, F_ACCESS_PLATFORM));
	vpd_bar_write(&b.rng, b.rng.common + 0x16, 0, 2);
	vpd_bar_write(&b.rng, b.rng.common + 0x20, HOLE_IOVA, 8);
	vpd_bar_write(&b.rng, b.rng.common + 0x28, HOLE_IOVA + 0x1000, 8);
	vpd_bar_write(&b.rng, b.rng.common + 0x30, HOLE_IOVA + 0x2000, 8);
	vpd_bar_write(&b.rng, b.rng.common + 0x1c, 1, 2);
	cr_assert(vpd_status(&b.rng) & NEEDS_RESET);
	fault_event(&b, 0, &f);
	cr_assert_eq(f.reason, VIRTIO_IOMMU_FAULT_R_MAPPING);
	cr_assert_eq(f.endpoint, b.rng.slot << 3);

	/* Mapped rings, unmapped buffer. */
	cr_assert(vpd_negotiate(&b.rng, F_ACCESS_PLATFORM));
	memset(b.rng.q, 0, sizeof(b.rng.q));
	vpd_queue_setup(&b.rng, 0, 8);
	vpd_driver_ok(&b.rng);
	vpd_submit(&b.rng, 0, &iova, &len, &w, 1);
	cr_assert(vpd_wait_status(&b.rng, NEEDS_RESET, 5000));
	/* Several faults may have been reported (reads of the ring before it), the last names the buffer. */
	bool seen = false;
	for (unsigned int i = 1; i < 4 && !seen; i++) {
		if (vpd_wait_used(&b.io, 1, (uint16_t)(i + 1), 2000) != i + 1)
			break;
		memcpy(&f, vpd_host(&b.io, b.events + i * 4096, sizeof(f)), sizeof(f));
		seen = f.address == HOLE_IOVA && (f.flags & VIRTIO_IOMMU_FAULT_F_WRITE);
	}
	cr_assert(seen, "a write fault at the unmapped buffer was reported");
	vm_destroy(&b.vm);
}
