/* Rotary position embedding on the device, fused with the KV cache store (see
 * cuda_ops.h; twin of rs_op_rope then rs_op_kv_store).
 *
 * The cosines and sines come from a table the host computed with rs_op_rope_table (the
 * CPU's own floats), and the rotation is rs_rope_rotate's: bit-equal to the CPU's. At
 * decode sizes the [q|k|v] GEMV does the same work in its epilogue instead
 * (rs_cuda_qkv_matmul), and this kernel is not launched. */
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_util.cuh"

/* One block per token: the query pairs rotated in place, then every key element (rotated
 * where it belongs to a rotated pair) and value element written to the token's slot.
 * Each thread loads ROPE_BATCH items before it stores any: stores between loads would
 * make each load wait for the one before (the compiler cannot tell the rows apart). */
enum { ROPE_BATCH = 4 };

__global__ void rope_kv_store_kernel(float *qkv, size_t stride, const uint32_t *positions,
				     const uint32_t *slots, uint32_t n_heads,
				     struct rs_cuda_kv_layer kv, uint32_t pairs, const float2 *table)
{
	rs_pdl_trigger();
	uint32_t hd = kv.head_dim, kv_dim = kv.n_kv_heads * hd, q_pairs = n_heads * pairs;
	/* Host-written metadata: read while the [q|k|v] GEMV finishes. */
	const float2 *cs = table + (size_t)positions[blockIdx.x] * pairs;
	size_t dst = (size_t)slots[blockIdx.x] * kv_dim;
	float *row = qkv + (size_t)blockIdx.x * stride;
	rs_pdl_wait();
	for (uint32_t i0 = threadIdx.x; i0 < q_pairs; i0 += ROPE_BATCH * blockDim.x) {
		float2 x[ROPE_BATCH], r[ROPE_BATCH];
#pragma unroll
		for (int u = 0; u < ROPE_BATCH; u++) {
			uint32_t idx = i0 + u * blockDim.x, h = idx / pairs, i = idx - h * pairs;
			if (idx < q_pairs) {
				const float *p = row + (size_t)h * hd + 2 * i; /* 4-byte aligned only */
				x[u] = make_float2(p[0], p[1]);
				r[u] = cs[i];
			}
		}
#pragma unroll
		for (int u = 0; u < ROPE_BATCH; u++) {
			uint32_t idx = i0 + u * blockDim.x, h = idx / pairs, i = idx - h * pairs;
			if (idx < q_pairs) {
				float *p = row + (size_t)h * hd + 2 * i;
				p[0] = rs_rope_rotate(x[u].x, x[u].y, r[u].x, r[u].y, 0);
				p[1] = rs_rope_rotate(x[u].x, x[u].y, r[u].x, r[u].y, 1);
			}
		}
	}
	const float *k = row + (size_t)n_heads * hd, *v = k + kv_dim;
	for (uint32_t e0 = threadIdx.x; e0 < kv_dim; e0 += ROPE_BATCH * blockDim.x) {
		float key[ROPE_BATCH], value[ROPE_BATCH];
#pragma unroll
		for (int u = 0; u < ROPE_BATCH; u++) {
			uint32_t e = e0 + u * blockDim.x;
			if (e >= kv_dim)
				continue;
			uint32_t d = e % hd, i = d / 2;
			key[u] = k[e];
			value[u] = v[e];
			if (i < pairs) {
				float2 r = cs[i];
				const float *p = k + (e - d) + 2 * i;
				key[u] = rs_rope_rotate(p[0], p[1], r.x, r.y, d & 1);
			}
		}
#pragma unroll
		for (int u = 0; u < ROPE_BATCH; u++) {
			uint32_t e = e0 + u * blockDim.x;
			if (e < kv_dim) {
				kv.k[dst + e] = key[u];
				kv.v[dst + e] = value[u];
			}
		}
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
	return rs_launch(rope_kv_store_kernel, dim3(n_tokens), dim3(256), 0, stream, qkv, stride,
			 positions, slots, n_heads, *kv, rope_dim / 2, (const float2 *)cos_sin);
}
