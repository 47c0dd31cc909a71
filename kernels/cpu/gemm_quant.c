/* Products with block-quantized weights (rs_gemm_quant in gemm.h), the weights read in
 * place (the mapped file) and dequantized in registers.
 *
 * Decode (m <= RS_QUANT_SMALL_BATCH): each row of x is quantized to 8 bits with an f32
 * scale per block of 32 (for Q8_0/Q4_0) and per block of 256 (for the K-quants), with
 * the blocks' sums for the formats' offsets and mins. A weight row's product with it is
 * then exact integer arithmetic per block (AVX2: vpmaddubsw of the unsigned weight
 * codes by the signed activations, then vpmaddwd by ones or by the sub-blocks' integer
 * scales; portable C elsewhere), scaled and added in f32 in eight lanes in one fixed
 * order that the C kernel mirrors (separate multiplies and adds, no FMA), so every ISA
 * gives the same bits.
 * The error against the exact product comes only from rounding the activations (half a
 * step per element: |err| <= sum_i |w_i| * d_i / 2 with d_i = amax(block)/127) and
 * from f32 summation; tests/model_quant_formats.c checks that bound.
 *
 * Rows copied at load (Q4_0, Q8_0 and the K-quants) are interleaved eight at a time, and
 * decode runs eight of them at once (gemm_quant_x8.c, the same bits).
 *
 * Prefill (larger m): a panel of 48 weight rows at a time is dequantized to f32 and
 * multiplied by CBLAS SGEMM. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_quant_x8.h"
#include "kernels/cpu/large_alloc.h"
#include "kernels/model/dtype.h"
#include "kernels/model/quant.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define RS_HAVE_X86_KERNELS 1
#include <immintrin.h>
#endif

/* A row of x quantized twice (llama.cpp's q8_0 and q8_K activations). For Q8_0/Q4_0
 * weights: element i ~= d[i / 32] * q[i]. For the
 * K-quants: element i ~= dk[i / 256] * qk[i] (one scale per super-block, so that the
 * sub-blocks' integer sums can be scaled by their integer scales and added as integers),
 * sumk16[g] = the sum of qk over group g of 16 (for the mins and the Q6_K offset; at most
 * 16 * 127 in magnitude: 16 bits, so the AVX2 kernels multiply them by vpmaddwd);
 * sum4x8[j] = 8 times the sum of q[4j..4j+3] (the interleaved Q4_0 kernel's offset). */
struct act_row {
	int8_t *q, *qk;
	float *d, *dk;
	int32_t *sum4x8;
	int16_t *sumk16;
};

/* Bytes of one act_row of k elements, in the layout act_row_at gives. */
static size_t act_row_bytes(uint32_t k)
{
	uint32_t nb = k / 32, nk = k / 256;
	return 2 * (size_t)k + (size_t)nb * sizeof(float) + (size_t)nk * sizeof(float) +
	       (size_t)(k / 4) * sizeof(int32_t) + (size_t)(k / 16) * sizeof(int16_t);
}

static struct act_row act_row_at(void *mem, uint32_t k)
{
	uint32_t nb = k / 32, nk = k / 256;
	char *p = mem;
	struct act_row a;
	a.d = (float *)p;
	p += nb * sizeof(float);
	a.dk = (float *)p;
	p += nk * sizeof(float);
	a.sum4x8 = (int32_t *)p;
	p += (k / 4) * sizeof(int32_t);
	a.sumk16 = (int16_t *)p;
	p += (k / 16) * sizeof(int16_t);
	a.q = (int8_t *)p;
	a.qk = (int8_t *)p + k;
	return a;
}

