/* Causal attention over a sequence's blocks of the paged KV cache on the device (see
 * cuda_ops.h; twin of rs_op_attention). */
#include <cmath>

#include <cuda_pipeline.h>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_util.cuh"

/* Positions per softmax chunk, threads per block, the most blocks a split launch makes
 * (about two per SM of an H100, which decode tokens alone would leave idle), and the
 * granule of a split's span: a short context splits into spans of 16 positions, so that
 * its few blocks each run a short chain (at 160 positions, 64-position spans gave 12
 * blocks of 16 us at base clocks; docs/perf.md). */
enum { ATT_CHUNK = 64, ATT_THREADS = 256, ATT_SPLIT_BLOCKS = 256, ATT_SPAN_GRANULE = 16 };

/* Shared memory of one block, in floats (the slot list counts as floats: same size): the
 * group's queries and accumulators, a chunk's scores, the softmax state, the slots, and
 * the chunk's K and V rows (padded to head_dim + 1 floats: the score loop reads a column
 * of the K tile, which the odd stride spreads over the banks). */
static size_t attention_smem(uint32_t group, uint32_t head_dim)
{
	size_t gw = (size_t)group * head_dim;
	return (2 * gw + (size_t)group * ATT_CHUNK + 3 * (size_t)group + ATT_CHUNK +
		2 * (size_t)ATT_CHUNK * (head_dim + 1)) *
	       sizeof(float);
}

/* Copy the head's rows of the chunk's n positions (cache slots slot_s) into tile, as
 * asynchronous copies (cp.async) committed as one group: every thread issues all of its
 * loads before waiting on any. */
__device__ __forceinline__ void load_tile(float *tile, const float *head, const uint32_t *slot_s,
					  uint32_t n, uint32_t hd, size_t row)
{
	for (uint32_t i = threadIdx.x; i < n * hd; i += blockDim.x) {
		uint32_t j = i / hd, d = i - j * hd;
		__pipeline_memcpy_async(tile + j * (hd + 1) + d, head + (size_t)slot_s[j] * row + d,
					sizeof(float));
	}
	__pipeline_commit();
}

/* Block (kv head g, token t, split z): the query heads g*group .. g*group+group-1 of token
 * t against positions z*span .. min((z+1)*span, positions[t] + 1) - 1 of its sequence
 * (split-K attention, "flash decoding": a decode token alone would give the device only
 * n_kv_heads blocks to run). Per chunk of positions: the chunk's K and V rows are copied
 * into shared memory asynchronously, every thread computes scores of (head, position)
 * pairs once the K rows are in, a warp per head takes the chunk's maximum and
 * exponentials (online softmax: the running sums are rescaled by exp(m_old - m_new))
 * while the V rows arrive, and each thread accumulates its own (head, dim) entries of
 * P V. One split writes the normalized output; several write their unnormalized sums and
 * (max, sum) per head to part, and the last of them to finish merges the records (done:
 * a count per token and kv head, zero between launches). */
