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

/* A row of x quantized: element i ~= d[i / 32] * q[i]; sum[b] = the sum of block b's q,
 * sum16[2b + h] that of its half h (16 elements). Separate arrays, so that the vector
 * kernels load eight blocks' scales or sums at once. */
struct act_row {
	int8_t *q;
	float *d;
	int32_t *sum;
	int32_t *sum16;
};

/* Bytes of one act_row of k elements, in the layout act_row_at gives. */
static size_t act_row_bytes(uint32_t k)
{
	uint32_t nb = k / 32;
	return (size_t)k + (size_t)nb * (sizeof(float) + 3 * sizeof(int32_t));
}

static struct act_row act_row_at(void *mem, uint32_t k)
{
	uint32_t nb = k / 32;
	char *p = mem;
	struct act_row a;
	a.d = (float *)p;
	a.sum = (int32_t *)(p + nb * sizeof(float));
	a.sum16 = (int32_t *)(p + nb * (sizeof(float) + sizeof(int32_t)));
	a.q = (int8_t *)(p + nb * (sizeof(float) + 3 * sizeof(int32_t)));
	return a;
}

static void quantize_activations(struct act_row a, const float *x, uint32_t k)
{
	for (uint32_t b = 0; b < k / 32; b++, x += 32) {
		float amax = 0;
		for (int i = 0; i < 32; i++)
			amax = fmaxf(amax, fabsf(x[i]));
		float d = amax / 127.0f, inv = d ? 1.0f / d : 0.0f;
		a.d[b] = d;
		for (int h = 0; h < 2; h++) {
			int sum = 0;
			for (int i = 16 * h; i < 16 * h + 16; i++) {
				int q = (int)lrintf(x[i] * inv);
				q = q > 127 ? 127 : q < -127 ? -127 : q;
				a.q[32 * b + i] = (int8_t)q;
				sum += q;
			}
			a.sum16[2 * b + h] = sum;
		}
		a.sum[b] = a.sum16[2 * b] + a.sum16[2 * b + 1];
	}
}

/* f16 bits to f32, exactly (inline: the kernels decode one per block). */
static inline float f16_bits(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 31, m = h & 1023, bits;
	if (e == 31)
		bits = sign | 0x7f800000u | (m << 13);
	else if (e == 0) {
		float v = (float)m * 0x1p-24f;
		return sign ? -v : v;
	} else
		bits = sign | ((e + 112) << 23) | (m << 13);
	float f;
	memcpy(&f, &bits, sizeof(f));
	return f;
}

static inline float f16_at(const uint8_t *p)
{
	return f16_bits((uint16_t)(p[0] | p[1] << 8));
}

/* The eight 6-bit scales (*sc) and mins (*m) of a Q4_K/Q5_K block's 12 scale bytes s,
 * one per byte of a u64 (sub-block j in byte j), computed in registers: the vector
 * kernel widens them straight from a general register (a byte-wise store then an
 * 8-byte load would stall on store forwarding). */
static inline void k_scales_mins(const uint8_t *s, uint64_t *sc, uint64_t *m)
{
	uint32_t a, b, c;
	memcpy(&a, s, 4);
	memcpy(&b, s + 4, 4);
	memcpy(&c, s + 8, 4);
	/* j < 4: the low 6 bits of a (scales), b (mins); j >= 4: 4 bits of c, and the top
	 * 2 bits of a (scales), b (mins) as bits 4-5. */
	uint32_t sc_hi = (c & 0x0f0f0f0fu) | ((a >> 2) & 0x30303030u);
	uint32_t m_hi = ((c >> 4) & 0x0f0f0f0fu) | ((b >> 2) & 0x30303030u);
	*sc = (a & 0x3f3f3f3fu) | (uint64_t)sc_hi << 32;
	*m = (b & 0x3f3f3f3fu) | (uint64_t)m_hi << 32;
}