/* x[0..n) to 8 bits with scale amax / 127, rounded to nearest; returns the scale. */
static float quantize_block(int8_t *q, const float *x, uint32_t n)
{
	float amax = 0;
	for (uint32_t i = 0; i < n; i++)
		amax = fmaxf(amax, fabsf(x[i]));
	float d = amax / 127.0f, inv = d ? 1.0f / d : 0.0f;
	for (uint32_t i = 0; i < n; i++) {
		int v = (int)lrintf(x[i] * inv);
		q[i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
	}
	return d;
}

/* x[0..256) to 8 bits for the K-quants' products, exactly as llama.cpp's q8_K does it
 * (quantize_row_q8_K_ref): the scale from the element of largest magnitude with its sign,
 * iscale = -127 / max, q = round(iscale * x) (at most 127), d = 1 / iscale. The values
 * d * q differ from amax / 127's in the last bit of d, and an 8-bit rounding that flips
 * on that bit in one layer moves the next layer's inputs by a whole step: matching the
 * arithmetic bit for bit is what keeps greedy ids equal to llama.cpp's on the same file
 * (tests/interop_llamacpp_arch). */
static float quantize_block_k(int8_t *q, const float *x)
{
	float amax = 0, max = 0;
	for (uint32_t i = 0; i < 256; i++)
		if (fabsf(x[i]) > amax) {
			amax = fabsf(x[i]);
			max = x[i];
		}
	if (amax == 0) {
		memset(q, 0, 256);
		return 0;
	}
	float iscale = -127.0f / max;
	for (uint32_t i = 0; i < 256; i++) {
		int v = (int)lrintf(iscale * x[i]);
		q[i] = (int8_t)(v > 127 ? 127 : v);
	}
	return 1.0f / iscale;
}

/* Which quantizations of the activations a matrix's parts read. */
struct act_needs {
	bool q8_0; /* Q8_0 or Q4_0 parts: q and d */
	bool k;	   /* K-quant parts: qk, dk and sumk16 */
};

static void quantize_activations(struct act_row a, const float *x, uint32_t k,
				 struct act_needs needs)
{
	for (uint32_t b = 0; needs.q8_0 && b < k / 32; b++)
		a.d[b] = quantize_block(a.q + 32 * b, x + 32 * b, 32);
	for (uint32_t j = 0; needs.q8_0 && j < k / 4; j++)
		a.sum4x8[j] = 8 * (a.q[4 * j] + a.q[4 * j + 1] + a.q[4 * j + 2] + a.q[4 * j + 3]);
	/* A row whose k is not a multiple of 256 has no K-quant weights. */
	for (uint32_t b = 0; needs.k && b < k / 256; b++) {
		a.dk[b] = quantize_block_k(a.qk + 256 * b, x + 256 * b);
		for (int g = 0; g < 16; g++) {
			int32_t sum = 0;
			for (int i = 0; i < 16; i++)
				sum += a.qk[256 * b + 16 * g + i];
			a.sumk16[16 * b + g] = (int16_t)sum;
		}
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
		/* Lane l: elements 4l..4l+3 of every block, times the block's scale. */
		for (uint32_t b = 0; b < k / 32; b++, w += bb) {
			const int8_t *x = a.q + 32 * b;
			float scale = f16_at(w) * a.d[b];
			for (int l = 0; l < 8; l++) {
				int32_t p = 0;
				for (int e = 4 * l; e < 4 * l + 4; e++) {
					int v = dtype == RS_DTYPE_Q8_0 ? (int8_t)w[2 + e]
						: e < 16	       ? (w[2 + e] & 15) - 8
								       : (w[2 + e - 16] >> 4) - 8;
					p += v * x[e];
				}
				acc[l] += (float)p * scale;
			}
		}
		break;
	case RS_DTYPE_Q4_K:
	case RS_DTYPE_Q5_K: {
		/* Lane l takes elements 4l..4l+3 of every sub-block, times its scale: the
		 * vector kernel's vpmaddwd lanes. */
		bool five = dtype == RS_DTYPE_Q5_K;
		for (uint32_t sb = 0; sb < k / 256; sb++, w += bb) {
			const uint8_t *qh = w + 16, *qs = five ? w + 48 : w + 16;
			const int8_t *x = a.qk + 256 * sb;
			uint64_t sc8, m8;
			k_scales_mins(w + 4, &sc8, &m8);
			int32_t sumi[8] = {0}, summ = 0;
			for (int j = 0; j < 8; j++) {
				int sc = (int)(sc8 >> 8 * j) & 255, m = (int)(m8 >> 8 * j) & 255;
				for (int e = 0; e < 32; e++) {
					int v = (j & 1) ? qs[32 * (j / 2) + e] >> 4
							: qs[32 * (j / 2) + e] & 15;
					if (five)
						v |= ((qh[e] >> j) & 1) << 4;
					sumi[e / 4] += sc * v * x[32 * j + e];
				}
				summ +=
				    m * (a.sumk16[16 * sb + 2 * j] + a.sumk16[16 * sb + 2 * j + 1]);
			}
			float scale = f16_at(w) * a.dk[sb], min_scale = f16_at(w + 2) * a.dk[sb];
			for (int l = 0; l < 8; l++)
				acc[l] += (float)sumi[l] * scale;
			acc[0] -= (float)summ * min_scale;
		}
		break;
	}
	case RS_DTYPE_Q6_K:
		/* Lane l: elements 4l..4l+3 of every block of 32, times the scale of their
		 * group of 16 (lanes 0-3 the block's first group, 4-7 its second). */
		for (uint32_t sb = 0; sb < k / 256; sb++, w += bb) {
			const uint8_t *ql = w, *qh = w + 128;
			const int8_t *sc = (const int8_t *)(w + 192), *x = a.qk + 256 * sb;
			int32_t sumi[8] = {0}, offset = 0;
			for (int h = 0; h < 2; h++)
				for (int e = 0; e < 32; e++) {
					int hb = qh[32 * h + e];
					int v[4] = {
					    (ql[64 * h + e] & 15) | ((hb & 3) << 4),
					    (ql[64 * h + 32 + e] & 15) | (((hb >> 2) & 3) << 4),
					    (ql[64 * h + e] >> 4) | (((hb >> 4) & 3) << 4),
					    (ql[64 * h + 32 + e] >> 4) | (((hb >> 6) & 3) << 4),
					};
					for (int t = 0; t < 4; t++) {
						int i = 128 * h + 32 * t + e;
						sumi[e / 4] += sc[i / 16] * v[t] * x[i];
					}
				}
			for (int g = 0; g < 16; g++)
				offset += 32 * sc[g] * a.sumk16[16 * sb + g];
			float scale = f16_at(w + 208) * a.dk[sb];
			for (int l = 0; l < 8; l++)
				acc[l] += (float)sumi[l] * scale;
			acc[0] -= (float)offset * scale;
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

/* Decode streams every weight once, row after row, and the loads of each block stalled
 * on memory (a third of the time, one thread): ask for the bytes PREFETCH_BYTES ahead,
 * past the row's end into the next rows (a prefetch never faults). */
enum { PREFETCH_BYTES = 3072 };
#define PREFETCH_AHEAD(p, n)                                                                       \
	for (size_t off_ = 0; off_ < (n); off_ += 64)                                              \
	_mm_prefetch((const char *)(p) + PREFETCH_BYTES + off_, _MM_HINT_T0)

/* f16_at by the F16C instruction (exact, as f16_at: every f16 is an f32). */
AVX2 static inline float f16c_at(const uint8_t *p)
{
	uint16_t h;
	memcpy(&h, p, 2);
	return _cvtsh_ss(h);
}

AVX2 static inline __m256i load32(const void *p)
{
	return _mm256_loadu_si256((const __m256i *)p);
}

/* The sum of v's eight 32-bit lanes (integers: any order gives the same). */
AVX2 static inline int32_t hsum_epi32(__m256i v)
{
	__m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
	return _mm_cvtsi128_si32(s);
}

/* The largest of v's lanes. */
AVX2 static inline float hmax_ps(__m256 v)
{
	__m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	m = _mm_max_ps(m, _mm_movehl_ps(m, m));
	m = _mm_max_ss(m, _mm_movehdup_ps(m));
	return _mm_cvtss_f32(m);
}

/* 32 int32 (four vectors, in order) to 32 int8 at q, saturating (the values fit). */
AVX2 static inline void store_i8x32(int8_t *q, const __m256i v[4])
{
	/* the packs work within 128-bit halves: the permute puts the 4-byte runs back */
	__m256i bytes =
	    _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
	bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
	_mm256_storeu_si256((__m256i *)q, bytes);
}

/* quantize_block on 32 elements, the same bits (cvtps2dq rounds to nearest even, as
 * lrintf in the default rounding mode; the same multiplies), and sum4x8 (act_row). */
AVX2 static float quantize_block32_avx2(int8_t *q, int32_t *sum4x8, const float *x)
{
	const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
	__m256 v[4], amax = _mm256_setzero_ps();
	for (int i = 0; i < 4; i++) {
		v[i] = _mm256_loadu_ps(x + 8 * i);
		amax = _mm256_max_ps(amax, _mm256_and_ps(v[i], abs_mask));
	}
	float d = hmax_ps(amax) / 127.0f, inv = d ? 1.0f / d : 0.0f;
	__m256i n[4];
	for (int i = 0; i < 4; i++) {
		n[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], _mm256_set1_ps(inv)));
		n[i] = _mm256_max_epi32(_mm256_min_epi32(n[i], _mm256_set1_epi32(127)),
					_mm256_set1_epi32(-127));
	}
	store_i8x32(q, n);
	__m256i sums = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), load32(q)),
					 _mm256_set1_epi16(1));
	_mm256_storeu_si256((__m256i *)sum4x8, _mm256_slli_epi32(sums, 3));
	return d;
}

