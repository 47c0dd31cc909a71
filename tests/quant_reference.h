/* A float64 reference decoder of the GGUF block formats, written from the layout
 * description (ggml's block definitions), independently of kernels/model/quant.c: one
 * element at a time, every bit extracted by its byte and bit position.
 *
 *   Q8_0 (34 B / 32):  bytes 0-1 f16 d; byte 2+i int8 q_i.              x_i = d q_i
 *   Q4_0 (18 B / 32):  bytes 0-1 f16 d; element i < 16: low nibble of byte 2+i, element
 *                      16+i: its high nibble.                          x_i = d (q_i - 8)
 *   Q4_K (144 B / 256): 0-1 d, 2-3 dmin, 4-15 the 12 scale bytes S, 16-143 qs.
 *                      Sub-block j = e/32, position l = e%32. Code: nibble (low when j is
 *                      even) of qs[32*(j/2) + l]. Scale/min (6 bits each):
 *                        j < 4:  sc = S[j] bits 0-5,  m = S[j+4] bits 0-5
 *                        j >= 4: sc = S[j+4] bits 0-3 | (S[j-4] bits 6-7) << 4,
 *                                m  = S[j+4] bits 4-7 | (S[j] bits 6-7) << 4
 *                                                            x = d sc q - dmin m
 *   Q5_K (176 B / 256): 0-1 d, 2-3 dmin, 4-15 S, 16-47 qh, 48-175 qs: as Q4_K, with bit
 *                      j of qh[l] as the code's bit 4.
 *   Q6_K (210 B / 256): 0-127 ql, 128-191 qh, 192-207 int8 scales, 208-209 f16 d.
 *                      Element e: h = e/128, t = (e%128)/32, l = e%32. Low 4 bits: byte
 *                      ql[64h + 32(t%2) + l], low nibble when t < 2 else high. High 2
 *                      bits: bits 2t, 2t+1 of qh[32h + l].   x = d scales[e/16] (q - 32)
 */
#ifndef RS_TESTS_QUANT_REFERENCE_H
#define RS_TESTS_QUANT_REFERENCE_H

#include <math.h>
#include <stdint.h>

#include "kernels/model/model.h"

/* IEEE half from its bits, in double: sign, 5-bit exponent (bias 15), 10-bit fraction. */
static inline double ref_f16(const uint8_t *p)
{
	unsigned h = p[0] | (unsigned)p[1] << 8;
	int sign = (h >> 15) & 1, exponent = (h >> 10) & 31, fraction = h & 1023;
	double v;
	if (exponent == 0)
		v = ldexp(fraction, -24);
	else if (exponent == 31)
		v = fraction ? NAN : INFINITY;
	else
		v = ldexp(1024 + fraction, exponent - 25);
	return sign ? -v : v;
}

static inline unsigned bits(unsigned byte, int first, int count)
{
	return (byte >> first) & ((1u << count) - 1);
}

static inline uint32_t ref_block_elems(enum rs_dtype t)
{
	return t == RS_DTYPE_Q8_0 || t == RS_DTYPE_Q4_0 ? 32 : 256;
}

static inline uint32_t ref_block_bytes(enum rs_dtype t)
{
	switch (t) {
	case RS_DTYPE_Q8_0:
		return 34;
	case RS_DTYPE_Q4_0:
		return 18;
	case RS_DTYPE_Q4_K:
		return 144;
	case RS_DTYPE_Q5_K:
		return 176;
	case RS_DTYPE_Q6_K:
		return 210;
	default:
		return 0;
	}
}

/* The 6-bit scale and min of sub-block j of a Q4_K/Q5_K block whose scale bytes are S. */
static inline void ref_k_scale_min(const uint8_t *S, int j, unsigned *sc, unsigned *m)
{
	if (j < 4) {
		*sc = bits(S[j], 0, 6);
		*m = bits(S[j + 4], 0, 6);
	} else {
		*sc = bits(S[j + 4], 0, 4) | bits(S[j - 4], 6, 2) << 4;
		*m = bits(S[j + 4], 4, 4) | bits(S[j], 6, 2) << 4;
	}
}

/* Element e of block b (of format t), in double. */
static inline double ref_element(const uint8_t *b, enum rs_dtype t, uint32_t e)
{
	switch (t) {
	case RS_DTYPE_Q8_0:
		return ref_f16(b) * (double)(int8_t)b[2 + e];
	case RS_DTYPE_Q4_0: {
		unsigned q = e < 16 ? bits(b[2 + e], 0, 4) : bits(b[2 + e - 16], 4, 4);
		return ref_f16(b) * ((double)q - 8.0);
	}
	case RS_DTYPE_Q4_K:
	case RS_DTYPE_Q5_K: {
		int j = (int)(e / 32), l = (int)(e % 32);
		const uint8_t *qs = b + (t == RS_DTYPE_Q5_K ? 48 : 16);
		unsigned q = bits(qs[32 * (j / 2) + l], (j % 2) ? 4 : 0, 4);
		if (t == RS_DTYPE_Q5_K)
			q |= bits(b[16 + l], j, 1) << 4;
		unsigned sc, m;
		ref_k_scale_min(b + 4, j, &sc, &m);
		return ref_f16(b) * sc * q - ref_f16(b + 2) * m;
	}
	case RS_DTYPE_Q6_K: {
		uint32_t h = e / 128, tt = (e % 128) / 32, l = e % 32;
		unsigned low = bits(b[64 * h + 32 * (tt % 2) + l], tt < 2 ? 0 : 4, 4);
		unsigned high = bits(b[128 + 32 * h + l], (int)(2 * tt), 2);
		int q = (int)(low | high << 4) - 32;
		return ref_f16(b + 208) * (double)(int8_t)b[192 + e / 16] * q;
	}
	default:
		return NAN;
	}
}

/* Element i of a row of blocks. */
static inline double ref_row_element(const uint8_t *row, enum rs_dtype t, uint64_t i)
{
	uint32_t be = ref_block_elems(t);
	return ref_element(row + (i / be) * ref_block_bytes(t), t, (uint32_t)(i % be));
}

#endif
