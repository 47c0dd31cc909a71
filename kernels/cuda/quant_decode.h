/* The per-block decoding of the GGUF block formats (layouts in kernels/model/quant.h), in
 * one place for the CUDA kernels (kernels/cuda/matmul_quant.cu) and for the host tests
 * that check them without a device (tests/engine_cuda_quant_host.c): plain C99 that
 * compiles as C and, under nvcc, as __host__ __device__ code.
 *
 * The unit is a group of 32 consecutive elements: the whole block for Q8_0 and Q4_0,
 * sub-block g (0..7) of a 256-element super-block for the K-quants. A group's values
 * are exact in f32 except the K-quants' offset: Q4_K/Q5_K compute fmaf(d sc, q, -dmin m),
 * the exact value rounded once (d sc and dmin m are exact: 11-bit by 6-bit products);
 * Q8_0, Q4_0 and Q6_K values are products of at most 23 significant bits, exact.
 *
 * rsq_gemv_lane_dot is the arithmetic of one lane of the dequantizing GEMV: groups
 * lane, lane + 32, ... of a weight row, each decoded then multiplied into the lane's
 * sum by one fmaf per element in element order; the kernel then adds the 32 lanes'
 * sums by a butterfly (xor 16, 8, 4, 2, 1), which rsq_warp_sum_emulate mirrors. */
#ifndef RS_KERNELS_CUDA_QUANT_DECODE_H
#define RS_KERNELS_CUDA_QUANT_DECODE_H

#include <stdint.h>

#include "kernels/model/model.h"

#ifdef __CUDACC__
#include <cuda_fp16.h>
#define RSQ_FN static __host__ __device__ __forceinline__
/* Unrolled on the device, so that a group's 32 values stay in registers (the host
 * compiler of nvcc's host pass does not know the pragma). */
#ifdef __CUDA_ARCH__
#define RSQ_UNROLL _Pragma("unroll")
#else
#define RSQ_UNROLL
#endif
#else
#include <math.h>
#define RSQ_FN static inline
#define RSQ_UNROLL
#endif

enum { RSQ_GROUP = 32 };

/* Bytes per block, and 32-element groups per block; 0 for a dtype that is not quantized. */
RSQ_FN uint32_t rsq_block_bytes(enum rs_dtype t)
{
	switch (t) {
	case RS_DTYPE_Q8_0:
		return 34;
	case RS_DTYPE_Q4_0:
		return 18;
	case RS_DTYPE_Q4_K:
		return 144;
	case RS_DTYPE_Q5_K:
		return 176;
	case RS_DTYPE_Q6_K:
		return 210;
	default:
		return 0;
	}
}

RSQ_FN uint32_t rsq_block_groups(enum rs_dtype t)
{
	return t == RS_DTYPE_Q8_0 || t == RS_DTYPE_Q4_0 ? 1 : rsq_block_bytes(t) ? 8 : 0;
}

/* The f16 at p (little-endian) as float: exact. */
RSQ_FN float rsq_f16(const uint8_t *p)
{
	unsigned h = (unsigned)p[0] | (unsigned)p[1] << 8;
#ifdef __CUDA_ARCH__
	return __half2float(__ushort_as_half((unsigned short)h));
#else
	unsigned sign = h >> 15, exponent = (h >> 10) & 31, fraction = h & 1023;
	float v;
	if (exponent == 0)
		v = ldexpf((float)fraction, -24);
	else if (exponent == 31)
		v = fraction ? NAN : INFINITY;
	else
		v = ldexpf((float)(1024 + fraction), (int)exponent - 25);
	return sign ? -v : v;
#endif
}

/* Sub-block j's 6-bit scale and min of a Q4_K/Q5_K block's 12 scale bytes s. */
RSQ_FN void rsq_k_scale_min(const uint8_t *s, int j, int *sc, int *m)
{
	if (j < 4) {
		*sc = s[j] & 63;
		*m = s[j + 4] & 63;
	} else {
		*sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
		*m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
	}
}

