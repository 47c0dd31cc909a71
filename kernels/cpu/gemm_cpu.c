/* The CPU matrix product over packed weights (gemm.h).
 *
 * Why packed, and packed once: a product is a sum over kk of outer products (column kk
 * of x times row kk of W^T). With W^T's row kk of a panel contiguous, a register tile of
 * MR activation rows x 48 outputs takes, per kk, three vector loads of W and MR
 * broadcasts of x for 3 MR fused multiply-adds, and ends with plain stores: no
 * horizontal sums (a dot-product kernel over W's rows as stored spends a fifth of its
 * time reducing vectors) and no per-step repacking (a BLAS GEMM copies W into panels at
 * every call: at a decode batch of 32 that copy moves as many bytes as the product).
 * Measured on the 2-core AVX-512 machine, one core, m = 32, k = 288: 203 GFLOP/s over the
 * logits matrix against 142 for the dot-product kernel; m = 512: 221 against OpenBLAS's
 * 84 (its Haswell kernels; see docs/perf.md).
 *
 * Loop order: panels, then blocks of KC steps of kk, then tiles of rows. A panel's block
 * (at most 96 KiB) stays in L2 while every row tile passes over it; the first tile
 * prefetches the next panel's block, so streaming W from memory (decode) overlaps the
 * arithmetic. Between blocks a tile's partial sums go through y in fp32, exactly as
 * they would stay in a register: blocking does not change any bit.
 *
 * f16 and bf16 panels: the three loads of a step become three 32-byte loads widened to
 * f32 (vcvtph2ps, or a 16-bit shift for bf16), exact, so the FMA chains and their bits
 * are those of an f32 panel holding the same values. Decode at batch 1 streams half the
 * bytes; at batch 32 the conversions (3 per 24 FMAs) cost nothing measurable. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/large_alloc.h"
#include "kernels/model/quant.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define RS_HAVE_X86_KERNELS 1
#include <immintrin.h>
#endif

enum {
	PC = RS_PANEL_COLS,
	KC = 512, /* kk per block */
};

/* Whether our kernels widen dtype's elements at isa (capped at the CPU's): bf16 by a
 * shift, f16 by F16C's conversion (part of AVX-512 F; an AVX2 CPU normally has it). */
static bool widens(enum rs_dtype dtype, enum rs_cpu_isa isa)
{
	if (isa > rs_cpu_isa())
		isa = rs_cpu_isa();
	if (dtype == RS_DTYPE_BF16)
		return isa >= RS_ISA_AVX2;
	if (dtype == RS_DTYPE_F16)
		return isa == RS_ISA_AVX512 || (isa == RS_ISA_AVX2 && rs_cpu_has_f16c());
	return false;
}

enum rs_dtype rs_packed_dtype(enum rs_dtype dtype, enum rs_cpu_isa isa)
{
	return widens(dtype, isa) ? dtype : RS_DTYPE_F32;
}

/* Bytes of one panel's k steps. */
static size_t panel_bytes(const struct rs_packed_matrix *w)
{
	return (size_t)w->k * PC * rs_dtype_size(w->dtype);
}

int rs_packed_alloc(struct rs_packed_matrix *w, uint32_t n, uint32_t k, enum rs_dtype dtype)
{
	memset(w, 0, sizeof(*w));
	if (dtype != RS_DTYPE_F32 && dtype != RS_DTYPE_F16 && dtype != RS_DTYPE_BF16)
		return -EINVAL;
	uint32_t n_panels = (uint32_t)(((uint64_t)n + PC - 1) / PC);
	struct rs_packed_matrix m = {.dtype = dtype, .n = n, .k = k, .n_panels = n_panels};
	m.panels = rs_alloc_large((size_t)n_panels * panel_bytes(&m));
	if (!m.panels)
		return -ENOMEM;
	/* Only the last panel can hold columns no row fills (past n): zero it. The rest is
	 * written by rs_packed_set_rows, which then also takes the first-touch page faults,
	 * on the workers that pack (zeroing everything here cost a third of a model's load). */
	if (n_panels)
		memset((char *)m.panels + (size_t)(n_panels - 1) * panel_bytes(&m), 0,
		       panel_bytes(&m));
	*w = m;
	return 0;
}

