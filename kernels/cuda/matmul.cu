/* The linear layers on the device: y[m][n] (+)= x[m][k] w[n][k]^T, fp32 accumulation.
 *
 * Decode multiplies a handful of rows by every weight once per step, so that its speed is
 * the rate at which the weights stream from device memory. For up to GEMV_MAX_ROWS rows
 * our own kernel does that (cuBLAS's choices for such shapes reached 40-85% of the copy
 * bandwidth on an H100, docs/perf.md); larger batches go to cublasGemmEx. */
#include <cerrno>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_util.cuh"

enum { GEMV_MAX_ROWS = 8, GEMV_WARPS = 8, GEMV_UNROLL = 4 };

/* 16 bytes of T as floats. */
template <typename T> struct vec16;
template <> struct vec16<float> {
	enum { N = 4 };
	static __device__ __forceinline__ void unpack(uint4 v, float *f)
	{
		f[0] = __uint_as_float(v.x), f[1] = __uint_as_float(v.y);
		f[2] = __uint_as_float(v.z), f[3] = __uint_as_float(v.w);
	}
};
template <> struct vec16<__half> {
	enum { N = 8 };
	static __device__ __forceinline__ void unpack(uint4 v, float *f)
	{
		const __half2 *h = reinterpret_cast<const __half2 *>(&v);
#pragma unroll
		for (int i = 0; i < 4; i++) {
			float2 p = __half22float2(h[i]);
			f[2 * i] = p.x, f[2 * i + 1] = p.y;
		}
	}
};
template <> struct vec16<__nv_bfloat16> {
	enum { N = 8 };
	static __device__ __forceinline__ void unpack(uint4 v, float *f)
	{
		const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&v);
#pragma unroll
		for (int i = 0; i < 4; i++) {
			float2 p = __bfloat1622float2(h[i]);
			f[2 * i] = p.x, f[2 * i + 1] = p.y;
		}
	}
};

/* v rounded to T and back (what storing the normalized row in T and reading it does). */
template <typename T> __device__ __forceinline__ float round_to(float v);
template <> __device__ __forceinline__ float round_to<float>(float v) { return v; }
template <> __device__ __forceinline__ float round_to<__half>(float v)
{
	return __half2float(__float2half_rn(v));
}
template <> __device__ __forceinline__ float round_to<__nv_bfloat16>(float v)
{
	return __bfloat162float(__float2bfloat16_rn(v));
}

/* Where the kernel's input rows come from: rows of T as they are, or (NORM) fp32 rows
 * (gathered through `rows` when not NULL) put through RMSNorm on the way, exactly as
 * rs_cuda_rmsnorm would have written them in T. */
template <typename T> struct gemv_input {
	const T *x;
	const float *xf, *norm_weight;
	const uint32_t *rows;
	float eps;
};

/* Piece i (16 bytes of T) of input row r as floats. */
template <typename T, bool NORM>
__device__ __forceinline__ void input_piece(const gemv_input<T> &in, uint32_t r, uint32_t i,
					    uint32_t k, const float *scale, float *out)
{
	typedef vec16<T> V;
	if (!NORM) {
		V::unpack(__ldg(reinterpret_cast<const uint4 *>(in.x + (size_t)r * k) + i), out);
		return;
	}
	const float4 *xr = reinterpret_cast<const float4 *>(
		in.xf + (size_t)(in.rows ? in.rows[r] : r) * k + (size_t)i * V::N);
	const float4 *wr = reinterpret_cast<const float4 *>(in.norm_weight + (size_t)i * V::N);
#pragma unroll
	for (int q = 0; q < V::N / 4; q++) {
		float4 xv = __ldg(xr + q), wv = __ldg(wr + q);
		out[4 * q] = round_to<T>(xv.x * scale[r] * wv.x);
		out[4 * q + 1] = round_to<T>(xv.y * scale[r] * wv.y);
		out[4 * q + 2] = round_to<T>(xv.z * scale[r] * wv.z);
		out[4 * q + 3] = round_to<T>(xv.w * scale[r] * wv.w);
	}
}

