/* Products with block-quantized weights (rs_gemm_quant in gemm.h), the weights read in
 * place (the mapped file) and dequantized in registers.
 *
 * Decode (m <= RS_QUANT_SMALL_BATCH): each row of x is quantized to 8 bits per block of 32
 * with an f32 scale (and the sums of its 16-element halves, for the formats' offsets and
 * mins). A weight row's product with it is then, per group of 16 or 32 elements sharing a
 * scale, an exact integer dot product (AVX2: vpmaddubsw of the unsigned weight codes by
 * the signed activations, then vpmaddwd; scalar C elsewhere), and those integer sums are
 * scaled and added in f32 by one common scalar loop, so every ISA gives the same bits.
 * The error against the exact product comes only from rounding the activations (half a
 * step per element: |err| <= sum_i |w_i| * d_i / 2 with d_i = amax(block)/127) and
 * from f32 summation; tests/model_quant_formats.c checks that bound.
 *
 * Prefill (larger m): a panel of 48 weight rows at a time is dequantized to f32 and
 * multiplied by CBLAS SGEMM. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "kernels/cpu/gemm.h"
#include "kernels/model/dtype.h"
#include "kernels/model/quant.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define RS_HAVE_X86_KERNELS 1
#include <immintrin.h>
#endif

/* An activation block: x[i] ~= d * q[i]; sum16[h] = sum of q[16h..16h+15]. */
struct act_block {
	float d;
	int16_t sum16[2];
	int8_t q[32];
};

static void quantize_activations(struct act_block *a, const float *x, uint32_t k)
{
	for (uint32_t b = 0; b < k / 32; b++, x += 32) {
		float amax = 0;
		for (int i = 0; i < 32; i++)
			amax = fmaxf(amax, fabsf(x[i]));
		float d = amax / 127.0f, inv = d ? 1.0f / d : 0.0f;
		a[b].d = d;
		for (int h = 0; h < 2; h++) {
			int sum = 0;
			for (int i = 16 * h; i < 16 * h + 16; i++) {
				int q = (int)lrintf(x[i] * inv);
				q = q > 127 ? 127 : q < -127 ? -127 : q;
				a[b].q[i] = (int8_t)q;
				sum += q;
			}
			a[b].sum16[h] = (int16_t)sum;
		}
	}
}

static int act_sum(const struct act_block *a)
{
	return a->sum16[0] + a->sum16[1];
}

static float f16_at(const uint8_t *p)
{
	return rs_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
}

/* --- integer sums, portable --------------------------------------------------------- */

static void k_scale_min(const uint8_t *s, int j, int *sc, int *m)
{
	if (j < 4) {
		*sc = s[j] & 63;
		*m = s[j + 4] & 63;
	} else {
		*sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
		*m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
	}
}

