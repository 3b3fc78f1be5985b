#include "vmm/lathist.h"

unsigned int lathist_bucket(uint64_t ns)
{
	uint64_t v = ns / 250; /* quarter microseconds: every bucket bound from 1 us up is a whole number of them */
	unsigned int k, idx;

	if (v < 4)
		return 0;
	k = 63u - (unsigned int)__builtin_clzll(v); /* v in [2^k, 2^(k+1)), k >= 2 */
	idx = 1 + 4 * (k - 2) + (unsigned int)(((v - (1ull << k)) * 4) >> k);
	return idx < LATHIST_BUCKETS ? idx : LATHIST_BUCKETS - 1;
}

static double bucket_upper_us(unsigned int idx)
{
	unsigned int k = (idx - 1) / 4 + 2, quarter = (idx - 1) % 4;

	if (idx == 0)
		return 1.0;
	/* 2^k + (quarter + 1) * 2^k / 4 quarter microseconds. */
	return (double)((1ull << k) * (4 + quarter + 1)) / 16.0;
}

double lathist_quantile_us(const uint64_t *hist, double q)
{
	uint64_t total = 0, want, seen = 0;

	for (unsigned int i = 0; i < LATHIST_BUCKETS; i++)
		total += __atomic_load_n(&hist[i], __ATOMIC_RELAXED);
	if (!total)
		return 0;
	want = (uint64_t)(q * (double)total + 0.999999);
	if (want < 1)
		want = 1;
	for (unsigned int i = 0; i < LATHIST_BUCKETS; i++) {
		seen += __atomic_load_n(&hist[i], __ATOMIC_RELAXED);
		if (seen >= want)
			return bucket_upper_us(i);
	}
	return bucket_upper_us(LATHIST_BUCKETS - 1);
}
