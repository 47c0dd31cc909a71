/* GGUF block formats: sizes, dequantization, quantization (layouts in quant.h). */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "kernels/model/dtype.h"
#include "kernels/model/quant.h"

bool rs_dtype_is_quant(enum rs_dtype dtype)
{
	switch (dtype) {
	case RS_DTYPE_Q8_0:
	case RS_DTYPE_Q4_0:
	case RS_DTYPE_Q4_K:
	case RS_DTYPE_Q5_K:
	case RS_DTYPE_Q6_K:
		return true;
	default:
		return false;
	}
}

uint32_t rs_dtype_block_elems(enum rs_dtype dtype)
{
	switch (dtype) {
	case RS_DTYPE_F32:
	case RS_DTYPE_F16:
	case RS_DTYPE_BF16:
		return 1;
	case RS_DTYPE_Q8_0:
	case RS_DTYPE_Q4_0:
		return RS_QK;
	case RS_DTYPE_Q4_K:
	case RS_DTYPE_Q5_K:
	case RS_DTYPE_Q6_K:
		return RS_QK_K;
	}
	return 0;
}

size_t rs_dtype_block_bytes(enum rs_dtype dtype)
{
	switch (dtype) {
	case RS_DTYPE_F32:
		return 4;
	case RS_DTYPE_F16:
	case RS_DTYPE_BF16:
		return 2;
	case RS_DTYPE_Q8_0:
		return 2 + 32;
	case RS_DTYPE_Q4_0:
		return 2 + 16;
	case RS_DTYPE_Q4_K:
		return 2 + 2 + 12 + 128;
	case RS_DTYPE_Q5_K:
		return 2 + 2 + 12 + 32 + 128;
	case RS_DTYPE_Q6_K:
		return 128 + 64 + 16 + 2;
	}
	return 0;
}

size_t rs_dtype_row_bytes(enum rs_dtype dtype, uint64_t cols)
{
	uint32_t be = rs_dtype_block_elems(dtype);
	if (!be || cols % be)
		return 0;
	return (size_t)(cols / be) * rs_dtype_block_bytes(dtype);
}

static float load_f16(const uint8_t *p)
{
	return rs_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
}

static void store_f16(uint8_t *p, float v)
{
	uint16_t h = rs_f32_to_f16(v);
	p[0] = (uint8_t)h;
	p[1] = (uint8_t)(h >> 8);
}

/* Sub-block j's 6-bit scale and min from a K-quant's 12 scale bytes. */
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