/* Block: GEMV_WARPS warps on GEMV_WARPS / splits output columns, `splits` warps per
 * column, each over its own range of k. A warp's lanes stream the weight row in 16-byte
 * pieces, GEMV_UNROLL in flight per lane, multiply each by the same piece of the (at
 * most M) input rows, and reduce over the warp; the splits' sums are then added in a
 * fixed order. Rows are 16-byte aligned (the caller checks k). With NORM, the block
 * first computes each input row's RMSNorm scale (double sum of squares, like
 * rs_op_rmsnorm), so that the normalized rows never go through memory. */
template <typename T, int M, bool NORM>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
gemv_kernel(float *__restrict__ y, gemv_input<T> in, const T *__restrict__ w, uint32_t m,
	    uint32_t n, uint32_t k, uint32_t splits, int accumulate)
{
	typedef vec16<T> V;
	__shared__ float partial[GEMV_WARPS][M];
	__shared__ float scale[M];
	__shared__ double reduce[32];
	unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	if (NORM) {
		for (uint32_t r = 0; r < m; r++) {
			const float *xr = in.xf + (size_t)(in.rows ? in.rows[r] : r) * k;
			double ss = 0.0;
			for (uint32_t i = threadIdx.x; i < k; i += blockDim.x)
				ss += (double)xr[i] * xr[i];
			ss = rs_block_reduce(ss, rs_op_add(), reduce);
			if (threadIdx.x == 0)
				scale[r] = (float)(1.0 / sqrt(ss / k + in.eps));
		}
		__syncthreads();
	}
	uint32_t col = blockIdx.x * (GEMV_WARPS / splits) + warp / splits, split = warp % splits;
	uint32_t pieces = k / V::N, per_split = (pieces + splits - 1) / splits;
	uint32_t begin = split * per_split, end = begin + per_split < pieces ? begin + per_split : pieces;
	float acc[M];
#pragma unroll
	for (int r = 0; r < M; r++)
		acc[r] = 0.0f;
	if (col < n) {
		const uint4 *wr = reinterpret_cast<const uint4 *>(w + (size_t)col * k);
		uint32_t i = begin + lane;
		for (; i + 32 * (GEMV_UNROLL - 1) < end; i += 32 * GEMV_UNROLL) {
			uint4 wv[GEMV_UNROLL];
#pragma unroll
			for (int u = 0; u < GEMV_UNROLL; u++)
				wv[u] = __ldg(wr + i + 32 * u);
#pragma unroll
			for (int u = 0; u < GEMV_UNROLL; u++) {
				float wf[V::N];
				V::unpack(wv[u], wf);
#pragma unroll
				for (int r = 0; r < M; r++) {
					if (r >= (int)m)
						break;
					float xf[V::N];
					input_piece<T, NORM>(in, r, i + 32 * u, k, scale, xf);
#pragma unroll
					for (int e = 0; e < V::N; e++)
						acc[r] = fmaf(wf[e], xf[e], acc[r]);
				}
			}
		}
		for (; i < end; i += 32) {
			float wf[V::N];
			V::unpack(__ldg(wr + i), wf);
#pragma unroll
			for (int r = 0; r < M; r++) {
				if (r >= (int)m)
					break;
				float xf[V::N];
				input_piece<T, NORM>(in, r, i, k, scale, xf);
#pragma unroll
				for (int e = 0; e < V::N; e++)
					acc[r] = fmaf(wf[e], xf[e], acc[r]);
			}
		}
	}
#pragma unroll
	for (int r = 0; r < M; r++) {
		float s = rs_warp_sum(acc[r]);
		if (lane == 0)
			partial[warp][r] = s;
	}
	__syncthreads();
	if (col >= n || split != 0 || lane >= (unsigned)m)
		return;
	/* Lane r of the column's first warp writes row r. */
	float s = 0.0f;
	for (uint32_t z = 0; z < splits; z++)
		s += partial[warp + z][lane];
	float *yp = y + (size_t)lane * n + col;
	*yp = accumulate ? *yp + s : s;
}

/* Warps per column: enough columns x splits to fill the device (an H100 holds 8448
 * resident warps), while each split keeps at least two pieces per lane. */
static uint32_t gemv_splits(uint32_t n, uint32_t pieces)
{
	uint32_t splits = 1;
	while (splits < GEMV_WARPS && (size_t)n * splits < 8192 && pieces / (2 * splits) >= 64)
		splits *= 2;
	return splits;
}