/* quantize_block_k and its 16 group sums, the same bits. */
AVX2 static float quantize_block_k_avx2(int8_t *q, int16_t *sums16, const float *x)
{
	const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
	__m256 amax_v = _mm256_setzero_ps();
	for (int i = 0; i < 32; i++)
		amax_v = _mm256_max_ps(amax_v, _mm256_and_ps(_mm256_loadu_ps(x + 8 * i), abs_mask));
	float amax = hmax_ps(amax_v);
	if (amax == 0) {
		memset(q, 0, 256);
		memset(sums16, 0, 16 * sizeof(*sums16));
		return 0;
	}
	/* the first element of largest magnitude, with its sign, as the C loop takes it */
	float max = 0;
	for (int i = 0; i < 32; i++) {
		__m256 a = _mm256_and_ps(_mm256_loadu_ps(x + 8 * i), abs_mask);
		int hits = _mm256_movemask_ps(_mm256_cmp_ps(a, _mm256_set1_ps(amax), _CMP_EQ_OQ));
		if (hits) {
			max = x[8 * i + __builtin_ctz((unsigned)hits)];
			break;
		}
	}
	float iscale = -127.0f / max;
	const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
	for (int b = 0; b < 8; b++) {
		__m256i n[4];
		for (int i = 0; i < 4; i++)
			n[i] = _mm256_min_epi32(
			    _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_set1_ps(iscale),
							     _mm256_loadu_ps(x + 32 * b + 8 * i))),
			    _mm256_set1_epi32(127));
		store_i8x32(q + 32 * b, n);
		/* sums of 16: pairs (vpmaddubsw by ones), fours, then two hadds in each half */
		__m256i s =
		    _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, load32(q + 32 * b)), ones16);
		s = _mm256_hadd_epi32(s, s);
		s = _mm256_hadd_epi32(s, s);
		sums16[2 * b] = (int16_t)_mm256_extract_epi32(s, 0);
		sums16[2 * b + 1] = (int16_t)_mm256_extract_epi32(s, 4);
	}
	return 1.0f / iscale;
}