int rs_packed_set_rows(struct rs_packed_matrix *w, uint32_t row0, uint32_t n_rows, const void *rows,
		       enum rs_dtype dtype)
{
	size_t k = w->k, row_bytes = rs_dtype_row_bytes(dtype, k);
	if (w->dtype != RS_DTYPE_F32) {
		/* Same dtype: the elements as they are, in the panel's order. */
		if (dtype != w->dtype)
			return -EINVAL;
		for (uint32_t r = 0; r < n_rows; r++) {
			uint32_t col = row0 + r;
			const uint16_t *src =
			    (const uint16_t *)((const uint8_t *)rows + r * row_bytes);
			uint16_t *panel =
			    (uint16_t *)w->panels + (size_t)(col / PC) * k * PC + col % PC;
			for (size_t kk = 0; kk < k; kk++)
				panel[kk * PC] = src[kk];
		}
		return 0;
	}
	/* One panel's worth of rows converted at a time, then written out in the panel's
	 * order (sequential stores, strided loads from a buffer that fits in L2 for k up to
	 * a few thousand). */
	float *rows_f32 = malloc((size_t)PC * k * sizeof(float) + 1);
	if (!rows_f32)
		return -ENOMEM;
	for (uint32_t r = 0; r < n_rows;) {
		uint32_t col = row0 + r, c0 = col % PC;
		uint32_t count = PC - c0 < n_rows - r ? PC - c0 : n_rows - r;
		rs_convert_to_f32(rows_f32, (const uint8_t *)rows + r * row_bytes, dtype,
				  (size_t)count * k);
		float *panel = (float *)w->panels + (size_t)(col / PC) * k * PC;
		for (size_t kk = 0; kk < k; kk++)
			for (uint32_t c = 0; c < count; c++)
				panel[kk * PC + c0 + c] = rows_f32[c * k + kk];
		r += count;
	}
	free(rows_f32);
	return 0;
}

void rs_packed_free(struct rs_packed_matrix *w)
{
	free(w->panels);     /* NULL for a quantized matrix: its rows are the model's... */
	free(w->quant_copy); /* ...or this copy's */
	memset(w, 0, sizeof(*w));
}

void rs_packed_get_row(const struct rs_packed_matrix *w, uint32_t r, float *out)
{
	if (w->n_quant_parts) {
		rs_packed_quant_get_row(w, r, out);
		return;
	}
	size_t es = rs_dtype_size(w->dtype);
	const uint8_t *first =
	    (const uint8_t *)w->panels + (r / PC) * panel_bytes(w) + (r % PC) * es;
	for (size_t kk = 0; kk < w->k; kk++)
		rs_convert_to_f32(out + kk, first + kk * PC * es, w->dtype, 1);
}

/* Columns of panel p that exist (the last panel may be partial). */
static uint32_t panel_cols(const struct rs_packed_matrix *w, uint32_t p)
{
	uint32_t left = w->n - p * PC;
	return left < PC ? left : PC;
}

/* ---- CBLAS: one SGEMM per panel (W^T's panel is a plain row-major k x 48 matrix) ---- */

/* y (+)= x * panel for kc steps of a row-major [kc][PC] f32 panel block. */
static void blas_block(float *y, size_t ldy, const float *x, size_t ldx, uint32_t m,
		       const float *panel, uint32_t kc, uint32_t cols, float beta)
{
	if (m == 1) /* SGEMM cost 2.4x more at one row (decode at batch 1) */
		cblas_sgemv(CblasRowMajor, CblasTrans, (int)kc, (int)cols, 1.0f, panel, PC, x, 1,
			    beta, y, 1);
	else
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)cols, (int)kc,
			    1.0f, x, (int)ldx, panel, PC, beta, y, (int)ldy);
}