static void isums_scalar(int32_t *out, const uint8_t *w, enum rs_dtype dtype,
			 const struct act_block *a, uint32_t k)
{
	size_t bb = rs_dtype_block_bytes(dtype);
	switch (dtype) {
	case RS_DTYPE_Q8_0:
		for (uint32_t b = 0; b < k / 32; b++, w += bb) {
			int32_t s = 0;
			for (int i = 0; i < 32; i++)
				s += (int8_t)w[2 + i] * a[b].q[i];
			out[b] = s;
		}
		break;
	case RS_DTYPE_Q4_0:
		for (uint32_t b = 0; b < k / 32; b++, w += bb) {
			int32_t s = 0;
			for (int i = 0; i < 16; i++)
				s += (w[2 + i] & 15) * a[b].q[i] + (w[2 + i] >> 4) * a[b].q[i + 16];
			out[b] = s - 8 * act_sum(&a[b]);
		}
		break;
	case RS_DTYPE_Q4_K:
	case RS_DTYPE_Q5_K: {
		bool five = dtype == RS_DTYPE_Q5_K;
		for (uint32_t sb = 0; sb < k / 256; sb++, w += bb) {
			const uint8_t *qh = w + 16, *qs = five ? w + 48 : w + 16;
			for (int j = 0; j < 8; j++) {
				const struct act_block *ab = &a[8 * sb + j];
				int32_t s = 0;
				for (int l = 0; l < 32; l++) {
					int q = (j & 1) ? qs[32 * (j / 2) + l] >> 4
							: qs[32 * (j / 2) + l] & 15;
					if (five)
						q |= ((qh[l] >> j) & 1) << 4;
					s += q * ab->q[l];
				}
				out[8 * sb + j] = s;
			}
		}
		break;
	}
	case RS_DTYPE_Q6_K:
		for (uint32_t sb = 0; sb < k / 256; sb++, w += bb) {
			const uint8_t *ql = w, *qh = w + 128;
			int32_t *o = out + 16 * sb;
			const struct act_block *ab = a + 8 * sb;
			memset(o, 0, 16 * sizeof(*o));
			for (int h = 0; h < 2; h++)
				for (int l = 0; l < 32; l++) {
					int hb = qh[32 * h + l];
					int q[4] = {
					    (ql[64 * h + l] & 15) | ((hb & 3) << 4),
					    (ql[64 * h + 32 + l] & 15) | (((hb >> 2) & 3) << 4),
					    (ql[64 * h + l] >> 4) | (((hb >> 4) & 3) << 4),
					    (ql[64 * h + 32 + l] >> 4) | (((hb >> 6) & 3) << 4),
					};
					for (int t = 0; t < 4; t++) {
						int e = 128 * h + 32 * t + l;
						o[e / 16] += q[t] * ab[e / 32].q[e % 32];
					}
				}
			for (int g = 0; g < 16; g++)
				o[g] -= 32 * ab[g / 2].sum16[g % 2];
		}
		break;
	default:
		break;
	}
}

/* --- integer sums, AVX2 ------------------------------------------------------------- */

#ifdef RS_HAVE_X86_KERNELS
#define AVX2 __attribute__((target("avx2")))

AVX2 static inline __m256i dot_u8_s8(__m256i u, __m256i s)
{
	return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

AVX2 static inline int32_t hsum128(__m128i s)
{
	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
	return _mm_cvtsi128_si32(s);
}

AVX2 static inline int32_t hsum256(__m256i v)
{
	return hsum128(_mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)));
}

AVX2 static inline __m256i load_act(const struct act_block *a)
{
	return _mm256_loadu_si256((const __m256i *)a->q);
}

