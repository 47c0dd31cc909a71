/* Sampling (see sampling.h for the procedure every backend follows). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/engine/sampling.h"

static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

double rs_sample_uniform(uint64_t seed, uint64_t position)
{
	/* Two rounds so that nearby (seed, position) pairs are unrelated. */
	uint64_t h = mix64(seed + 0x9e3779b97f4a7c15ull);
	h = mix64(h ^ (position + 0x9e3779b97f4a7c15ull * 2));
	return (double)(h >> 11) * 0x1p-53;
}

/* Four-float vectors (GCC/Clang vector extensions), loaded through memcpy: no alignment
 * assumed. */
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

static inline v4f load4(const float *p)
{
	v4f v;
	memcpy(&v, p, sizeof(v));
	return v;
}

/* Lane by lane m = x > m ? x : m, the scalar rule (a NaN x never replaces m). */
static inline v4f max_keep(v4f m, v4f x)
{
	v4i take = x > m;
	return (v4f)(((v4i)x & take) | ((v4i)m & ~take));
}

uint32_t rs_argmax(const float *x, uint32_t n)
{
	/* Two passes: the maximum over sixteen independent lanes, each starting at x[0] and
	 * taking a value only when it is greater (so a NaN x[0] stays NaN and the answer is
	 * 0, and any other NaN is skipped), then the first index holding it. Which lane holds
	 * the maximum, or whether it is +0 or -0, cannot change that first index: the second
	 * pass compares with ==. Greedy sampling runs this over the vocabulary per sequence. */
	v4f m0 = {x[0], x[0], x[0], x[0]}, m1 = m0, m2 = m0, m3 = m0;
	uint32_t i = 0;
	for (; i + 16 <= n; i += 16) {
		m0 = max_keep(m0, load4(x + i));
		m1 = max_keep(m1, load4(x + i + 4));
		m2 = max_keep(m2, load4(x + i + 8));
		m3 = max_keep(m3, load4(x + i + 12));
	}
	m0 = max_keep(max_keep(m0, m1), max_keep(m2, m3));
	float max = m0[0];
	for (int l = 1; l < 4; l++)
		max = m0[l] > max ? m0[l] : max;
	for (; i < n; i++)
		max = x[i] > max ? x[i] : max;
	v4f want = {max, max, max, max};
	for (i = 0; i + 16 <= n; i += 16) {
		v4i hit = (load4(x + i) == want) | (load4(x + i + 4) == want) |
			  (load4(x + i + 8) == want) | (load4(x + i + 12) == want);
		if (hit[0] | hit[1] | hit[2] | hit[3])
			break;
	}
	for (; i < n; i++)
		if (x[i] == max)
			return i;
	return 0; /* only NaNs */
}

size_t rs_sample_scratch_size(uint32_t n)
{
	/* The weights (doubles, first for their alignment), then the sort's two key and two
	 * id arrays. */
	return (size_t)n * (sizeof(double) + 4 * sizeof(uint32_t));
}

/* A key whose ascending order is the candidates' order: descending logit. -0 is keyed
 * as +0 (they are equal logits: the lower id goes first), and NaN after every number. */
static inline uint32_t descending_key(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof(u));
	u = f == 0.0f ? 0 : u;
	/* Negative: all bits flipped; positive: the sign bit set. */
	uint32_t ascending = u ^ ((0u - (u >> 31)) | 0x80000000u);
	/* No number maps to UINT32_MAX: ascending 0 is a NaN's bit pattern. */
	return f != f ? UINT32_MAX : ~ascending;
}

/* 0..n-1 sorted by descending logit, ties (and NaNs) by ascending id: a
 * least-significant-digit radix sort of the keys, 11 bits a pass (three passes; 8 bits
 * took four and 20 % longer over 32000 logits), stable, so that equal keys keep the ids'
 * ascending order. idx, idx2, keys and keys2 are scratch of n each; the result is in one
 * of idx and idx2, which is returned. qsort over a 32000-token vocabulary took ~5.7 ms a
 * token; this ~0.1 ms. */
