/* rs_op_attention with AVX-512 (see ops.h; the portable version is in ops_cpu.c).
 *
 * Blocks outer, heads inner: a block of cached rows comes from memory once, with the
 * rows PREFETCH_ROWS ahead prefetched in software (the hardware prefetchers left the
 * loads waiting on memory), and every head then reads its slice from L1. Scores come
 * four positions at a time (four dot products reduced together into four adjacent
 * scores); the softmax uses a vector exp (no expf call per element).
 *
 * The cache is f32 or f16 (struct rs_kv_layer): one body for both, the element type a
 * compile-time argument of always-inlined functions, so that an f16 row is widened in
 * registers (vcvtph2ps) as it is loaded and the cache traffic is halved. */
#include <math.h>
#include <string.h>

#include "kernels/cpu/exp_avx512.h"
#include "kernels/cpu/ops.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

/* avx512bw for the masked 16-bit loads and stores of f16 rows. */
#define TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx2,fma")))
#define ALWAYS_INLINE inline __attribute__((always_inline))

/* head_dim up to 128 in registers; larger goes in slices. Rows prefetched ahead: one
 * block's worth (16 was best of 8..64 for 576-byte rows, 32 sequences, 144 positions:
 * 1.4 ms per step at f16 against 1.6-2.4 ms). */
enum { MAX_HD_VECTORS = 8, PREFETCH_ROWS = 16 };

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

/* Lanes m of the 16 elements at element index i of a cache row (f16: widened). */
static ALWAYS_INLINE TARGET_AVX512 __m512 load_kv(const void *base, size_t i, __mmask16 m,
						 bool f16)
{
	if (f16)
		return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)base + i));
	return _mm512_maskz_loadu_ps(m, (const float *)base + i);
}

/* scores[j] = scale * q . key_j for the n rows of one block, key_j = kb + j * row (an
 * element index into the K cache). */
static ALWAYS_INLINE TARGET_AVX512 void block_scores(float *scores, const float *q,
						     const void *k, size_t kb, uint32_t n,
						     uint32_t hd, size_t row, float scale,
						     bool f16)
{
	/* The query in registers when it fits: loaded once, since the compiler cannot tell
	 * that the score stores between the loads leave q alone. */
	bool in_registers = hd <= 16 * MAX_HD_VECTORS;
	__m512 qv[MAX_HD_VECTORS];
#pragma GCC unroll 8
	for (uint32_t v = 0; v < MAX_HD_VECTORS; v++)
		qv[v] = in_registers && 16 * v < hd ? _mm512_maskz_loadu_ps(lanes(hd - 16 * v), q + 16 * v)
						    : _mm512_setzero_ps();
	for (uint32_t j = 0; j < n; j += 4) {
		uint32_t rows = n - j < 4 ? n - j : 4;
		/* Rows past the block's end are never read: their index repeats the first
		 * row and their scores are not stored. */
		size_t k0 = kb + (size_t)j * row;
		size_t k1 = rows > 1 ? k0 + row : k0, k2 = rows > 2 ? k0 + 2 * row : k0;
		size_t k3 = rows > 3 ? k0 + 3 * row : k0;
		__m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
#pragma GCC unroll 8
		for (uint32_t d = 0; d < hd; d += 16) {
			__mmask16 m = lanes(hd - d);
			__m512 qd = in_registers ? qv[d / 16] : _mm512_maskz_loadu_ps(m, q + d);
			a0 = _mm512_fmadd_ps(qd, load_kv(k, k0 + d, m, f16), a0);
			a1 = _mm512_fmadd_ps(qd, load_kv(k, k1 + d, m, f16), a1);
			a2 = _mm512_fmadd_ps(qd, load_kv(k, k2 + d, m, f16), a2);
			a3 = _mm512_fmadd_ps(qd, load_kv(k, k3 + d, m, f16), a3);
		}
		__m128 s = _mm_mul_ps(hsum4(a0, a1, a2, a3), _mm_set1_ps(scale));
		_mm_mask_storeu_ps(scores + j, (__mmask8)((1u << rows) - 1), s);
	}
}

/* Prefetch rows [from, to) of a sequence's cache rows, K positions 0 .. n_ctx - 1
 * followed by V positions 0 .. n_ctx - 1 (the order attention reads them in), whole
 * rows: every head reads a block while it is in L1. */
