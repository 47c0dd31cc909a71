/* Products with block-quantized weights on the device (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K, kept
 * as the file's blocks): y[m][n] (+)= x[m][k] w[n][k]^T, x f16, y f32 with row stride ldy.
 *
 * Up to QGEMV_MAX_ROWS rows (decode): one warp per output column (weight row). Lane l
 * decodes the row's 32-element groups l, l + 32, ... (rsq_decode_group, the code the host
 * tests check) and multiplies each into its m sums, one fmaf per element in order
 * (rsq_gemv_lane_dot's arithmetic); the warp adds its lanes by a butterfly. Adjacent lanes
 * read adjacent groups, so a warp's loads cover one contiguous span of the row. No
 * fused prologue or epilogue: quantized models take the unfused path (rs_cuda_rmsnorm,
 * rs_cuda_swiglu and rs_cuda_rope_kv_store around this product), the simplest to get
 * right without a device to run on.
 *
 * Larger batches: a panel of weight rows is dequantized to f16 into the caller's scratch
 * and multiplied by cublasGemmEx (f16 inputs, f32 compute), panel after panel. */
#include <cerrno>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_util.cuh"
#include "kernels/cuda/quant_decode.h"

enum { QGEMV_MAX_ROWS = 16, QGEMV_WARPS = 4, QDEQ_THREADS = 256 };

/* The 32 f16 activations of group g of row xr, as floats. */
__device__ __forceinline__ void qgemv_load_x(float *f, const __half *xr, uint32_t g)
{
	const uint4 *p = reinterpret_cast<const uint4 *>(xr + (size_t)32 * g);
#pragma unroll
	for (int q = 0; q < 4; q++) {
		uint4 v = p[q];
		const __half *h = reinterpret_cast<const __half *>(&v);
#pragma unroll
		for (int i = 0; i < 8; i++)
			f[8 * q + i] = __half2float(h[i]);
	}
}

template <int T, int M>
__global__ void __launch_bounds__(QGEMV_WARPS * 32)
qgemv_kernel(float *__restrict__ y, size_t ldy, const __half *__restrict__ x,
	     const uint8_t *__restrict__ w, uint32_t m, uint32_t n, uint32_t k, int accumulate)
{
	const enum rs_dtype dtype = (enum rs_dtype)T;
	unsigned lane = threadIdx.x & 31;
	uint32_t col = blockIdx.x * QGEMV_WARPS + (threadIdx.x >> 5);
	if (col >= n)
		return; /* the whole warp */
	size_t row_bytes = (size_t)(k / 32 / rsq_block_groups(dtype)) * rsq_block_bytes(dtype);
	const uint8_t *row = w + (size_t)col * row_bytes;
	float acc[M];
#pragma unroll
	for (int r = 0; r < M; r++)
		acc[r] = 0.0f;
	for (uint32_t g = lane; g < k / 32; g += 32) {
		float wf[32];
		rsq_decode_row_group(wf, row, dtype, g);
#pragma unroll
		for (int r = 0; r < M; r++) {
			if (r >= (int)m)
				break;
			float xf[32];
			qgemv_load_x(xf, x + (size_t)r * k, g);
#pragma unroll
			for (int e = 0; e < 32; e++)
				acc[r] = fmaf(wf[e], xf[e], acc[r]);
		}
	}
#pragma unroll
	for (int r = 0; r < M; r++) {
		float s = rs_warp_sum(acc[r]);
		if (lane == 0 && r < (int)m) {
			float *yp = y + (size_t)r * ldy + col;
			*yp = accumulate ? *yp + s : s;
		}
	}
}

