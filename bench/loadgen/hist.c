/*
 * hist.c - log-linear latency histogram.
 *
 * Design
 * ------
 * Values below 2^HIST_SUB_BITS get one bucket each. Above that, the bucket
 * is chosen by the position of the top bit (the power of two) and the next
 * HIST_SUB_BITS bits (the linear part), so every bucket is at most 1/32 of
 * its value wide. Recording is O(1) with no allocation, which matters because
 * the subscriber side records every received message. Quantiles report the
 * middle of the bucket (clamped to the exact min/max seen), so their error is
 * half a bucket: under 2%.
 */
#include <string.h>

#include "loadgen.h"

void hist_init(struct hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

static unsigned bucket_of(uint64_t v)
{
	if (v < HIST_SUB)
		return (unsigned)v;
	unsigned e = 63 - (unsigned)__builtin_clzll(v);
	if (e > HIST_MAX_EXP)
		return HIST_BUCKETS - 1;
	unsigned sub = (unsigned)(v >> (e - HIST_SUB_BITS)) - HIST_SUB;
	return (e - HIST_SUB_BITS + 1) * HIST_SUB + sub;
}

/* Lowest value of bucket i and its width. */
static void bucket_range(unsigned i, uint64_t *lo, uint64_t *width)
{
	if (i < HIST_SUB) {
		*lo = i;
		*width = 1;
		return;
	}
	unsigned k = i / HIST_SUB, sub = i % HIST_SUB;
	*lo = (uint64_t)(HIST_SUB + sub) << (k - 1);
	*width = (uint64_t)1 << (k - 1);
}

void hist_add(struct hist *h, uint64_t v)
{
	h->b[bucket_of(v)]++;
	h->count++;
	h->sum += (double)v;
	if (v > h->max)
		h->max = v;
	if (v < h->min)
		h->min = v;
}

uint64_t hist_quantile(const struct hist *h, double q)
{
	if (h->count == 0)
		return 0;
	uint64_t rank = (uint64_t)(q * (double)h->count + 0.5);
	if (rank < 1)
		rank = 1;
	if (rank > h->count)
		rank = h->count;
	uint64_t seen = 0;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= rank) {
			uint64_t lo, w;
			bucket_range(i, &lo, &w);
			uint64_t mid = lo + w / 2;
			if (mid > h->max)
				mid = h->max;
			if (mid < h->min)
				mid = h->min;
			return mid;
		}
	}
	return h->max;
}
