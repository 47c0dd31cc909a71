/* Token sampling on the device, following sampling.h's procedure (see cuda_ops.h).
 *
 * The CPU sorts the candidates; one block per row here sorts nothing. Each logit gets a
 * 64-bit key, (order-preserving bits of the logit) << 32 | ~id, so that keys are distinct
 * and "larger key" is exactly sampling.h's order (descending logit, ties to the lower
 * id). Every cut-off of the procedure is then "the largest key K with some monotone sum
 * over {key >= K} passing a test", found bit by bit from the top in 64 block-wide passes:
 *   - top-k: the k-th key, the largest K with count(key >= K) >= k;
 *   - top-p: the last kept candidate, the largest K with W(K) >= top_p * total, where
 *     W(K) is the weight of the candidates with key >= K (the running sum in sorted order);
 *   - the sample: the largest K with W(K) > u * kept total (the first whose running sum
 *     exceeds the target).
 * Each result is the key of an existing candidate (the sums only change at keys). The
 * weights exp((l - l_max) / T) are computed once, in double, into scratch. */
#include <cmath>
#include <cstddef>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_util.cuh"

enum { SAMPLE_THREADS = 512, SAMPLE_UNROLL = 8 };

/* The host (C) fills these and the device reads them: one layout for both compilers. */
static_assert(sizeof(struct rs_cuda_sample_desc) == 32 &&
		      offsetof(struct rs_cuda_sample_desc, out) == 8 &&
		      offsetof(struct rs_cuda_sample_desc, top_k) == 24,
	      "rs_cuda_sample_desc layout");

__device__ __forceinline__ uint64_t sample_key(float l, uint32_t id)
{
	uint32_t b;
	if (l != l) {
		b = 0; /* NaN: below everything */
	} else {
		b = __float_as_uint(l == 0.0f ? 0.0f : l); /* -0 equals +0, as on the CPU */
		b = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
	}
	return ((uint64_t)b << 32) | (uint32_t)~id;
}

struct sample_row {
	const float *x;
	const double *w; /* weights of the candidates (key >= k_min), else unset */
	uint32_t n;
	uint64_t k_min;
};

/* Weight of the candidates with key >= K. */
__device__ double weight_from(const struct sample_row *r, uint64_t K, double *red)
{
	uint64_t floor = K > r->k_min ? K : r->k_min;
	double s = 0.0;
#pragma unroll 4
	for (uint32_t i = threadIdx.x; i < r->n; i += blockDim.x)
		if (sample_key(r->x[i], i) >= floor)
			s += r->w[i];
	return rs_block_reduce(s, rs_op_add(), red);
}

__device__ uint32_t count_from(const float *x, uint32_t n, uint64_t K, uint32_t *red)
{
	uint32_t c = 0;
#pragma unroll 4
	for (uint32_t i = threadIdx.x; i < n; i += blockDim.x)
		c += sample_key(x[i], i) >= K;
	return rs_block_reduce(c, rs_op_add(), red);
}