/* Rows [0, rows) of a quantized matrix ([rows][k]) to f16 [rows][k]: one thread a group. */
template <int T>
__global__ void __launch_bounds__(QDEQ_THREADS)
qdequant_kernel(__half *__restrict__ out, const uint8_t *__restrict__ w, uint32_t rows,
		uint32_t k)
{
	const enum rs_dtype dtype = (enum rs_dtype)T;
	size_t groups = (size_t)rows * (k / 32);
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= groups)
		return;
	size_t r = i / (k / 32);
	uint32_t g = (uint32_t)(i % (k / 32));
	size_t row_bytes = (size_t)(k / 32 / rsq_block_groups(dtype)) * rsq_block_bytes(dtype);
	float f[32];
	rsq_decode_row_group(f, w + r * row_bytes, dtype, g);
	__half *o = out + r * k + (size_t)32 * g;
#pragma unroll
	for (int e = 0; e < 32; e++)
		o[e] = __float2half_rn(f[e]);
}

/* Rows tokens[t] of a quantized [vocab][dim] table as f32: one block per token. */
template <int T>
__global__ void qembedding_kernel(float *__restrict__ out, const uint8_t *__restrict__ table,
				  const uint32_t *__restrict__ tokens, uint32_t dim)
{
	const enum rs_dtype dtype = (enum rs_dtype)T;
	size_t row_bytes = (size_t)(dim / 32 / rsq_block_groups(dtype)) * rsq_block_bytes(dtype);
	const uint8_t *row = table + (size_t)tokens[blockIdx.x] * row_bytes;
	for (uint32_t g = threadIdx.x; g < dim / 32; g += blockDim.x) {
		float f[32];
		rsq_decode_row_group(f, row, dtype, g);
		float *o = out + (size_t)blockIdx.x * dim + (size_t)32 * g;
#pragma unroll
		for (int e = 0; e < 32; e++)
			o[e] = f[e];
	}
}

/* Run the statement with the template argument Q the dtype's value; -EINVAL for a dtype
 * that is not quantized. */
#define RS_DISPATCH_QUANT(dtype, Q, ...)                                      \
	do {                                                                  \
		switch (dtype) {                                              \
		case RS_DTYPE_Q8_0: {                                         \
			enum { Q = RS_DTYPE_Q8_0 };                           \
			__VA_ARGS__;                                          \
			break;                                                \
		}                                                             \
		case RS_DTYPE_Q4_0: {                                         \
			enum { Q = RS_DTYPE_Q4_0 };                           \
			__VA_ARGS__;                                          \
			break;                                                \
		}                                                             \
		case RS_DTYPE_Q4_K: {                                         \
			enum { Q = RS_DTYPE_Q4_K };                           \
			__VA_ARGS__;                                          \
			break;                                                \
		}                                                             \
		case RS_DTYPE_Q5_K: {                                         \
			enum { Q = RS_DTYPE_Q5_K };                           \
			__VA_ARGS__;                                          \
			break;                                                \
		}                                                             \
		case RS_DTYPE_Q6_K: {                                         \
			enum { Q = RS_DTYPE_Q6_K };                           \
			__VA_ARGS__;                                          \
			break;                                                \
		}                                                             \
		default:                                                      \
			return -EINVAL;                                       \
		}                                                             \
	} while (0)

template <int T, int M>
static int qgemv(float *y, size_t ldy, const void *x, const void *w, uint32_t m, uint32_t n,
		 uint32_t k, int accumulate, cudaStream_t stream)
{
	qgemv_kernel<T, M><<<(n + QGEMV_WARPS - 1) / QGEMV_WARPS, QGEMV_WARPS * 32, 0, stream>>>(
		y, ldy, (const __half *)x, (const uint8_t *)w, m, n, k, accumulate);
	return rs_launch_check();
}

template <int T>
static int qgemv_rows(float *y, size_t ldy, const void *x, const void *w, uint32_t m,
		      uint32_t n, uint32_t k, int accumulate, cudaStream_t stream)
{
	if (m <= 1)
		return qgemv<T, 1>(y, ldy, x, w, m, n, k, accumulate, stream);
	if (m <= 2)
		return qgemv<T, 2>(y, ldy, x, w, m, n, k, accumulate, stream);
	if (m <= 4)
		return qgemv<T, 4>(y, ldy, x, w, m, n, k, accumulate, stream);
	if (m <= 8)
		return qgemv<T, 8>(y, ldy, x, w, m, n, k, accumulate, stream);
	return qgemv<T, 16>(y, ldy, x, w, m, n, k, accumulate, stream);
}