static void gemm_blas(float *y, size_t ldy, const float *x, size_t ldx, uint32_t m,
		      const struct rs_packed_matrix *w, uint32_t p0, uint32_t p1, bool accumulate)
{
	for (uint32_t p = p0; p < p1; p++) {
		const uint8_t *panel = (const uint8_t *)w->panels + p * panel_bytes(w);
		float *yp = y + (size_t)p * PC;
		if (w->dtype == RS_DTYPE_F32) {
			blas_block(yp, ldy, x, ldx, m, (const float *)panel, w->k, panel_cols(w, p),
				   accumulate ? 1.0f : 0.0f);
			continue;
		}
		/* f16 / bf16 (only when a caller asks for CBLAS on a matrix packed for our
		 * kernels: the engine packs f32 for CBLAS): widened WIDEN_STEPS at a time
		 * (12 KiB of stack). */
		enum { WIDEN_STEPS = 64 };
		float block[WIDEN_STEPS * PC];
		for (uint32_t k0 = 0; k0 < w->k; k0 += WIDEN_STEPS) {
			uint32_t kc = w->k - k0 < WIDEN_STEPS ? w->k - k0 : WIDEN_STEPS;
			rs_convert_to_f32(block, panel + (size_t)k0 * PC * rs_dtype_size(w->dtype),
					  w->dtype, (size_t)kc * PC);
			blas_block(yp, ldy, x + k0, ldx, m, block, kc, panel_cols(w, p),
				   accumulate || k0 ? 1.0f : 0.0f);
		}
	}
}

#ifdef RS_HAVE_X86_KERNELS
#define TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma")))
#define TARGET_AVX2   __attribute__((target("avx2,fma,f16c"))) /* F16C: f16 panels only */
#define ALWAYS_INLINE inline __attribute__((always_inline))

/* One tile: y[mr rows][cols] (+)= x[mr rows][kc] * panel block [kc][PC] (pw: its first
 * element). load_y: the chain starts from y (accumulate, or a later block), else from
 * 0. prefetch: the next panel's block, or NULL. Every instantiation has a constant mr
 * and element type. */
typedef void tile_fn(float *y, size_t ldy, const float *x, size_t ldx, const void *pw, uint32_t kc,
		     uint32_t cols, bool load_y, const void *prefetch);

/* Prefetch, into L2, step kk of a panel block of wt (a whole block ahead is more than L1
 * holds): 192 bytes for f32, 96 for 16-bit elements. */
static ALWAYS_INLINE void prefetch_step(const void *block, uint32_t kk, enum rs_dtype wt)
{
	size_t step = wt == RS_DTYPE_F32 ? PC * 4 : PC * 2;
	const char *p = (const char *)block + kk * step;
	_mm_prefetch(p, _MM_HINT_T1);
	_mm_prefetch(p + 64, _MM_HINT_T1);
	if (wt == RS_DTYPE_F32)
		_mm_prefetch(p + 128, _MM_HINT_T1);
}

/* ---- AVX-512: 8 rows x 3 vectors = 24 accumulators (of 32 registers) ---------------- */

enum { MR_AVX512 = 8 };

/* The 16 weights at element i of a packed step, as f32 (f16 / bf16 widened exactly; a
 * 16-bit step is 96 bytes, so those loads are unaligned). */
static ALWAYS_INLINE TARGET_AVX512 __m512 load16_avx512(const void *step, uint32_t i,
							enum rs_dtype wt)
{
	if (wt == RS_DTYPE_F32)
		return _mm512_load_ps((const float *)step + i);
	__m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)step + i));
	if (wt == RS_DTYPE_F16)
		return _mm512_cvtph_ps(h);
	return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); /* bf16 */
}

