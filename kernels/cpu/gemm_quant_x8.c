/* Quantized rows interleaved eight at a time and their decode kernels (see gemm_quant_x8.h).
 *
 * A group's super-block s is one block of RS_QX8_ROWS * (the format's block bytes) at
 * s times that; within it (r: the row in the group, 0..7):
 *
 * Q4_K (8 x 144 bytes): d of row r at 2r, dmin at 16 + 2r, the three 4-byte words of
 *   the packed 6-bit scales and mins at 32 + 4r, 64 + 4r, 96 + 4r; then the 128 bytes of
 *   codes as 32 steps (l, c) = (0..7, 0..3) of 32 bytes, each 4 bytes of every row: bytes
 *   32c + 4l .. +3 of row r's codes (elements 4l.. of sub-blocks 2c, low nibbles, and
 *   2c + 1, high nibbles) at 128 + 32 (4l + c) + 4r.
 * Q5_K (8 x 176 bytes): as Q4_K, but each l of the codes is 160 bytes, starting with
 *   bytes 4l .. +3 of every row's fifth bits (qh) at 128 + 160 l + 4r, then the 32-byte
 *   steps (l, c) at 128 + 160 l + 32 + 32c + 4r.
 * Q6_K (8 x 210 bytes): d of row r at 2r; the 16 int8 scales as four 4-byte words, word
 *   u of row r at 16 + 32u + 4r; then 16 steps (l, h) = (0..7, 0..1) of 96 bytes: for
 *   every row 4 bytes at ql + 64h + 4l (A), at ql + 64h + 32 + 4l (B) and at
 *   qh + 32h + 4l (H), at 144 + 96 (2l + h) + 32 {0, 1, 2} + 4r: elements 4l.. of the
 *   four blocks of 32 of half h (A's low and high nibbles blocks 0 and 2, B's 1 and 3,
 *   H's bit pairs the fifth and sixth bits of blocks 0..3).
 * Q4_0 and Q8_0 (a block of 32: 8 x 18 and 8 x 34 bytes): d of row r at 2r, then the code
 *   bytes in 4-byte units, unit u of row r at 16 + 32u + 4r (Q4_0: 4 units, unit u the
 *   low nibbles elements 4u.., the high ones 16 + 4u..; Q8_0: 8 units, unit u elements
 *   4u..). */
#include <string.h>

#include "kernels/cpu/gemm_quant_x8.h"
#include "kernels/model/quant.h"

bool rs_qx8_format(enum rs_dtype dtype)
{
	return dtype == RS_DTYPE_Q4_K || dtype == RS_DTYPE_Q5_K || dtype == RS_DTYPE_Q6_K ||
	       dtype == RS_DTYPE_Q4_0 || dtype == RS_DTYPE_Q8_0;
}

/* n bytes between the file's layout (at row) and the group's (at block): into the group
 * when packing, back when not (n constant: moves, not calls to memcpy). */
static inline void move(uint8_t *row, uint8_t *block, size_t n, bool pack)
{
	if (pack)
		memcpy(block, row, n);
	else
		memcpy(row, block, n);
}

/* One super-block of row r of a group, in the layouts above, the one way or the other. */
static void move_k45(uint8_t *row, uint8_t *block, uint32_t r, bool five, bool pack)
{
	move(row, block + 2 * r, 2, pack);
	move(row + 2, block + 16 + 2 * r, 2, pack);
	for (int word = 0; word < 3; word++)
		move(row + 4 + 4 * word, block + 32 + 32 * word + 4 * r, 4, pack);
	uint32_t qs = five ? 48 : 16, step = five ? 160 : 128, codes = five ? 32 : 0;
	for (int l = 0; l < 8; l++) {
		if (five)
			move(row + 16 + 4 * l, block + 128 + step * l + 4 * r, 4, pack);
		for (int c = 0; c < 4; c++)
			move(row + qs + 32 * c + 4 * l,
			     block + 128 + step * l + codes + 32 * c + 4 * r, 4, pack);
	}
}