AVX2 static void quantize_activations_avx2(struct act_row a, const float *x, uint32_t k,
					   struct act_needs needs)
{
	for (uint32_t b = 0; needs.q8_0 && b < k / 32; b++)
		a.d[b] = quantize_block32_avx2(a.q + 32 * b, a.sum4x8 + 8 * b, x + 32 * b);
	for (uint32_t b = 0; needs.k && b < k / 256; b++)
		a.dk[b] = quantize_block_k_avx2(a.qk + 256 * b, a.sumk16 + 16 * b, x + 256 * b);
}

/* 64 codes of a Q4_K or Q5_K super-block from its 32 packed bytes: the low nibbles (the
 * first 32-value sub-block) in lo, the high ones (the second) in hi; Q5_K adds each
 * sub-block's fifth bit from *qh, which then moves on to the next pair of sub-blocks. */
AVX2 static inline void k45_codes(const uint8_t *packed_bytes, bool five, __m256i *qh, __m256i *lo,
				  __m256i *hi)
{
	const __m256i low4 = _mm256_set1_epi8(15), one = _mm256_set1_epi8(1);
	__m256i packed = load32(packed_bytes);
	*lo = _mm256_and_si256(packed, low4);
	*hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low4);
	if (five) {
		*lo = _mm256_or_si256(*lo, _mm256_slli_epi16(_mm256_and_si256(*qh, one), 4));
		*hi = _mm256_or_si256(
		    *hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(*qh, 1), one), 4));
		*qh = _mm256_srli_epi16(*qh, 2);
	}
}

/* A Q4_K or Q5_K row's product, in eight lanes; always inlined with five a constant, so
 * that the Q4_K loop tests nothing for Q5_K's fifth bits. */
AVX2 static inline __attribute__((always_inline)) __m256
row_dot_k45_avx2(const uint8_t *w, struct act_row a, uint32_t k, bool five)
{
	size_t bb = rs_dtype_block_bytes(five ? RS_DTYPE_Q5_K : RS_DTYPE_Q4_K);
	__m256 acc = _mm256_setzero_ps();
	for (uint32_t sb = 0; sb < k / 256; sb++, w += bb) {
		PREFETCH_AHEAD(w, bb);
		const uint8_t *qs = five ? w + 48 : w + 16;
		const int8_t *x = a.qk + 256 * sb;
		uint64_t sc, m;
		k_scales_mins(w + 4, &sc, &m);
		/* the eight scales as int16 in both halves */
		__m256i sc16 = _mm256_broadcastsi128_si256(
		    _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc)));
		__m256i qh = load32(w + 16), sumi = _mm256_setzero_si256();
		/* the shuffle that spreads sub-block j's scale (int16 lane j), j = 2c, 2c + 1
		 * stepped from one sub-block to the next (kept in a register: unrolled with 8
		 * constant masks, the loop ran 12 % slower) */
		__m256i spread = _mm256_set1_epi16(0x0100);
		const __m256i next = _mm256_set1_epi8(2);
		for (int c = 0; c < 4; c++) {
			__m256i lo, hi;
			k45_codes(qs + 32 * c, five, &qh, &lo, &hi);
			__m256i sc_lo = _mm256_shuffle_epi8(sc16, spread);
			spread = _mm256_add_epi8(spread, next);
			__m256i sc_hi = _mm256_shuffle_epi8(sc16, spread);
			spread = _mm256_add_epi8(spread, next);
			sumi = _mm256_add_epi32(
			    sumi,
			    _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load32(x + 64 * c)), sc_lo));
			sumi = _mm256_add_epi32(
			    sumi, _mm256_madd_epi16(
				      _mm256_maddubs_epi16(hi, load32(x + 64 * c + 32)), sc_hi));
		}
		/* summ = sum_j m_j (sumk16[2j] + sumk16[2j + 1]): each min twice, times the
		 * 16 group sums, in vpmaddwd (exact, as the C loop) */
		__m128i m8 = _mm_cvtsi64_si128((long long)m);
		int32_t summ = hsum_epi32(_mm256_madd_epi16(
		    _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8)), load32(a.sumk16 + 16 * sb)));
		float scale = f16c_at(w) * a.dk[sb], min_scale = f16c_at(w + 2) * a.dk[sb];
		acc = _mm256_add_ps(acc,
				    _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(scale)));
		acc = _mm256_sub_ps(acc,
				    _mm256_setr_ps((float)summ * min_scale, 0, 0, 0, 0, 0, 0, 0));
	}
	return acc;
}

