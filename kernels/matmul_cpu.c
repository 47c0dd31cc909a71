/* Streaming matmul for decode batches (see rs_op_matmul_stream in ops.h).
 *
 * A decode step multiplies a few activation rows (one per sequence) by every weight
 * matrix. A BLAS GEMM first copies W into packed panels: at m = 32 that copy moves as
 * many bytes as the product itself, every step. Here W is read in place, once: a tile of
 * NR weight rows (a few KiB, in L1) is multiplied against every activation row (the
 * whole x, a few tens of KiB, in L2) before the next NR rows are loaded. Each output is
 * a dot product over k, vectorized along k, and the NR dot products of one activation
 * row are reduced together into NR adjacent outputs.
 *
 * The summation order of an output depends on k and the ISA only, never on m, n or the
 * position in the tile: a sequence gets the same bits alone and inside any batch. */
#include <string.h>

#include "kernels/ops.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define RS_HAVE_X86_KERNELS 1
#include <immintrin.h>
#endif

enum { NR = 4 }; /* weight rows per tile, every ISA */

/* Columns in chunks of NC (a whole 64-byte line of each output row), and in a chunk:
 * for each tile of activation rows, for each NR weight rows, call body with c (first
 * column), nr, row0 (first activation row) and rows. The m rows go in the fewest tiles
 * of at most max_mr rows, sizes differing by at most one (m = 32, max 6: 6 6 5 5 5 5, not
 * 6 6 6 6 6 2: a tile of 2 wastes the loads of its weights). The chunk's NC weight rows
 * stay in L1/L2 across the row tiles; its outputs are whole lines written at once, not
 * m partial lines written far apart in time (which, for a wide y such as the logits,
 * got evicted and re-read between writes). */
enum { NC = 16 };
#define FOR_EACH_COLUMN_TILE(n0, n1, c, nr, m, max_mr, row0, rows, body)                     \
	do {                                                                                \
		uint32_t tiles_ = ((m) + (max_mr)-1) / (max_mr);                            \
		uint32_t base_ = (m) / tiles_, extra_ = (m) % tiles_;                       \
		for (uint32_t c0_ = (n0); c0_ < (n1); c0_ += NC) {                          \
			uint32_t c1_ = (n1) - c0_ < NC ? (n1) : c0_ + NC;                   \
			for (uint32_t t_ = 0, row0 = 0; t_ < tiles_; t_++) {                \
				uint32_t rows = base_ + (t_ < extra_);                      \
				for (uint32_t c = c0_; c < c1_; c += NR) {                  \
					uint32_t nr = c1_ - c < NR ? c1_ - c : NR;          \
					body;                                               \
				}                                                           \
				row0 += rows;                                               \
			}                                                                   \
		}                                                                           \
	} while (0)

/* ---- portable: four-float vectors (SSE or NEON), MR = 4 ---------------------------- */

typedef float v4f __attribute__((vector_size(16)));
enum { MR_PORTABLE = 4 };

static inline v4f load4(const float *p)
{
	v4f v;
	memcpy(&v, p, sizeof(v));
	return v;
}

static inline float hsum4(v4f v)
{
	return (v[0] + v[1]) + (v[2] + v[3]);
}

static void tile_portable(float *y, size_t ldy, const float *x, const float *w, size_t k,
			  uint32_t nr, uint32_t mr, bool accumulate)
{
	v4f acc[NR][MR_PORTABLE];
	float tail[NR][MR_PORTABLE];
	memset(acc, 0, sizeof(acc));
	memset(tail, 0, sizeof(tail));
	size_t d = 0;
	for (; d + 4 <= k; d += 4)
		for (uint32_t j = 0; j < mr; j++) {
			v4f xv = load4(x + j * k + d);
			for (uint32_t i = 0; i < nr; i++)
				acc[i][j] += load4(w + i * k + d) * xv;
		}
	for (; d < k; d++)
		for (uint32_t j = 0; j < mr; j++)
			for (uint32_t i = 0; i < nr; i++)
				tail[i][j] += w[i * k + d] * x[j * k + d];
	for (uint32_t j = 0; j < mr; j++)
		for (uint32_t i = 0; i < nr; i++) {
			float s = hsum4(acc[i][j]) + tail[i][j];
			y[j * ldy + i] = accumulate ? y[j * ldy + i] + s : s;
		}
}