AVX2 static void isums_avx2(int32_t *out, const uint8_t *w, enum rs_dtype dtype,
			    const struct act_block *a, uint32_t k)
{
	size_t bb = rs_dtype_block_bytes(dtype);
	const __m256i low4 = _mm256_set1_epi8(15);
	switch (dtype) {
	case RS_DTYPE_Q8_0:
		for (uint32_t b = 0; b < k / 32; b++, w += bb) {
			__m256i q = _mm256_loadu_si256((const __m256i *)(w + 2)),
				x = load_act(&a[b]);
			/* signed x signed: |q| times x with q's sign */
			out[b] = hsum256(dot_u8_s8(_mm256_sign_epi8(q, q), _mm256_sign_epi8(x, q)));
		}
		break;
	case RS_DTYPE_Q4_0:
		for (uint32_t b = 0; b < k / 32; b++, w += bb) {
			__m128i packed = _mm_loadu_si128((const __m128i *)(w + 2));
			__m256i q = _mm256_and_si256(
			    _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), low4);
			out[b] = hsum256(dot_u8_s8(q, load_act(&a[b]))) - 8 * act_sum(&a[b]);
		}
		break;
	case RS_DTYPE_Q4_K:
	case RS_DTYPE_Q5_K: {
		bool five = dtype == RS_DTYPE_Q5_K;
		const __m256i one = _mm256_set1_epi8(1);
		for (uint32_t sb = 0; sb < k / 256; sb++, w += bb) {
			const uint8_t *qs = five ? w + 48 : w + 16;
			__m256i qh = _mm256_loadu_si256((const __m256i *)(w + 16));
			for (int c = 0; c < 4; c++) {
				__m256i packed = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
				__m256i lo = _mm256_and_si256(packed, low4);
				__m256i hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low4);
				if (five) {
					__m128i s0 = _mm_cvtsi32_si128(2 * c),
						s1 = _mm_cvtsi32_si128(2 * c + 1);
					lo = _mm256_or_si256(
					    lo, _mm256_slli_epi16(
						    _mm256_and_si256(_mm256_srl_epi16(qh, s0), one),
						    4));
					hi = _mm256_or_si256(
					    hi, _mm256_slli_epi16(
						    _mm256_and_si256(_mm256_srl_epi16(qh, s1), one),
						    4));
				}
				out[8 * sb + 2 * c] =
				    hsum256(dot_u8_s8(lo, load_act(&a[8 * sb + 2 * c])));
				out[8 * sb + 2 * c + 1] =
				    hsum256(dot_u8_s8(hi, load_act(&a[8 * sb + 2 * c + 1])));
			}
		}
		break;
	}
	case RS_DTYPE_Q6_K: {
		const __m256i low2 = _mm256_set1_epi8(3);
		for (uint32_t sb = 0; sb < k / 256; sb++, w += bb) {
			const struct act_block *ab = a + 8 * sb;
			for (int h = 0; h < 2; h++) {
				__m256i l0 = _mm256_loadu_si256((const __m256i *)(w + 64 * h));
				__m256i l1 = _mm256_loadu_si256((const __m256i *)(w + 64 * h + 32));
				__m256i hb =
				    _mm256_loadu_si256((const __m256i *)(w + 128 + 32 * h));
				__m256i q[4] = {
				    _mm256_and_si256(l0, low4),
				    _mm256_and_si256(l1, low4),
				    _mm256_and_si256(_mm256_srli_epi16(l0, 4), low4),
				    _mm256_and_si256(_mm256_srli_epi16(l1, 4), low4),
				};
				for (int t = 0; t < 4; t++) {
					__m256i high = _mm256_and_si256(
					    _mm256_srl_epi16(hb, _mm_cvtsi32_si128(2 * t)), low2);
					q[t] = _mm256_or_si256(q[t], _mm256_slli_epi16(high, 4));
					int blk = 4 * h + t;
					__m256i s = dot_u8_s8(q[t], load_act(&ab[blk]));
					out[16 * sb + 2 * blk] =
					    hsum128(_mm256_castsi256_si128(s)) -
					    32 * ab[blk].sum16[0];
					out[16 * sb + 2 * blk + 1] =
					    hsum128(_mm256_extracti128_si256(s, 1)) -
					    32 * ab[blk].sum16[1];
				}
			}
		}
		break;
	}
	default:
		break;
	}
}
#endif

/* --- scaling the integer sums: one loop for every ISA ------------------------------ */

static float combine(const uint8_t *w, enum rs_dtype dtype, const struct act_block *a,
		     const int32_t *isum, uint32_t k)
{
	size_t bb = rs_dtype_block_bytes(dtype);
	float acc = 0;
	switch (dtype) {
	case RS_DTYPE_Q8_0:
	case RS_DTYPE_Q4_0:
		for (uint32_t b = 0; b < k / 32; b++, w += bb)
			acc += f16_at(w) * a[b].d * (float)isum[b];
		break;
	case RS_DTYPE_Q4_K:
	case RS_DTYPE_Q5_K:
		for (uint32_t sb = 0; sb < k / 256; sb++, w += bb) {
			float d = f16_at(w), dmin = f16_at(w + 2);
			for (int j = 0; j < 8; j++) {
				int sc, m;
				k_scale_min(w + 4, j, &sc, &m);
				const struct act_block *ab = &a[8 * sb + j];
				acc += ab->d * (d * (float)sc * (float)isum[8 * sb + j] -
						dmin * (float)m * (float)act_sum(ab));
			}
		}
		break;
	case RS_DTYPE_Q6_K:
		for (uint32_t sb = 0; sb < k / 256; sb++, w += bb) {
			float d = f16_at(w + 208);
			const int8_t *sc = (const int8_t *)(w + 192);
			for (int g = 0; g < 16; g++)
				acc += a[8 * sb + g / 2].d * (d * (float)sc[g]) *
				       (float)isum[16 * sb + g];
		}
		break;
	default:
		break;
	}
	return acc;
}