template <typename T>
__global__ void __launch_bounds__(ATT_THREADS)
attention_kernel(T *out, float *part, unsigned *done, const float *q, size_t q_stride,
		 struct rs_cuda_kv_layer kv, const uint32_t *block_tables,
		 const uint32_t *table_offset, const uint32_t *positions, uint32_t n_heads,
		 uint32_t span, float scale)
{
	rs_pdl_trigger(); /* the Wo GEMV may prefetch its weights meanwhile */
	uint32_t g = blockIdx.x, t = blockIdx.y, z = blockIdx.z, splits = gridDim.z;
	uint32_t hd = kv.head_dim, group = n_heads / kv.n_kv_heads, gw = group * hd;
	uint32_t tile_stride = hd + 1;
	size_t row = (size_t)kv.n_kv_heads * hd;
	extern __shared__ float smem[];
	float *q_s = smem;                    /* [group][hd] */
	float *acc_s = q_s + gw;              /* [group][hd] */
	float *p_s = acc_s + gw;              /* [group][ATT_CHUNK] */
	float *m_s = p_s + group * ATT_CHUNK; /* running maximum per head */
	float *l_s = m_s + group;             /* running sum per head */
	float *corr_s = l_s + group;          /* this chunk's rescale per head */
	uint32_t *slot_s = (uint32_t *)(corr_s + group); /* [ATT_CHUNK] */
	float *k_s = (float *)(slot_s + ATT_CHUNK);      /* [ATT_CHUNK][hd + 1] */
	float *v_s = k_s + ATT_CHUNK * tile_stride;      /* [ATT_CHUNK][hd + 1] */
	unsigned tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;

	/* The step's metadata (positions, block tables) came from the host before the step's
	 * first kernel: the first chunk's slots are looked up before waiting for the kernel
	 * that stores this step's keys and rotates the queries. */
	const uint32_t *bt = block_tables + table_offset[t];
	uint32_t n_ctx = positions[t] + 1, bs = kv.block_size;
	/* The last split runs to the context's end whatever max_ctx said. */
	uint32_t begin = z * span, end = z + 1 == splits || n_ctx < begin + span ? n_ctx : begin + span;
	for (uint32_t j = tid; begin + j < end && j < ATT_CHUNK; j += blockDim.x) {
		uint32_t p = begin + j;
		slot_s[j] = bt[p / bs] * bs + p % bs;
	}
	rs_pdl_wait();

	/* The group's query heads are adjacent in the row. */
	const float *qt = q + (size_t)t * q_stride + (size_t)g * gw;
	for (uint32_t e0 = tid; e0 < gw; e0 += 4 * blockDim.x) {
		float qv[4]; /* loaded together: a store between loads serializes them */
#pragma unroll
		for (int u = 0; u < 4; u++) {
			uint32_t e = e0 + u * blockDim.x;
			qv[u] = e < gw ? qt[e] : 0.0f;
		}
#pragma unroll
		for (int u = 0; u < 4; u++) {
			uint32_t e = e0 + u * blockDim.x;
			if (e < gw) {
				q_s[e] = qv[u];
				acc_s[e] = 0.0f;
			}
		}
	}
	for (uint32_t h = tid; h < group; h += blockDim.x) {
		m_s[h] = -INFINITY;
		l_s[h] = 0.0f;
	}
	const float *k_head = kv.k + (size_t)g * hd, *v_head = kv.v + (size_t)g * hd;
	__syncthreads();

	for (uint32_t c0 = begin; c0 < end; c0 += ATT_CHUNK) {
		uint32_t n = end - c0 < ATT_CHUNK ? end - c0 : ATT_CHUNK;
		if (c0 != begin) { /* the first chunk's slots are in already */
			for (uint32_t j = tid; j < n; j += blockDim.x) {
				uint32_t p = c0 + j;
				slot_s[j] = bt[p / bs] * bs + p % bs;
			}
			__syncthreads();
		}
		load_tile(k_s, k_head, slot_s, n, hd, row);
		load_tile(v_s, v_head, slot_s, n, hd, row);
		__pipeline_wait_prior(1); /* this thread's K copies have landed... */
		__syncthreads();          /* ...and everyone's */

		for (uint32_t i = tid; i < group * ATT_CHUNK; i += blockDim.x) {
			uint32_t h = i / ATT_CHUNK, j = i - h * ATT_CHUNK;
			if (j >= n)
				continue;
			const float *qh = q_s + h * hd, *kj = k_s + j * tile_stride;
			/* Four partial sums: one chain of hd dependent FMAs would be the
			 * critical path of a decode step's attention. */
			float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
			uint32_t d = 0;
			for (; d + 4 <= hd; d += 4) {
				s0 += qh[d] * kj[d];
				s1 += qh[d + 1] * kj[d + 1];
				s2 += qh[d + 2] * kj[d + 2];
				s3 += qh[d + 3] * kj[d + 3];
			}
			for (; d < hd; d++)
				s0 += qh[d] * kj[d];
			p_s[i] = ((s0 + s1) + (s2 + s3)) * scale;
		}
		__syncthreads(); /* scores complete */

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
			__syncwarp(); /* every lane has read m_s[h] before lane 0 replaces it */
			if (lane == 0) {
				float corr = expf(m_old - m_new); /* 0 on the first chunk */
				corr_s[h] = corr;
				l_s[h] = l_s[h] * corr + sum;
				m_s[h] = m_new;
			}
		}
		__pipeline_wait_prior(0); /* the V copies too */
		__syncthreads();

		for (uint32_t e = tid; e < gw; e += blockDim.x) {
			uint32_t h = e / hd, d = e - h * hd;
			const float *ph = p_s + h * ATT_CHUNK, *vd = v_s + d;
			float a0 = 0.0f, a1 = 0.0f;
			uint32_t j = 0;
			for (; j + 2 <= n; j += 2) {
				a0 += ph[j] * vd[j * tile_stride];
				a1 += ph[j + 1] * vd[(j + 1) * tile_stride];
			}
			if (j < n)
				a0 += ph[j] * vd[j * tile_stride];
			acc_s[e] = acc_s[e] * corr_s[h] + (a0 + a1);
		}
		__syncthreads(); /* before the next chunk overwrites slot_s, the tiles and p_s */
	}
	uint32_t head0 = g * group;
	if (splits == 1) {
		T *o = out + (size_t)t * n_heads * hd + (size_t)head0 * hd;
		for (uint32_t e = tid; e < gw; e += blockDim.x)
			rs_store(o + e, acc_s[e] / l_s[e / hd]);
		return;
	}
	/* part: [n_tokens][n_heads][splits] records of head_dim sums, then the max, the sum. */
	for (uint32_t e = tid; e < gw; e += blockDim.x) {
		uint32_t h = e / hd, d = e - h * hd;
		float *rec = part + (((size_t)t * n_heads + head0 + h) * splits + z) * (hd + 2);
		rec[d] = acc_s[e];
		if (d == 0) {
			rec[hd] = m_s[h];
			rec[hd + 1] = l_s[h];
		}
	}
	/* The last of the (token, kv head)'s splits to finish merges them all, in split order
	 * (whichever block it is, the same sums): release our records, count ourselves in. */
	__shared__ bool merge;
	__threadfence(); /* pairs with the merger's fence after it read the count */
	__syncthreads();
	unsigned *count = done + (size_t)t * kv.n_kv_heads + g;
	if (tid == 0)
		merge = atomicAdd(count, 1u) == splits - 1;
	__syncthreads();
	if (!merge)
		return;
	__threadfence(); /* every split's records are visible from here */
	/* An empty split (past a shorter sequence's end) has max -inf and weighs
	 * exp(-inf) = 0; the first holds position 0, so the max is finite. Other blocks'
	 * records are read from L2 (__ldcg): this SM's L1 may hold stale lines. */
	for (uint32_t e = tid; e < gw; e += blockDim.x) {
		uint32_t h = e / hd, d = e - h * hd;
		const float *rec = part + ((size_t)t * n_heads + head0 + h) * splits * (hd + 2);
		float m = -INFINITY;
#pragma unroll 4
		for (uint32_t y = 0; y < splits; y++)
			m = fmaxf(m, __ldcg(rec + y * (hd + 2) + hd));
		float l = 0.0f, a = 0.0f;
#pragma unroll 4
		for (uint32_t y = 0; y < splits; y++) {
			const float *r = rec + y * (hd + 2);
			float w = expf(__ldcg(r + hd) - m);
			l += __ldcg(r + hd + 1) * w;
			a += __ldcg(r + d) * w;
		}
		rs_store(out + ((size_t)t * n_heads + head0 + h) * hd + d, a / l);
	}
	if (tid == 0)
		*count = 0; /* ready for the next launch (stream-ordered after this one) */
}