/* The sum of the eight lanes, in the order the AVX2 reduction adds them. */
static float reduce8(const float acc[8])
{
	return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

/* --- a row's product, portable ------------------------------------------------------
 * Every output is eight lane sums (acc[j] gets what vector lane j adds, in the same
 * order, with separate multiplies and adds as the vector code does: no FMA), then
 * reduce8. The integer block sums are exact, so the AVX2 kernel gives these bits. */

static float row_dot_scalar(const uint8_t *w, enum rs_dtype dtype, struct act_row a, uint32_t k)
{
	size_t bb = rs_dtype_block_bytes(dtype);
	float acc[8] = {0};
	switch (dtype) {
	case RS_DTYPE_Q8_0:
	case RS_DTYPE_Q4_0:
		for (uint32_t b = 0; b < k / 32; b++, w += bb) {
			const int8_t *q = a.q + 32 * b;
			int32_t s = 0;
			if (dtype == RS_DTYPE_Q8_0) {
				for (int i = 0; i < 32; i++)
					s += (int8_t)w[2 + i] * q[i];
			} else {
				for (int i = 0; i < 16; i++)
					s += (w[2 + i] & 15) * q[i] + (w[2 + i] >> 4) * q[i + 16];
				s -= 8 * a.sum[b];
			}
			float scale = f16_at(w) * a.d[b];
			acc[b % 8] += (float)s * scale;
		}
		break;
	case RS_DTYPE_Q4_K:
	case RS_DTYPE_Q5_K: {
		bool five = dtype == RS_DTYPE_Q5_K;
		for (uint32_t sb = 0; sb < k / 256; sb++, w += bb) {
			const uint8_t *qh = w + 16, *qs = five ? w + 48 : w + 16;
			float d = f16_at(w), dmin = f16_at(w + 2);
			uint64_t sc8, m8;
			k_scales_mins(w + 4, &sc8, &m8);
			for (int j = 0; j < 8; j++) {
				unsigned sc = (unsigned)(sc8 >> 8 * j) & 255,
					 m = (unsigned)(m8 >> 8 * j) & 255;
				const int8_t *q = a.q + 256 * sb + 32 * j;
				int32_t s = 0;
				for (int l = 0; l < 32; l++) {
					int v = (j & 1) ? qs[32 * (j / 2) + l] >> 4
							: qs[32 * (j / 2) + l] & 15;
					if (five)
						v |= ((qh[l] >> j) & 1) << 4;
					s += v * q[l];
				}
				float t = (float)s * (d * (float)sc);
				float u = (float)a.sum[8 * sb + j] * (dmin * (float)m);
				acc[j] += (t - u) * a.d[8 * sb + j];
			}
		}
		break;
	}
	case RS_DTYPE_Q6_K:
		for (uint32_t sb = 0; sb < k / 256; sb++, w += bb) {
			const uint8_t *ql = w, *qh = w + 128;
			const int8_t *sc = (const int8_t *)(w + 192);
			float d = f16_at(w + 208);
			int32_t s[16] = {0};
			for (int h = 0; h < 2; h++)
				for (int l = 0; l < 32; l++) {
					int hb = qh[32 * h + l];
					int v[4] = {
					    (ql[64 * h + l] & 15) | ((hb & 3) << 4),
					    (ql[64 * h + 32 + l] & 15) | (((hb >> 2) & 3) << 4),
					    (ql[64 * h + l] >> 4) | (((hb >> 4) & 3) << 4),
					    (ql[64 * h + 32 + l] >> 4) | (((hb >> 6) & 3) << 4),
					};
					for (int t = 0; t < 4; t++) {
						int e = 128 * h + 32 * t + l;
						s[e / 16] += v[t] * a.q[256 * sb + e];
					}
				}
			for (int half = 0; half < 2; half++)
				for (int j = 0; j < 8; j++) {
					int g = 8 * half + j;
					int32_t sg = s[g] - 32 * a.sum16[16 * sb + g];
					acc[j] +=
					    ((float)sg * (d * (float)sc[g])) * a.d[8 * sb + g / 2];
				}
		}
		break;
	default:
		break;
	}
	return reduce8(acc);
}

/* --- a row's product, AVX2 ---------------------------------------------------------- */

#ifdef RS_HAVE_X86_KERNELS
#define AVX2 __attribute__((target("avx2,f16c")))

AVX2 static inline __m256i dot_u8_s8(__m256i u, __m256i s)
{
	return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* The eight sums of v[0..7]'s lanes, as one vector (lane j: the sum of v[j]). */
AVX2 static inline __m256i sum8(const __m256i v[8])
{
	__m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
	__m256i b = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
	return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20),
				_mm256_permute2x128_si256(a, b, 0x31));
}

AVX2 static inline __m256i load32(const void *p)
{
	return _mm256_loadu_si256((const __m256i *)p);
}

