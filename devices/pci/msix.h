/*
 * MSI-X capability, table and pending-bit array of one PCI function (PCI Local Bus 3.0, 6.8.2).
 * Pure state machine: how a vector reaches the CPU is injected (struct msix_ops), so the table
 * logic is tested without KVM. The owner serialises every call (the device lock).
 */
#ifndef MOAT_MSIX_H
#define MOAT_MSIX_H

#include <stdbool.h>
#include <stdint.h>

#include "devices/pci/pci.h"

#define MSIX_MAX_VECTORS 64u
#define MSIX_ENTRY_SIZE 16u
#define MSIX_CTRL_MASKED 1u
#define MSIX_FLAGS_ENABLE 0x8000u
#define MSIX_FLAGS_MASKALL 0x4000u

struct msix_ops {
	/* Vector vec delivers (addr, data) from now on (enable), or may not deliver at all (!enable). */
	int (*route)(void *ctx, unsigned int vec, uint64_t addr, uint32_t data, bool enable);
	/* Send vec: it is routed and enabled. */
	int (*fire)(void *ctx, unsigned int vec);
};

struct msix_entry {
	uint32_t addr_lo, addr_hi, data, ctrl;
};

struct msix {
	struct pci_device *pd;
	unsigned int nvec;
	uint8_t cap;                     /* config offset of the capability */
	struct msix_entry table[MSIX_MAX_VECTORS];
	uint64_t pending;                /* the PBA: one bit per vector */
	uint64_t routed;                 /* vectors last routed with enable */
	struct msix_entry routed_as[MSIX_MAX_VECTORS];
	bool enabled, maskall;           /* from the message control word */
	const struct msix_ops *ops;
	void *ctx;
};

/*
 * Add the capability to pd: nvec vectors (1..64), table at table_off and PBA at pba_off inside BAR bar
 * (both 8-byte aligned; the table needs 16 * nvec bytes, the PBA 8). Every vector starts masked.
 */
int msix_init(struct msix *m, struct pci_device *pd, unsigned int nvec, unsigned int bar, uint32_t table_off,
	      uint32_t pba_off, const struct msix_ops *ops, void *ctx) __attribute__((warn_unused_result));

/* Table and PBA accesses, off relative to the table / PBA start (guest-controlled; bounded here). */
void msix_table_read(struct msix *m, uint64_t off, void *data, unsigned int size);
void msix_table_write(struct msix *m, uint64_t off, const void *data, unsigned int size);
void msix_pba_read(struct msix *m, uint64_t off, void *data, unsigned int size);
/* The guest wrote config space [off, off+size): pick up Enable and Function Mask. */
void msix_config_written(struct msix *m, uint32_t off, unsigned int size);

/* Interrupt on vector vec: sent now if enabled and unmasked, else left pending in the PBA. -EINVAL for a bad vec. */
int msix_notify(struct msix *m, unsigned int vec);
bool msix_enabled(const struct msix *m);
/* Back to power-on state (disabled, every vector masked, nothing pending); routes torn down. */
void msix_reset(struct msix *m);

#endif
