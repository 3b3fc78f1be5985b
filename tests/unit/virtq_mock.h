/*
 * Driver-side mock of a split virtqueue for unit tests (and later fuzzing): lays out
 * the rings in a test guest memory and builds chains the way a driver would, including
 * the broken ones a hostile driver would.
 *
 * Guest memory: R0 [0, 1M) and R1 [1M, 1M+64K) back to back (a range crossing them is
 * contiguous in GPA but is two regions), a hole, then R2 [2M, 2M+64K). The rings sit
 * in R0 (room for a 32768-entry queue), data buffers come from VQM_DATA.
 */
#ifndef MOAT_TEST_VIRTQ_MOCK_H
#define MOAT_TEST_VIRTQ_MOCK_H

#include <stdbool.h>
#include <stdint.h>

#include "devices/virtio/virtqueue.h"
#include "vmm/dma.h"
#include "vmm/memory.h"

#define VQM_R0 0x0ull
#define VQM_R0_SIZE 0x100000ull
#define VQM_R1 0x100000ull
#define VQM_R1_SIZE 0x10000ull
#define VQM_R2 0x200000ull
#define VQM_R2_SIZE 0x10000ull
#define VQM_HOLE (VQM_R1 + VQM_R1_SIZE)
#define VQM_DESC 0x1000ull
#define VQM_DESC2 0x80000ull /* rings of a second queue (vqm_init_shared), up to 8192 entries */
#define VQM_DATA 0xe0000ull

struct vqm {
	struct vqm *mem;     /* NULL: this one owns the memory; else the queue whose memory is shared */
	struct guest_memory gm;
	struct dma_as as;
	uint8_t *ram;
	unsigned int size;
	uint64_t desc, avail, used;
	uint16_t avail_idx;  /* driver's free-running avail index */
	uint16_t next_desc;  /* next free descriptor (no reuse: tests are short) */
	uint64_t data_next;  /* bump allocator for buffers and indirect tables */
};

struct vqm_buf {
	uint64_t addr; /* 0: allocate len bytes from the data area */
	uint32_t len;
	bool write;
};

/* Memory and ring layout for a queue of `size` entries; the device side is not touched. */
void vqm_init(struct vqm *m, unsigned int size);
void vqm_fini(struct vqm *m);
/*
 * Another queue of `size` entries in mem's guest memory (a device with several queues): rings at
 * ring_base (not overlapping mem's), buffers from mem's data area. Only mem is vqm_fini'd.
 */
void vqm_init_shared(struct vqm *m, struct vqm *mem, unsigned int size, uint64_t ring_base);
/* Host pointer to guest memory (asserts it is RAM). */
void *vqm_host(struct vqm *m, uint64_t gpa, uint64_t len);
uint64_t vqm_alloc(struct vqm *m, uint64_t len, uint64_t align);

/* Raw descriptor writes, in the queue's table or in an indirect table at `table`. */
void vqm_set_desc(struct vqm *m, uint16_t idx, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next);
void vqm_set_table_desc(struct vqm *m, uint64_t table, uint16_t idx, uint64_t addr, uint32_t len, uint16_t flags,
			uint16_t next);

/* A chain of n buffers from fresh descriptors linked by NEXT; returns the head (not yet published). */
uint16_t vqm_chain(struct vqm *m, struct vqm_buf *bufs, unsigned int n);
/* One INDIRECT descriptor pointing at a fresh table of n buffers; *table gets its GPA if non-NULL. */
uint16_t vqm_indirect(struct vqm *m, struct vqm_buf *bufs, unsigned int n, uint64_t *table);

/* Put head on the avail ring and publish avail->idx. */
void vqm_publish(struct vqm *m, uint16_t head);
/* Write avail->idx directly (for jumps) and make it the driver's idx. */
void vqm_set_avail_idx(struct vqm *m, uint16_t idx);
void vqm_set_avail_flags(struct vqm *m, uint16_t flags);
void vqm_set_used_event(struct vqm *m, uint16_t v);

uint16_t vqm_used_idx(struct vqm *m);
void vqm_used_elem(struct vqm *m, uint16_t i, uint32_t *id, uint32_t *len);
uint16_t vqm_avail_event(struct vqm *m);

#endif
