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

/* A warp per output column n: its lanes stream the weight row in 16-byte pieces,
 * GEMV_UNROLL of them in flight per lane, multiply each by the same piece of the (at most
 * M) input rows, and reduce over the warp at the end. Rows are 16-byte aligned (the
 * caller checks k). */
template <typename T, int M>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
gemv_kernel(float *__restrict__ y, const T *__restrict__ x, const T *__restrict__ w, uint32_t m,
	    uint32_t n, uint32_t k, int accumulate)
{
	typedef vec16<T> V;
	unsigned lane = threadIdx.x & 31;
	uint32_t col = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
	if (col >= n)
		return;
	uint32_t pieces = k / V::N;
	const uint4 *wr = reinterpret_cast<const uint4 *>(w + (size_t)col * k);
	const uint4 *xr = reinterpret_cast<const uint4 *>(x);
	float acc[M];
#pragma unroll
	for (int r = 0; r < M; r++)
		acc[r] = 0.0f;
	uint32_t i = lane;
	for (; i + 32 * (GEMV_UNROLL - 1) < pieces; i += 32 * GEMV_UNROLL) {
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
				V::unpack(__ldg(xr + (size_t)r * pieces + i + 32 * u), xf);
#pragma unroll
				for (int e = 0; e < V::N; e++)
					acc[r] = fmaf(wf[e], xf[e], acc[r]);
			}
		}
	}
	for (; i < pieces; i += 32) {
		float wf[V::N];
		V::unpack(__ldg(wr + i), wf);
#pragma unroll
		for (int r = 0; r < M; r++) {
			if (r >= (int)m)
				break;
			float xf[V::N];
			V::unpack(__ldg(xr + (size_t)r * pieces + i), xf);
#pragma unroll
			for (int e = 0; e < V::N; e++)
				acc[r] = fmaf(wf[e], xf[e], acc[r]);
		}
	}
#pragma unroll
	for (int r = 0; r < M; r++) {
		if (r >= (int)m)
			break;
		float s = rs_warp_sum(acc[r]);
		if (lane == 0) {
			float *yp = y + (size_t)r * n + col;
			*yp = accumulate ? *yp + s : s;
		}
	}
}

template <typename T>
static int gemv(float *y, const void *x, const void *w, uint32_t m, uint32_t n, uint32_t k,
		int accumulate, cudaStream_t stream)
{
	dim3 grid((n + GEMV_WARPS - 1) / GEMV_WARPS), block(GEMV_WARPS * 32);
	const T *xt = (const T *)x, *wt = (const T *)w;
	if (m == 1)
		gemv_kernel<T, 1><<<grid, block, 0, stream>>>(y, xt, wt, m, n, k, accumulate);
	else if (m == 2)
		gemv_kernel<T, 2><<<grid, block, 0, stream>>>(y, xt, wt, m, n, k, accumulate);
	else if (m <= 4)
		gemv_kernel<T, 4><<<grid, block, 0, stream>>>(y, xt, wt, m, n, k, accumulate);
	else
		gemv_kernel<T, 8><<<grid, block, 0, stream>>>(y, xt, wt, m, n, k, accumulate);
	return rs_launch_check();
}

extern "C" int rs_cuda_matmul(cublasHandle_t handle, float *y, const void *x, const void *w,
			      enum rs_dtype dtype, uint32_t m, uint32_t n, uint32_t k,
			      int accumulate)
{
	cudaDataType_t type;
	switch (dtype) {
	case RS_DTYPE_F32:
		type = CUDA_R_32F;
		break;
	case RS_DTYPE_F16:
		type = CUDA_R_16F;
		break;
	case RS_DTYPE_BF16:
		type = CUDA_R_16BF;
		break;
	default:
		return -EINVAL;
	}
	if (!m || !n || !k)
		return 0;
	/* Our kernel reads rows in 16-byte pieces: k must fill them exactly (the buffers
	 * themselves come from cudaMalloc, 256-byte aligned). */
	if (m <= GEMV_MAX_ROWS && (size_t)k * rs_dtype_size(dtype) % 16 == 0) {
		cudaStream_t stream;
		if (cublasGetStream(handle, &stream) != CUBLAS_STATUS_SUCCESS)
			return -EIO;
		RS_DISPATCH_DTYPE(dtype, T, return gemv<T>(y, x, w, m, n, k, accumulate, stream));
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