static void stream_portable(float *y, const float *x, const float *w, uint32_t m, uint32_t n,
			    uint32_t k, uint32_t n0, uint32_t n1, bool accumulate)
{
	FOR_EACH_COLUMN_TILE(n0, n1, c, nr, m, MR_PORTABLE, r0, mr,
				tile_portable(y + (size_t)r0 * n + c, n, x + (size_t)r0 * k,
					      w + (size_t)c * k, k, nr, mr, accumulate));
}

#ifdef RS_HAVE_X86_KERNELS
/* ---- AVX-512: 16 floats per vector, NR x MR = 4 x 6 = 24 accumulators (of 32) ------ */

#define TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma")))
#define TARGET_AVX2 __attribute__((target("avx2,fma")))
#define ALWAYS_INLINE inline __attribute__((always_inline))
enum { MR_AVX512 = 6, MR_AVX2 = 3 };

/* [hsum(a), hsum(b), hsum(c), hsum(d)] of four 8-float vectors (pairwise, fixed order). */
static ALWAYS_INLINE TARGET_AVX2 __m128 hsum4x8(__m256 a, __m256 b, __m256 c, __m256 d)
{
	__m256 ab = _mm256_hadd_ps(a, b), cd = _mm256_hadd_ps(c, d);
	__m256 abcd = _mm256_hadd_ps(ab, cd); /* [a b c d] partials in each 128-bit half */
	return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

/* y[0..nr) (+)= s[0..nr): the NR outputs of one activation row are adjacent in y. */
static ALWAYS_INLINE TARGET_AVX512 void store_row_avx512(float *y, __m128 s, uint32_t nr,
							 bool accumulate)
{
	__mmask8 mask = (__mmask8)((1u << nr) - 1);
	if (accumulate)
		s = _mm_add_ps(s, _mm_maskz_loadu_ps(mask, y));
	_mm_mask_storeu_ps(y, mask, s);
}

static ALWAYS_INLINE TARGET_AVX512 __m256 fold512(__m512 v)
{
	return _mm256_add_ps(_mm512_castps512_ps256(v),
			     _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

/* The tile body; nr and mr are constants in every instantiation below, so the loops
 * unroll and the accumulators live in registers. */
static ALWAYS_INLINE TARGET_AVX512 void tile_avx512(float *y, size_t ldy, const float *x,
						     const float *w, size_t k, uint32_t nr,
						     uint32_t mr, bool accumulate)
{
	__m512 acc[NR][MR_AVX512];
#pragma GCC unroll 8
	for (uint32_t i = 0; i < NR; i++)
#pragma GCC unroll 8
		for (uint32_t j = 0; j < MR_AVX512; j++)
			acc[i][j] = _mm512_setzero_ps();
	size_t d = 0;
	for (; d + 16 <= k; d += 16) {
		__m512 wv[NR];
#pragma GCC unroll 8
		for (uint32_t i = 0; i < nr; i++) {
			wv[i] = _mm512_loadu_ps(w + i * k + d);
			/* The next chunk's weights: the hardware prefetcher alone left
			 * the logits product waiting on memory at a third of its speed. */
			_mm_prefetch((const char *)(w + (NC + i) * k + d), _MM_HINT_T0);
		}
#pragma GCC unroll 8
		for (uint32_t j = 0; j < mr; j++) {
			__m512 xv = _mm512_loadu_ps(x + j * k + d);
#pragma GCC unroll 8
			for (uint32_t i = 0; i < nr; i++)
				acc[i][j] = _mm512_fmadd_ps(wv[i], xv, acc[i][j]);
		}
	}
	if (d < k) {
		/* Masked loads: the lanes past k read nothing and add zero. */
		__mmask16 mask = (__mmask16)((1u << (k - d)) - 1);
		__m512 wv[NR];
#pragma GCC unroll 8
		for (uint32_t i = 0; i < nr; i++)
			wv[i] = _mm512_maskz_loadu_ps(mask, w + i * k + d);
#pragma GCC unroll 8
		for (uint32_t j = 0; j < mr; j++) {
			__m512 xv = _mm512_maskz_loadu_ps(mask, x + j * k + d);
#pragma GCC unroll 8
			for (uint32_t i = 0; i < nr; i++)
				acc[i][j] = _mm512_fmadd_ps(wv[i], xv, acc[i][j]);
		}
	}
#pragma GCC unroll 8
	for (uint32_t j = 0; j < mr; j++) {
		__m128 s = hsum4x8(fold512(acc[0][j]), fold512(acc[1][j]), fold512(acc[2][j]),
				   fold512(acc[3][j]));
		store_row_avx512(y + j * ldy, s, nr, accumulate);
	}
}

typedef void tile_fn(float *y, size_t ldy, const float *x, const float *w, size_t k,
		     bool accumulate);

#define TILE_AVX512(nr, mr)                                                                \
	static TARGET_AVX512 void tile_avx512_##nr##x##mr(float *y, size_t ldy, const float *x, \
							 const float *w, size_t k,           \
							 bool accumulate)                    \
	{                                                                                  \
		tile_avx512(y, ldy, x, w, k, nr, mr, accumulate);                          \
	}
#define TILES_AVX512(nr)                                                                   \
	TILE_AVX512(nr, 1) TILE_AVX512(nr, 2) TILE_AVX512(nr, 3) TILE_AVX512(nr, 4)          \
		TILE_AVX512(nr, 5) TILE_AVX512(nr, 6)
TILES_AVX512(1)
TILES_AVX512(2)
TILES_AVX512(3)
TILES_AVX512(4)
#define ROW_AVX512(nr)                                                                     \
	{                                                                                  \
		tile_avx512_##nr##x1, tile_avx512_##nr##x2, tile_avx512_##nr##x3,           \
			tile_avx512_##nr##x4, tile_avx512_##nr##x5, tile_avx512_##nr##x6    \
	}
static tile_fn *const tiles_avx512[NR][MR_AVX512] = {ROW_AVX512(1), ROW_AVX512(2),
						      ROW_AVX512(3), ROW_AVX512(4)};

static void stream_avx512(float *y, const float *x, const float *w, uint32_t m, uint32_t n,
			  uint32_t k, uint32_t n0, uint32_t n1, bool accumulate)
{
	FOR_EACH_COLUMN_TILE(n0, n1, c, nr, m, MR_AVX512, r0, mr,
				tiles_avx512[nr - 1][mr - 1](y + (size_t)r0 * n + c, n,
							     x + (size_t)r0 * k,
							     w + (size_t)c * k, k, accumulate));
}

/* ---- AVX2 + FMA: 8 floats per vector, NR x MR = 4 x 3 = 12 accumulators (of 16) ---- */

static ALWAYS_INLINE TARGET_AVX2 __m256i tail_mask8(size_t left)
{
	static const int32_t ones[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
	return _mm256_loadu_si256((const __m256i *)(ones + 8 - left));
}

static ALWAYS_INLINE TARGET_AVX2 void tile_avx2(float *y, size_t ldy, const float *x,
						 const float *w, size_t k, uint32_t nr, uint32_t mr,
						 bool accumulate)
{
	__m256 acc[NR][MR_AVX2];
#pragma GCC unroll 8
	for (uint32_t i = 0; i < NR; i++)
#pragma GCC unroll 8
		for (uint32_t j = 0; j < MR_AVX2; j++)
			acc[i][j] = _mm256_setzero_ps();
	size_t d = 0;
	for (; d + 8 <= k; d += 8) {
		__m256 wv[NR];
#pragma GCC unroll 8
		for (uint32_t i = 0; i < nr; i++)
			wv[i] = _mm256_loadu_ps(w + i * k + d);
#pragma GCC unroll 8
		for (uint32_t j = 0; j < mr; j++) {
			__m256 xv = _mm256_loadu_ps(x + j * k + d);
#pragma GCC unroll 8
			for (uint32_t i = 0; i < nr; i++)
				acc[i][j] = _mm256_fmadd_ps(wv[i], xv, acc[i][j]);
		}
	}
	if (d < k) {
		__m256i mask = tail_mask8(k - d);
		__m256 wv[NR];
#pragma GCC unroll 8
		for (uint32_t i = 0; i < nr; i++)
			wv[i] = _mm256_maskload_ps(w + i * k + d, mask);
#pragma GCC unroll 8
		for (uint32_t j = 0; j < mr; j++) {
			__m256 xv = _mm256_maskload_ps(x + j * k + d, mask);
#pragma GCC unroll 8
			for (uint32_t i = 0; i < nr; i++)
				acc[i][j] = _mm256_fmadd_ps(wv[i], xv, acc[i][j]);
		}
	}
#pragma GCC unroll 8
	for (uint32_t j = 0; j < mr; j++) {
		float s[4];
		_mm_storeu_ps(s, hsum4x8(acc[0][j], acc[1][j], acc[2][j], acc[3][j]));
		float *yr = y + j * ldy;
#pragma GCC unroll 8
		for (uint32_t i = 0; i < nr; i++)
			yr[i] = accumulate ? yr[i] + s[i] : s[i];
	}
}

#define TILE_AVX2(nr, mr)                                                                  \
	static TARGET_AVX2 void tile_avx2_##nr##x##mr(float *y, size_t ldy, const float *x,   \
						     const float *w, size_t k, bool accumulate) \
	{                                                                                  \
		tile_avx2(y, ldy, x, w, k, nr, mr, accumulate);                            \
	}
#define TILES_AVX2(nr) TILE_AVX2(nr, 1) TILE_AVX2(nr, 2) TILE_AVX2(nr, 3)
TILES_AVX2(1)
TILES_AVX2(2)
TILES_AVX2(3)
TILES_AVX2(4)
#define ROW_AVX2(nr) {tile_avx2_##nr##x1, tile_avx2_##nr##x2, tile_avx2_##nr##x3}
static tile_fn *const tiles_avx2[NR][MR_AVX2] = {ROW_AVX2(1), ROW_AVX2(2), ROW_AVX2(3),
						  ROW_AVX2(4)};

static void stream_avx2(float *y, const float *x, const float *w, uint32_t m, uint32_t n,
			uint32_t k, uint32_t n0, uint32_t n1, bool accumulate)
{
	FOR_EACH_COLUMN_TILE(n0, n1, c, nr, m, MR_AVX2, r0, mr,
				tiles_avx2[nr - 1][mr - 1](y + (size_t)r0 * n + c, n,
							   x + (size_t)r0 * k, w + (size_t)c * k,
							   k, accumulate));
}
#endif /* RS_HAVE_X86_KERNELS */

enum rs_cpu_isa rs_cpu_isa(void)
{
#ifdef RS_HAVE_X86_KERNELS
	/* A load and a bit test (libgcc fills the feature words before main); it also
	 * checks that the OS saves the vector registers. */
	if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl"))
		return RS_ISA_AVX512;
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		return RS_ISA_AVX2;
	return RS_ISA_PORTABLE;
#else
	return RS_ISA_PORTABLE;
#endif
}

void rs_op_matmul_stream(float *y, const float *x, const float *w, uint32_t m, uint32_t n,
			 uint32_t k, uint32_t n0, uint32_t n1, bool accumulate, enum rs_cpu_isa isa)
{
	if (n1 <= n0 || m == 0)
		return;
	if (isa > rs_cpu_isa())
		isa = rs_cpu_isa();
#ifdef RS_HAVE_X86_KERNELS
	if (isa == RS_ISA_AVX512) {
		stream_avx512(y, x, w, m, n, k, n0, n1, accumulate);
		return;
	}
	if (isa == RS_ISA_AVX2) {
		stream_avx2(y, x, w, m, n, k, n0, n1, accumulate);
		return;
	}
#endif
	stream_portable(y, x, w, m, n, k, n0, n1, accumulate);
}
