/* Rotary position embedding on the device (see cuda_ops.h; twin of rs_op_rope). */
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_util.cuh"

/* One block per token; a thread per (head, pair). The angle, its sine and cosine are
 * computed in double and rounded to float exactly as the CPU does; the rotation uses
 * explicitly rounded products so that nvcc does not contract it into FMAs, which keeps it
 * bit-equal to the CPU's on x86-64 (where the C compiler has no FMA to contract into). */
__global__ void rope_kernel(float *x, size_t stride, const uint32_t *positions, uint32_t n_heads,
			    uint32_t head_dim, uint32_t rope_dim, float theta)
{
	uint32_t pairs = rope_dim / 2;
	double pos = positions[blockIdx.x];
	float *row = x + (size_t)blockIdx.x * stride;
	for (uint32_t idx = threadIdx.x; idx < n_heads * pairs; idx += blockDim.x) {
		uint32_t h = idx / pairs, i = idx - h * pairs;
		double freq = pow((double)theta, -2.0 * i / rope_dim);
		double angle = pos * freq;
		float c = (float)cos(angle), s = (float)sin(angle);
		float *p = row + (size_t)h * head_dim + 2 * i;
		float a = p[0], b = p[1];
		p[0] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
		p[1] = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
	}
}

extern "C" int rs_cuda_rope(float *x, size_t stride, const uint32_t *positions, uint32_t n_tokens,
			    uint32_t n_heads, uint32_t head_dim, uint32_t rope_dim, float theta,
			    cudaStream_t stream)
{
	if (!n_tokens || rope_dim < 2)
		return 0;
	if (rope_dim > head_dim)
		return -EINVAL;
	rope_kernel<<<n_tokens, 128, 0, stream>>>(x, stride, positions, n_heads, head_dim, rope_dim,
						  theta);
	return rs_launch_check();
}