__global__ void __launch_bounds__(SAMPLE_THREADS)
sample_kernel(const float *logits, uint32_t n, const struct rs_cuda_sample_desc *descs,
	      double *scratch)
{
	__shared__ unsigned long long red_u64[32];
	__shared__ double red_d[32];
	__shared__ uint32_t red_u32[32];
	rs_pdl_wait();
	const struct rs_cuda_sample_desc d = descs[blockIdx.x];
	const float *x = logits + (size_t)blockIdx.x * n;

	/* The best key: the greedy token, and l_max. SAMPLE_UNROLL loads in flight per
	 * thread: one at a time, this pass alone took 30 us for 32000 logits. */
	unsigned long long best = 0;
	for (uint32_t i = threadIdx.x; i < n; i += SAMPLE_UNROLL * blockDim.x) {
		float v[SAMPLE_UNROLL];
		rs_load_strided(v, x, i, n);
#pragma unroll
		for (int u = 0; u < SAMPLE_UNROLL; u++) {
			uint32_t idx = i + u * blockDim.x;
			unsigned long long k = idx < n ? sample_key(v[u], idx) : 0;
			best = k > best ? k : best;
		}
	}
	best = rs_block_reduce(best, rs_op_max(), red_u64);
	uint32_t top = ~(uint32_t)best;

	if (!(d.temperature > 0.0f) || d.top_k == 1 || n == 1) {
		/* rs_argmax returns 0 when x[0] is NaN (its maximum is then NaN). */
		if (threadIdx.x == 0)
			*d.out = x[0] != x[0] ? 0 : top;
		return;
	}

	uint32_t m = d.top_k && d.top_k < n ? d.top_k : n;
	uint64_t k_min = 0;
	if (m < n) {
		for (int b = 63; b >= 0; b--) {
			uint64_t c = k_min | (1ull << b);
			if (count_from(x, n, c, red_u32) >= m)
				k_min = c;
		}
	}

	struct sample_row r = {x, scratch + (size_t)blockIdx.x * n, n, k_min};
	double l_max = x[top], inv_t = 1.0 / (double)d.temperature;
	double *w = scratch + (size_t)blockIdx.x * n;
	for (uint32_t i = threadIdx.x; i < n; i += blockDim.x)
		if (sample_key(x[i], i) >= k_min)
			w[i] = exp(((double)x[i] - l_max) * inv_t);
	__syncthreads(); /* the weights are read by other threads below */

	double total = weight_from(&r, 0, red_d);
	uint64_t k_keep = k_min; /* the last kept candidate's key (a lower bound is enough) */
	if (d.top_p > 0.0f && d.top_p < 1.0f) {
		double need = d.top_p * total;
		uint64_t p = 0;
		for (int b = 63; b >= 0; b--) {
			uint64_t c = p | (1ull << b);
			if (weight_from(&r, c, red_d) >= need)
				p = c;
		}
		k_keep = p;
		total = weight_from(&r, k_keep, red_d);
	}
	double target = d.u * total;
	uint64_t pick;
	if (total > target) {
		uint64_t p = 0;
		for (int b = 63; b >= 0; b--) {
			uint64_t c = p | (1ull << b);
			if (weight_from(&r, c, red_d) > target)
				p = c;
		}
		pick = p;
	} else {
		/* Rounding put target at total (or the sums are NaN): the last kept candidate,
		 * the smallest key >= k_keep. k_keep itself is not a key when nothing was cut
		 * (0: no top-k, no top-p), so look for it. */
		unsigned long long low = ~0ull;
		for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) {
			unsigned long long k = sample_key(x[i], i);
			low = k >= k_keep && k < low ? k : low;
		}
		pick = rs_block_reduce(low, rs_op_min(), red_u64);
	}
	if (threadIdx.x == 0) {
		*d.out = ~(uint32_t)pick;
		__threadfence_system(); /* out may be host memory that the host polls */
	}
}

extern "C" void rs_cuda_sample_desc_init(struct rs_cuda_sample_desc *desc,
					 const struct rs_sampling_params *params, uint64_t position,
					 uint32_t *out)
{
	desc->u = rs_sample_uniform(params->seed, position);
	desc->out = out;
	desc->temperature = params->temperature;
	desc->top_p = params->top_p;
	desc->top_k = params->top_k;
	desc->pad = 0;
}

extern "C" int rs_cuda_sample(const float *logits, uint32_t vocab,
			      const struct rs_cuda_sample_desc *descs, uint32_t n_rows,
			      double *scratch, cudaStream_t stream)
{
	if (!n_rows)
		return 0;
	if (!vocab)
		return -EINVAL;
	return rs_launch(sample_kernel, dim3(n_rows), dim3(SAMPLE_THREADS), 0, stream, logits, vocab,
			 descs, scratch);
}
