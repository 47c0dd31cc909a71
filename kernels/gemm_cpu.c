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
 * they would stay in a register: blocking does not change any bit. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "kernels/gemm.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define RS_HAVE_X86_KERNELS 1
#include <immintrin.h>
#endif

enum {
	PC = RS_PANEL_COLS,
	KC = 512, /* kk per block */
};

int rs_packed_alloc(struct rs_packed_matrix *w, uint32_t n, uint32_t k)
{
	memset(w, 0, sizeof(*w));
	uint32_t n_panels = (uint32_t)(((uint64_t)n + PC - 1) / PC);
	size_t bytes = (size_t)n_panels * k * PC * sizeof(float);
	float *panels = aligned_alloc(64, bytes ? bytes : 64); /* a multiple of 64: PC * 4 is 192 */
	if (!panels)
		return -ENOMEM;
	/* Only the last panel can hold columns no row fills (past n): zero it. The rest is
	 * written by rs_packed_set_rows, which then also takes the first-touch page faults,
	 * on the workers that pack (zeroing everything here cost a third of a model's load). */
	if (n_panels)
		memset(panels + (size_t)(n_panels - 1) * k * PC, 0, (size_t)k * PC * sizeof(float));
	*w = (struct rs_packed_matrix){.panels = panels, .n = n, .k = k, .n_panels = n_panels};
	return 0;
}

int rs_packed_set_rows(struct rs_packed_matrix *w, uint32_t row0, uint32_t n_rows, const void *rows,
		       enum rs_dtype dtype)
{
	size_t k = w->k, row_bytes = k * rs_dtype_size(dtype);
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
		float *panel = w->panels + (size_t)(col / PC) * k * PC;
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
	free(w->panels);
	memset(w, 0, sizeof(*w));
}

void rs_packed_get_row(const struct rs_packed_matrix *w, uint32_t r, float *out)
{
	const float *panel = w->panels + (size_t)(r / PC) * w->k * PC;
	for (size_t kk = 0; kk < w->k; kk++)
		out[kk] = panel[kk * PC + r % PC];
}

/* Columns of panel p that exist (the last panel may be partial). */
static uint32_t panel_cols(const struct rs_packed_matrix *w, uint32_t p)
{
	uint32_t left = w->n - p * PC;
	return left < PC ? left : PC;
}

/* ---- CBLAS: one SGEMM per panel (W^T's panel is a plain row-major k x 48 matrix) ---- */

static void gemm_blas(float *y, size_t ldy, const float *x, size_t ldx, uint32_t m,
		      const struct rs_packed_matrix *w, uint32_t p0, uint32_t p1, bool accumulate)
{
	for (uint32_t p = p0; p < p1; p++) {
		const float *panel = w->panels + (size_t)p * w->k * PC;
		float beta = accumulate ? 1.0f : 0.0f;
		if (m == 1) /* SGEMM cost 2.4x more at one row (decode at batch 1) */
			cblas_sgemv(CblasRowMajor, CblasTrans, (int)w->k, (int)panel_cols(w, p),
				    1.0f, panel, PC, x, 1, beta, y + (size_t)p * PC, 1);
		else
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m,
				    (int)panel_cols(w, p), (int)w->k, 1.0f, x, (int)ldx, panel, PC,
				    beta, y + (size_t)p * PC, (int)ldy);
	}
}

#ifdef RS_HAVE_X86_KERNELS
#define TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma")))
#define TARGET_AVX2   __attribute__((target("avx2,fma")))
#define ALWAYS_INLINE inline __attribute__((always_inline))

/* One tile: y[mr rows][cols] (+)= x[mr rows][kc] * panel block [kc][PC]. load_y: the
 * chain starts from y (accumulate, or a later block), else from 0. prefetch: the next
 * panel's block, or NULL. Every instantiation has a constant mr. */
typedef void tile_fn(float *y, size_t ldy, const float *x, size_t ldx, const float *pw, uint32_t kc,
		     uint32_t cols, bool load_y, const float *prefetch);

/* ---- AVX-512: 8 rows x 3 vectors = 24 accumulators (of 32 registers) ---------------- */

enum { MR_AVX512 = 8 };

static ALWAYS_INLINE TARGET_AVX512 void tile_avx512(float *y, size_t ldy, const float *x,
						    size_t ldx, const float *pw, uint32_t kc,
						    uint32_t cols, bool load_y,
						    const float *prefetch, uint32_t mr)
{
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
		const float *wk = pw + (size_t)kk * PC;
		__m512 w0 = _mm512_load_ps(wk), w1 = _mm512_load_ps(wk + 16),
		       w2 = _mm512_load_ps(wk + 32);
		if (prefetch) {
			/* Into L2: a whole block ahead is more than L1 holds. */
			const char *next = (const char *)(prefetch + (size_t)kk * PC);
			_mm_prefetch(next, _MM_HINT_T1);
			_mm_prefetch(next + 64, _MM_HINT_T1);
			_mm_prefetch(next + 128, _MM_HINT_T1);
		}
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

#define TILE_AVX512(mr)                                                                            \
	static TARGET_AVX512 void tile_avx512_##mr(                                                \
	    float *y, size_t ldy, const float *x, size_t ldx, const float *pw, uint32_t kc,        \
	    uint32_t cols, bool load_y, const float *prefetch)                                     \
	{                                                                                          \
		tile_avx512(y, ldy, x, ldx, pw, kc, cols, load_y, prefetch, mr);                   \
	}
