/* Device helpers shared by the kernels in kernels/cuda/: element conversions, block-wide
 * reductions, the launch check. Internal to the .cu files. */
#ifndef RS_KERNELS_CUDA_UTIL_CUH
#define RS_KERNELS_CUDA_UTIL_CUH

#include <cerrno>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels/model/model.h"

/* Element loads and stores of the three weight/activation types, as fp32. */
__device__ __forceinline__ float rs_load(const float *p) { return *p; }
__device__ __forceinline__ float rs_load(const __half *p) { return __half2float(*p); }
__device__ __forceinline__ float rs_load(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ void rs_store(float *p, float v) { *p = v; }
/* Round to nearest even, as kernels/model/dtype.c does on the CPU. */
__device__ __forceinline__ void rs_store(__half *p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void rs_store(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }

/* v[u] = p[i0 + u * blockDim.x] for u < N, 0 from index n on: the N loads are issued
 * before any is used. A loop of single loads waits on each, and a store between loads
 * serializes them (the compiler cannot tell the addresses apart); in kernels that walk
 * one row per block, that made the row's load latency the kernel's run time. */
template <int N>
__device__ __forceinline__ void rs_load_strided(float (&v)[N], const float *p, uint32_t i0,
						uint32_t n)
{
#pragma unroll
	for (int u = 0; u < N; u++) {
		uint32_t i = i0 + u * blockDim.x;
		v[u] = i < n ? p[i] : 0.0f;
	}
}

/* Reduce v over the whole block (blockDim.x a multiple of 32, at most 1024) with op; every
 * thread gets the result. shared holds 32 values. The warps' partials are combined in a
 * fixed order by every thread, so the result is deterministic and the same everywhere,
 * which the sampler relies on (its searches branch on it uniformly).
 * Must be reached by every thread of the block. */
template <typename T, typename Op>
__device__ __forceinline__ T rs_block_reduce(T v, Op op, T *shared)
{
	for (int off = 16; off > 0; off >>= 1)
		v = op(v, __shfl_xor_sync(0xffffffffu, v, off));
	unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
	__syncthreads(); /* the previous reduction's readers are done with shared */
	if (lane == 0)
		shared[warp] = v;
	__syncthreads();
	v = shared[0];
	for (unsigned w = 1; w < warps; w++)
		v = op(v, shared[w]);
	return v;
}

/* Element `which` (0 or 1) of the RoPE pair (a, b) rotated by (c, s): rs_op_rope's
 * arithmetic, with explicitly rounded products so that nvcc does not contract them into
 * FMAs (the CPU's x86-64 build has no FMA to contract into): bit-equal to the CPU. */
__device__ __forceinline__ float rs_rope_rotate(float a, float b, float c, float s,
						unsigned which)
{
	return which == 0 ? __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s))
			  : __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
}

/* Sum over one warp; every lane gets it. */
__device__ __forceinline__ float rs_warp_sum(float v)
{
	for (int off = 16; off > 0; off >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, off);
	return v;
}

__device__ __forceinline__ float rs_warp_max(float v)
{
	for (int off = 16; off > 0; off >>= 1)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
	return v;
}

struct rs_op_add {
	template <typename T> __device__ T operator()(T a, T b) const { return a + b; }
};
struct rs_op_max {
	template <typename T> __device__ T operator()(T a, T b) const { return a > b ? a : b; }
};
struct rs_op_min {
	template <typename T> __device__ T operator()(T a, T b) const { return a < b ? a : b; }
};

/* Programmatic dependent launch (sm_90 and later; no-ops before): a kernel launched with
 * the programmatic-serialization attribute may start while the kernel before it in the
 * stream is still running. Every block must call rs_pdl_wait() before it touches data an
 * earlier kernel writes or reads; the wait returns once that kernel has completed and its
 * memory is visible (and, each kernel having waited for its own predecessor, every
 * earlier one). Before the wait a kernel may only read what no kernel still running
 * writes: weights, tables uploaded at load, the step's metadata copied from the host.
 * rs_pdl_trigger() lets the next kernel start before this one's blocks exit. */
__device__ __forceinline__ void rs_pdl_wait(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
	asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void rs_pdl_trigger(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
	asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

/* Compiled like every kernel of its file: its PTX version says whether the
 * griddepcontrol instructions above were compiled in (a build for compute_80 alone,
 * JIT-compiled on an H100, has none, and its kernels must not start early). */
static __global__ void rs_pdl_probe(void) {}

/* Whether device 0 (the backend's) runs programmatic dependent launches of this file's
 * kernels: sm_90 on, and code compiled for it. */
static inline bool rs_pdl_supported(void)
{
	/* A function-local static: computed once, thread-safe (C++11). */
	static const bool supported = [] {
		int major = 0;
		cudaFuncAttributes probe;
		if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) !=
			    cudaSuccess ||
		    cudaFuncGetAttributes(&probe, rs_pdl_probe) != cudaSuccess) {
			cudaGetLastError(); /* ours: not the next launch check's */
			return false;
		}
		return major >= 9 && probe.ptxVersion >= 90;
	}();
	return supported;
}

/* Launch kernel<<<grid, block, smem, stream>>>(args) as a programmatic dependent launch
 * where the device has them (the kernel must call rs_pdl_wait, see above), so that its
 * blocks are resident and waiting when the kernel before it ends: between the small
 * kernels of a decode step, the launch latency was a large part of the step. 0 or
 * -EIO. */
template <typename... Params, typename... Args>
static inline int rs_launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
			    cudaStream_t stream, Args... args)
{
	cudaLaunchConfig_t config = {};
	config.gridDim = grid;
	config.blockDim = block;
	config.dynamicSmemBytes = smem;
	config.stream = stream;
	cudaLaunchAttribute pdl;
	pdl.id = cudaLaunchAttributeProgrammaticStreamSerialization;
	pdl.val.programmaticStreamSerializationAllowed = 1;
	config.attrs = &pdl;
	config.numAttrs = rs_pdl_supported() ? 1 : 0;
	if (cudaLaunchKernelEx(&config, kernel, args...) == cudaSuccess)
		return 0;
	cudaGetLastError();
	return -EIO;
}

/* 0 when the launch just made was accepted, else -EIO. */
static inline int rs_launch_check(void)
{
	return cudaGetLastError() == cudaSuccess ? 0 : -EIO;
}

/* Run f<T>(args) with T the C++ type of dtype (f32, f16, bf16); -EINVAL otherwise. */
#define RS_DISPATCH_DTYPE(dtype, T, ...)                               \
	do {                                                           \
		switch (dtype) {                                       \
		case RS_DTYPE_F32: {                                   \
			typedef float T;                               \
			__VA_ARGS__;                                   \
			break;                                         \
		}                                                      \
		case RS_DTYPE_F16: {                                   \
			typedef __half T;                              \
			__VA_ARGS__;                                   \
			break;                                         \
		}                                                      \
		case RS_DTYPE_BF16: {                                  \
			typedef __nv_bfloat16 T;                       \
			__VA_ARGS__;                                   \
			break;                                         \
		}                                                      \
		default:                                               \
			return -EINVAL;                                \
		}                                                      \
	} while (0)

#endif
