#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "arch/x86/boot.h"
#include "arch/x86/layout.h"

/* A synthetic bzImage: 4 setup sectors + header, then a fake protected-mode payload. */
static uint8_t img[5 * 512 + 4096];

static void make_image(uint16_t version, uint16_t xloadflags)
{
	struct setup_header h;

	memset(img, 0, sizeof(img));
	memset(&h, 0, sizeof(h));
	h.setup_sects = 4;
	h.boot_flag = 0xaa55;
	h.header = 0x53726448;
	h.version = version;
	h.xloadflags = xloadflags;
	h.relocatable_kernel = 1;
	h.pref_address = 0x1000000;
	h.init_size = 0x2000000;
	h.initrd_addr_max = 0x7fffffff;
	h.cmdline_size = 2047;
	h.loadflags = LOADED_HIGH;
	memcpy(img + 0x1f1, &h, sizeof(h));
	img[0x201] = 0x6a; /* jump: header runs to 0x26c */
	memset(img + 5 * 512, 0xcc, 4096);
}

Test(boot, parses_a_64bit_bzimage)
{
	struct bzimage bz;

	make_image(0x020f, XLF_KERNEL_64);
	cr_assert_eq(bzimage_parse(img, BZIMAGE_HEADER_BYTES, sizeof(img), &bz), 0);
	cr_assert_eq(bz.setup_size, 5 * 512);
	cr_assert_eq(bz.kernel_size, 4096);
	cr_assert_eq(bz.load_addr, 0x1000000, "relocatable kernels load at pref_address");
}

Test(boot, rejects_non_bzimages)
{
	struct bzimage bz;

	make_image(0x020f, XLF_KERNEL_64);
	cr_assert_eq(bzimage_parse(img, 100, 100, &bz), -ENOEXEC, "too short");
	img[0x1fe] = 0;
	cr_assert_eq(bzimage_parse(img, BZIMAGE_HEADER_BYTES, sizeof(img), &bz), -ENOEXEC, "no boot flag");
	make_image(0x020f, XLF_KERNEL_64);
	memcpy(img + 0x202, "ELF!", 4);
	cr_assert_eq(bzimage_parse(img, BZIMAGE_HEADER_BYTES, sizeof(img), &bz), -ENOEXEC, "no HdrS");
	make_image(0x020f, XLF_KERNEL_64);
	img[0x1f1] = 200; /* setup runs past the end of the file */
	cr_assert_eq(bzimage_parse(img, BZIMAGE_HEADER_BYTES, sizeof(img), &bz), -ENOEXEC);
}

Test(boot, rejects_kernels_without_64bit_entry)
{
	struct bzimage bz;

	make_image(0x020b, XLF_KERNEL_64);
	cr_assert_eq(bzimage_parse(img, BZIMAGE_HEADER_BYTES, sizeof(img), &bz), -ENOTSUP);
	make_image(0x020f, 0);
	cr_assert_eq(bzimage_parse(img, BZIMAGE_HEADER_BYTES, sizeof(img), &bz), -ENOTSUP);
}

Test(boot, e820_low_memory_only)
{
	static struct boot_params bp;
	struct e820_layout l = { .low_ram_end = 512ull << 20 };

	cr_assert_eq(e820_build(&bp, &l), 4);
	cr_assert_eq(bp.e820_table[0].addr, 0);
	cr_assert_eq(bp.e820_table[0].size, X86_EBDA_START);
	cr_assert_eq(bp.e820_table[0].type, 1);
	cr_assert_eq(bp.e820_table[1].addr, X86_ACPI_START);
	cr_assert_eq(bp.e820_table[1].type, 2, "ACPI area is reserved");
	cr_assert_eq(bp.e820_table[2].addr, X86_HIGH_MEM_START);
	cr_assert_eq(bp.e820_table[2].addr + bp.e820_table[2].size, 512ull << 20);
	cr_assert_eq(bp.e820_table[3].addr, X86_PCI_ECAM_START);
	cr_assert_eq(bp.e820_table[3].size, X86_PCI_ECAM_SIZE);
	cr_assert_eq(bp.e820_table[3].type, 2, "PCI ECAM is reserved");
}

