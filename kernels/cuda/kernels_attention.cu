/* The paged KV cache on the device: storing new keys and values, and causal attention
 * over a sequence's blocks (see cuda_ops.h; twins of rs_op_kv_store and rs_op_attention). */
#include <cmath>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_util.cuh"

/* Positions per softmax chunk, threads per block. */
enum { ATT_CHUNK = 64, ATT_THREADS = 128 };

__global__ void kv_store_kernel(struct rs_cuda_kv_layer kv, const uint32_t *slots, const float *k,
				const float *v, size_t stride)
{
	size_t row = (size_t)kv.n_kv_heads * kv.head_dim;
	size_t dst = (size_t)slots[blockIdx.x] * row, src = (size_t)blockIdx.x * stride;
	for (size_t i = threadIdx.x; i < row; i += blockDim.x) {
		kv.k[dst + i] = k[src + i];
		kv.v[dst + i] = v[src + i];
	}
}

extern "C" int rs_cuda_kv_store(const struct rs_cuda_kv_layer *kv, const uint32_t *slots,
				uint32_t n_tokens, const float *k, const float *v, size_t stride,
				cudaStream_t stream)
{
	if (!n_tokens)
		return 0;
	kv_store_kernel<<<n_tokens, 256, 0, stream>>>(*kv, slots, k, v, stride);
	return rs_launch_check();
}

/* Shared memory of one block, in floats (the slot list counts as floats: same size). */
static size_t attention_smem(uint32_t group, uint32_t head_dim)
{
	size_t gw = (size_t)group * head_dim;
	return (2 * gw + (size_t)group * ATT_CHUNK + 3 * (size_t)group + ATT_CHUNK) * sizeof(float);
}

/* Block (kv head g, token t): the query heads g*group .. g*group+group-1 of token t against
 * positions 0 .. positions[t]. Per chunk of positions: warps compute the scores (a warp
 * per position, K row held in registers and dotted with every query head of the group),
 * then a warp per head takes the chunk's maximum and exponentials (online softmax: the
 * running sums are rescaled by exp(m_old - m_new)), then each thread accumulates its own
 * (head, dim) entries of P V. */
template <typename T>
__global__ void __launch_bounds__(ATT_THREADS)
attention_kernel(T *out, const float *q, size_t q_stride, struct rs_cuda_kv_layer kv,
		 const uint32_t *block_tables, const uint32_t *table_offset,
		 const uint32_t *positions, uint32_t n_heads, float scale)
{
	uint32_t g = blockIdx.x, t = blockIdx.y;
	uint32_t hd = kv.head_dim, group = n_heads / kv.n_kv_heads, gw = group * hd;
	size_t row = (size_t)kv.n_kv_heads * hd;
	extern __shared__ float smem[];
	float *q_s = smem;                    /* [group][hd] */
	float *acc_s = q_s + gw;              /* [group][hd] */
	float *p_s = acc_s + gw;              /* [group][ATT_CHUNK] */
	float *m_s = p_s + group * ATT_CHUNK; /* running maximum per head */
	float *l_s = m_s + group;             /* running sum per head */
	float *corr_s = l_s + group;          /* this chunk's rescale per head */
	uint32_t *slot_s = (uint32_t *)(corr_s + group); /* [ATT_CHUNK] */
	unsigned tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;

	/* The group's query heads are adjacent in the row. */
	const float *qt = q + (size_t)t * q_stride + (size_t)g * gw;
	for (uint32_t e = tid; e < gw; e += blockDim.x) {
		q_s[e] = qt[e];
		acc_s[e] = 0.0f;
	}
	for (uint32_t h = tid; h < group; h += blockDim.x) {
		m_s[h] = -INFINITY;
		l_s[h] = 0.0f;
	}
	const uint32_t *bt = block_tables + table_offset[t];
	uint32_t n_ctx = positions[t] + 1, bs = kv.block_size;
	const float *k_head = kv.k + (size_t)g * hd, *v_head = kv.v + (size_t)g * hd;
	__syncthreads();

	for (uint32_t c0 = 0; c0 < n_ctx; c0 += ATT_CHUNK) {
		uint32_t n = n_ctx - c0 < ATT_CHUNK ? n_ctx - c0 : ATT_CHUNK;
		for (uint32_t j = tid; j < n; j += blockDim.x) {
			uint32_t p = c0 + j;
			slot_s[j] = bt[p / bs] * bs + p % bs;
		}
		__syncthreads();

		for (uint32_t j = warp; j < n; j += warps) {
			const float *kr = k_head + (size_t)slot_s[j] * row;
			float kreg[RS_CUDA_MAX_HEAD_DIM / 32];
#pragma unroll
			for (int u = 0; u < RS_CUDA_MAX_HEAD_DIM / 32; u++) {
				uint32_t d = lane + 32 * u;
				kreg[u] = d < hd ? kr[d] : 0.0f;
			}
			for (uint32_t h = 0; h < group; h++) {
				float s = 0.0f;
#pragma unroll
				for (int u = 0; u < RS_CUDA_MAX_HEAD_DIM / 32; u++) {
					uint32_t d = lane + 32 * u;
					if (d < hd)
						s += q_s[h * hd + d] * kreg[u];
				}
				s = rs_warp_sum(s);
				if (lane == 0)
					p_s[h * ATT_CHUNK + j] = s * scale;
			}
		}
		__syncthreads();

		for (uint32_t h = warp; h < group; h += warps) {
			float *ph = p_s + h * ATT_CHUNK;
			float mx = -INFINITY;
			for (uint32_t j = lane; j < n; j += 32)
				mx = fmaxf(mx, ph[j]);
			mx = rs_warp_max(mx);
			float m_old = m_s[h], m_new = fmaxf(m_old, mx);
			float sum = 0.0f;
			for (uint32_t j = lane; j < n; j += 32) {
				float e = expf(ph[j] - m_new);
				ph[j] = e;
				sum += e;
			}
			sum = rs_warp_sum(sum);
			if (lane == 0) {
				float corr = expf(m_old - m_new); /* 0 on the first chunk */
				corr_s[h] = corr;
				l_s[h] = l_s[h] * corr + sum;
				m_s[h] = m_new;
			}
		}
		__syncthreads();

		for (uint32_t e = tid; e < gw; e += blockDim.x) {
			uint32_t h = e / hd, d = e - h * hd;
			const float *ph = p_s + h * ATT_CHUNK;
			float a = acc_s[e] * corr_s[h];
			for (uint32_t j = 0; j < n; j++)
				a += ph[j] * v_head[(size_t)slot_s[j] * row + d];
			acc_s[e] = a;
		}
		__syncthreads(); /* before the next chunk overwrites slot_s and p_s */
	}
	T *o = out + (size_t)t * n_heads * hd + (size_t)g * gw;
	for (uint32_t e = tid; e < gw; e += blockDim.x)
		rs_store(o + e, acc_s[e] / l_s[e / hd]);
}