/* Let kernel take up to the device's opt-in limit of shared memory, of which its static
 * shared memory is a part: at least need bytes must remain. 0 or -EIO / -EINVAL. */
template <typename Kernel> static int allow_dynamic_smem(Kernel kernel, int optin, size_t need)
{
	cudaFuncAttributes attr;
	if (cudaFuncGetAttributes(&attr, kernel) != cudaSuccess)
		return -EIO;
	if (need + attr.sharedSizeBytes > (size_t)optin)
		return -EINVAL;
	int allowed = optin - (int)attr.sharedSizeBytes;
	return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, allowed) ==
			       cudaSuccess
		       ? 0
		       : -EIO;
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
	if (allow_dynamic_smem(attention_kernel<float>, optin, need) ||
	    allow_dynamic_smem(attention_kernel<__half>, optin, need) ||
	    allow_dynamic_smem(attention_kernel<__nv_bfloat16>, optin, need))
		return -EIO;
	return 0;
}

/* Scratch: the records, then the counts (one per block of an unsplit launch at most). */
extern "C" size_t rs_cuda_attention_scratch(uint32_t n_heads, uint32_t head_dim)
{
	return (size_t)ATT_SPLIT_BLOCKS * n_heads * (head_dim + 2) + ATT_SPLIT_BLOCKS;
}

extern "C" int rs_cuda_attention(void *out, enum rs_dtype out_dtype, const float *q,
				 size_t q_stride, const struct rs_cuda_kv_layer *kv,
				 const uint32_t *block_tables, const uint32_t *table_offset,
				 const uint32_t *positions, uint32_t n_tokens, uint32_t n_heads,
				 uint32_t max_ctx, float *scratch, cudaStream_t stream)
{
	if (!n_tokens)
		return 0;
	if (!kv->n_kv_heads || n_heads % kv->n_kv_heads || kv->head_dim > RS_CUDA_MAX_HEAD_DIM ||
	    n_tokens > 65535 || !max_ctx)
		return -EINVAL;
	uint32_t hd = kv->head_dim;
	size_t smem = attention_smem(n_heads / kv->n_kv_heads, hd);
	float scale = 1.0f / sqrtf((float)hd);
	/* Split the context when the (kv head, token) blocks alone are too few to fill the
	 * device, into at most ATT_SPLIT_BLOCKS blocks in all (what the scratch holds; one
	 * record per query head and block), each spanning a whole number of granules. */
	uint32_t granules = (max_ctx + ATT_SPAN_GRANULE - 1) / ATT_SPAN_GRANULE, splits = 1;
	size_t base_blocks = (size_t)kv->n_kv_heads * n_tokens;
	if (scratch && 2 * base_blocks <= ATT_SPLIT_BLOCKS) {
		splits = (uint32_t)(ATT_SPLIT_BLOCKS / base_blocks);
		splits = splits < granules ? splits : granules;
	}
	uint32_t span = splits == 1 ? max_ctx
				    : (granules + splits - 1) / splits * ATT_SPAN_GRANULE;
	splits = (max_ctx + span - 1) / span;
	dim3 grid(kv->n_kv_heads, n_tokens, splits);
	unsigned *done = scratch ? (unsigned *)(scratch + (size_t)ATT_SPLIT_BLOCKS * n_heads * (hd + 2))
				 : NULL;
	RS_DISPATCH_DTYPE(out_dtype, T,
			  return rs_launch(attention_kernel<T>, grid, dim3(ATT_THREADS), smem, stream,
					   (T *)out, scratch, done, q, q_stride, *kv, block_tables,
					   table_offset, positions, n_heads, span, scale));
}