static ALWAYS_INLINE void prefetch_rows(const struct rs_kv_layer *kv, const uint32_t *block_table,
					uint32_t n_ctx, uint32_t from, uint32_t to, size_t row,
					bool f16)
{
	uint32_t bs = kv->block_size;
	size_t es = f16 ? 2 : 4;
	if (to > 2 * n_ctx)
		to = 2 * n_ctx;
	while (from < to) {
		const void *c = from < n_ctx ? kv->k : kv->v;
		uint32_t j = from < n_ctx ? from : from - n_ctx;
		uint32_t end = from < n_ctx ? (to < n_ctx ? to : n_ctx) : to;
		/* Up to the end of the range, of j's block or of the cache (K or V). */
		uint32_t n = bs - j % bs < end - from ? bs - j % bs : end - from;
		const char *p = (const char *)c +
				((size_t)block_table[j / bs] * bs + j % bs) * row * es;
		for (size_t off = 0; off < n * row * es; off += 64)
			_mm_prefetch(p + off, _MM_HINT_T0);
		from += n;
	}
}

/* In-place softmax of scores[0..n). */
static TARGET_AVX512 void softmax(float *scores, uint32_t n)
{
	__m512 mv = _mm512_set1_ps(-INFINITY);
	for (uint32_t j = 0; j < n; j += 16)
		mv = _mm512_max_ps(mv, _mm512_mask_loadu_ps(mv, lanes(n - j), scores + j));
	__m512 max = _mm512_set1_ps(_mm512_reduce_max_ps(mv));
	__m512 sum = _mm512_setzero_ps();
	for (uint32_t j = 0; j < n; j += 16) {
		__mmask16 m = lanes(n - j);
		__m512 e = rs_exp_nonpositive_avx512(
			_mm512_sub_ps(_mm512_maskz_loadu_ps(m, scores + j), max));
		e = _mm512_maskz_mov_ps(m, e);
		sum = _mm512_add_ps(sum, e);
		_mm512_mask_storeu_ps(scores + j, m, e);
	}
	__m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
	for (uint32_t j = 0; j < n; j += 16)
		_mm512_mask_storeu_ps(scores + j, lanes(n - j),
				      _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes(n - j), scores + j), inv));
}

/* acc[0..width) += sum_j p[j] value_j[0..width) over the n rows of one block, value_j
 * = vb + j * row (an element index into the V cache); width <= 16 * MAX_HD_VECTORS. */
static ALWAYS_INLINE TARGET_AVX512 void block_values(float *acc_mem, const float *p,
						     const void *v_cache, size_t vb, uint32_t n,
						     size_t row, uint32_t width, bool f16)
{
	uint32_t nv = (width + 15) / 16;
	__m512 acc[MAX_HD_VECTORS];
#pragma GCC unroll 8
	for (uint32_t v = 0; v < MAX_HD_VECTORS; v++)
		acc[v] = v < nv ? _mm512_maskz_loadu_ps(lanes(width - 16 * v), acc_mem + 16 * v)
				: _mm512_setzero_ps();
	for (uint32_t j = 0; j < n; j++) {
		__m512 pj = _mm512_set1_ps(p[j]);
		size_t vr = vb + (size_t)j * row;
#pragma GCC unroll 8
		for (uint32_t v = 0; v < MAX_HD_VECTORS; v++)
			if (v < nv)
				acc[v] = _mm512_fmadd_ps(
					pj, load_kv(v_cache, vr + 16 * v, lanes(width - 16 * v), f16),
					acc[v]);
	}
#pragma GCC unroll 8
	for (uint32_t v = 0; v < MAX_HD_VECTORS; v++)
		if (v < nv)
			_mm512_mask_storeu_ps(acc_mem + 16 * v, lanes(width - 16 * v), acc[v]);
}

/* The whole attention for one cache element type (f16 a constant after inlining), and
 * for head_dim fixed_hd when it is not 0 (then every loop over a head has a constant
 * trip count and constant masks: unrolled, the query vectors held in registers, no
 * per-row branch or mask arithmetic: 15 % less time with the cache in L2). */
