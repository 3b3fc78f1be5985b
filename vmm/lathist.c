#include "vmm/lathist.h"

unsigned int lathist_bucket(uint64_t ns)
{
	uint64_t v = ns / 500; /* half microseconds */
	unsigned int k, idx;

	if (v < 2)
		return 0;
	k = 63u - (unsigned int)__builtin_clzll(v);
	idx = 1 + 2 * (k - 1) + ((v - (1ull << k)) >= (1ull << (k - 1)));
	return idx < LATHIST_BUCKETS ? idx : LATHIST_BUCKETS - 1;
}

static double bucket_upper_us(unsigned int idx)
{
	unsigned int k = (idx - 1) / 2 + 1, half = (idx - 1) % 2;

	if (idx == 0)
		return 1.0;
	return (double)((1ull << k) + (half + 1) * (1ull << (k - 1))) / 2.0;
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
