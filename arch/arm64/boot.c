#include "arch/arm64/boot.h"

#include <errno.h>
#include <string.h>

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

int arm64_image_parse(const uint8_t *head, size_t len, uint64_t file_size, struct arm64_image *img)
{
	uint32_t magic;

	if (len >= 2 && head[0] == 0x1f && head[1] == 0x8b)
		return -EMEDIUMTYPE;
	if (len < ARM64_IMAGE_HEADER_BYTES || file_size < ARM64_IMAGE_HEADER_BYTES)
		return -ENOEXEC;
	magic = (uint32_t)head[56] | (uint32_t)head[57] << 8 | (uint32_t)head[58] << 16 | (uint32_t)head[59] << 24;
	if (magic != ARM64_IMAGE_MAGIC)
		return -ENOEXEC;
	img->text_offset = le64(head + 8);
	img->image_size = le64(head + 16);
	img->flags = le64(head + 24);
	/* Kernels before 3.17 have image_size 0 and text_offset 0x80000. */
	if (!img->image_size) {
		img->text_offset = 0x80000;
		img->image_size = file_size;
	}
	if (img->image_size < file_size || img->text_offset >= (2u << 20) || img->image_size > (1ull << 32))
		return -EINVAL;
	return 0;
}
