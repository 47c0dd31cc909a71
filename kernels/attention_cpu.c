/* rs_op_attention with AVX-512 (see ops.h; the portable version is in ops_cpu.c).
 *
 * Heads outer, positions inner: a head's query (and then its output) stays in registers
 * while the head's slice of each cached row is read once. Scores come four positions at
 * a time (four dot products reduced together into four adjacent scores); the softmax
 * uses a vector exp (no expf call per element) and folds its 1/sum into the output. */
#include <math.h>

#include "kernels/ops.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma")))
#define ALWAYS_INLINE inline __attribute__((always_inline))

enum { MAX_HD_VECTORS = 8 }; /* head_dim up to 128 in registers; larger goes in slices */

/* exp(x) for x <= 0 (max-subtracted scores); Cephes' expf polynomial, within 2 ulp. */
static ALWAYS_INLINE TARGET_AVX512 __m512 exp_avx512(__m512 x)
{
	x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f)); /* exp(-87) ~ 1.6e-38: still normal */
	__m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
					_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
	r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
	__m512 p = _mm512_set1_ps(1.9875691500e-4f);
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
	p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
	return _mm512_scalef_ps(p, n);
}

static ALWAYS_INLINE TARGET_AVX512 __m256 fold512(__m512 v)
{
	return _mm256_add_ps(_mm512_castps512_ps256(v),
			     _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

static ALWAYS_INLINE TARGET_AVX512 __m128 hsum4(__m512 a, __m512 b, __m512 c, __m512 d)
{
	__m256 ab = _mm256_hadd_ps(fold512(a), fold512(b));
	__m256 cd = _mm256_hadd_ps(fold512(c), fold512(d));
	__m256 abcd = _mm256_hadd_ps(ab, cd);
	return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

static ALWAYS_INLINE TARGET_AVX512 __mmask16 lanes(uint32_t left)
{
	return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

/* scores[j] = scale * q . key_j for the n_ctx positions of one head (kv head offset
 * head_off in each row). */
static TARGET_AVX512 void head_scores(float *scores, const float *q, const struct rs_kv_layer *kv,
				      const uint32_t *block_table, uint32_t n_ctx, size_t row,
				      size_t head_off, float scale)
{
	uint32_t hd = kv->head_dim, bs = kv->block_size;
	for (uint32_t j0 = 0; j0 < n_ctx; j0 += bs) {
		const float *kb = kv->k + (size_t)block_table[j0 / bs] * bs * row + head_off;
		uint32_t n = n_ctx - j0 < bs ? n_ctx - j0 : bs;
		for (uint32_t j = 0; j < n; j += 4) {
			uint32_t rows = n - j < 4 ? n - j : 4;
			/* Rows past the block's end are never read: their pointer repeats
			 * the first row and their scores are not stored. */
			const float *k0 = kb + (size_t)j * row;
			const float *k1 = rows > 1 ? k0 + row : k0, *k2 = rows > 2 ? k0 + 2 * row : k0;
			const float *k3 = rows > 3 ? k0 + 3 * row : k0;
			__m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
			for (uint32_t d = 0; d < hd; d += 16) {
				__mmask16 m = lanes(hd - d);
				__m512 qv = _mm512_maskz_loadu_ps(m, q + d);
				a0 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, k0 + d), a0);
				a1 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, k1 + d), a1);
				a2 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, k2 + d), a2);
				a3 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, k3 + d), a3);
			}
			__m128 s = _mm_mul_ps(hsum4(a0, a1, a2, a3), _mm_set1_ps(scale));
			_mm_mask_storeu_ps(scores + j0 + j, (__mmask8)((1u << rows) - 1), s);
		}
	}
}

