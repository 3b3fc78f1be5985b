/*
 * PCI: one root bus (segment 0, bus 0) behind a host bridge with ECAM (and the legacy 0xcf8/0xcfc
 * port pair), a config space per function with capability lists, and memory BARs placed by moat
 * in the bridge's MMIO window; on arches with port I/O, I/O BARs placed in the bridge's I/O window.
 *
 * The bus owns one MMIO range covering the whole window and dispatches to whichever BAR decodes
 * the address now, so a guest that moves a BAR needs nothing from the VM's static MMIO table.
 * Config space accesses are serialised by the bus lock; BAR accesses go to the device, which locks
 * its own state.
 */
#ifndef MOAT_PCI_H
#define MOAT_PCI_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define PCI_MAX_DEVICES 32u   /* slots on bus 0, function 0 each */
#define PCI_CFG_SIZE 4096u    /* ECAM gives every function 4 KiB */
#define PCI_NUM_BARS 6u
#define PCI_ECAM_BUS_SIZE (1u << 20) /* one bus: 32 devices x 8 functions x 4 KiB */

/* Config space offsets and bits used by moat. */
#define PCI_VENDOR_ID 0x00
#define PCI_DEVICE_ID 0x02
#define PCI_COMMAND 0x04
#define PCI_COMMAND_IO 0x1u
#define PCI_COMMAND_MEMORY 0x2u
#define PCI_COMMAND_MASTER 0x4u
#define PCI_COMMAND_INTX_DISABLE 0x400u
#define PCI_STATUS 0x06
#define PCI_STATUS_CAP_LIST 0x10u
#define PCI_REVISION_ID 0x08
#define PCI_CLASS_PROG 0x09
#define PCI_CLASS_DEVICE 0x0a
#define PCI_HEADER_TYPE 0x0e
#define PCI_BAR0 0x10
#define PCI_SUBSYSTEM_VENDOR_ID 0x2c
#define PCI_SUBSYSTEM_ID 0x2e
#define PCI_CAPABILITY_LIST 0x34
#define PCI_INTERRUPT_LINE 0x3c
#define PCI_INTERRUPT_PIN 0x3d
#define PCI_CAP_ID_MSIX 0x11
#define PCI_CAP_ID_VNDR 0x09

#define PCI_BAR_IO 0x1u
#define PCI_BAR_MEM_64 0x4u
#define PCI_IO_BAR_MAX 256u /* largest I/O BAR the spec allows */

struct pci_device;

struct pci_device_ops {
	/* Access to a BAR (memory or I/O); off is relative to the BAR, size 1, 2, 4 or 8 (I/O: 1, 2, 4). */
	void (*bar_read)(struct pci_device *pd, unsigned int bar, uint64_t off, void *data, unsigned int size);
	void (*bar_write)(struct pci_device *pd, unsigned int bar, uint64_t off, const void *data, unsigned int size);
	/* Optional: the BAR decodes at addr from now on (mapped), or no longer decodes (!mapped). */
	void (*bar_mapped)(struct pci_device *pd, unsigned int bar, uint64_t addr, bool mapped);
	/* Optional: the guest is about to read [off, off+size) of config space: refresh it there. */
	void (*config_reading)(struct pci_device *pd, uint32_t off, unsigned int size);
	/* Optional: the guest wrote [off, off+size) of config space (already stored, masked). */
	void (*config_written)(struct pci_device *pd, uint32_t off, unsigned int size);
};

struct pci_bar {
	uint64_t size;  /* power of two, >= 4 KiB (I/O: 4 to 256 bytes); 0: BAR not implemented */
	uint64_t addr;  /* as placed by moat / as last programmed by the guest */
	bool is64;
	bool io;        /* an I/O BAR: decodes ports in the bridge's I/O window */
	bool mapped;    /* decoding on (memory or I/O) and the address inside the window */
};

struct pci_device {
	uint8_t cfg[PCI_CFG_SIZE];
	uint8_t wmask[PCI_CFG_SIZE]; /* bits the guest may change */
	struct pci_bar bar[PCI_NUM_BARS];
	unsigned int slot;
	uint8_t next_cap;            /* config offset for the next capability */
	uint8_t last_cap;            /* offset of the last capability's header, 0: none yet */
	const struct pci_device_ops *ops;
	void *ctx;
	struct pci_bus *bus;
};