static void move_q6k(uint8_t *row, uint8_t *block, uint32_t r, bool pack)
{
	move(row + 208, block + 2 * r, 2, pack);
	for (int u = 0; u < 4; u++)
		move(row + 192 + 4 * u, block + 16 + 32 * u + 4 * r, 4, pack);
	for (int l = 0; l < 8; l++)
		for (int h = 0; h < 2; h++) {
			uint8_t *step = block + 144 + 96 * (2 * l + h) + 4 * r;
			move(row + 64 * h + 4 * l, step, 4, pack);
			move(row + 64 * h + 32 + 4 * l, step + 32, 4, pack);
			move(row + 128 + 32 * h + 4 * l, step + 64, 4, pack);
		}
}

/* Q4_0 and Q8_0: the scale, then the codes in 4-byte units (bb: the block's bytes). */
static void move_q0(uint8_t *row, uint8_t *block, uint32_t r, size_t bb, bool pack)
{
	move(row, block + 2 * r, 2, pack);
	for (size_t u = 0; u < (bb - 2) / 4; u++)
		move(row + 2 + 4 * u, block + 16 + 32 * u + 4 * r, 4, pack);
}

/* Row r's blocks (k elements) between row and the group; the const qualifiers of the
 * public calls hold: only the destination is written. */
static void move_row(uint8_t *row, uint8_t *group, uint32_t r, enum rs_dtype dtype, uint32_t k,
		     bool pack)
{
	size_t bb = rs_dtype_block_bytes(dtype);
	for (uint32_t s = 0; s < k / rs_dtype_block_elems(dtype); s++) {
		uint8_t *block = group + (size_t)s * RS_QX8_ROWS * bb;
		if (dtype == RS_DTYPE_Q6_K)
			move_q6k(row + s * bb, block, r, pack);
		else if (dtype == RS_DTYPE_Q4_K || dtype == RS_DTYPE_Q5_K)
			move_k45(row + s * bb, block, r, dtype == RS_DTYPE_Q5_K, pack);
		else
			move_q0(row + s * bb, block, r, bb, pack);
	}
}

void rs_qx8_pack(uint8_t *group, const uint8_t *rows, enum rs_dtype dtype, uint32_t k)
{
	size_t row_bytes = rs_dtype_row_bytes(dtype, k);
	for (uint32_t r = 0; r < RS_QX8_ROWS; r++)
		move_row((uint8_t *)(uintptr_t)(rows + r * row_bytes), group, r, dtype, k, true);
}

void rs_qx8_unpack_row(uint8_t *row, const uint8_t *group, uint32_t r, enum rs_dtype dtype,
		       uint32_t k)
{
	move_row(row, (uint8_t *)(uintptr_t)group, r, dtype, k, false);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,f16c")))
/* The loops below over lanes, steps and sub-blocks are unrolled (-O2 would keep them as
 * loops: variable shifts and the code vectors spilled, 25 % slower on Q6_K). */

/* The group's blocks stream from memory: ask for them this far ahead (gemm_quant.c's
 * row kernel found 3 KiB best on one row). */
enum { PREFETCH_BYTES = 3072 };

AVX2 static inline __m256i load32(const void *p)
{
	return _mm256_loadu_si256((const __m256i *)p);
}

/* The 4 bytes at p in every 32-bit lane. */
AVX2 static inline __m256i broadcast4(const void *p)
{
	int32_t v;
	memcpy(&v, p, 4);
	return _mm256_set1_epi32(v);
}

/* The eight rows' lane-l sums, reduced as reduce8 in gemm_quant.c adds them. */
AVX2 static inline void reduce_lanes(float out[RS_QX8_ROWS], const __m256 acc[8])
{
	__m256 a = _mm256_add_ps(_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[2], acc[6]));
	__m256 b = _mm256_add_ps(_mm256_add_ps(acc[1], acc[5]), _mm256_add_ps(acc[3], acc[7]));
	_mm256_storeu_ps(out, _mm256_add_ps(a, b));
}

/* pshufb masks that give every 32-bit lane q (of a 128-bit half) bytes 4q + i0 and 4q + i1
 * of the source as the low bytes of its two int16 (the high bytes zeroed). */
