#include "tests/unit/virtq_mock.h"

#include <criterion/criterion.h>
#include <endian.h>
#include <stdlib.h>
#include <string.h>

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

void vqm_init(struct vqm *m, unsigned int size)
{
	uint64_t total = VQM_R0_SIZE + VQM_R1_SIZE + VQM_R2_SIZE;

	memset(m, 0, sizeof(*m));
	gm_init(&m->gm);
	cr_assert_eq(gm_add_region(&m->gm, VQM_R0, VQM_R0_SIZE), 0);
	cr_assert_eq(gm_add_region(&m->gm, VQM_R1, VQM_R1_SIZE), 0);
	cr_assert_eq(gm_add_region(&m->gm, VQM_R2, VQM_R2_SIZE), 0);
	m->ram = aligned_alloc(4096, total);
	cr_assert_not_null(m->ram);
	memset(m->ram, 0, total);
	cr_assert_eq(gm_attach(&m->gm, m->ram, total), 0);
	dma_as_init_identity(&m->as, &m->gm);
	m->size = size;
	m->desc = VQM_DESC;
	m->avail = m->desc + VIRTQ_DESC_BYTES(size);
	m->used = align_up(m->avail + VIRTQ_AVAIL_BYTES(size), 4096);
	cr_assert_leq(m->used + VIRTQ_USED_BYTES(size), VQM_DATA);
	m->data_next = VQM_DATA;
}

void vqm_init_shared(struct vqm *m, struct vqm *mem, unsigned int size, uint64_t ring_base)
{
	cr_assert_null(mem->mem, "mock: share the owner's memory");
	memset(m, 0, sizeof(*m));
	m->mem = mem;
	m->size = size;
	m->desc = ring_base;
	m->avail = m->desc + VIRTQ_DESC_BYTES(size);
	m->used = align_up(m->avail + VIRTQ_AVAIL_BYTES(size), 4096);
	cr_assert_eq(ring_base % 4096, 0);
	cr_assert_geq(ring_base, mem->used + VIRTQ_USED_BYTES(mem->size), "mock: rings overlap");
	cr_assert_leq(m->used + VIRTQ_USED_BYTES(size), VQM_DATA, "mock: rings run into the data area");
}

static struct vqm *owner(struct vqm *m)
{
	return m->mem ? m->mem : m;
}

void vqm_fini(struct vqm *m)
{
	cr_assert_null(m->mem, "mock: only the owner frees the memory");
	free(m->ram);
	m->ram = NULL;
}

void *vqm_host(struct vqm *m, uint64_t gpa, uint64_t len)
{
	void *p = gm_ptr(&owner(m)->gm, gpa, len);

	cr_assert_not_null(p, "mock: 0x%llx+%llu is not RAM", (unsigned long long)gpa, (unsigned long long)len);
	return p;
}

uint64_t vqm_alloc(struct vqm *m, uint64_t len, uint64_t align)
{
	struct vqm *o = owner(m);
	uint64_t a = align_up(o->data_next, align);

	cr_assert_leq(a + len, VQM_R0 + VQM_R0_SIZE, "mock: data area exhausted");
	o->data_next = a + len;
	return a;
}

void vqm_set_table_desc(struct vqm *m, uint64_t table, uint16_t idx, uint64_t addr, uint32_t len, uint16_t flags,
			uint16_t next)
{
	uint8_t *d = vqm_host(m, table + (uint64_t)idx * 16, 16);
	uint64_t a = htole64(addr);
	uint32_t l = htole32(len);
	uint16_t f = htole16(flags), n = htole16(next);

	memcpy(d, &a, 8);
	memcpy(d + 8, &l, 4);
	memcpy(d + 12, &f, 2);
	memcpy(d + 14, &n, 2);
}

void vqm_set_desc(struct vqm *m, uint16_t idx, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	cr_assert_lt(idx, m->size);
	vqm_set_table_desc(m, m->desc, idx, addr, len, flags, next);
}

static void fill(struct vqm *m, uint64_t table, uint16_t first, struct vqm_buf *bufs, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++) {
		uint16_t flags = (bufs[i].write ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0);

		if (!bufs[i].addr && bufs[i].len)
			bufs[i].addr = vqm_alloc(m, bufs[i].len, 8);
		vqm_set_table_desc(m, table, (uint16_t)(first + i), bufs[i].addr, bufs[i].len, flags,
				   (uint16_t)(first + i + 1));
	}
}

uint16_t vqm_chain(struct vqm *m, struct vqm_buf *bufs, unsigned int n)
{
	uint16_t head = m->next_desc;

	cr_assert(n > 0 && head + n <= m->size, "mock: out of descriptors");
	fill(m, m->desc, head, bufs, n);
	m->next_desc = (uint16_t)(head + n);
	return head;
}

uint16_t vqm_indirect(struct vqm *m, struct vqm_buf *bufs, unsigned int n, uint64_t *table)
{
	uint64_t t = vqm_alloc(m, (uint64_t)n * 16, 16);
	uint16_t head = m->next_desc++;

	cr_assert_lt(head, m->size);
	fill(m, t, 0, bufs, n);
	vqm_set_desc(m, head, t, n * 16, VIRTQ_DESC_F_INDIRECT, 0);
	if (table)
		*table = t;
	return head;
}

static void put16(struct vqm *m, uint64_t gpa, uint16_t v)
{
	uint16_t le = htole16(v);

	memcpy(vqm_host(m, gpa, 2), &le, 2);
}

static uint16_t get16(struct vqm *m, uint64_t gpa)
{
	uint16_t le;

	memcpy(&le, vqm_host(m, gpa, 2), 2);
	return le16toh(le);
}

void vqm_set_avail_idx(struct vqm *m, uint16_t idx)
{
	m->avail_idx = idx;
	/* Release, like a driver's virtio_store_mb: ring entries before the index. */
	__atomic_store_n((uint16_t *)vqm_host(m, m->avail + 2, 2), htole16(idx), __ATOMIC_RELEASE);
}

void vqm_publish(struct vqm *m, uint16_t head)
{
	put16(m, m->avail + 4 + 2u * (m->avail_idx % m->size), head);
	vqm_set_avail_idx(m, (uint16_t)(m->avail_idx + 1));
}

void vqm_set_avail_flags(struct vqm *m, uint16_t flags)
{
	put16(m, m->avail, flags);
}

void vqm_set_used_event(struct vqm *m, uint16_t v)
{
	put16(m, m->avail + 4 + 2u * m->size, v);
}

uint16_t vqm_used_idx(struct vqm *m)
{
	return get16(m, m->used + 2);
}

void vqm_used_elem(struct vqm *m, uint16_t i, uint32_t *id, uint32_t *len)
{
	const uint8_t *e = vqm_host(m, m->used + 4 + 8u * (i % m->size), 8);
	uint32_t v;

	memcpy(&v, e, 4);
	*id = le32toh(v);
	memcpy(&v, e + 4, 4);
	*len = le32toh(v);
}

uint16_t vqm_avail_event(struct vqm *m)
{
	return get16(m, m->used + 4 + 8u * m->size);
}