struct pci_bus {
	pthread_mutex_t cfg_lock;     /* config space of every function, and BAR placement */
	pthread_rwlock_t bar_lock;    /* readers: BAR dispatch; writer: a BAR moving */
	struct pci_device *devs[PCI_MAX_DEVICES];
	uint64_t mmio_base, mmio_size; /* the bridge's memory window, where BARs live */
	uint64_t mmio_next;            /* allocator: next free address in the window */
	uint32_t io_base, io_size;     /* the bridge's I/O window; io_size 0: none (no I/O BARs) */
	uint32_t io_next;              /* allocator: next free port in the I/O window */
	uint32_t cf8;                  /* legacy config address register */
	void (*reset_request)(void *ctx); /* byte write of a reset value to port 0xcf9 */
	void *reset_ctx;
};

void pci_bus_init(struct pci_bus *bus, uint64_t mmio_base, uint64_t mmio_size);
/* Give the bus an I/O window [base, base+size) for I/O BARs (arches with port I/O), before devices join. */
void pci_bus_set_io_window(struct pci_bus *bus, uint32_t base, uint32_t size);
void pci_bus_fini(struct pci_bus *bus);

/*
 * Set up a function's header: ids, class (base << 16 | sub << 8 | prog-if), revision, no INTx.
 * The device then adds BARs and capabilities, then pci_bus_add() places it.
 */
void pci_device_init(struct pci_device *pd, uint16_t vendor, uint16_t device, uint32_t class_code, uint8_t revision,
		     uint16_t subsys_vendor, uint16_t subsys_id, const struct pci_device_ops *ops, void *ctx);
/* A memory BAR of size bytes (power of two, >= 4096); 64-bit when is64 (takes bar and bar+1). -EINVAL. */
int pci_device_add_bar(struct pci_device *pd, unsigned int bar, uint64_t size, bool is64)
	__attribute__((warn_unused_result));
/* An I/O BAR of size ports (power of two, 4 to 256). -EINVAL. Only a bus with an I/O window places it. */
int pci_device_add_io_bar(struct pci_device *pd, unsigned int bar, uint32_t size) __attribute__((warn_unused_result));
/*
 * Append a capability of len bytes (>= 2) with id; body (len - 2 bytes after id/next) copied in.
 * Returns its config offset (> 0) or -ENOSPC. The device marks writable fields in pd->wmask.
 */
int pci_device_add_cap(struct pci_device *pd, uint8_t id, const void *body, unsigned int len)
	__attribute__((warn_unused_result));

/* Put the device in the first free slot (from 1; slot 0 stays empty) and place its BARs. -ENOSPC (also for an
 * I/O BAR on a bus without an I/O window). */
int pci_bus_add(struct pci_bus *bus, struct pci_device *pd) __attribute__((warn_unused_result));

/* Config space access by (slot, function, offset); absent functions read all ones, writes ignored. */
void pci_config_read(struct pci_bus *bus, unsigned int slot, unsigned int fn, uint32_t off, void *data,
		     unsigned int size);
void pci_config_write(struct pci_bus *bus, unsigned int slot, unsigned int fn, uint32_t off, const void *data,
		      unsigned int size);

/* Bus handlers: ECAM (offset inside the ECAM range), legacy ports (offset from 0xcf8), the MMIO window and the
 * I/O window (offsets from their bases). */
void pci_ecam_read(void *bus, uint64_t off, void *data, unsigned int size);
void pci_ecam_write(void *bus, uint64_t off, const void *data, unsigned int size);
void pci_cf8_read(void *bus, uint64_t off, void *data, unsigned int size);
void pci_cf8_write(void *bus, uint64_t off, const void *data, unsigned int size);
void pci_window_read(void *bus, uint64_t off, void *data, unsigned int size);
void pci_window_write(void *bus, uint64_t off, const void *data, unsigned int size);
void pci_io_read(void *bus, uint64_t off, void *data, unsigned int size);
void pci_io_write(void *bus, uint64_t off, const void *data, unsigned int size);

/* Little-endian accessors of config space (no bounds beyond PCI_CFG_SIZE: callers use constants). */
uint32_t pci_cfg_get(const struct pci_device *pd, uint32_t off, unsigned int size);
void pci_cfg_set(struct pci_device *pd, uint32_t off, uint32_t val, unsigned int size);
void pci_wmask_set(struct pci_device *pd, uint32_t off, uint32_t mask, unsigned int size);

#endif