Test(boot, e820_with_memory_above_4g)
{
	static struct boot_params bp;
	struct e820_layout l = { .low_ram_end = X86_MMIO_HOLE_START, .high_ram_size = 1ull << 30 };

	cr_assert_eq(e820_build(&bp, &l), 5);
	cr_assert_eq(bp.e820_table[2].addr + bp.e820_table[2].size, X86_MMIO_HOLE_START);
	cr_assert_eq(bp.e820_table[4].addr, 4ull << 30);
	cr_assert_eq(bp.e820_table[4].size, 1ull << 30);
	/* No RAM entry may touch the MMIO hole. */
	for (int i = 0; i < bp.e820_entries; i++)
		if (bp.e820_table[i].type == 1)
			cr_assert(bp.e820_table[i].addr + bp.e820_table[i].size <= X86_MMIO_HOLE_START ||
				  bp.e820_table[i].addr >= X86_MMIO_HOLE_END);
	l.low_ram_end = X86_MMIO_HOLE_START + 1;
	cr_assert_eq(e820_build(&bp, &l), -EINVAL);
}

Test(boot, initrd_goes_high_and_avoids_the_kernel)
{
	uint64_t a;

	cr_assert_eq(initrd_place(512ull << 20, 0x7fffffff, 0x3000000, 0x100000, &a), 0);
	cr_assert_eq(a, (512ull << 20) - 0x100000);
	cr_assert_eq(a & 0xfff, 0);
	/* initrd_addr_max below the RAM end caps the placement. */
	cr_assert_eq(initrd_place(3ull << 30, 0x37ffffff, 0x3000000, 0x1000, &a), 0);
	cr_assert_eq(a + 0x1000, 0x38000000ull);
	/* Unaligned sizes round the start down. */
	cr_assert_eq(initrd_place(64ull << 20, 0, 0x2000000, 0x1234, &a), 0);
	cr_assert_eq(a, ((64ull << 20) - 0x1234) & ~0xfffull);
	cr_assert_eq(initrd_place(64ull << 20, 0, 0x3000000, 0x2000000, &a), -ENOSPC, "would overlap the kernel");
	cr_assert_eq(initrd_place(64ull << 20, 0, 0, UINT64_MAX, &a), -ENOSPC);
}

Test(boot, zero_page_fields)
{
	static struct boot_params bp;
	struct bzimage bz;
	struct boot_layout bl = { .cmdline_addr = X86_CMDLINE_ADDR, .cmdline_len = 20, .initrd_addr = 0x1f000000,
				  .initrd_size = 0x123456, .rsdp_addr = 0xe0000 };
	struct e820_layout el = { .low_ram_end = 512ull << 20 };

	make_image(0x020f, XLF_KERNEL_64);
	cr_assert_eq(bzimage_parse(img, BZIMAGE_HEADER_BYTES, sizeof(img), &bz), 0);
	memset(&bp, 0xaa, sizeof(bp));
	cr_assert_eq(boot_params_build(&bp, &bz, &bl, &el), 0);
	cr_assert_eq(bp.hdr.header, 0x53726448);
	cr_assert_eq(bp.hdr.type_of_loader, 0xff);
	cr_assert_eq(bp.hdr.cmd_line_ptr, X86_CMDLINE_ADDR);
	cr_assert_eq(bp.ext_cmd_line_ptr, 0);
	cr_assert_eq(bp.hdr.ramdisk_image, 0x1f000000);
	cr_assert_eq(bp.hdr.ramdisk_size, 0x123456);
	cr_assert_eq(bp.acpi_rsdp_addr, 0xe0000);
	cr_assert_eq(bp.e820_entries, 4);
	cr_assert_eq(bp.screen_info.orig_video_isVGA, 0, "zero page starts zeroed");
	bl.cmdline_len = 4000;
	cr_assert_eq(boot_params_build(&bp, &bz, &bl, &el), -E2BIG, "longer than the kernel's cmdline_size");
}