AVX2 static inline __m256i lane_bytes_mask(int i0, int i1)
{
	__m128i m =
	    _mm_setr_epi8((char)i0, (char)0x80, (char)i1, (char)0x80, (char)(4 + i0), (char)0x80,
			  (char)(4 + i1), (char)0x80, (char)(8 + i0), (char)0x80, (char)(8 + i1),
			  (char)0x80, (char)(12 + i0), (char)0x80, (char)(12 + i1), (char)0x80);
	return _mm256_broadcastsi128_si256(m);
}

/* Bit j of every byte of v moved to bit 4 (other bits left: the caller masks them). */
AVX2 static inline __m256i bit_at_4(__m256i v, int j)
{
	return j <= 4 ? _mm256_slli_epi16(v, 4 - j) : _mm256_srli_epi16(v, j - 4);
}

AVX2 static inline __attribute__((always_inline)) void
dot_k45_x8(float out[RS_QX8_ROWS], const uint8_t *group, struct rs_act_k a, uint32_t k, bool five)
{
	const uint32_t BLOCK = RS_QX8_ROWS * (five ? 176 : 144);
	const __m256i low4 = _mm256_set1_epi8(15), low6 = _mm256_set1_epi8(63),
		      bits45 = _mm256_set1_epi8(0x30), bit4 = _mm256_set1_epi8(0x10);
	/* scale of sub-block 4h + t: byte t of a lane, as int16 twice; mins in pairs */
	const __m256i next_byte = _mm256_set1_epi16(1), scale_mask0 = lane_bytes_mask(0, 0),
		      mins_mask[2] = {lane_bytes_mask(0, 1), lane_bytes_mask(2, 3)};
	__m256 acc[8];
#pragma GCC unroll 8
	for (int l = 0; l < 8; l++)
		acc[l] = _mm256_setzero_ps();
	for (uint32_t s = 0; s < k / RS_QK_K; s++, group += BLOCK) {
#pragma GCC unroll 8
		for (uint32_t off = 0; off < BLOCK; off += 64)
			_mm_prefetch((const char *)group + PREFETCH_BYTES + off, _MM_HINT_T0);
		const int8_t *x = a.qk + RS_QK_K * s;
		/* k_scales_mins of gemm_quant.c, for eight rows at once: sc[0] holds the
		 * scales of sub-blocks 0..3 (a byte each), sc[1] those of 4..7, m the mins */
		__m256i wa = load32(group + 32), wb = load32(group + 64), wc = load32(group + 96);
		__m256i sc[2] = {
		    _mm256_and_si256(wa, low6),
		    _mm256_or_si256(_mm256_and_si256(wc, low4),
				    _mm256_and_si256(_mm256_srli_epi32(wa, 2), bits45)),
		};
		__m256i m[2] = {
		    _mm256_and_si256(wb, low6),
		    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(wc, 4), low4),
				    _mm256_and_si256(_mm256_srli_epi32(wb, 2), bits45)),
		};
		__m256i scale16[8];
#pragma GCC unroll 8
		for (int h = 0; h < 2; h++) {
			__m256i mask = scale_mask0;
#pragma GCC unroll 8
			for (int t = 0; t < 4; t++, mask = _mm256_add_epi16(mask, next_byte))
				scale16[4 * h + t] = _mm256_shuffle_epi8(sc[h], mask);
		}
		/* summ = sum_j m_j (sumk16[2j] + sumk16[2j + 1]), in vpmaddwd by pairs of j */
		int16_t pair_sums[8];
#pragma GCC unroll 8
		for (int j = 0; j < 8; j++)
			pair_sums[j] =
			    (int16_t)(a.sumk16[16 * s + 2 * j] + a.sumk16[16 * s + 2 * j + 1]);
		__m256i summ = _mm256_setzero_si256();
#pragma GCC unroll 8
		for (int p = 0; p < 4; p++)
			summ = _mm256_add_epi32(
			    summ, _mm256_madd_epi16(_mm256_shuffle_epi8(m[p / 2], mins_mask[p % 2]),
						    broadcast4(pair_sums + 2 * p)));
		__m256 dk = _mm256_set1_ps(a.dk[s]);
		__m256 scale = _mm256_mul_ps(
			   _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)group)), dk),
		       min_scale = _mm256_mul_ps(
			   _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(group + 16))), dk);
		const uint8_t *codes = group + 128;