/* scores[0..n) = exp(scores - max); returns 1 / sum. */
static TARGET_AVX512 float softmax_unnormalized(float *scores, uint32_t n)
{
	__m512 mv = _mm512_set1_ps(-INFINITY);
	for (uint32_t j = 0; j < n; j += 16)
		mv = _mm512_max_ps(mv, _mm512_mask_loadu_ps(mv, lanes(n - j), scores + j));
	__m512 max = _mm512_set1_ps(_mm512_reduce_max_ps(mv));
	__m512 sum = _mm512_setzero_ps();
	for (uint32_t j = 0; j < n; j += 16) {
		__mmask16 m = lanes(n - j);
		__m512 e = exp_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, scores + j), max));
		e = _mm512_maskz_mov_ps(m, e);
		sum = _mm512_add_ps(sum, e);
		_mm512_mask_storeu_ps(scores + j, m, e);
	}
	return 1.0f / _mm512_reduce_add_ps(sum);
}

/* out[0..width) = inv_sum * sum_j p[j] value_j[0..width), width <= 16 * MAX_HD_VECTORS. */
static TARGET_AVX512 void head_values(float *out, const float *p, const struct rs_kv_layer *kv,
				      const uint32_t *block_table, uint32_t n_ctx, size_t row,
				      size_t off, uint32_t width, float inv_sum)
{
	uint32_t bs = kv->block_size, nv = (width + 15) / 16;
	__m512 acc[MAX_HD_VECTORS];
	for (uint32_t v = 0; v < MAX_HD_VECTORS; v++)
		acc[v] = _mm512_setzero_ps();
	for (uint32_t j0 = 0; j0 < n_ctx; j0 += bs) {
		const float *vb = kv->v + (size_t)block_table[j0 / bs] * bs * row + off;
		uint32_t n = n_ctx - j0 < bs ? n_ctx - j0 : bs;
		for (uint32_t j = 0; j < n; j++) {
			__m512 pj = _mm512_set1_ps(p[j0 + j]);
			const float *vr = vb + (size_t)j * row;
#pragma GCC unroll 8
			for (uint32_t v = 0; v < MAX_HD_VECTORS; v++)
				if (v < nv)
					acc[v] = _mm512_fmadd_ps(
						pj, _mm512_maskz_loadu_ps(lanes(width - 16 * v), vr + 16 * v),
						acc[v]);
		}
	}
	__m512 inv = _mm512_set1_ps(inv_sum);
#pragma GCC unroll 8
	for (uint32_t v = 0; v < MAX_HD_VECTORS; v++)
		if (v < nv)
			_mm512_mask_storeu_ps(out + 16 * v, lanes(width - 16 * v),
					      _mm512_mul_ps(acc[v], inv));
}

TARGET_AVX512 void rs_op_attention_avx512(float *out, const float *q, const struct rs_kv_layer *kv,
					  const uint32_t *block_table, uint32_t pos,
					  uint32_t n_heads, float *scratch)
{
	uint32_t hd = kv->head_dim, n_ctx = pos + 1, group = n_heads / kv->n_kv_heads;
	size_t row = (size_t)kv->n_kv_heads * hd;
	float scale = 1.0f / sqrtf((float)hd);
	/* All scores first, all outputs after: out may alias q (never the cache). */
	for (uint32_t h = 0; h < n_heads; h++)
		head_scores(scratch + (size_t)h * n_ctx, q + (size_t)h * hd, kv, block_table, n_ctx,
			    row, (size_t)(h / group) * hd, scale);
	for (uint32_t h = 0; h < n_heads; h++) {
		float *p = scratch + (size_t)h * n_ctx;
		float inv_sum = softmax_unnormalized(p, n_ctx);
		for (uint32_t d = 0; d < hd; d += 16 * MAX_HD_VECTORS) {
			uint32_t width = hd - d < 16 * MAX_HD_VECTORS ? hd - d : 16 * MAX_HD_VECTORS;
			head_values(out + (size_t)h * hd + d, p, kv, block_table, n_ctx, row,
				    (size_t)(h / group) * hd + d, width, inv_sum);
		}
	}
}
#endif