static uint32_t *sort_candidates(uint32_t *idx, uint32_t *idx2, uint32_t *keys, uint32_t *keys2,
				 const float *logits, uint32_t n)
{
	/* Every pass's digit counts (24 KiB) in one read of the keys. */
	uint32_t counts[3][2048] = {{0}};
	for (uint32_t i = 0; i < n; i++) {
		uint32_t key = descending_key(logits[i]);
		idx[i] = i;
		keys[i] = key;
		counts[0][key & 2047]++;
		counts[1][(key >> 11) & 2047]++;
		counts[2][key >> 22]++;
	}
	for (uint32_t pass = 0; pass < 3; pass++) {
		uint32_t shift = 11 * pass, *count = counts[pass];
		if (count[(keys[0] >> shift) & 2047] == n)
			continue; /* every key has this digit: the pass would change nothing */
		for (uint32_t d = 0, at = 0; d < 2048; d++) {
			uint32_t c = count[d];
			count[d] = at;
			at += c;
		}
		for (uint32_t i = 0; i < n; i++) {
			uint32_t to = count[(keys[i] >> shift) & 2047]++;
			keys2[to] = keys[i];
			idx2[to] = idx[i];
		}
		uint32_t *t = keys;
		keys = keys2, keys2 = t;
		t = idx;
		idx = idx2, idx2 = t;
	}
	return idx;
}

/* Up to this many candidates (top_k), top_k_select; more, the whole sort. */
enum { TOP_K_INSERTION = 64 };

/* Move the k best candidates (descending logit, ascending id) to idx[0..k), sorted.
 * Quickselect-free: a bounded insertion into a sorted prefix, O(n k) worst case but
 * O(n) typically since most logits fall below the current k-th. */
static void top_k_select(uint32_t *idx, uint32_t n, uint32_t k, const float *logits)
{
	uint32_t keys[TOP_K_INSERTION]; /* of idx[0..have); k <= TOP_K_INSERTION */
	uint32_t have = 0;
	for (uint32_t id = 0; id < n; id++) {
		uint32_t key = descending_key(logits[id]);
		/* id comes after every id before it with the same key */
		if (have == k) {
			if (key >= keys[k - 1])
				continue;
			have--;
		}
		uint32_t j = have;
		for (; j > 0 && keys[j - 1] > key; j--) {
			idx[j] = idx[j - 1];
			keys[j] = keys[j - 1];
		}
		idx[j] = id;
		keys[j] = key;
		have++;
	}
}

uint32_t rs_sample(const float *logits, uint32_t n, const struct rs_sampling_params *params,
		   uint64_t position, void *scratch)
{
	if (!(params->temperature > 0.0f) || params->top_k == 1 || n == 1)
		return rs_argmax(logits, n);
	double *weight = scratch; /* first: doubles need the stricter alignment */
	uint32_t *idx = (uint32_t *)(weight + n);
	uint32_t m = params->top_k && params->top_k < n ? params->top_k : n;
	if (m <= TOP_K_INSERTION)
		top_k_select(idx, n, m, logits);
	else
		idx = sort_candidates(idx, idx + n, idx + 2 * (size_t)n, idx + 3 * (size_t)n, logits, n);
	double max = logits[idx[0]], inv_t = 1.0 / params->temperature, total = 0.0;
	for (uint32_t i = 0; i < m; i++) {
		weight[i] = exp(((double)logits[idx[i]] - max) * inv_t);
		total += weight[i];
	}
	if (params->top_p > 0.0f && params->top_p < 1.0f) {
		double need = params->top_p * total, sum = 0.0;
		uint32_t keep = 0;
		while (keep < m && sum < need)
			sum += weight[keep++];
		m = keep ? keep : 1;
		total = sum;
	}
	double target = rs_sample_uniform(params->seed, position) * total, sum = 0.0;
	for (uint32_t i = 0; i < m; i++) {
		sum += weight[i];
		if (sum > target)
			return idx[i];
	}
	return idx[m - 1]; /* rounding: target == total */
}
