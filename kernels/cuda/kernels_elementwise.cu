/* Row-wise kernels: embedding lookup, RMSNorm, SwiGLU, fp32 conversion (see cuda_ops.h).
 * Each follows its CPU twin in ops_cpu.c operation for operation, so that the two differ
 * only by summation order. */
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_util.cuh"

template <typename T>
__global__ void embedding_kernel(float *out, const T *table, const uint32_t *tokens, uint32_t dim)
{
	rs_pdl_trigger(); /* the first GEMV may prefetch its weights meanwhile */
	rs_pdl_wait();
	const T *row = table + (size_t)tokens[blockIdx.x] * dim;
	float *o = out + (size_t)blockIdx.x * dim;
	for (uint32_t i = threadIdx.x; i < dim; i += blockDim.x)
		o[i] = rs_load(row + i);
}

extern "C" int rs_cuda_embedding(float *out, const void *table, enum rs_dtype dtype,
				 const uint32_t *tokens, uint32_t n_tokens, uint32_t dim,
				 cudaStream_t stream)
{
	if (!n_tokens)
		return 0;
	RS_DISPATCH_DTYPE(dtype, T,
			  return rs_launch(embedding_kernel<T>, dim3(n_tokens), dim3(256), 0, stream,
					   out, (const T *)table, tokens, dim));
}

/* One block per row. Each thread's loads are issued RMS_UNROLL at a time: a decode step
 * normalizes one row, and a loop waiting on one load per iteration made this kernel
 * latency-bound (10 us for 2048 values). The row is read twice; the second read hits L1. */
enum { RMS_THREADS = 512, RMS_UNROLL = 4 };

template <typename T>
__global__ void __launch_bounds__(RMS_THREADS)
rmsnorm_kernel(T *out, const float *x, const uint32_t *rows, const float *weight, uint32_t dim,
	       float eps)
{
	__shared__ double partial[32];
	rs_pdl_trigger();
	rs_pdl_wait();
	uint32_t r = blockIdx.x;
	const float *xr = x + (size_t)(rows ? rows[r] : r) * dim;
	double ss = 0.0;
	for (uint32_t i = threadIdx.x; i < dim; i += RMS_UNROLL * blockDim.x) {
		float v[RMS_UNROLL];
		rs_load_strided(v, xr, i, dim);
#pragma unroll
		for (int u = 0; u < RMS_UNROLL; u++)
			ss += (double)v[u] * v[u];
	}
	ss = rs_block_reduce(ss, rs_op_add(), partial);
	float scale = (float)(1.0 / sqrt(ss / dim + eps));
	T *o = out + (size_t)r * dim;
#pragma unroll RMS_UNROLL
	for (uint32_t i = threadIdx.x; i < dim; i += blockDim.x)
		rs_store(o + i, xr[i] * scale * weight[i]);
}

extern "C" int rs_cuda_rmsnorm(void *out, enum rs_dtype out_dtype, const float *x,
			       const uint32_t *rows, const float *weight, uint32_t n_rows,
			       uint32_t dim, float eps, cudaStream_t stream)
{
	if (!n_rows)
		return 0;
	RS_DISPATCH_DTYPE(out_dtype, T,
			  return rs_launch(rmsnorm_kernel<T>, dim3(n_rows), dim3(RMS_THREADS), 0, stream,
					   (T *)out, x, rows, weight, dim, eps));
}

template <typename T>
__global__ void swiglu_kernel(T *out, const float *gate_up, uint32_t width)
{
	rs_pdl_trigger(); /* the down GEMV may prefetch its weights meanwhile */
	rs_pdl_wait();
	const float *g = gate_up + (size_t)blockIdx.y * 2 * width;
	const float *u = g + width;
	T *o = out + (size_t)blockIdx.y * width;
	for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < width;
	     i += gridDim.x * blockDim.x)
		rs_store(o + i, g[i] / (1.0f + expf(-g[i])) * u[i]);
}

extern "C" int rs_cuda_swiglu(void *out, enum rs_dtype out_dtype, const float *gate_up,
			      uint32_t n_rows, uint32_t width, cudaStream_t stream)
{
	if (!n_rows)
		return 0;
	if (n_rows > 65535)
		return -EINVAL; /* grid y limit; rows are at most max_batch_tokens anyway */
	dim3 grid((width + 255) / 256 < 64 ? (width + 255) / 256 : 64, n_rows);
	RS_DISPATCH_DTYPE(out_dtype, T,
			  return rs_launch(swiglu_kernel<T>, grid, dim3(256), 0, stream, (T *)out,
					   gate_up, width));
}

template <typename T>
__global__ void convert_kernel(T *out, const float *in, size_t n)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x)
		rs_store(out + i, in[i]);
}

extern "C" int rs_cuda_convert(void *out, enum rs_dtype dtype, const float *in, size_t n,
			       cudaStream_t stream)
{
	if (!n)
		return 0;
	size_t blocks = (n + 255) / 256;
	RS_DISPATCH_DTYPE(dtype, T,
			  convert_kernel<T><<<blocks < 4096 ? (unsigned)blocks : 4096, 256, 0,
					      stream>>>((T *)out, in, n));
	return rs_launch_check();
}

__global__ void add_bias_kernel(float *out, const float *bias, uint32_t width, size_t stride)
{
	rs_pdl_wait();
	float *o = out + (size_t)blockIdx.y * stride;
	for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < width;
	     i += gridDim.x * blockDim.x)
		o[i] += bias[i];
}

extern "C" int rs_cuda_add_bias(float *out, const float *bias, uint32_t n_rows, uint32_t width,
				size_t stride, cudaStream_t stream)
{
	if (!n_rows)
		return 0;
	if (n_rows > 65535)
		return -EINVAL; /* grid y limit; rows are at most max_batch_tokens anyway */
	dim3 grid((width + 255) / 256 < 64 ? (width + 255) / 256 : 64, n_rows);
	return rs_launch(add_bias_kernel, grid, dim3(256), 0, stream, out, bias, width, stride);
}