AVX2 static float row_dot_avx2(const uint8_t *w, enum rs_dtype dtype, struct act_row a, uint32_t k)
{
	size_t bb = rs_dtype_block_bytes(dtype);
	const __m256i low4 = _mm256_set1_epi8(15);
	__m256 acc = _mm256_setzero_ps();
	float lanes[8];
	switch (dtype) {
	case RS_DTYPE_Q8_0:
	case RS_DTYPE_Q4_0: {
		uint32_t nb = k / 32, b = 0;
		for (; b + 8 <= nb; b += 8) {
			__m256i v[8];
			uint16_t dw[8];
			for (int j = 0; j < 8; j++) {
				const uint8_t *blk = w + (b + j) * bb;
				__m256i x = load32(a.q + 32 * (b + j)), q;
				if (dtype == RS_DTYPE_Q8_0) {
					q = load32(blk + 2);
					v[j] = dot_u8_s8(_mm256_sign_epi8(q, q),
							 _mm256_sign_epi8(x, q));
				} else {
					__m128i packed =
					    _mm_loadu_si128((const __m128i *)(blk + 2));
					q = _mm256_and_si256(
					    _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed),
					    low4);
					v[j] = dot_u8_s8(q, x);
				}
				dw[j] = (uint16_t)(blk[0] | blk[1] << 8);
			}
			__m256i s = sum8(v);
			if (dtype == RS_DTYPE_Q4_0)
				s = _mm256_sub_epi32(s, _mm256_slli_epi32(load32(a.sum + b), 3));
			__m256 scale =
			    _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)dw)),
					  _mm256_loadu_ps(a.d + b));
			acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_cvtepi32_ps(s), scale));
		}
		_mm256_storeu_ps(lanes, acc);
		/* The last nb % 8 blocks as the portable loop adds them (lane b % 8). */
		for (; b < nb; b++) {
			const uint8_t *blk = w + b * bb;
			const int8_t *q = a.q + 32 * b;
			int32_t s = 0;
			if (dtype == RS_DTYPE_Q8_0) {
				for (int i = 0; i < 32; i++)
					s += (int8_t)blk[2 + i] * q[i];
			} else {
				for (int i = 0; i < 16; i++)
					s += (blk[2 + i] & 15) * q[i] +
					     (blk[2 + i] >> 4) * q[i + 16];
				s -= 8 * a.sum[b];
			}
			float scale = f16_at(blk) * a.d[b];
			lanes[b % 8] += (float)s * scale;
		}
		return reduce8(lanes);
	}
	case RS_DTYPE_Q4_K:
	case RS_DTYPE_Q5_K: {
		bool five = dtype == RS_DTYPE_Q5_K;
		const __m256i one = _mm256_set1_epi8(1);
		for (uint32_t sb = 0; sb < k / 256; sb++, w += bb) {
			const uint8_t *qs = five ? w + 48 : w + 16;
			const int8_t *x = a.q + 256 * sb;
			__m256i qh = load32(w + 16), v[8];
			for (int c = 0; c < 4; c++) {
				__m256i packed = load32(qs + 32 * c);
				__m256i lo = _mm256_and_si256(packed, low4);
				__m256i hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low4);
				if (five) {
					lo = _mm256_or_si256(
					    lo, _mm256_slli_epi16(_mm256_and_si256(qh, one), 4));
					hi = _mm256_or_si256(
					    hi, _mm256_slli_epi16(
						    _mm256_and_si256(_mm256_srli_epi16(qh, 1), one),
						    4));
					qh = _mm256_srli_epi16(qh, 2);
				}
				v[2 * c] = dot_u8_s8(lo, load32(x + 64 * c));
				v[2 * c + 1] = dot_u8_s8(hi, load32(x + 64 * c + 32));
			}
			uint64_t sc, m;
			k_scales_mins(w + 4, &sc, &m);
			__m256 scf = _mm256_cvtepi32_ps(
			    _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)sc)));
			__m256 mf = _mm256_cvtepi32_ps(
			    _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)m)));
			__m256 t = _mm256_mul_ps(_mm256_cvtepi32_ps(sum8(v)),
						 _mm256_mul_ps(_mm256_set1_ps(f16_at(w)), scf));
			__m256 u = _mm256_mul_ps(_mm256_cvtepi32_ps(load32(a.sum + 8 * sb)),
						 _mm256_mul_ps(_mm256_set1_ps(f16_at(w + 2)), mf));
			acc = _mm256_add_ps(
			    acc, _mm256_mul_ps(_mm256_sub_ps(t, u), _mm256_loadu_ps(a.d + 8 * sb)));
		}
		break;
	}
	case RS_DTYPE_Q6_K: {
		const __m256i low2 = _mm256_set1_epi8(3);
		const __m256i interleave = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
		const __m256i first_half = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
		const __m256i second_half = _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7);
		for (uint32_t sb = 0; sb < k / 256; sb++, w += bb) {
			const int8_t *x = a.q + 256 * sb;
			__m256i v[8];
			for (int h = 0; h < 2; h++) {
				__m256i l0 = load32(w + 64 * h), l1 = load32(w + 64 * h + 32);
				__m256i hb = load32(w + 128 + 32 * h);
				__m256i q[4] = {
				    _mm256_and_si256(l0, low4),
				    _mm256_and_si256(l1, low4),
				    _mm256_and_si256(_mm256_srli_epi16(l0, 4), low4),
				    _mm256_and_si256(_mm256_srli_epi16(l1, 4), low4),
				};
				for (int t = 0; t < 4; t++) {
					__m256i high = _mm256_and_si256(hb, low2);
					hb = _mm256_srli_epi16(hb, 2);
					q[t] = _mm256_or_si256(q[t], _mm256_slli_epi16(high, 4));
					v[4 * h + t] =
					    dot_u8_s8(q[t], load32(x + 128 * h + 32 * t));
				}
			}
			/* v[blk]'s low 128 bits sum group 2 blk, its high ones group 2 blk + 1. */
			__m256i s[2];
			for (int half = 0; half < 2; half++) {
				const __m256i *p = v + 4 * half;
				__m256i g = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]),
							      _mm256_hadd_epi32(p[2], p[3]));
				s[half] = _mm256_sub_epi32(
				    _mm256_permutevar8x32_epi32(g, interleave),
				    _mm256_slli_epi32(load32(a.sum16 + 16 * sb + 8 * half), 5));
			}
			__m128i sc_bytes = _mm_loadu_si128((const __m128i *)(w + 192));
			__m256 d = _mm256_set1_ps(f16_at(w + 208));
			__m256 ad = _mm256_loadu_ps(a.d + 8 * sb);
			for (int half = 0; half < 2; half++) {
				__m256 scf = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
				    half ? _mm_srli_si128(sc_bytes, 8) : sc_bytes));
				__m256 adg =
				    _mm256_permutevar8x32_ps(ad, half ? second_half : first_half);
				acc = _mm256_add_ps(
				    acc, _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(s[half]),
								     _mm256_mul_ps(d, scf)),
						       adg));
			}
		}
		break;
	}
	default:
		break;
	}
	_mm256_storeu_ps(lanes, acc);
	return reduce8(lanes);
}
#endif

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
	uint32_t k = w->k;
	size_t row_bytes = act_row_bytes(k);
	/* Up to 16 Ki elements (under 200 KiB for 8 rows) on the stack, more from the heap. */
	enum { STACK_K = 16384 };
	_Alignas(32) char stack_mem[k <= STACK_K ? RS_QUANT_SMALL_BATCH * act_row_bytes(k) : 1];
	char *heap_mem = NULL;
	if (k > STACK_K && !(heap_mem = malloc((size_t)m * row_bytes))) {
		gemm_no_memory(y, ldy, x, ldx, m, w, c0, c1, accumulate);
		return;
	}
	char *mem = heap_mem ? heap_mem : stack_mem;
	struct act_row act[RS_QUANT_SMALL_BATCH];
	for (uint32_t i = 0; i < m; i++) {
		act[i] = act_row_at(mem + i * row_bytes, k);
		quantize_activations(act[i], x + i * ldx, k);
	}
#ifdef RS_HAVE_X86_KERNELS
	bool avx2 = isa >= RS_ISA_AVX2 && rs_cpu_has_f16c();
#endif
	for (uint32_t c = c0; c < c1; c++) {
		enum rs_dtype dtype = RS_DTYPE_Q8_0;
		const uint8_t *row = row_of(w, c, &dtype);
		for (uint32_t i = 0; i < m; i++) {
			float v;
#ifdef RS_HAVE_X86_KERNELS
			if (avx2)
				v = row_dot_avx2(row, dtype, act[i], k);
			else
#endif
				v = row_dot_scalar(row, dtype, act[i], k);
			y[i * ldy + c] = accumulate ? y[i * ldy + c] + v : v;
		}
	}
	free(heap_mem);
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
