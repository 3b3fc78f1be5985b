/* The arm64 Linux Image header (Documentation/arch/arm64/booting.rst). Pure, unit-testable. */
#ifndef MOAT_ARM64_BOOT_H
#define MOAT_ARM64_BOOT_H

#include <stddef.h>
#include <stdint.h>

#define ARM64_IMAGE_HEADER_BYTES 64u
#define ARM64_IMAGE_MAGIC 0x644d5241u /* "ARM\x64" at offset 56 */

struct arm64_image {
	uint64_t text_offset; /* load at a 2 MiB-aligned base + text_offset */
	uint64_t image_size;  /* bytes of memory the kernel needs from its load address (>= the file) */
	uint64_t flags;
};

/*
 * Parse the header of a file of file_size bytes. -ENOEXEC: not an arm64 Image; -EMEDIUMTYPE: a
 * gzip-compressed Image (Debian's vmlinuz), which must be decompressed first; -EINVAL: inconsistent.
 */
int arm64_image_parse(const uint8_t *head, size_t len, uint64_t file_size, struct arm64_image *img)
	__attribute__((warn_unused_result));

#endif