AVX2 static float row_dot_avx2(const uint8_t *w, enum rs_dtype dtype, struct act_row a, uint32_t k)
{
	size_t bb = rs_dtype_block_bytes(dtype);
	const __m256i low4 = _mm256_set1_epi8(15);
	__m256 acc = _mm256_setzero_ps();
	float lanes[8];
	switch (dtype) {
	case RS_DTYPE_Q8_0:
	case RS_DTYPE_Q4_0:
		for (uint32_t b = 0; b < k / 32; b++, w += bb) {
			if (b % 8 == 0)
				PREFETCH_AHEAD(w, 8 * bb);
			__m256i q;
			if (dtype == RS_DTYPE_Q8_0) {
				q = load32(w + 2);
			} else {
				__m128i packed = _mm_loadu_si128((const __m128i *)(w + 2));
				q = _mm256_sub_epi8(
				    _mm256_and_si256(
					_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), low4),
				    _mm256_set1_epi8(8));
			}
			/* signed x signed: |q| times x with q's sign */
			__m256i dot = dot_u8_s8(_mm256_sign_epi8(q, q),
						_mm256_sign_epi8(load32(a.q + 32 * b), q));
			float scale = f16c_at(w) * a.d[b];
			acc = _mm256_add_ps(
			    acc, _mm256_mul_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(scale)));
		}
		break;
	case RS_DTYPE_Q4_K:
		acc = row_dot_k45_avx2(w, a, k, false);
		break;
	case RS_DTYPE_Q5_K:
		acc = row_dot_k45_avx2(w, a, k, true);
		break;
	case RS_DTYPE_Q6_K: {
		const __m256i low2 = _mm256_set1_epi8(3);
		for (uint32_t sb = 0; sb < k / 256; sb++, w += bb) {
			PREFETCH_AHEAD(w, bb);
			const int8_t *x = a.qk + 256 * sb;
			/* the 16 scales as int16: sc16[h] holds those of half h, in both halves */
			__m128i sc8 = _mm_loadu_si128((const __m128i *)(w + 192));
			__m256i sc16[2] = {
			    _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(sc8)),
			    _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_srli_si128(sc8, 8))),
			};
			__m256i sumi = _mm256_setzero_si256();
			for (int h = 0; h < 2; h++) {
				/* spreads groups 2t (low half) and 2t + 1 (high half) of sc16[h],
				 * stepped by t (in a register, as in the Q4_K loop) */
				__m256i spread = _mm256_set_m128i(_mm_set1_epi16(0x0302),
								  _mm_set1_epi16(0x0100));
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
					__m256i codes =
					    _mm256_or_si256(q[t], _mm256_slli_epi16(high, 4));
					/* groups 8h + 2t (lanes 0-3) and 8h + 2t + 1 (4-7) */
					__m256i scale = _mm256_shuffle_epi8(sc16[h], spread);
					spread = _mm256_add_epi8(spread, _mm256_set1_epi8(4));
					sumi = _mm256_add_epi32(
					    sumi, _mm256_madd_epi16(
						      _mm256_maddubs_epi16(
							  codes, load32(x + 128 * h + 32 * t)),
						      scale));
				}
			}
			/* offset: 32 times the scales by their groups' sums (vpmaddwd: the
			 * sums fit 16 bits, see act_row) */
			int32_t offset =
			    32 * hsum_epi32(_mm256_madd_epi16(_mm256_cvtepi8_epi16(sc8),
							      load32(a.sumk16 + 16 * sb)));
			float scale = f16c_at(w + 208) * a.dk[sb];
			acc = _mm256_add_ps(
			    acc, _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(scale)));
			acc = _mm256_sub_ps(
			    acc, _mm256_setr_ps((float)offset * scale, 0, 0, 0, 0, 0, 0, 0));
		}
		break;
	}
	default:
		break;
	}
	_mm256_storeu_ps(lanes, acc);
	return reduce8(lanes);
}
/* --- dequantizing a row (the prefill path), AVX2 ------------------------------------
 * The values rs_dequantize gives, bit for bit (the same multiplies and subtractions,
 * no FMA), eight at a time: the prefill's SGEMM sees the same panel on every ISA. */

/* y[i] = scale[i / 16] * (float)(codes[i] - bias) - offset for the 32 bytes codes. */
AVX2 static inline void dequant32(float *y, __m256i codes, int bias, float scale_lo, float scale_hi,
				  float offset)
{
	__m128i lo = _mm256_castsi256_si128(codes), hi = _mm256_extracti128_si256(codes, 1);
	__m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
	for (int i = 0; i < 4; i++) {
		__m256i v =
		    _mm256_sub_epi32(_mm256_cvtepu8_epi32(parts[i]), _mm256_set1_epi32(bias));
		__m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(v),
					 _mm256_set1_ps(i < 2 ? scale_lo : scale_hi));
		if (offset != 0.0f)
			f = _mm256_sub_ps(f, _mm256_set1_ps(offset));
		_mm256_storeu_ps(y + 8 * i, f);
	}
}