static ALWAYS_INLINE TARGET_AVX512 void
tile_avx512(float *y, size_t ldy, const float *x, size_t ldx, const void *pw, uint32_t kc,
	    uint32_t cols, bool load_y, const void *prefetch, uint32_t mr, enum rs_dtype wt)
{
	size_t es = wt == RS_DTYPE_F32 ? 4 : 2;
	__mmask16 mask[3];
#pragma GCC unroll 3
	for (uint32_t v = 0; v < 3; v++) {
		uint32_t valid = cols > 16 * v ? cols - 16 * v : 0;
		mask[v] = (__mmask16)(valid >= 16 ? 0xffff : (1u << valid) - 1);
	}
	__m512 acc[MR_AVX512][3];
#pragma GCC unroll 8
	for (uint32_t j = 0; j < mr; j++)
#pragma GCC unroll 3
		for (uint32_t v = 0; v < 3; v++)
			acc[j][v] = load_y ? _mm512_maskz_loadu_ps(mask[v], y + j * ldy + 16 * v)
					   : _mm512_setzero_ps();
	for (uint32_t kk = 0; kk < kc; kk++) {
		const char *wk = (const char *)pw + (size_t)kk * PC * es;
		__m512 w0 = load16_avx512(wk, 0, wt), w1 = load16_avx512(wk, 16, wt),
		       w2 = load16_avx512(wk, 32, wt);
		if (prefetch)
			prefetch_step(prefetch, kk, wt);
#pragma GCC unroll 8
		for (uint32_t j = 0; j < mr; j++) {
			__m512 b = _mm512_set1_ps(x[j * ldx + kk]);
			acc[j][0] = _mm512_fmadd_ps(w0, b, acc[j][0]);
			acc[j][1] = _mm512_fmadd_ps(w1, b, acc[j][1]);
			acc[j][2] = _mm512_fmadd_ps(w2, b, acc[j][2]);
		}
	}
#pragma GCC unroll 8
	for (uint32_t j = 0; j < mr; j++)
#pragma GCC unroll 3
		for (uint32_t v = 0; v < 3; v++)
			_mm512_mask_storeu_ps(y + j * ldy + 16 * v, mask[v], acc[j][v]);
}

#define TILE_AVX512(name, wt, mr)                                                                  \
	static TARGET_AVX512 void tile_avx512_##name##_##mr(                                       \
	    float *y, size_t ldy, const float *x, size_t ldx, const void *pw, uint32_t kc,         \
	    uint32_t cols, bool load_y, const void *prefetch)                                      \
	{                                                                                          \
		tile_avx512(y, ldy, x, ldx, pw, kc, cols, load_y, prefetch, mr, wt);               \
	}
#define TILES_AVX512(name, wt)                                                                     \
	TILE_AVX512(name, wt, 1)                                                                   \
	TILE_AVX512(name, wt, 2)                                                                   \
	TILE_AVX512(name, wt, 3)                                                                   \
	TILE_AVX512(name, wt, 4)                                                                   \
	TILE_AVX512(name, wt, 5)                                                                   \
	TILE_AVX512(name, wt, 6)                                                                   \
	TILE_AVX512(name, wt, 7)                                                                   \
	TILE_AVX512(name, wt, 8)                                                                   \
	static tile_fn *const tiles_avx512_##name[MR_AVX512] = {                                   \
	    tile_avx512_##name##_1, tile_avx512_##name##_2, tile_avx512_##name##_3,                \
	    tile_avx512_##name##_4, tile_avx512_##name##_5, tile_avx512_##name##_6,                \
	    tile_avx512_##name##_7, tile_avx512_##name##_8};
TILES_AVX512(f32, RS_DTYPE_F32)
TILES_AVX512(f16, RS_DTYPE_F16)
TILES_AVX512(bf16, RS_DTYPE_BF16)

/* ---- AVX2 + FMA: a panel as two halves of 3 vectors; 4 rows x 3 = 12 accumulators,
 * 3 weight vectors and a broadcast in the 16 registers. The same chains as AVX-512. --- */