static ALWAYS_INLINE TARGET_AVX512 void attention(float *out, const float *q,
						  const struct rs_kv_layer *kv,
						  const uint32_t *block_table, uint32_t pos,
						  uint32_t n_heads, float *scratch, bool f16,
						  uint32_t fixed_hd)
{
	uint32_t hd = fixed_hd ? fixed_hd : kv->head_dim, bs = kv->block_size, n_ctx = pos + 1;
	uint32_t group = n_heads / kv->n_kv_heads;
	size_t row = (size_t)kv->n_kv_heads * hd;
	float scale = 1.0f / sqrtf((float)hd);
	float *scores = scratch;                        /* [n_heads][n_ctx] */
	float *acc = scratch + (size_t)n_heads * n_ctx; /* [n_heads][hd] */
	/* Blocks outer, heads inner: a block's rows come from memory once (the next block
	 * is prefetched meanwhile) and every head reads them from L1. Heads outer read
	 * each row once per head, strided, and left the loads waiting on memory. */
	for (uint32_t j0 = 0; j0 < n_ctx; j0 += bs) {
		size_t kb = (size_t)block_table[j0 / bs] * bs * row;
		uint32_t n = n_ctx - j0 < bs ? n_ctx - j0 : bs;
		if (j0 == 0)
			prefetch_rows(kv, block_table, n_ctx, 0, PREFETCH_ROWS, row, f16);
		prefetch_rows(kv, block_table, n_ctx, j0 + PREFETCH_ROWS, j0 + n + PREFETCH_ROWS,
			      row, f16);
		for (uint32_t h = 0; h < n_heads; h++)
			block_scores(scores + (size_t)h * n_ctx + j0, q + (size_t)h * hd, kv->k,
				     kb + (size_t)(h / group) * hd, n, hd, row, scale, f16);
	}
	for (uint32_t h = 0; h < n_heads; h++)
		softmax(scores + (size_t)h * n_ctx, n_ctx);
	memset(acc, 0, (size_t)n_heads * hd * sizeof(float));
	for (uint32_t j0 = 0; j0 < n_ctx; j0 += bs) {
		size_t vb = (size_t)block_table[j0 / bs] * bs * row;
		uint32_t n = n_ctx - j0 < bs ? n_ctx - j0 : bs;
		prefetch_rows(kv, block_table, n_ctx, n_ctx + j0 + PREFETCH_ROWS,
			      n_ctx + j0 + n + PREFETCH_ROWS, row, f16);
		for (uint32_t h = 0; h < n_heads; h++)
			for (uint32_t d = 0; d < hd; d += 16 * MAX_HD_VECTORS) {
				uint32_t width = hd - d < 16 * MAX_HD_VECTORS ? hd - d : 16 * MAX_HD_VECTORS;
				block_values(acc + (size_t)h * hd + d, scores + (size_t)h * n_ctx + j0,
					     kv->v, vb + (size_t)(h / group) * hd + d, n, row, width,
					     f16);
			}
	}
	/* out may alias q: written only now. */
	memcpy(out, acc, (size_t)n_heads * hd * sizeof(float));
}

typedef void attention_fn(float *out, const float *q, const struct rs_kv_layer *kv,
			  const uint32_t *block_table, uint32_t pos, uint32_t n_heads,
			  float *scratch);

#define ATTENTION_VARIANT(name, f16, fixed_hd)                                                     \
	static TARGET_AVX512 void name(float *out, const float *q, const struct rs_kv_layer *kv,   \
				       const uint32_t *block_table, uint32_t pos, uint32_t n_heads, \
				       float *scratch)                                              \
	{                                                                                          \
		attention(out, q, kv, block_table, pos, n_heads, scratch, f16, fixed_hd);          \
	}
/* The common head sizes (Llama 7B and up: 128; TinyLlama, Llama 3.2 1B: 64; stories: 48)
 * and any other. */
ATTENTION_VARIANT(attention_f32, false, 0)
ATTENTION_VARIANT(attention_f32_48, false, 48)
ATTENTION_VARIANT(attention_f32_64, false, 64)
ATTENTION_VARIANT(attention_f32_128, false, 128)
ATTENTION_VARIANT(attention_f16, true, 0)
ATTENTION_VARIANT(attention_f16_48, true, 48)
ATTENTION_VARIANT(attention_f16_64, true, 64)
ATTENTION_VARIANT(attention_f16_128, true, 128)

TARGET_AVX512 void rs_op_attention_avx512(float *out, const float *q, const struct rs_kv_layer *kv,
					  const uint32_t *block_table, uint32_t pos,
					  uint32_t n_heads, float *scratch)
{
	bool f16 = kv->dtype == RS_DTYPE_F16;
	attention_fn *fn = kv->head_dim == 48    ? (f16 ? attention_f16_48 : attention_f32_48)
			   : kv->head_dim == 64  ? (f16 ? attention_f16_64 : attention_f32_64)
			   : kv->head_dim == 128 ? (f16 ? attention_f16_128 : attention_f32_128)
						 : (f16 ? attention_f16 : attention_f32);
	fn(out, q, kv, block_table, pos, n_heads, scratch);
}

TARGET_AVX512 void rs_f32_to_f16_avx512(uint16_t *dst, const float *src, size_t n)
{
	for (size_t i = 0; i < n; i += 16) {
		__mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
		/* Round to nearest even, as rs_f32_to_f16 (the rounding mode is explicit,
		 * MXCSR is not consulted). */
		__m256i h = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, src + i),
					    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
		_mm256_mask_storeu_epi16(dst + i, m, h);
	}
}
#endif