AVX2 static void dequant_row_avx2(float *y, const uint8_t *w, enum rs_dtype dtype, uint32_t k)
{
	size_t bb = rs_dtype_block_bytes(dtype);
	const __m256i low4 = _mm256_set1_epi8(15);
	switch (dtype) {
	case RS_DTYPE_Q8_0:
		for (uint32_t b = 0; b < k / 32; b++, w += bb, y += 32) {
			float d = f16_at(w);
			/* q + 128 as unsigned bytes, then 128 off */
			dequant32(y, _mm256_xor_si256(load32(w + 2), _mm256_set1_epi8((char)0x80)),
				  128, d, d, 0.0f);
		}
		break;
	case RS_DTYPE_Q4_0:
		for (uint32_t b = 0; b < k / 32; b++, w += bb, y += 32) {
			float d = f16_at(w);
			__m128i packed = _mm_loadu_si128((const __m128i *)(w + 2));
			__m256i q = _mm256_and_si256(
			    _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), low4);
			dequant32(y, q, 8, d, d, 0.0f);
		}
		break;
	case RS_DTYPE_Q4_K:
	case RS_DTYPE_Q5_K: {
		bool five = dtype == RS_DTYPE_Q5_K;
		for (uint32_t sb = 0; sb < k / 256; sb++, w += bb, y += 256) {
			const uint8_t *qs = five ? w + 48 : w + 16;
			float d = f16_at(w), dmin = f16_at(w + 2);
			uint64_t sc, m;
			k_scales_mins(w + 4, &sc, &m);
			__m256i qh = load32(w + 16);
			for (int c = 0; c < 4; c++) {
				__m256i lo, hi;
				k45_codes(qs + 32 * c, five, &qh, &lo, &hi);
				for (int half = 0; half < 2; half++) {
					int j = 2 * c + half;
					float dj = d * (float)((sc >> 8 * j) & 255);
					float mj = dmin * (float)((m >> 8 * j) & 255);
					/* mj == 0 subtracts nothing either way (x - 0 == x). */
					dequant32(y + 32 * j, half ? hi : lo, 0, dj, dj, mj);
				}
			}
		}
		break;
	}
	case RS_DTYPE_Q6_K: {
		const __m256i low2 = _mm256_set1_epi8(3);
		for (uint32_t sb = 0; sb < k / 256; sb++, w += bb, y += 256) {
			const int8_t *scales = (const int8_t *)(w + 192);
			float d = f16_at(w + 208);
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
					__m256i codes = _mm256_or_si256(
					    q[t], _mm256_slli_epi16(_mm256_and_si256(hb, low2), 4));
					hb = _mm256_srli_epi16(hb, 2);
					int g = 2 * (4 * h + t);
					dequant32(y + 128 * h + 32 * t, codes, 32,
						  d * (float)scales[g], d * (float)scales[g + 1],
						  0.0f);
				}
			}
		}
		break;
	}
	default:
		rs_dequantize(y, w, dtype, k);
		break;
	}
}
#endif

/* The part of w that holds row *r; *r becomes the row's index in the part. */
static const struct rs_quant_part *part_of(const struct rs_packed_matrix *w, uint32_t *r)
{
	uint32_t i = 0;
	while (i + 1 < w->n_quant_parts && *r >= w->quant_parts[i].n_rows)
		*r -= w->quant_parts[i++].n_rows;
	return &w->quant_parts[i];
}

/* Row r of part p in the file's layout: in place, or unpacked into buf (row_bytes). */
static const uint8_t *row_in(const struct rs_quant_part *p, uint32_t r, uint32_t k, uint8_t *buf)
{
	if (r >= p->interleaved_rows)
		return p->rows + (size_t)r * p->row_bytes;
	rs_qx8_unpack_row(buf, p->rows + (size_t)(r - r % RS_QX8_ROWS) * p->row_bytes,
			  r % RS_QX8_ROWS, p->dtype, k);
	return buf;
}

/* The largest row of w's parts, in bytes. */
static size_t max_row_bytes(const struct rs_packed_matrix *w)
{
	size_t most = 0;
	for (uint32_t i = 0; i < w->n_quant_parts; i++)
		if (w->quant_parts[i].row_bytes > most)
			most = w->quant_parts[i].row_bytes;
	return most;
}