enum { MR_AVX2 = 4 };

static ALWAYS_INLINE TARGET_AVX2 __m256i lane_mask8(uint32_t valid)
{
	static const int32_t ones[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
	return _mm256_loadu_si256((const __m256i *)(ones + 8 - (valid < 8 ? valid : 8)));
}

/* The 8 weights at element i of a packed step, as f32 (f16: F16C, checked by widens). */
static ALWAYS_INLINE TARGET_AVX2 __m256 load8_avx2(const void *step, uint32_t i, enum rs_dtype wt)
{
	if (wt == RS_DTYPE_F32)
		return _mm256_load_ps((const float *)step + i);
	__m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)step + i));
	if (wt == RS_DTYPE_F16)
		return _mm256_cvtph_ps(h);
	return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)); /* bf16 */
}

static ALWAYS_INLINE TARGET_AVX2 void tile_avx2(float *y, size_t ldy, const float *x, size_t ldx,
						const void *pw, uint32_t kc, uint32_t cols,
						bool load_y, const void *prefetch, uint32_t mr,
						enum rs_dtype wt)
{
	size_t es = wt == RS_DTYPE_F32 ? 4 : 2;
	for (uint32_t c0 = 0; c0 < cols; c0 += 24) {
		__m256i mask[3];
#pragma GCC unroll 3
		for (uint32_t v = 0; v < 3; v++)
			mask[v] = lane_mask8(cols > c0 + 8 * v ? cols - c0 - 8 * v : 0);
		__m256 acc[MR_AVX2][3];
#pragma GCC unroll 4
		for (uint32_t j = 0; j < mr; j++)
#pragma GCC unroll 3
			for (uint32_t v = 0; v < 3; v++)
				acc[j][v] =
				    load_y ? _mm256_maskload_ps(y + j * ldy + c0 + 8 * v, mask[v])
					   : _mm256_setzero_ps();
		for (uint32_t kk = 0; kk < kc; kk++) {
			const char *wk = (const char *)pw + (size_t)kk * PC * es;
			__m256 w0 = load8_avx2(wk, c0, wt), w1 = load8_avx2(wk, c0 + 8, wt),
			       w2 = load8_avx2(wk, c0 + 16, wt);
			if (prefetch && c0 == 0)
				prefetch_step(prefetch, kk, wt);
#pragma GCC unroll 4
			for (uint32_t j = 0; j < mr; j++) {
				__m256 b = _mm256_broadcast_ss(x + j * ldx + kk);
				acc[j][0] = _mm256_fmadd_ps(w0, b, acc[j][0]);
				acc[j][1] = _mm256_fmadd_ps(w1, b, acc[j][1]);
				acc[j][2] = _mm256_fmadd_ps(w2, b, acc[j][2]);
			}
		}
#pragma GCC unroll 4
		for (uint32_t j = 0; j < mr; j++)
#pragma GCC unroll 3
			for (uint32_t v = 0; v < 3; v++)
				_mm256_maskstore_ps(y + j * ldy + c0 + 8 * v, mask[v], acc[j][v]);
	}
}

#define TILE_AVX2(name, wt, mr)                                                                    \
	static TARGET_AVX2 void tile_avx2_##name##_##mr(                                           \
	    float *y, size_t ldy, const float *x, size_t ldx, const void *pw, uint32_t kc,         \
	    uint32_t cols, bool load_y, const void *prefetch)                                      \
	{                                                                                          \
		tile_avx2(y, ldy, x, ldx, pw, kc, cols, load_y, prefetch, mr, wt);                 \
	}
#define TILES_AVX2(name, wt)                                                                       \
	TILE_AVX2(name, wt, 1)                                                                     \
	TILE_AVX2(name, wt, 2)                                                                     \
	TILE_AVX2(name, wt, 3)                                                                     \
	TILE_AVX2(name, wt, 4)                                                                     \
	static tile_fn *const tiles_avx2_##name[MR_AVX2] = {                                       \
	    tile_avx2_##name##_1, tile_avx2_##name##_2, tile_avx2_##name##_3,                      \
	    tile_avx2_##name##_4};
