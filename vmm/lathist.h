/*
 * Latency histograms: four buckets per octave of microseconds, from under 1 us up to 2^20 us (the last
 * bucket takes everything longer). Bucket 0 is [0, 1) us, then [1, 1.25), [1.25, 1.5), [1.5, 1.75),
 * [1.75, 2), [2, 2.5) ... [16, 20), [20, 24) ... A histogram is a plain array: one thread adds, any thread
 * may read it for a report (a count read while it changes is off by one at worst).
 */
#ifndef MOAT_VMM_LATHIST_H
#define MOAT_VMM_LATHIST_H

#include <stdint.h>

#define LATHIST_BUCKETS 85

/* The bucket of a latency of ns nanoseconds. */
unsigned int lathist_bucket(uint64_t ns);

static inline void lathist_add(uint64_t *hist, uint64_t ns)
{
	__atomic_fetch_add(&hist[lathist_bucket(ns)], 1, __ATOMIC_RELAXED);
}

/* Upper bound in microseconds of the bucket holding the q-quantile (0 < q <= 1); 0 if the histogram is empty. */
double lathist_quantile_us(const uint64_t *hist, double q);

#endif