#pragma GCC unroll 8
		for (int l = 0; l < 8; l++) {
			__m256i sumi = _mm256_setzero_si256(), qh = _mm256_setzero_si256();
			if (five) {
				qh = load32(codes);
				codes += 32;
			}
#pragma GCC unroll 8
			for (int c = 0; c < 4; c++, codes += 32) {
				__m256i packed = load32(codes);
				__m256i lo = _mm256_and_si256(packed, low4),
					hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low4);
				if (five) { /* bit j of a byte of qh: sub-block j's fifth bits */
					lo = _mm256_or_si256(
					    lo, _mm256_and_si256(bit_at_4(qh, 2 * c), bit4));
					hi = _mm256_or_si256(
					    hi, _mm256_and_si256(bit_at_4(qh, 2 * c + 1), bit4));
				}
				__m256i x_lo = broadcast4(x + 64 * c + 4 * l),
					x_hi = broadcast4(x + 64 * c + 32 + 4 * l);
				sumi = _mm256_add_epi32(
				    sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(lo, x_lo),
							    scale16[2 * c]));
				sumi = _mm256_add_epi32(
				    sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(hi, x_hi),
							    scale16[2 * c + 1]));
			}
			acc[l] =
			    _mm256_add_ps(acc[l], _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), scale));
		}
		acc[0] = _mm256_sub_ps(acc[0], _mm256_mul_ps(_mm256_cvtepi32_ps(summ), min_scale));
	}
	reduce_lanes(out, acc);
}

AVX2 static void dot_q6k_x8(float out[RS_QX8_ROWS], const uint8_t *group, struct rs_act_k a,
			    uint32_t k)
{
	enum { BLOCK = RS_QX8_ROWS * 210 };
	const __m256i low4 = _mm256_set1_epi8(15), low2 = _mm256_set1_epi8(3);
	/* The int8 scales sign-extended: each byte to the high byte of an int16 (the masks'
	 * indices shifted there, so the next byte is 0x100 on), then an arithmetic shift
	 * right by 8. */
	const __m256i next_byte = _mm256_set1_epi16(0x100),
		      scale_mask0 = _mm256_slli_epi16(lane_bytes_mask(0, 0), 8),
		      pair_mask[2] = {_mm256_slli_epi16(lane_bytes_mask(0, 1), 8),
				      _mm256_slli_epi16(lane_bytes_mask(2, 3), 8)};
	__m256 acc[8];
#pragma GCC unroll 8
	for (int l = 0; l < 8; l++)
		acc[l] = _mm256_setzero_ps();
	for (uint32_t s = 0; s < k / RS_QK_K; s++, group += BLOCK) {
#pragma GCC unroll 8
		for (int off = 0; off < BLOCK; off += 64)
			_mm_prefetch((const char *)group + PREFETCH_BYTES + off, _MM_HINT_T0);
		const int8_t *x = a.qk + RS_QK_K * s;
		const int16_t *group_sums = a.sumk16 + 16 * s;
		/* scale16[g]: scale of group g of 16 as int16 twice; offset: 32 times the
		 * scales by their groups' sums, in vpmaddwd by pairs of groups */
		__m256i scale16[16], offset = _mm256_setzero_si256();
#pragma GCC unroll 8
		for (int u = 0; u < 4; u++) {
			__m256i word = load32(group + 16 + 32 * u), mask = scale_mask0;
#pragma GCC unroll 8
			for (int t = 0; t < 4; t++, mask = _mm256_add_epi16(mask, next_byte))
				scale16[4 * u + t] =
				    _mm256_srai_epi16(_mm256_shuffle_epi8(word, mask), 8);
#pragma GCC unroll 8
			for (int p = 0; p < 2; p++)
				offset = _mm256_add_epi32(
				    offset, _mm256_madd_epi16(
						_mm256_srai_epi16(
						    _mm256_shuffle_epi8(word, pair_mask[p]), 8),
						broadcast4(group_sums + 4 * u + 2 * p)));
		}
		offset = _mm256_slli_epi32(offset, 5);
		__m256 scale =
		    _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)group)),
				  _mm256_set1_ps(a.dk[s]));
		const uint8_t *codes = group + 144;