template <typename T, bool NORM>
static int gemv(float *y, const gemv_input<T> &in, const void *w, uint32_t m, uint32_t n,
		uint32_t k, int accumulate, cudaStream_t stream)
{
	uint32_t splits = gemv_splits(n, k / vec16<T>::N), cols = GEMV_WARPS / splits;
	dim3 grid((n + cols - 1) / cols), block(GEMV_WARPS * 32);
	const T *wt = (const T *)w;
	if (m == 1)
		gemv_kernel<T, 1, NORM><<<grid, block, 0, stream>>>(y, in, wt, m, n, k, splits, accumulate);
	else if (m == 2)
		gemv_kernel<T, 2, NORM><<<grid, block, 0, stream>>>(y, in, wt, m, n, k, splits, accumulate);
	else if (m <= 4)
		gemv_kernel<T, 4, NORM><<<grid, block, 0, stream>>>(y, in, wt, m, n, k, splits, accumulate);
	else
		gemv_kernel<T, 8, NORM><<<grid, block, 0, stream>>>(y, in, wt, m, n, k, splits, accumulate);
	return rs_launch_check();
}

static int gemm_type(enum rs_dtype dtype, cudaDataType_t *type)
{
	switch (dtype) {
	case RS_DTYPE_F32:
		*type = CUDA_R_32F;
		return 0;
	case RS_DTYPE_F16:
		*type = CUDA_R_16F;
		return 0;
	case RS_DTYPE_BF16:
		*type = CUDA_R_16BF;
		return 0;
	default:
		return -EINVAL;
	}
}

/* Whether our kernel takes the product: few rows, and rows of k elements that are a whole
 * number of 16-byte pieces (the buffers themselves come from cudaMalloc, 256-byte
 * aligned). */
static bool use_gemv(enum rs_dtype dtype, uint32_t m, uint32_t k)
{
	return m <= GEMV_MAX_ROWS && (size_t)k * rs_dtype_size(dtype) % 16 == 0;
}

extern "C" int rs_cuda_matmul(cublasHandle_t handle, float *y, const void *x, const void *w,
			      enum rs_dtype dtype, uint32_t m, uint32_t n, uint32_t k,
			      int accumulate)
{
	cudaDataType_t type;
	if (gemm_type(dtype, &type))
		return -EINVAL;
	if (!m || !n || !k)
		return 0;
	if (use_gemv(dtype, m, k)) {
		cudaStream_t stream;
		if (cublasGetStream(handle, &stream) != CUBLAS_STATUS_SUCCESS)
			return -EIO;
		RS_DISPATCH_DTYPE(dtype, T, gemv_input<T> in = {};
				  in.x = (const T *)x;
				  return gemv<T, false>(y, in, w, m, n, k, accumulate, stream));
	}
	float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
	/* cuBLAS is column-major: row-major Y[m][n] is column-major Y^T (n x m), and
	 * Y^T = W X^T with W row-major [n][k] read as column-major k x n, transposed, and
	 * X row-major [m][k] read as column-major k x m. */
	cublasStatus_t st = cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, (int)n, (int)m, (int)k,
					 &alpha, w, type, (int)k, x, type, (int)k, &beta, y,
					 CUDA_R_32F, (int)n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
	return st == CUBLAS_STATUS_SUCCESS ? 0 : -EIO;
}

extern "C" int rs_cuda_norm_matmul(cublasHandle_t handle, float *y, const float *x,
				   const uint32_t *rows, const float *norm_weight, float eps,
				   void *xb, const void *w, enum rs_dtype dtype, uint32_t m,
				   uint32_t n, uint32_t k, int accumulate)
{
	cudaDataType_t type;
	if (gemm_type(dtype, &type))
		return -EINVAL;
	if (!m || !n || !k)
		return 0;
	cudaStream_t stream;
	if (cublasGetStream(handle, &stream) != CUBLAS_STATUS_SUCCESS)
		return -EIO;
	if (use_gemv(dtype, m, k)) {
		RS_DISPATCH_DTYPE(dtype, T, gemv_input<T> in = {};
				  in.xf = x, in.rows = rows, in.norm_weight = norm_weight, in.eps = eps;
				  return gemv<T, true>(y, in, w, m, n, k, accumulate, stream));
	}
	int rc = rs_cuda_rmsnorm(xb, dtype, x, rows, norm_weight, m, k, eps, stream);
	return rc ? rc : rs_cuda_matmul(handle, y, xb, w, dtype, m, n, k, accumulate);
}
