/* rs_op_swiglu with AVX-512 (see ops.h; the portable version is in ops_cpu.c): sixteen
 * outputs at once and a vector exp, where the portable loop calls expf per element
 * (at a decode batch of 32 that was as long as a small product). */
#include "kernels/cpu/ops.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include "kernels/cpu/exp_avx512.h"

__attribute__((target("avx512f"))) void rs_op_swiglu_avx512(float *out, const float *gate,
							    const float *up, uint32_t n_rows,
							    uint32_t width, size_t in_stride)
{
	const __m512 one = _mm512_set1_ps(1.0f);
	for (uint32_t r = 0; r < n_rows; r++) {
		const float *g = gate + r * in_stride, *u = up + r * in_stride;
		float *o = out + (size_t)r * width;
		for (uint32_t i = 0; i < width; i += 16) {
			__mmask16 m = width - i >= 16 ? (__mmask16)0xffff
						      : (__mmask16)((1u << (width - i)) - 1);
			__m512 gv = _mm512_maskz_loadu_ps(m, g + i);
			/* sigmoid(g) from e = exp(-|g|) <= 1, which cannot overflow:
			 * 1 / (1 + e) for g >= 0, e / (1 + e) below. */
			__m512 e = rs_exp_nonpositive_avx512(
			    _mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(gv)));
			__m512 inv = _mm512_div_ps(one, _mm512_add_ps(one, e));
			__mmask16 negative =
			    _mm512_cmp_ps_mask(gv, _mm512_setzero_ps(), _CMP_LT_OQ);
			__m512 sigmoid = _mm512_mask_mul_ps(inv, negative, inv, e);
			__m512 silu = _mm512_mul_ps(gv, sigmoid);
			_mm512_mask_storeu_ps(o + i, m,
					      _mm512_mul_ps(silu, _mm512_maskz_loadu_ps(m, u + i)));
		}
	}
}
#endif
