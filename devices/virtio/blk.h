/*
 * virtio-blk (VIRTIO 1.2 section 5.2): a disk backed by a raw image file or a host block device.
 *
 * One request queue, served synchronously on the device's worker thread: data moves straight
 * between the file and guest memory (preadv/pwritev over the chain's segments, translated through
 * the device's DMA address space on every request).
 *
 * Offered: SEG_MAX, BLK_SIZE, FLUSH, RO (readonly=on), WRITE_ZEROES (writable disks), DISCARD
 * (writable regular files whose file system can punch holes), INDIRECT_DESC, EVENT_IDX.
 * Writes are write-back (completed before they reach stable storage) when the driver negotiates
 * FLUSH, write-through (fdatasync before completion) when it does not, as 5.2.6 requires.
 */
#ifndef MOAT_VIRTIO_BLK_H
#define MOAT_VIRTIO_BLK_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include "devices/virtio/virtio.h"
#include "vmm/dma.h"

#define VIRTIO_ID_BLOCK 2u
#define BLK_SERIAL_MAX 20u /* VIRTIO_BLK_ID_BYTES: GET_ID returns up to 20 bytes, no NUL if 20 */

/*
 * path is an array, not a pointer into argv: in "path=FILE,readonly=on" the file name is not
 * NUL-terminated where it stands, and a copy here needs no owner to free it.
 */
/* iommu=: behind the virtio-iommu when there is one (the default), or not. */
enum { BLK_IOMMU_DEFAULT = 0, BLK_IOMMU_ON, BLK_IOMMU_OFF };

struct blk_config {
	char path[PATH_MAX];
	bool readonly;
	int iommu;                       /* BLK_IOMMU_*: used by the VM builder, not by the device */
	char serial[BLK_SERIAL_MAX + 1]; /* GET_ID string, printable ASCII, NUL-terminated; "" if none */
};

/*
 * Parse the value of --disk: "path=FILE[,readonly=on|off][,serial=STR][,iommu=on|off]", keys in any order, each
 * at most once. A value ends at the next single comma; ",," stands for a comma inside a value (a
 * file name with commas). A bare "FILE" is refused. On error err gets one sentence naming the bad
 * part and the fix, and the result is -EINVAL.
 */
int blk_parse_opts(const char *arg, struct blk_config *cfg, char *err, size_t errlen)
	__attribute__((warn_unused_result));

struct virtio_blk;

/*
 * Open cfg->path (O_RDWR, or O_RDONLY when readonly; O_CLOEXEC), size it (regular file or block
 * device) and decide what to offer. Errors name the path and the fix. A size that is not a multiple
 * of 512 is rounded down: the call succeeds and err holds a warning for the caller to log (err is ""
 * when there is nothing to say). as must outlive the device. The irq is left empty for the transport.
 */
int virtio_blk_new(const struct blk_config *cfg, const struct dma_as *as, struct virtio_blk **out, char *err,
		   size_t errlen) __attribute__((warn_unused_result));
struct virtio_dev *virtio_blk_dev(struct virtio_blk *blk);
/* Close the file and free the device; NULL is fine. */
void virtio_blk_free(struct virtio_blk *blk);
/* One line for --log-level info at exit: requests by type, bytes read and written, errors. */
void virtio_blk_stats(const struct virtio_blk *blk, char *buf, size_t len);

#endif