extern "C" int rs_cuda_attention_setup(uint32_t n_heads, uint32_t n_kv_heads, uint32_t head_dim)
{
	if (!n_kv_heads || n_heads % n_kv_heads || head_dim > RS_CUDA_MAX_HEAD_DIM || !head_dim)
		return -EINVAL;
	size_t need = attention_smem(n_heads / n_kv_heads, head_dim);
	if (need <= 48 * 1024)
		return 0;
	int device = 0, optin = 0;
	if (cudaGetDevice(&device) != cudaSuccess ||
	    cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) !=
		    cudaSuccess)
		return -EIO;
	if (need > (size_t)optin)
		return -EINVAL;
	/* Allow up to the device's limit once: each launch still asks only for what it needs. */
	if (cudaFuncSetAttribute(attention_kernel<float>, cudaFuncAttributeMaxDynamicSharedMemorySize,
				 optin) != cudaSuccess ||
	    cudaFuncSetAttribute(attention_kernel<__half>,
				 cudaFuncAttributeMaxDynamicSharedMemorySize, optin) != cudaSuccess ||
	    cudaFuncSetAttribute(attention_kernel<__nv_bfloat16>,
				 cudaFuncAttributeMaxDynamicSharedMemorySize, optin) != cudaSuccess)
		return -EIO;
	return 0;
}

extern "C" int rs_cuda_attention(void *out, enum rs_dtype out_dtype, const float *q,
				 size_t q_stride, const struct rs_cuda_kv_layer *kv,
				 const uint32_t *block_tables, const uint32_t *table_offset,
				 const uint32_t *positions, uint32_t n_tokens, uint32_t n_heads,
				 cudaStream_t stream)
{
	if (!n_tokens)
		return 0;
	if (!kv->n_kv_heads || n_heads % kv->n_kv_heads || kv->head_dim > RS_CUDA_MAX_HEAD_DIM ||
	    n_tokens > 65535)
		return -EINVAL;
	size_t smem = attention_smem(n_heads / kv->n_kv_heads, kv->head_dim);
	float scale = 1.0f / sqrtf((float)kv->head_dim);
	dim3 grid(kv->n_kv_heads, n_tokens);
	RS_DISPATCH_DTYPE(out_dtype, T,
			  attention_kernel<T><<<grid, ATT_THREADS, smem, stream>>>(
				  (T *)out, q, q_stride, *kv, block_tables, table_offset, positions,
				  n_heads, scale));
	return rs_launch_check();
}