static bool any_interleaved(const struct rs_packed_matrix *w)
{
	for (uint32_t i = 0; i < w->n_quant_parts; i++)
		if (w->quant_parts[i].interleaved_rows)
			return true;
	return false;
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

int rs_packed_quant_copy(struct rs_packed_matrix *w)
{
	size_t bytes = 0;
	for (uint32_t i = 0; i < w->n_quant_parts; i++)
		bytes += (size_t)w->quant_parts[i].n_rows * w->quant_parts[i].row_bytes;
	uint8_t *copy = rs_alloc_large(bytes);
	if (!copy)
		return -ENOMEM;
	bool interleave = rs_cpu_isa() >= RS_ISA_AVX2 && rs_cpu_has_f16c();
	for (size_t i = 0, at = 0; i < w->n_quant_parts; i++) {
		struct rs_quant_part *p = &w->quant_parts[i];
		uint32_t groups = interleave && rs_qx8_format(p->dtype) && !p->interleaved_rows
				      ? p->n_rows / RS_QX8_ROWS
				      : 0;
		size_t group_bytes = RS_QX8_ROWS * p->row_bytes, done = groups * group_bytes;
		for (uint32_t g = 0; g < groups; g++)
			rs_qx8_pack(copy + at + g * group_bytes, p->rows + g * group_bytes,
				    p->dtype, w->k);
		memcpy(copy + at + done, p->rows + done, (size_t)p->n_rows * p->row_bytes - done);
		p->rows = copy + at;
		if (groups)
			p->interleaved_rows = groups * RS_QX8_ROWS;
		at += (size_t)p->n_rows * p->row_bytes;
	}
	free(w->quant_copy);
	w->quant_copy = copy;
	return 0;
}

/* Block b of row r of part p in the file's layout: in place, or unpacked into buf (the
 * format's block bytes). */
static const uint8_t *block_in(const struct rs_quant_part *p, uint32_t r, uint32_t b, uint8_t *buf)
{
	size_t bb = rs_dtype_block_bytes(p->dtype);
	if (r >= p->interleaved_rows)
		return p->rows + (size_t)r * p->row_bytes + b * bb;
	const uint8_t *group = p->rows + (size_t)(r - r % RS_QX8_ROWS) * p->row_bytes;
	rs_qx8_unpack_row(buf, group + (size_t)b * RS_QX8_ROWS * bb, r % RS_QX8_ROWS, p->dtype,
			  rs_dtype_block_elems(p->dtype));
	return buf;
}

void rs_packed_quant_get_row(const struct rs_packed_matrix *w, uint32_t r, float *out)
{
	const struct rs_quant_part *p = part_of(w, &r);
	uint32_t be = rs_dtype_block_elems(p->dtype);
	uint8_t buf[RS_QX8_BLOCK_BYTES_MAX];
	for (uint32_t b = 0; b < w->k / be; b++)
		rs_convert_to_f32(out + (size_t)b * be, block_in(p, r, b, buf), p->dtype, be);
}

/* Out of memory for the buffers: dequantize a block at a time into the stack, in f32. */
static void gemm_no_memory(float *y, size_t ldy, const float *x, size_t ldx, uint32_t m,
			   const struct rs_packed_matrix *w, uint32_t c0, uint32_t c1,
			   bool accumulate)
{
	float block[RS_QK_K];
	uint8_t block_bytes[RS_QX8_BLOCK_BYTES_MAX];
	for (uint32_t c = c0; c < c1; c++) {
		uint32_t r = c;
		const struct rs_quant_part *p = part_of(w, &r);
		enum rs_dtype dtype = p->dtype;
		uint32_t be = rs_dtype_block_elems(dtype);
		for (uint32_t i = 0; i < m; i++) {
			float v = 0;
			for (uint32_t b = 0; b < w->k / be; b++) {
				rs_dequantize(block, block_in(p, r, b, block_bytes), dtype, be);
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
	/* Up to 16 Ki elements (53 KiB a row, m rows) on the stack, more from the heap. */
	enum { STACK_K = 16384 };
	_Alignas(32) char stack_mem[k <= STACK_K ? m * act_row_bytes(k) : 1];
	char *heap_mem = NULL;
	if (k > STACK_K && !(heap_mem = malloc((size_t)m * row_bytes))) {
		gemm_no_memory(y, ldy, x, ldx, m, w, c0, c1, accumulate);
		return;
	}
	char *mem = heap_mem ? heap_mem : stack_mem;
	struct act_needs needs = {false, false};
	for (uint32_t i = 0; i < w->n_quant_parts; i++) {
		bool kq = rs_dtype_block_elems(w->quant_parts[i].dtype) == RS_QK_K;
		needs.k |= kq;
		needs.q8_0 |= !kq;
	}
	bool avx2 = false;
#ifdef RS_HAVE_X86_KERNELS
	avx2 = isa >= RS_ISA_AVX2 && rs_cpu_has_f16c();
#endif
	struct act_row act[RS_QUANT_SMALL_BATCH];
	for (uint32_t i = 0; i < m; i++) {
		act[i] = act_row_at(mem + i * row_bytes, k);
#ifdef RS_HAVE_X86_KERNELS
		if (avx2)
			quantize_activations_avx2(act[i], x + i * ldx, k, needs);
		else
#endif
			quantize_activations(act[i], x + i * ldx, k, needs);
	}
	/* Without the group kernel, interleaved rows are unpacked one at a time. */
	uint8_t *unpacked = NULL;
	if (!avx2 && any_interleaved(w) && !(unpacked = malloc(max_row_bytes(w)))) {
		free(heap_mem);
		gemm_no_memory(y, ldy, x, ldx, m, w, c0, c1, accumulate);
		return;
	}
	for (uint32_t c = c0; c < c1;) {
		uint32_t r = c;
		const struct rs_quant_part *p = part_of(w, &r);
		if (avx2 && r < p->interleaved_rows) {
			/* the whole group, kept where it falls in [c0, c1) (a group cut by
			 * the callers' split is computed by both, each keeping its own) */
			uint32_t first = c - r % RS_QX8_ROWS;
			const uint8_t *group =
			    p->rows + (size_t)(r - r % RS_QX8_ROWS) * p->row_bytes;
			for (uint32_t i = 0; i < m; i++) {
				float out[RS_QX8_ROWS];
				struct rs_act_k a = {act[i].qk, act[i].dk, act[i].sumk16,
						     act[i].q,	act[i].d,  act[i].sum4x8};
				rs_qx8_dot_avx2(out, group, p->dtype, a, k);
				for (uint32_t j = c - first; j < RS_QX8_ROWS && first + j < c1;
				     j++) {
					float *out_y = &y[i * ldy + first + j];
					*out_y = accumulate ? *out_y + out[j] : out[j];
				}
			}
			c = first + RS_QX8_ROWS;
			continue;
		}
		const uint8_t *row = row_in(p, r, k, unpacked);
		for (uint32_t i = 0; i < m; i++) {
			float v;
#ifdef RS_HAVE_X86_KERNELS
			if (avx2)
				v = row_dot_avx2(row, p->dtype, act[i], k);
			else
#endif
				v = row_dot_scalar(row, p->dtype, act[i], k);
			y[i * ldy + c] = accumulate ? y[i * ldy + c] + v : v;
		}
		c++;
	}
	free(unpacked);
	free(heap_mem);
}

static void gemm_large(float *y, size_t ldy, const float *x, size_t ldx, uint32_t m,
		       const struct rs_packed_matrix *w, uint32_t c0, uint32_t c1, bool accumulate,
		       enum rs_cpu_isa isa)
{
	uint32_t k = w->k;
	float *panel = malloc((size_t)RS_PANEL_COLS * k * sizeof(float));
	/* interleaved rows come back a group at a time (rows are interleaved only where
	 * the group kernels run: AVX2 and F16C) */
	uint8_t *unpacked = any_interleaved(w) ? malloc(RS_QX8_ROWS * max_row_bytes(w)) : NULL;
	if (!panel || (any_interleaved(w) && !unpacked)) {
		free(panel);
		free(unpacked);
		gemm_no_memory(y, ldy, x, ldx, m, w, c0, c1, accumulate);
		return;
	}
	for (uint32_t c = c0; c < c1; c += RS_PANEL_COLS) {
		uint32_t cols = c1 - c < RS_PANEL_COLS ? c1 - c : RS_PANEL_COLS;
		for (uint32_t r = 0; r < cols;) {
			uint32_t in_part = c + r;
			const struct rs_quant_part *p = part_of(w, &in_part);
			enum rs_dtype dtype = p->dtype;
			uint32_t n_rows = 1;
			const uint8_t *row;
#ifdef RS_HAVE_X86_KERNELS
			bool avx2 = isa >= RS_ISA_AVX2 && rs_cpu_has_f16c();
			if (avx2 && in_part < p->interleaved_rows && in_part % RS_QX8_ROWS == 0 &&
			    r + RS_QX8_ROWS <= cols) {
				/* a whole group in this panel (one the panel cuts: row by row) */
				rs_qx8_unpack_group_avx2(
				    unpacked, p->rows + (size_t)in_part * p->row_bytes, dtype, k);
				row = unpacked;
				n_rows = RS_QX8_ROWS;
			} else
#endif
				row = row_in(p, in_part, k, unpacked);
			for (uint32_t i = 0; i < n_rows; i++, r++, row += p->row_bytes) {
#ifdef RS_HAVE_X86_KERNELS
				if (avx2)
					dequant_row_avx2(panel + (size_t)r * k, row, dtype, k);
				else
#endif
					rs_dequantize(panel + (size_t)r * k, row, dtype, k);
			}
		}
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)cols, (int)k,
			    1.0f, x, (int)ldx, panel, (int)k, accumulate ? 1.0f : 0.0f, y + c,
			    (int)ldy);
	}
	free(unpacked);
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
		gemm_large(y, ldy, x, ldx, m, w, c0, c1, accumulate, isa);
	else
		gemm_small(y, ldy, x, ldx, m, w, c0, c1, accumulate, isa);
}