#pragma GCC unroll 8
		for (int l = 0; l < 8; l++) {
			__m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 8
			for (int h = 0; h < 2; h++, codes += 96) {
				__m256i qa = load32(codes), qb = load32(codes + 32),
					qh = load32(codes + 64);
				__m256i q[4] = {
				    _mm256_and_si256(qa, low4),
				    _mm256_and_si256(qb, low4),
				    _mm256_and_si256(_mm256_srli_epi16(qa, 4), low4),
				    _mm256_and_si256(_mm256_srli_epi16(qb, 4), low4),
				};
#pragma GCC unroll 8
				for (int t = 0; t < 4; t++) {
					__m256i high = _mm256_and_si256(
					    t ? _mm256_srli_epi16(qh, 2 * t) : qh, low2);
					__m256i v =
					    _mm256_or_si256(q[t], _mm256_slli_epi16(high, 4));
					/* elements 128h + 32t + 4l..: group 8h + 2t, or the next
					 * one for the block's second half (l >= 4) */
					sumi = _mm256_add_epi32(
					    sumi,
					    _mm256_madd_epi16(
						_mm256_maddubs_epi16(
						    v, broadcast4(x + 128 * h + 32 * t + 4 * l)),
						scale16[8 * h + 2 * t + (l >= 4)]));
				}
			}
			acc[l] =
			    _mm256_add_ps(acc[l], _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), scale));
		}
		acc[0] = _mm256_sub_ps(acc[0], _mm256_mul_ps(_mm256_cvtepi32_ps(offset), scale));
	}
	reduce_lanes(out, acc);
}

/* Q4_0: lane l of row r's eight sums takes elements 4l..4l+3 of each block, as
 * row_dot_scalar: (sum of code * x) - 8 (sum of x), exact in 32 bits, then times the
 * block's scale and added in f32 (the same multiply and add). */
AVX2 static void dot_q40_x8(float out[RS_QX8_ROWS], const uint8_t *group, struct rs_act_k a,
			    uint32_t k)
{
	enum { BLOCK = RS_QX8_ROWS * 18 };
	const __m256i low4 = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
	__m256 acc[8];
#pragma GCC unroll 8
	for (int l = 0; l < 8; l++)
		acc[l] = _mm256_setzero_ps();
	for (uint32_t b = 0; b < k / 32; b++, group += BLOCK) {
#pragma GCC unroll 8
		for (int off = 0; off < BLOCK; off += 64)
			_mm_prefetch((const char *)group + PREFETCH_BYTES + off, _MM_HINT_T0);
		const int8_t *x = a.q + 32 * b;
		const int32_t *sum4x8 = a.sum4x8 + 8 * b;
		__m256 scale =
		    _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)group)),
				  _mm256_set1_ps(a.d[b]));
#pragma GCC unroll 4
		for (int u = 0; u < 4; u++) {
			__m256i packed = load32(group + 16 + 32 * u);
			__m256i lo = _mm256_and_si256(packed, low4),
				hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low4);
			/* lo: elements 4u.. (lane u), hi: 16 + 4u.. (lane u + 4) */
			__m256i sum_lo = _mm256_sub_epi32(
			    _mm256_madd_epi16(_mm256_maddubs_epi16(lo, broadcast4(x + 4 * u)),
					      ones),
			    _mm256_set1_epi32(sum4x8[u]));
			__m256i sum_hi = _mm256_sub_epi32(
			    _mm256_madd_epi16(_mm256_maddubs_epi16(hi, broadcast4(x + 16 + 4 * u)),
					      ones),
			    _mm256_set1_epi32(sum4x8[u + 4]));
			acc[u] =
			    _mm256_add_ps(acc[u], _mm256_mul_ps(_mm256_cvtepi32_ps(sum_lo), scale));
			acc[u + 4] = _mm256_add_ps(
			    acc[u + 4], _mm256_mul_ps(_mm256_cvtepi32_ps(sum_hi), scale));
		}
	}
	reduce_lanes(out, acc);
}

/* Q8_0: lane l takes elements 4l..4l+3 of each block (signed by signed: |q| times x with
 * q's sign, as the row kernel). */
