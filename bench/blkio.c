/*
 * Block I/O load for the guest side of bench/blk.sh: O_DIRECT reads or writes on a block device for a
 * fixed time, sequential with large blocks or random with small ones, one request at a time.
 *
 *   blkio DEVICE seqread|seqwrite|randread|randwrite BLOCK_BYTES SECONDS
 *
 * Prints "MODE iops=N mbps=N" (MB = 10^6 bytes).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <linux/fs.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	const char *dev, *mode;
	uint64_t size, blocks, n = 0, rnd = 88172645463325252ull;
	size_t bs;
	double secs, t0, t;
	int write, random, fd;
	void *buf;

	if (argc != 5) {
		fprintf(stderr, "usage: blkio DEVICE seqread|seqwrite|randread|randwrite BLOCK_BYTES SECONDS\n");
		return 2;
	}
	dev = argv[1];
	mode = argv[2];
	bs = strtoul(argv[3], NULL, 0);
	secs = atof(argv[4]);
	write = strstr(mode, "write") != NULL;
	random = strncmp(mode, "rand", 4) == 0;
	if (!bs || bs % 4096 || secs <= 0) {
		fprintf(stderr, "blkio: BLOCK_BYTES must be a multiple of 4096 and SECONDS positive\n");
		return 2;
	}
	fd = open(dev, (write ? O_RDWR : O_RDONLY) | O_DIRECT);
	if (fd < 0 || ioctl(fd, BLKGETSIZE64, &size) < 0) {
		fprintf(stderr, "blkio: %s: %s\n", dev, strerror(errno));
		return 1;
	}
	blocks = size / bs;
	if (!blocks || posix_memalign(&buf, 4096, bs)) {
		fprintf(stderr, "blkio: %s is smaller than one block\n", dev);
		return 1;
	}
	memset(buf, 0x5a, bs);
	t0 = now();
	do {
		uint64_t b;

		if (random) {
			/* xorshift64: cheap, and the same sequence on every run. */
			rnd ^= rnd << 13;
			rnd ^= rnd >> 7;
			rnd ^= rnd << 17;
			b = rnd % blocks;
		} else {
			b = n % blocks;
		}
		ssize_t r = write ? pwrite(fd, buf, bs, (off_t)(b * bs)) : pread(fd, buf, bs, (off_t)(b * bs));
		if (r != (ssize_t)bs) {
			fprintf(stderr, "blkio: %s at block %llu: %s\n", mode, (unsigned long long)b,
				r < 0 ? strerror(errno) : "short transfer");
			return 1;
		}
		n++;
		t = now() - t0;
	} while (t < secs);
	if (write && fdatasync(fd) < 0) {
		fprintf(stderr, "blkio: fdatasync: %s\n", strerror(errno));
		return 1;
	}
	t = now() - t0;
	printf("%s iops=%.0f mbps=%.1f\n", mode, n / t, n * (double)bs / t / 1e6);
	return 0;
}
