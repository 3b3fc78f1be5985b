#include "arch/x86/boot.h"

#include <errno.h>
#include <string.h>

#include "arch/x86/layout.h"

#define SETUP_HDR_OFFSET 0x1f1
#define HDRS_MAGIC       0x53726448u /* "HdrS" */
#define BOOT_FLAG        0xaa55
#define E820_RAM         1
#define E820_RESERVED    2

int bzimage_parse(const uint8_t *head, size_t head_len, uint64_t file_size, struct bzimage *bz)
{
	size_t hdr_len;
	unsigned int setup_sects;

	memset(bz, 0, sizeof(*bz));
	if (head_len < SETUP_HDR_OFFSET + sizeof(struct setup_header) || file_size < head_len)
		return -ENOEXEC;
	memcpy(&bz->hdr, head + SETUP_HDR_OFFSET, sizeof(bz->hdr));
	if (bz->hdr.boot_flag != BOOT_FLAG || bz->hdr.header != HDRS_MAGIC)
		return -ENOEXEC;
	/* 2.12 added xloadflags, which says whether the 64-bit entry point exists. */
	if (bz->hdr.version < 0x020c || !(bz->hdr.xloadflags & XLF_KERNEL_64))
		return -ENOTSUP;
	/* The header is only as long as the image says (jump byte at 0x201); zero the rest. */
	hdr_len = 0x202 + head[0x201] - SETUP_HDR_OFFSET;
	if (hdr_len < sizeof(bz->hdr))
		memset((uint8_t *)&bz->hdr + hdr_len, 0, sizeof(bz->hdr) - hdr_len);
	setup_sects = bz->hdr.setup_sects ? bz->hdr.setup_sects : 4;
	bz->setup_size = (uint64_t)(setup_sects + 1) * 512;
	if (bz->setup_size >= file_size)
		return -ENOEXEC;
	bz->file_size = file_size;
	bz->kernel_size = file_size - bz->setup_size;
	/* Loading at pref_address spares a relocatable kernel from moving itself. */
	if (bz->hdr.relocatable_kernel && bz->hdr.pref_address >= X86_HIGH_MEM_START &&
	    bz->hdr.pref_address < X86_MMIO_HOLE_START)
		bz->load_addr = bz->hdr.pref_address;
	else
		bz->load_addr = X86_HIGH_MEM_START;
	return 0;
}

static int e820_add(struct boot_params *bp, uint64_t addr, uint64_t size, uint32_t type)
{
	if (bp->e820_entries >= E820_MAX_ENTRIES_ZEROPAGE)
		return -ENOSPC;
	bp->e820_table[bp->e820_entries].addr = addr;
	bp->e820_table[bp->e820_entries].size = size;
	bp->e820_table[bp->e820_entries].type = type;
	bp->e820_entries++;
	return 0;
}

int e820_build(struct boot_params *bp, const struct e820_layout *l)
{
	int r;

	bp->e820_entries = 0;
	if (l->low_ram_end <= X86_HIGH_MEM_START || l->low_ram_end > X86_MMIO_HOLE_START)
		return -EINVAL;
	r = e820_add(bp, 0, X86_EBDA_START, E820_RAM);
	/* The ACPI tables live in the legacy BIOS area; keep the guest off them. */
	if (!r)
		r = e820_add(bp, X86_ACPI_START, X86_ACPI_SIZE, E820_RESERVED);
	if (!r)
		r = e820_add(bp, X86_HIGH_MEM_START, l->low_ram_end - X86_HIGH_MEM_START, E820_RAM);
	/* PCI ECAM: Linux also checks that the MCFG range is reserved before it trusts it. */
	if (!r)
		r = e820_add(bp, X86_PCI_ECAM_START, X86_PCI_ECAM_SIZE, E820_RESERVED);
	if (!r && l->high_ram_size)
		r = e820_add(bp, X86_MMIO_HOLE_END, l->high_ram_size, E820_RAM);
	return r ? r : bp->e820_entries;
}

int boot_params_build(struct boot_params *bp, const struct bzimage *bz, const struct boot_layout *bl,
		      const struct e820_layout *el)
{
	int r;

	memset(bp, 0, sizeof(*bp));
	bp->hdr = bz->hdr;
	bp->hdr.type_of_loader = 0xff; /* undefined loader */
	bp->hdr.code32_start = (uint32_t)bz->load_addr;
	if (bl->cmdline_addr > UINT32_MAX || (bz->hdr.cmdline_size && bl->cmdline_len > bz->hdr.cmdline_size))
		return -E2BIG;
	bp->hdr.cmd_line_ptr = (uint32_t)bl->cmdline_addr;
	bp->ext_cmd_line_ptr = (uint32_t)(bl->cmdline_addr >> 32);
	bp->hdr.ramdisk_image = (uint32_t)bl->initrd_addr;
	bp->ext_ramdisk_image = (uint32_t)(bl->initrd_addr >> 32);
	bp->hdr.ramdisk_size = (uint32_t)bl->initrd_size;
	bp->ext_ramdisk_size = (uint32_t)(bl->initrd_size >> 32);
	bp->acpi_rsdp_addr = bl->rsdp_addr;
	r = e820_build(bp, el);
	return r < 0 ? r : 0;
}

int initrd_place(uint64_t ram_end, uint32_t initrd_addr_max, uint64_t kernel_end, uint64_t size,
		 uint64_t *addr)
{
	uint64_t top = ram_end;
	uint64_t a;

	/* initrd_addr_max is the highest address the initrd's last byte may have. */
	if (initrd_addr_max && (uint64_t)initrd_addr_max + 1 < top)
		top = (uint64_t)initrd_addr_max + 1;
	if (size == 0 || size > top)
		return -ENOSPC;
	a = (top - size) & ~0xfffull;
	if (a < kernel_end)
		return -ENOSPC;
	*addr = a;
	return 0;
}