TILES_AVX2(f32, RS_DTYPE_F32)
TILES_AVX2(f16, RS_DTYPE_F16)
TILES_AVX2(bf16, RS_DTYPE_BF16)

/* The loops around the tiles. The m rows go in the fewest tiles of at most max_mr rows,
 * sizes differing by at most one (m = 33, max 8: 7 7 7 6 6, not 8 8 8 8 1: a tile of
 * one row pays a whole pass over the panel block for a ninth of the work). */
static void gemm_tiles(float *y, size_t ldy, const float *x, size_t ldx, uint32_t m,
		       const struct rs_packed_matrix *w, uint32_t p0, uint32_t p1, bool accumulate,
		       tile_fn *const *tiles, uint32_t max_mr)
{
	uint32_t n_tiles = (m + max_mr - 1) / max_mr;
	uint32_t base = m / n_tiles, extra = m % n_tiles;
	size_t step_bytes = (size_t)PC * rs_dtype_size(w->dtype);
	for (uint32_t p = p0; p < p1; p++) {
		uint32_t cols = panel_cols(w, p);
		for (uint32_t k0 = 0; k0 < w->k; k0 += KC) {
			uint32_t kc = w->k - k0 < KC ? w->k - k0 : KC;
			const char *pw =
			    (const char *)w->panels + p * panel_bytes(w) + k0 * step_bytes;
			const char *next = p + 1 < p1 ? pw + panel_bytes(w) : NULL;
			for (uint32_t t = 0, r0 = 0; t < n_tiles; t++) {
				uint32_t rows = base + (t < extra);
				tiles[rows - 1](y + r0 * ldy + (size_t)p * PC, ldy,
						x + r0 * ldx + k0, ldx, pw, kc, cols,
						accumulate || k0 > 0, t == 0 ? next : NULL);
				r0 += rows;
			}
		}
	}
}
#endif /* RS_HAVE_X86_KERNELS */

void rs_gemm_packed(float *y, size_t ldy, const float *x, size_t ldx, uint32_t m,
		    const struct rs_packed_matrix *w, uint32_t p0, uint32_t p1, bool accumulate,
		    enum rs_cpu_isa isa)
{
	if (w->n_quant_parts) {
		rs_gemm_quant(y, ldy, x, ldx, m, w, p0, p1, accumulate, isa);
		return;
	}
	if (p1 > w->n_panels)
		p1 = w->n_panels;
	if (p1 <= p0 || m == 0 || w->k == 0)
		return;
	if (isa > rs_cpu_isa())
		isa = rs_cpu_isa();
	if (w->dtype != RS_DTYPE_F32 && !widens(w->dtype, isa))
		isa = RS_ISA_PORTABLE; /* an f16 matrix on an AVX2 CPU without F16C */
#ifdef RS_HAVE_X86_KERNELS
	if (isa == RS_ISA_AVX512) {
		tile_fn *const *tiles = w->dtype == RS_DTYPE_F16    ? tiles_avx512_f16
					: w->dtype == RS_DTYPE_BF16 ? tiles_avx512_bf16
								    : tiles_avx512_f32;
		gemm_tiles(y, ldy, x, ldx, m, w, p0, p1, accumulate, tiles, MR_AVX512);
		return;
	}
	if (isa == RS_ISA_AVX2) {
		tile_fn *const *tiles = w->dtype == RS_DTYPE_F16    ? tiles_avx2_f16
					: w->dtype == RS_DTYPE_BF16 ? tiles_avx2_bf16
								    : tiles_avx2_f32;
		gemm_tiles(y, ldy, x, ldx, m, w, p0, p1, accumulate, tiles, MR_AVX2);
		return;
	}
#endif
	gemm_blas(y, ldy, x, ldx, m, w, p0, p1, accumulate);
}