/* Row r of w: its part's bytes and format. */
static const uint8_t *row_of(const struct rs_packed_matrix *w, uint32_t r, enum rs_dtype *dtype)
{
	for (uint32_t i = 0; i < w->n_quant_parts; r -= w->quant_parts[i++].n_rows)
		if (r < w->quant_parts[i].n_rows) {
			*dtype = w->quant_parts[i].dtype;
			return w->quant_parts[i].rows + (size_t)r * w->quant_parts[i].row_bytes;
		}
	return NULL;
}

int rs_packed_quant_init(struct rs_packed_matrix *w, uint32_t k, const struct rs_quant_part *parts,
			 uint32_t n_parts)
{
	memset(w, 0, sizeof(*w));
	if (n_parts == 0 || n_parts > RS_QUANT_PARTS || k == 0)
		return -EINVAL;
	uint64_t n = 0;
	for (uint32_t i = 0; i < n_parts; i++) {
		if (!rs_dtype_is_quant(parts[i].dtype) || k % rs_dtype_block_elems(parts[i].dtype))
			return -EINVAL;
		w->quant_parts[i] = parts[i];
		w->quant_parts[i].row_bytes = rs_dtype_row_bytes(parts[i].dtype, k);
		n += parts[i].n_rows;
	}
	if (n > UINT32_MAX)
		return -EINVAL;
	w->n_quant_parts = n_parts;
	w->dtype = parts[0].dtype;
	w->n = (uint32_t)n;
	w->k = k;
	w->n_panels = (uint32_t)((n + RS_PANEL_COLS - 1) / RS_PANEL_COLS);
	return 0;
}

/* Out of memory for the buffers: dequantize a block at a time into the stack, in f32. */
static void gemm_no_memory(float *y, size_t ldy, const float *x, size_t ldx, uint32_t m,
			   const struct rs_packed_matrix *w, uint32_t c0, uint32_t c1,
			   bool accumulate)
{
	float block[RS_QK_K];
	for (uint32_t c = c0; c < c1; c++) {
		enum rs_dtype dtype = RS_DTYPE_Q8_0;
		const uint8_t *row = row_of(w, c, &dtype);
		uint32_t be = rs_dtype_block_elems(dtype);
		size_t bb = rs_dtype_block_bytes(dtype);
		for (uint32_t i = 0; i < m; i++) {
			float v = 0;
			for (uint32_t b = 0; b < w->k / be; b++) {
				rs_dequantize(block, row + b * bb, dtype, be);
				for (uint32_t e = 0; e < be; e++)
					v += block[e] * x[i * ldx + b * be + e];
			}
			y[i * ldy + c] = accumulate ? y[i * ldy + c] + v : v;
		}
	}
}