/* Group g of block b (of format t) into out[32]. */
RSQ_FN void rsq_decode_group(float *out, const uint8_t *b, enum rs_dtype t, int g)
{
	switch (t) {
	case RS_DTYPE_Q8_0: {
		float d = rsq_f16(b);
		RSQ_UNROLL
		for (int i = 0; i < 32; i++)
			out[i] = d * (float)(int8_t)b[2 + i];
		break;
	}
	case RS_DTYPE_Q4_0: {
		float d = rsq_f16(b);
		RSQ_UNROLL
		for (int i = 0; i < 16; i++) {
			out[i] = d * (float)((b[2 + i] & 15) - 8);
			out[i + 16] = d * (float)((b[2 + i] >> 4) - 8);
		}
		break;
	}
	case RS_DTYPE_Q4_K:
	case RS_DTYPE_Q5_K: {
		int five = t == RS_DTYPE_Q5_K, sc, m;
		rsq_k_scale_min(b + 4, g, &sc, &m);
		float dj = rsq_f16(b) * (float)sc, mj = rsq_f16(b + 2) * (float)m;
		const uint8_t *q = b + (five ? 48 : 16) + 32 * (g / 2), *qh = b + 16;
		int shift = (g & 1) * 4;
		RSQ_UNROLL
		for (int l = 0; l < 32; l++) {
			int v = (q[l] >> shift) & 15;
			if (five)
				v |= ((qh[l] >> g) & 1) << 4;
			out[l] = fmaf(dj, (float)v, -mj);
		}
		break;
	}
	case RS_DTYPE_Q6_K: {
		int h = g / 4, tt = g % 4;
		const uint8_t *ql = b + 64 * h + 32 * (tt % 2), *qh = b + 128 + 32 * h;
		const int8_t *scales = (const int8_t *)(b + 192) + 2 * g;
		float d = rsq_f16(b + 208);
		float d0 = d * (float)scales[0], d1 = d * (float)scales[1];
		int shift = tt < 2 ? 0 : 4;
		RSQ_UNROLL
		for (int l = 0; l < 32; l++) {
			int q = ((ql[l] >> shift) & 15) | (((qh[l] >> (2 * tt)) & 3) << 4);
			out[l] = (l < 16 ? d0 : d1) * (float)(q - 32);
		}
		break;
	}
	default:
		RSQ_UNROLL
		for (int l = 0; l < 32; l++)
			out[l] = 0.0f;
		break;
	}
}

/* Group `group` (counted along the row) of a row of blocks. */
RSQ_FN void rsq_decode_row_group(float *out, const uint8_t *row, enum rs_dtype t, uint32_t group)
{
	uint32_t per = rsq_block_groups(t);
	rsq_decode_group(out, row + (size_t)(group / per) * rsq_block_bytes(t), t,
			 (int)(group % per));
}

/* One lane's share of the dequantizing GEMV over a row of k elements (k / 32 groups):
 * sum over groups lane, lane + 32, ... of decoded w times x (one fmaf each, in order). */
RSQ_FN float rsq_gemv_lane_dot(const uint8_t *row, enum rs_dtype t, const float *x, uint32_t k,
			       unsigned lane)
{
	float acc = 0.0f, w[32];
	for (uint32_t g = lane; g < k / 32; g += 32) {
		rsq_decode_row_group(w, row, t, g);
		for (int e = 0; e < 32; e++)
			acc = fmaf(w[e], x[32 * g + e], acc);
	}
	return acc;
}

/* The warp's butterfly sum of 32 lane values as __shfl_xor_sync computes it (every lane
 * ends with the same sum; lane 0's is returned). */
RSQ_FN float rsq_warp_sum_emulate(const float *lanes)
{
	float v[32];
	for (int i = 0; i < 32; i++)
		v[i] = lanes[i];
	for (int offset = 16; offset > 0; offset /= 2) {
		float next[32];
		for (int i = 0; i < 32; i++)
			next[i] = v[i] + v[i ^ offset];
		for (int i = 0; i < 32; i++)
			v[i] = next[i];
	}
	return v[0];
}

#endif