extern "C" int rs_cuda_dequantize_f16(void *out, const void *w, enum rs_dtype dtype,
				      uint32_t rows, uint32_t k, cudaStream_t stream)
{
	if (!rsq_block_bytes(dtype) || k % (32 * rsq_block_groups(dtype)))
		return -EINVAL;
	size_t groups = (size_t)rows * (k / 32);
	if (!groups)
		return 0;
	unsigned blocks = (unsigned)((groups + QDEQ_THREADS - 1) / QDEQ_THREADS);
	RS_DISPATCH_QUANT(dtype, Q,
			  qdequant_kernel<Q><<<blocks, QDEQ_THREADS, 0, stream>>>(
				  (__half *)out, (const uint8_t *)w, rows, k));
	return rs_launch_check();
}

extern "C" int rs_cuda_embedding_quant(float *out, const void *table, enum rs_dtype dtype,
				       const uint32_t *tokens, uint32_t n_tokens, uint32_t dim,
				       cudaStream_t stream)
{
	if (!rsq_block_bytes(dtype) || dim % (32 * rsq_block_groups(dtype)))
		return -EINVAL;
	if (!n_tokens)
		return 0;
	RS_DISPATCH_QUANT(dtype, Q,
			  qembedding_kernel<Q><<<n_tokens, 128, 0, stream>>>(
				  out, (const uint8_t *)table, tokens, dim));
	return rs_launch_check();
}

extern "C" int rs_cuda_qmatmul(cublasHandle_t handle, float *y, size_t ldy, const void *x,
			       const void *w, enum rs_dtype dtype, uint32_t m, uint32_t n,
			       uint32_t k, int accumulate, void *panel, size_t panel_elems)
{
	bool quant = rsq_block_bytes(dtype) != 0;
	if ((!quant && dtype != RS_DTYPE_F16) || ldy < n ||
	    (quant && k % (32 * rsq_block_groups(dtype))))
		return -EINVAL;
	if (!m || !n || !k)
		return 0;
	cudaStream_t stream;
	if (cublasGetStream(handle, &stream) != CUBLAS_STATUS_SUCCESS)
		return -EIO;
	if (quant && m <= QGEMV_MAX_ROWS) {
		RS_DISPATCH_QUANT(dtype, Q,
				  return qgemv_rows<Q>(y, ldy, x, w, m, n, k, accumulate, stream));
	}
	uint32_t per_panel = n;
	if (quant) {
		if (!panel || panel_elems < k)
			return -EINVAL;
		per_panel = panel_elems / k < n ? (uint32_t)(panel_elems / k) : n;
	}
	size_t row_bytes = quant ? (size_t)(k / 32 / rsq_block_groups(dtype)) * rsq_block_bytes(dtype)
				 : (size_t)k * 2;
	float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
	for (uint32_t n0 = 0; n0 < n; n0 += per_panel) {
		uint32_t rows = n - n0 < per_panel ? n - n0 : per_panel;
		const void *wp = (const uint8_t *)w + (size_t)n0 * row_bytes;
		if (quant) {
			int rc = rs_cuda_dequantize_f16(panel, wp, dtype, rows, k, stream);
			if (rc)
				return rc;
			wp = panel;
		}
		/* Column-major Y^T (rows x m, ldy) = W_panel X^T, as rs_cuda_matmul. */
		cublasStatus_t st = cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, (int)rows, (int)m,
						 (int)k, &alpha, wp, CUDA_R_16F, (int)k, x,
						 CUDA_R_16F, (int)k, &beta, y + n0, CUDA_R_32F,
						 (int)ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
		if (st != CUBLAS_STATUS_SUCCESS)
			return -EIO;
	}
	return 0;
}