AVX2 static void dot_q80_x8(float out[RS_QX8_ROWS], const uint8_t *group, struct rs_act_k a,
			    uint32_t k)
{
	enum { BLOCK = RS_QX8_ROWS * 34 };
	const __m256i ones = _mm256_set1_epi16(1);
	__m256 acc[8];
#pragma GCC unroll 8
	for (int l = 0; l < 8; l++)
		acc[l] = _mm256_setzero_ps();
	for (uint32_t b = 0; b < k / 32; b++, group += BLOCK) {
#pragma GCC unroll 8
		for (int off = 0; off < BLOCK; off += 64)
			_mm_prefetch((const char *)group + PREFETCH_BYTES + off, _MM_HINT_T0);
		const int8_t *x = a.q + 32 * b;
		__m256 scale =
		    _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)group)),
				  _mm256_set1_ps(a.d[b]));
#pragma GCC unroll 8
		for (int l = 0; l < 8; l++) {
			__m256i q = load32(group + 16 + 32 * l);
			__m256i sum = _mm256_madd_epi16(
			    _mm256_maddubs_epi16(_mm256_sign_epi8(q, q),
						 _mm256_sign_epi8(broadcast4(x + 4 * l), q)),
			    ones);
			acc[l] =
			    _mm256_add_ps(acc[l], _mm256_mul_ps(_mm256_cvtepi32_ps(sum), scale));
		}
	}
	reduce_lanes(out, acc);
}

/* --- a whole group back in the file's layout (the prefill's dequantization) -------------
 * Every 32 bytes of a group's codes hold a 4-byte unit of each of the eight rows, and
 * eight such vectors a format's step apart hold a row's 32 consecutive code bytes: one
 * 8 x 8 transpose of 32-bit units gives the eight rows those bytes (rs_qx8_unpack_row
 * moves them 4 bytes at a time, eight times over for a group). */

/* out[r] = (v[0][r], v[1][r], ..., v[7][r]) for the 32-bit units r. */
AVX2 static inline void transpose8x8(__m256i v[8])
{
	__m256i t[8], u[8];
#pragma GCC unroll 4
	for (int i = 0; i < 4; i++) {
		t[2 * i] = _mm256_unpacklo_epi32(v[2 * i], v[2 * i + 1]);
		t[2 * i + 1] = _mm256_unpackhi_epi32(v[2 * i], v[2 * i + 1]);
	}
	/* u[j] (j < 4): units j and j + 4 of v[0..3]; u[4 + j] those of v[4..7] */
#pragma GCC unroll 2
	for (int h = 0; h < 2; h++) {
		u[4 * h] = _mm256_unpacklo_epi64(t[4 * h], t[4 * h + 2]);
		u[4 * h + 1] = _mm256_unpackhi_epi64(t[4 * h], t[4 * h + 2]);
		u[4 * h + 2] = _mm256_unpacklo_epi64(t[4 * h + 1], t[4 * h + 3]);
		u[4 * h + 3] = _mm256_unpackhi_epi64(t[4 * h + 1], t[4 * h + 3]);
	}
#pragma GCC unroll 4
	for (int j = 0; j < 4; j++) {
		v[j] = _mm256_permute2x128_si256(u[j], u[4 + j], 0x20);
		v[j + 4] = _mm256_permute2x128_si256(u[j], u[4 + j], 0x31);
	}
}

/* The eight rows' 32 code bytes at offset at of each (rows row_bytes apart) from the
 * eight vectors at src + stride * l. */
AVX2 static inline void codes_to_rows(uint8_t *rows, size_t row_bytes, size_t at,
				      const uint8_t *src, size_t stride)
{
	__m256i v[8];
#pragma GCC unroll 8
	for (int l = 0; l < 8; l++)
		v[l] = load32(src + stride * l);
	transpose8x8(v);
#pragma GCC unroll 8
	for (int r = 0; r < 8; r++)
		_mm256_storeu_si256((__m256i *)(rows + row_bytes * r + at), v[r]);
}

