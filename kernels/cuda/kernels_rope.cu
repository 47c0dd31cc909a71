/* Rotary position embedding on the device (see cuda_ops.h; twin of rs_op_rope), alone and
 * fused with the KV cache store.
 *
 * The cosines and sines come from a table the host computed with rs_op_rope_table (the
 * CPU's own floats); the rotation uses explicitly rounded products so that nvcc does not
 * contract it into FMAs, which keeps it bit-equal to the CPU's on x86-64 (where the C
 * compiler has no FMA to contract into). */
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_util.cuh"

/* Element `which` (0 or 1) of pair (a, b) rotated by (c, s). */
__device__ __forceinline__ float rope_rotate(float a, float b, float c, float s, unsigned which)
{
	return which == 0 ? __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s))
			  : __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
}

/* One block per token; a thread per (head, pair). */
__global__ void rope_kernel(float *x, size_t stride, const uint32_t *positions, uint32_t n_heads,
			    uint32_t head_dim, uint32_t pairs, const float2 *table)
{
	const float2 *cs = table + (size_t)positions[blockIdx.x] * pairs;
	float *row = x + (size_t)blockIdx.x * stride;
	for (uint32_t idx = threadIdx.x; idx < n_heads * pairs; idx += blockDim.x) {
		uint32_t h = idx / pairs, i = idx - h * pairs;
		float2 r = cs[i];
		float *p = row + (size_t)h * head_dim + 2 * i;
		float a = p[0], b = p[1];
		p[0] = rope_rotate(a, b, r.x, r.y, 0);
		p[1] = rope_rotate(a, b, r.x, r.y, 1);
	}
}

extern "C" int rs_cuda_rope(float *x, size_t stride, const uint32_t *positions, uint32_t n_tokens,
			    uint32_t n_heads, uint32_t head_dim, uint32_t rope_dim,
			    const float *cos_sin, cudaStream_t stream)
{
	if (!n_tokens || rope_dim < 2)
		return 0;
	if (rope_dim > head_dim)
		return -EINVAL;
	rope_kernel<<<n_tokens, 128, 0, stream>>>(x, stride, positions, n_heads, head_dim,
						  rope_dim / 2, (const float2 *)cos_sin);
	return rs_launch_check();
}

/* One block per token: the query pairs rotated in place, then every key element (rotated
 * where it belongs to a rotated pair) and value element written to the token's slot. */
__global__ void rope_kv_store_kernel(float *qkv, size_t stride, const uint32_t *positions,
				     const uint32_t *slots, uint32_t n_heads,
				     struct rs_cuda_kv_layer kv, uint32_t pairs, const float2 *table)
{
	uint32_t hd = kv.head_dim, kv_dim = kv.n_kv_heads * hd;
	const float2 *cs = table + (size_t)positions[blockIdx.x] * pairs;
	float *row = qkv + (size_t)blockIdx.x * stride;
	for (uint32_t idx = threadIdx.x; idx < n_heads * pairs; idx += blockDim.x) {
		uint32_t h = idx / pairs, i = idx - h * pairs;
		float2 r = cs[i];
		float *p = row + (size_t)h * hd + 2 * i;
		float a = p[0], b = p[1];
		p[0] = rope_rotate(a, b, r.x, r.y, 0);
		p[1] = rope_rotate(a, b, r.x, r.y, 1);
	}
	const float *k = row + (size_t)n_heads * hd, *v = k + kv_dim;
	size_t dst = (size_t)slots[blockIdx.x] * kv_dim;
	for (uint32_t e = threadIdx.x; e < kv_dim; e += blockDim.x) {
		uint32_t d = e % hd, i = d / 2;
		float value = k[e];
		if (i < pairs) {
			float2 r = cs[i];
			const float *p = k + (e - d) + 2 * i;
			value = rope_rotate(p[0], p[1], r.x, r.y, d & 1);
		}
		kv.k[dst + e] = value;
		kv.v[dst + e] = v[e];
	}
}

extern "C" int rs_cuda_rope_kv_store(float *qkv, size_t stride, const uint32_t *positions,
				     const uint32_t *slots, uint32_t n_tokens, uint32_t n_heads,
				     const struct rs_cuda_kv_layer *kv, uint32_t rope_dim,
				     const float *cos_sin, cudaStream_t stream)
{
	if (!n_tokens)
		return 0;
	if (rope_dim > kv->head_dim)
		return -EINVAL;
	rope_kv_store_kernel<<<n_tokens, 256, 0, stream>>>(qkv, stride, positions, slots, n_heads,
							   *kv, rope_dim / 2,
							   (const float2 *)cos_sin);
	return rs_launch_check();
}