TILE_AVX512(1)
TILE_AVX512(2)
TILE_AVX512(3)
TILE_AVX512(4)
TILE_AVX512(5)
TILE_AVX512(6)
TILE_AVX512(7)
TILE_AVX512(8)
static tile_fn *const tiles_avx512[MR_AVX512] = {tile_avx512_1, tile_avx512_2, tile_avx512_3,
						 tile_avx512_4, tile_avx512_5, tile_avx512_6,
						 tile_avx512_7, tile_avx512_8};

/* ---- AVX2 + FMA: a panel as two halves of 3 vectors; 4 rows x 3 = 12 accumulators,
 * 3 weight vectors and a broadcast in the 16 registers. The same chains as AVX-512. --- */

enum { MR_AVX2 = 4 };

static ALWAYS_INLINE TARGET_AVX2 __m256i lane_mask8(uint32_t valid)
{
	static const int32_t ones[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
	return _mm256_loadu_si256((const __m256i *)(ones + 8 - (valid < 8 ? valid : 8)));
}

static ALWAYS_INLINE TARGET_AVX2 void tile_avx2(float *y, size_t ldy, const float *x, size_t ldx,
						const float *pw, uint32_t kc, uint32_t cols,
						bool load_y, const float *prefetch, uint32_t mr)
{
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
			const float *wk = pw + (size_t)kk * PC + c0;
			__m256 w0 = _mm256_load_ps(wk), w1 = _mm256_load_ps(wk + 8),
			       w2 = _mm256_load_ps(wk + 16);
			if (prefetch && c0 == 0) {
				const char *next = (const char *)(prefetch + (size_t)kk * PC);
				_mm_prefetch(next, _MM_HINT_T1);
				_mm_prefetch(next + 64, _MM_HINT_T1);
				_mm_prefetch(next + 128, _MM_HINT_T1);
			}
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

#define TILE_AVX2(mr)                                                                              \
	static TARGET_AVX2 void tile_avx2_##mr(float *y, size_t ldy, const float *x, size_t ldx,   \
					       const float *pw, uint32_t kc, uint32_t cols,        \
					       bool load_y, const float *prefetch)                 \
	{                                                                                          \
		tile_avx2(y, ldy, x, ldx, pw, kc, cols, load_y, prefetch, mr);                     \
	}
TILE_AVX2(1)
TILE_AVX2(2)
TILE_AVX2(3)
TILE_AVX2(4)
static tile_fn *const tiles_avx2[MR_AVX2] = {tile_avx2_1, tile_avx2_2, tile_avx2_3, tile_avx2_4};

/* The loops around the tiles. The m rows go in the fewest tiles of at most max_mr rows,
 * sizes differing by at most one (m = 33, max 8: 7 7 7 6 6, not 8 8 8 8 1: a tile of
 * one row pays a whole pass over the panel block for a ninth of the work). */
static void gemm_tiles(float *y, size_t ldy, const float *x, size_t ldx, uint32_t m,
		       const struct rs_packed_matrix *w, uint32_t p0, uint32_t p1, bool accumulate,
		       tile_fn *const *tiles, uint32_t max_mr)
{
	uint32_t n_tiles = (m + max_mr - 1) / max_mr;
	uint32_t base = m / n_tiles, extra = m % n_tiles;
	size_t panel_floats = (size_t)w->k * PC;
	for (uint32_t p = p0; p < p1; p++) {
		uint32_t cols = panel_cols(w, p);
		for (uint32_t k0 = 0; k0 < w->k; k0 += KC) {
			uint32_t kc = w->k - k0 < KC ? w->k - k0 : KC;
			const float *pw = w->panels + p * panel_floats + (size_t)k0 * PC;
			const float *next = p + 1 < p1 ? pw + panel_floats : NULL;
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
	if (p1 > w->n_panels)
		p1 = w->n_panels;
	if (p1 <= p0 || m == 0 || w->k == 0)
		return;
	if (isa > rs_cpu_isa())
		isa = rs_cpu_isa();
#ifdef RS_HAVE_X86_KERNELS
	if (isa == RS_ISA_AVX512) {
		gemm_tiles(y, ldy, x, ldx, m, w, p0, p1, accumulate, tiles_avx512, MR_AVX512);
		return;
	}
	if (isa == RS_ISA_AVX2) {
		gemm_tiles(y, ldy, x, ldx, m, w, p0, p1, accumulate, tiles_avx2, MR_AVX2);
		return;
	}
#endif
	gemm_blas(y, ldy, x, ldx, m, w, p0, p1, accumulate);
}
