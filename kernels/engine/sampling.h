/* Token sampling: greedy, temperature, top-k, top-p, with per-request seeds.
 *
 * The randomness is stateless: the uniform number used to sample the token at sequence
 * position pos is u = rs_sample_uniform(seed, pos), a hash of the two. So a request gives
 * the same tokens whatever it is batched with, whichever backend runs it, and after a
 * restart; there is no generator state to carry between steps.
 *
 * The procedure, which every backend follows exactly:
 *   1. temperature <= 0 (or top_k == 1): greedy, the highest logit, ties to the lowest id.
 *   2. Candidates: the top_k highest logits (ties to lower ids; NaN ranks below every
 *      number), or all when top_k == 0 or top_k >= vocab.
 *   3. p_i = exp((l_i - l_max) / temperature), normalized over the candidates.
 *   4. top_p in (0, 1): keep the smallest set of most probable candidates (in the order of
 *      step 2) whose probability sums to at least top_p; otherwise keep all.
 *   5. Walk the kept candidates in descending probability (ties to lower ids), summing
 *      their weights; return the first whose running sum exceeds u * total. */
#ifndef RS_KERNELS_SAMPLING_H
#define RS_KERNELS_SAMPLING_H

#include <stddef.h>
#include <stdint.h>

struct rs_sampling_params {
	float temperature; /* 0: greedy */
	uint32_t top_k;    /* 0: no limit */
	float top_p;       /* 0 or >= 1: no limit */
	uint64_t seed;
};

/* The uniform number in [0, 1) for (seed, position): splitmix64 of both, 53 bits. */
double rs_sample_uniform(uint64_t seed, uint64_t position);

/* Index of the largest of n >= 1 values, the lowest index among equals. */
uint32_t rs_argmax(const float *x, uint32_t n);

/* Scratch (in bytes, aligned for a double) that rs_sample needs for n tokens. */
size_t rs_sample_scratch_size(uint32_t n);

/* Sample a token from n logits for sequence position `position` (the position the new
 * token will occupy), following the procedure above. scratch holds
 * rs_sample_scratch_size(n) bytes, 8-byte aligned. Returns the token id. */
uint32_t rs_sample(const float *logits, uint32_t n, const struct rs_sampling_params *params,
		   uint64_t position, void *scratch);

#endif