static void gemm_small(float *y, size_t ldy, const float *x, size_t ldx, uint32_t m,
		       const struct rs_packed_matrix *w, uint32_t c0, uint32_t c1, bool accumulate,
		       enum rs_cpu_isa isa)
{
	uint32_t k = w->k, nb = k / 32;
	/* Up to 16 Ki elements (160 KiB for 8 rows) on the stack, more from the heap. */
	enum { STACK_K = 16384 };
	struct act_block stack_act[k <= STACK_K ? RS_QUANT_SMALL_BATCH * nb : 1];
	int32_t stack_isum[k <= STACK_K ? k / 16 : 1];
	struct act_block *heap_act = NULL;
	int32_t *heap_isum = NULL;
	if (k > STACK_K) {
		heap_act = malloc((size_t)m * nb * sizeof(*heap_act));
		heap_isum = malloc((size_t)k / 16 * sizeof(*heap_isum));
		if (!heap_act || !heap_isum) {
			free(heap_act);
			free(heap_isum);
			gemm_no_memory(y, ldy, x, ldx, m, w, c0, c1, accumulate);
			return;
		}
	}
	struct act_block *act_all = heap_act ? heap_act : stack_act;
	int32_t *isum = heap_isum ? heap_isum : stack_isum;
	struct act_block *act[RS_QUANT_SMALL_BATCH];
	for (uint32_t i = 0; i < m; i++) {
		act[i] = act_all + (size_t)i * nb;
		quantize_activations(act[i], x + i * ldx, k);
	}
	for (uint32_t c = c0; c < c1; c++) {
		enum rs_dtype dtype = RS_DTYPE_Q8_0;
		const uint8_t *row = row_of(w, c, &dtype);
		for (uint32_t i = 0; i < m; i++) {
#ifdef RS_HAVE_X86_KERNELS
			if (isa >= RS_ISA_AVX2)
				isums_avx2(isum, row, dtype, act[i], k);
			else
#endif
				isums_scalar(isum, row, dtype, act[i], k);
			float v = combine(row, dtype, act[i], isum, k);
			y[i * ldy + c] = accumulate ? y[i * ldy + c] + v : v;
		}
	}
	free(heap_act);
	free(heap_isum);
}

static void gemm_large(float *y, size_t ldy, const float *x, size_t ldx, uint32_t m,
		       const struct rs_packed_matrix *w, uint32_t c0, uint32_t c1, bool accumulate)
{
	uint32_t k = w->k;
	float *panel = malloc((size_t)RS_PANEL_COLS * k * sizeof(float));
	if (!panel) {
		gemm_no_memory(y, ldy, x, ldx, m, w, c0, c1, accumulate);
		return;
	}
	for (uint32_t c = c0; c < c1; c += RS_PANEL_COLS) {
		uint32_t cols = c1 - c < RS_PANEL_COLS ? c1 - c : RS_PANEL_COLS;
		for (uint32_t r = 0; r < cols; r++) {
			enum rs_dtype dtype = RS_DTYPE_Q8_0;
			const uint8_t *row = row_of(w, c + r, &dtype);
			rs_dequantize(panel + (size_t)r * k, row, dtype, k);
		}
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)cols, (int)k,
			    1.0f, x, (int)ldx, panel, (int)k, accumulate ? 1.0f : 0.0f, y + c,
			    (int)ldy);
	}
	free(panel);
}

void rs_gemm_quant(float *y, size_t ldy, const float *x, size_t ldx, uint32_t m,
		   const struct rs_packed_matrix *w, uint32_t p0, uint32_t p1, bool accumulate,
		   enum rs_cpu_isa isa)
{
	if (p1 > w->n_panels)
		p1 = w->n_panels;
	if (p1 <= p0 || m == 0 || w->k == 0)
		return;
	if (isa > rs_cpu_isa())
		isa = rs_cpu_isa();
	uint32_t c0 = p0 * RS_PANEL_COLS,
		 c1 = p1 * RS_PANEL_COLS < w->n ? p1 * RS_PANEL_COLS : w->n;
	if (m > RS_QUANT_SMALL_BATCH)
		gemm_large(y, ldy, x, ldx, m, w, c0, c1, accumulate);
	else
		gemm_small(y, ldy, x, ldx, m, w, c0, c1, accumulate, isa);
}
