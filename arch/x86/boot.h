/*
 * Linux x86 boot protocol (Documentation/arch/x86/boot.rst), 64-bit entry: parse a bzImage,
 * build the zero page (struct boot_params) and the e820 map. Pure functions over buffers.
 */
#ifndef MOAT_X86_BOOT_H
#define MOAT_X86_BOOT_H

#include <stddef.h>
#include <stdint.h>

#include <asm/bootparam.h>

struct bzimage {
	uint64_t file_size;
	uint64_t setup_size;    /* real-mode part: (setup_sects + 1) * 512; the kernel follows it */
	uint64_t kernel_size;   /* protected-mode part */
	struct setup_header hdr;
	uint64_t load_addr;     /* where the protected-mode part goes */
};

#define BZIMAGE_HEADER_BYTES 1024 /* enough of the file to parse the setup header */

/*
 * Validate and describe a bzImage from its first head_len bytes (BZIMAGE_HEADER_BYTES, or
 * the whole file if shorter) and its size. -ENOEXEC: not a bzImage; -ENOTSUP: no 64-bit entry.
 */
int bzimage_parse(const uint8_t *head, size_t head_len, uint64_t file_size, struct bzimage *bz)
	__attribute__((warn_unused_result));

struct e820_layout {
	uint64_t low_ram_end;   /* end of RAM below the 32-bit MMIO hole */
	uint64_t high_ram_size; /* RAM above 4 GiB, 0 if none */
};

/* Fill bp->e820_table; returns the number of entries or -ENOSPC. */
int e820_build(struct boot_params *bp, const struct e820_layout *l);

struct boot_layout {
	uint64_t cmdline_addr;
	uint32_t cmdline_len;   /* without the NUL */
	uint64_t initrd_addr;
	uint64_t initrd_size;
	uint64_t rsdp_addr;
};

/* Build the zero page from the image's setup header. */
int boot_params_build(struct boot_params *bp, const struct bzimage *bz, const struct boot_layout *bl,
		      const struct e820_layout *el) __attribute__((warn_unused_result));

/*
 * Where the initrd goes: as high as possible below min(ram_end, initrd_addr_max), page
 * aligned, not overlapping [kernel_start, kernel_end). Returns 0 and *addr, or -ENOSPC.
 */
int initrd_place(uint64_t ram_end, uint32_t initrd_addr_max, uint64_t kernel_end, uint64_t size,
		 uint64_t *addr) __attribute__((warn_unused_result));

#endif