static void k_pack_scales(uint8_t *s, const uint8_t sc[8], const uint8_t m[8])
{
	for (int j = 0; j < 4; j++) {
		s[j] = (uint8_t)((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
		s[j + 4] = (uint8_t)((m[j] & 63) | ((m[j + 4] >> 4) << 6));
		s[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
	}
}

static void dequant_block(float *y, const uint8_t *b, enum rs_dtype dtype)
{
	switch (dtype) {
	case RS_DTYPE_Q8_0: {
		float d = load_f16(b);
		for (int i = 0; i < 32; i++)
			y[i] = d * (float)(int8_t)b[2 + i];
		break;
	}
	case RS_DTYPE_Q4_0: {
		float d = load_f16(b);
		for (int i = 0; i < 16; i++) {
			y[i] = d * (float)((b[2 + i] & 15) - 8);
			y[i + 16] = d * (float)((b[2 + i] >> 4) - 8);
		}
		break;
	}
	case RS_DTYPE_Q4_K:
	case RS_DTYPE_Q5_K: {
		float d = load_f16(b), dmin = load_f16(b + 2);
		const uint8_t *scales = b + 4;
		bool five = dtype == RS_DTYPE_Q5_K;
		const uint8_t *qh = b + 16, *qs = five ? b + 48 : b + 16;
		for (int j = 0; j < 8; j++) {
			int sc, m;
			k_scale_min(scales, j, &sc, &m);
			float dj = d * (float)sc, mj = dmin * (float)m;
			const uint8_t *q = qs + 32 * (j / 2);
			for (int l = 0; l < 32; l++) {
				int v = (j & 1) ? q[l] >> 4 : q[l] & 15;
				if (five)
					v |= ((qh[l] >> j) & 1) << 4;
				y[32 * j + l] = dj * (float)v - mj;
			}
		}
		break;
	}
	case RS_DTYPE_Q6_K: {
		const uint8_t *ql = b, *qh = b + 128;
		const int8_t *sc = (const int8_t *)(b + 192);
		float d = load_f16(b + 208);
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
					y[e] = d * (float)sc[e / 16] * (float)(q[t] - 32);
				}
			}
		break;
	}
	default:
		break;
	}
}

void rs_dequantize(float *dst, const void *src, enum rs_dtype dtype, size_t n)
{
	uint32_t be = rs_dtype_block_elems(dtype);
	size_t bb = rs_dtype_block_bytes(dtype);
	if (!rs_dtype_is_quant(dtype))
		return;
	for (size_t i = 0; i < n / be; i++)
		dequant_block(dst + i * be, (const uint8_t *)src + i * bb, dtype);
}

static int clampi(int v, int lo, int hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

/* The f32 value an f16 store of v will read back as. */
static float f16_round(float v)
{
	return rs_f16_to_f32(rs_f32_to_f16(v));
}

static void quant_q8_0(uint8_t *b, const float *x)
{
	float amax = 0;
	for (int i = 0; i < 32; i++)
		amax = fmaxf(amax, fabsf(x[i]));
	float d = f16_round(amax / 127.0f);
	store_f16(b, d);
	for (int i = 0; i < 32; i++)
		b[2 + i] = (uint8_t)(int8_t)(d ? clampi((int)lrintf(x[i] / d), -127, 127) : 0);
}

static void quant_q4_0(uint8_t *b, const float *x)
{
	/* The element of largest magnitude maps to -8 exactly (the range is -8..7). */
	float amax = 0, extreme = 0;
	for (int i = 0; i < 32; i++)
		if (fabsf(x[i]) > amax) {
			amax = fabsf(x[i]);
			extreme = x[i];
		}
	float d = f16_round(extreme / -8.0f);
	store_f16(b, d);
	for (int i = 0; i < 16; i++) {
		int lo = d ? clampi((int)lrintf(x[i] / d) + 8, 0, 15) : 8;
		int hi = d ? clampi((int)lrintf(x[i + 16] / d) + 8, 0, 15) : 8;
		b[2 + i] = (uint8_t)(lo | hi << 4);
	}
}

/* Q4_K / Q5_K: x = d*sc*q - dmin*m with q in 0..qmax. */
static void quant_k45(uint8_t *b, const float *x, bool five)
{
	int qmax = five ? 31 : 15;
	float scale[8], neg_min[8], max_scale = 0, max_min = 0;
	for (int j = 0; j < 8; j++) {
		float lo = 0, hi = 0; /* the min is kept <= 0: m is unsigned */
		for (int l = 0; l < 32; l++) {
			lo = fminf(lo, x[32 * j + l]);
			hi = fmaxf(hi, x[32 * j + l]);
		}
		scale[j] = (hi - lo) / (float)qmax;
		neg_min[j] = -lo;
		max_scale = fmaxf(max_scale, scale[j]);
		max_min = fmaxf(max_min, neg_min[j]);
	}
	float d = f16_round(max_scale / 63.0f), dmin = f16_round(max_min / 63.0f);
	uint8_t sc[8], m[8];
	for (int j = 0; j < 8; j++) {
		/* Round the scale up so the range still fits, the min to nearest. */
		sc[j] = (uint8_t)(d ? clampi((int)ceilf(scale[j] / d - 1e-4f), 0, 63) : 0);
		m[j] = (uint8_t)(dmin ? clampi((int)lrintf(neg_min[j] / dmin), 0, 63) : 0);
	}
	store_f16(b, d);
	store_f16(b + 2, dmin);
	k_pack_scales(b + 4, sc, m);
	uint8_t *qh = b + 16, *qs = five ? b + 48 : b + 16;
	if (five)
		memset(qh, 0, 32);
	memset(qs, 0, 128);
	for (int j = 0; j < 8; j++) {
		float dj = d * (float)sc[j], mj = dmin * (float)m[j];
		for (int l = 0; l < 32; l++) {
			int q = dj ? clampi((int)lrintf((x[32 * j + l] + mj) / dj), 0, qmax) : 0;
			qs[32 * (j / 2) + l] |= (uint8_t)((q & 15) << ((j & 1) ? 4 : 0));
			if (five)
				qh[l] |= (uint8_t)(((q >> 4) & 1) << j);
		}
	}
}

static void quant_q6_k(uint8_t *b, const float *x)
{
	float scale[16], max_abs_scale = 0;
	for (int g = 0; g < 16; g++) {
		float amax = 0, extreme = 0;
		for (int l = 0; l < 16; l++)
			if (fabsf(x[16 * g + l]) > amax) {
				amax = fabsf(x[16 * g + l]);
				extreme = x[16 * g + l];
			}
		scale[g] = extreme / -32.0f; /* the extreme maps to -32 (range -32..31) */
		max_abs_scale = fmaxf(max_abs_scale, fabsf(scale[g]));
	}
	float d = f16_round(max_abs_scale / 127.0f);
	int8_t *sc = (int8_t *)(b + 192);
	int q[256];
	for (int g = 0; g < 16; g++) {
		/* Rounded away from zero: the group's range still fits in -32..31 steps. */
		float r = d ? scale[g] / d : 0.0f;
		sc[g] =
		    (int8_t)clampi((int)(r < 0 ? floorf(r + 1e-4f) : ceilf(r - 1e-4f)), -127, 127);
		float dg = d * (float)sc[g];
		for (int l = 0; l < 16; l++)
			q[16 * g + l] =
			    (dg ? clampi((int)lrintf(x[16 * g + l] / dg), -32, 31) : 0) + 32;
	}
	store_f16(b + 208, d);
	uint8_t *ql = b, *qh = b + 128;
	for (int h = 0; h < 2; h++)
		for (int l = 0; l < 32; l++) {
			const int *e = q + 128 * h + l;
			ql[64 * h + l] = (uint8_t)((e[0] & 15) | (e[64] & 15) << 4);
			ql[64 * h + 32 + l] = (uint8_t)((e[32] & 15) | (e[96] & 15) << 4);
			qh[32 * h + l] = (uint8_t)((e[0] >> 4) | (e[32] >> 4) << 2 |
						   (e[64] >> 4) << 4 | (e[96] >> 4) << 6);
		}
}

int rs_quantize(void *dst, const float *src, enum rs_dtype dtype, size_t n)
{
	if (!rs_dtype_is_quant(dtype))
		return -EINVAL;
	uint32_t be = rs_dtype_block_elems(dtype);
	size_t bb = rs_dtype_block_bytes(dtype);
	if (n % be)
		return -EINVAL;
	for (size_t i = 0; i < n / be; i++) {
		uint8_t *b = (uint8_t *)dst + i * bb;
		const float *x = src + i * be;
		switch (dtype) {
		case RS_DTYPE_Q8_0:
			quant_q8_0(b, x);
			break;
		case RS_DTYPE_Q4_0:
			quant_q4_0(b, x);
			break;
		case RS_DTYPE_Q4_K:
			quant_k45(b, x, false);
			break;
		case RS_DTYPE_Q5_K:
			quant_k45(b, x, true);
			break;
		case RS_DTYPE_Q6_K:
			quant_q6_k(b, x);
			break;
		default:
			return -EINVAL;
		}
	}
	return 0;
}