AVX2 void rs_qx8_unpack_group_avx2(uint8_t *rows, const uint8_t *group, enum rs_dtype dtype,
				   uint32_t k)
{
	size_t bb = rs_dtype_block_bytes(dtype), row_bytes = rs_dtype_row_bytes(dtype, k);
	bool five = dtype == RS_DTYPE_Q5_K;
	for (uint32_t s = 0; s < k / rs_dtype_block_elems(dtype); s++) {
		const uint8_t *block = group + (size_t)s * RS_QX8_ROWS * bb;
		uint8_t *row = rows + (size_t)s * bb;
		/* the scales as rs_qx8_unpack_row moves them */
		for (uint32_t r = 0; r < RS_QX8_ROWS; r++) {
			uint8_t *out = row + r * row_bytes, *in = (uint8_t *)(uintptr_t)block;
			if (dtype == RS_DTYPE_Q6_K) {
				move(out + 208, in + 2 * r, 2, false);
				for (int u = 0; u < 4; u++)
					move(out + 192 + 4 * u, in + 16 + 32 * u + 4 * r, 4, false);
			} else if (dtype == RS_DTYPE_Q4_K || five) {
				move(out, in + 2 * r, 2, false);
				move(out + 2, in + 16 + 2 * r, 2, false);
				for (int word = 0; word < 3; word++)
					move(out + 4 + 4 * word, in + 32 + 32 * word + 4 * r, 4,
					     false);
			} else {
				move(out, in + 2 * r, 2, false);
			}
		}
		if (dtype == RS_DTYPE_Q6_K) {
			for (int h = 0; h < 2; h++) {
				const uint8_t *steps = block + 144 + 96 * h;
				codes_to_rows(row, row_bytes, 64 * h, steps, 192);
				codes_to_rows(row, row_bytes, 64 * h + 32, steps + 32, 192);
				codes_to_rows(row, row_bytes, 128 + 32 * h, steps + 64, 192);
			}
		} else if (dtype == RS_DTYPE_Q4_K || five) {
			size_t step = five ? 160 : 128, codes = five ? 32 : 0, qs = five ? 48 : 16;
			if (five)
				codes_to_rows(row, row_bytes, 16, block + 128, step);
			for (int c = 0; c < 4; c++)
				codes_to_rows(row, row_bytes, qs + 32 * c,
					      block + 128 + codes + 32 * c, step);
		} else if (dtype == RS_DTYPE_Q8_0) {
			codes_to_rows(row, row_bytes, 2, block + 16, 32);
		} else { /* Q4_0: four units a row, the transpose's upper half unused */
			__m256i v[8];
			for (int u = 0; u < 8; u++)
				v[u] = u < 4 ? load32(block + 16 + 32 * u) : _mm256_setzero_si256();
			transpose8x8(v);
			for (int r = 0; r < 8; r++)
				_mm_storeu_si128((__m128i *)(row + row_bytes * r + 2),
						 _mm256_castsi256_si128(v[r]));
		}
	}
}

AVX2 void rs_qx8_dot_avx2(float out[RS_QX8_ROWS], const uint8_t *group, enum rs_dtype dtype,
			  struct rs_act_k a, uint32_t k)
{
	if (dtype == RS_DTYPE_Q4_0)
		dot_q40_x8(out, group, a, k);
	else if (dtype == RS_DTYPE_Q8_0)
		dot_q80_x8(out, group, a, k);
	else if (dtype == RS_DTYPE_Q4_K)
		dot_k45_x8(out, group, a, k, false);
	else if (dtype == RS_DTYPE_Q5_K)
		dot_k45_x8(out, group, a, k, true);
	else
		dot_q6k_x8(out, group, a, k);
}
#else
void rs_qx8_unpack_group_avx2(uint8_t *rows, const uint8_t *group, enum rs_dtype dtype, uint32_t k)
{
	for (uint32_t r = 0; r < RS_QX8_ROWS; r++)
		rs_qx8_unpack_row(rows + r * rs_dtype_row_bytes(dtype, k), group, r, dtype, k);
}

void rs_qx8_dot_avx2(float out[RS_QX8_ROWS], const uint8_t *group, enum rs_dtype dtype,
		     struct rs_act_k a, uint32_t k)
{
	(void)group, (void)dtype, (void)a, (void)k;
	memset(out, 0, sizeof(float) * RS_QX8_ROWS);
}
#endif
