/* Element types: sizes and conversions. */
#include <string.h>

#include "kernels/model/dtype.h"
#include "kernels/model/quant.h"

size_t rs_dtype_size(enum rs_dtype dtype)
{
	switch (dtype) {
	case RS_DTYPE_F32:
		return 4;
	case RS_DTYPE_F16:
	case RS_DTYPE_BF16:
		return 2;
	default:
		return 0;
	}
}

const char *rs_dtype_name(enum rs_dtype dtype)
{
	switch (dtype) {
	case RS_DTYPE_F32:
		return "f32";
	case RS_DTYPE_F16:
		return "f16";
	case RS_DTYPE_BF16:
		return "bf16";
	case RS_DTYPE_Q8_0:
		return "q8_0";
	case RS_DTYPE_Q4_0:
		return "q4_0";
	case RS_DTYPE_Q4_K:
		return "q4_k";
	case RS_DTYPE_Q5_K:
		return "q5_k";
	case RS_DTYPE_Q6_K:
		return "q6_k";
	}
	return "?";
}

static float bits_to_f32(uint32_t bits)
{
	float f;
	memcpy(&f, &bits, sizeof(f));
	return f;
}

static uint32_t f32_to_bits(float f)
{
	uint32_t bits;
	memcpy(&bits, &f, sizeof(bits));
	return bits;
}

float rs_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t exponent = (h >> 10) & 0x1f;
	uint32_t mantissa = h & 0x3ff;
	if (exponent == 0x1f) /* inf or NaN */
		return bits_to_f32(sign | 0x7f800000u | (mantissa << 13));
	if (exponent == 0) {
		if (mantissa == 0)
			return bits_to_f32(sign);
		/* Subnormal: value = mantissa * 2^-24. */
		float value = (float)mantissa * 0x1p-24f;
		return sign ? -value : value;
	}
	return bits_to_f32(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

uint16_t rs_f32_to_f16(float f)
{
	uint32_t bits = f32_to_bits(f);
	uint16_t sign = (uint16_t)((bits >> 16) & 0x8000);
	uint32_t abs_bits = bits & 0x7fffffffu;
	if (abs_bits >= 0x7f800000u) /* inf or NaN (keep NaN quiet) */
		return sign | 0x7c00 | (abs_bits > 0x7f800000u ? 0x200 : 0);
	if (abs_bits >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
		return sign | 0x7c00;
	if (abs_bits < 0x38800000u) { /* below the smallest normal f16: subnormal or zero */
		/* Round abs value * 2^24 to nearest even integer. */
		float scaled = bits_to_f32(abs_bits) * 0x1p24f;
		uint32_t integer = (uint32_t)scaled;
		float fraction = scaled - (float)integer;
		if (fraction > 0.5f || (fraction == 0.5f && (integer & 1)))
			integer++;
		return sign | (uint16_t)integer;
	}
	/* Normal: rebias the exponent, round the mantissa to 10 bits, nearest even. */
	uint32_t rounded = abs_bits + 0xfffu + ((abs_bits >> 13) & 1);
	return sign | (uint16_t)((rounded - (112u << 23)) >> 13);
}

float rs_bf16_to_f32(uint16_t b)
{
	return bits_to_f32((uint32_t)b << 16);
}

uint16_t rs_f32_to_bf16(float f)
{
	uint32_t bits = f32_to_bits(f);
	if ((bits & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it a quiet NaN */
		return (uint16_t)((bits >> 16) | 0x40);
	bits += 0x7fffu + ((bits >> 16) & 1);
	return (uint16_t)(bits >> 16);
}

float rs_tensor_get(const struct rs_tensor *t, uint64_t i)
{
	switch (t->dtype) {
	case RS_DTYPE_F32:
		return ((const float *)t->data)[i];
	case RS_DTYPE_F16:
		return rs_f16_to_f32(((const uint16_t *)t->data)[i]);
	case RS_DTYPE_BF16:
		return rs_bf16_to_f32(((const uint16_t *)t->data)[i]);
	default:
		if (rs_dtype_is_quant(t->dtype)) {
			/* Dequantize the block holding element i. */
			float block[RS_QK_K];
			uint32_t be = rs_dtype_block_elems(t->dtype);
			rs_dequantize(block,
				      (const uint8_t *)t->data +
					  (i / be) * rs_dtype_block_bytes(t->dtype),
				      t->dtype, be);
			return block[i % be];
		}
		return 0.0f;
	}
}

void rs_convert_to_f32(float *dst, const void *src, enum rs_dtype dtype, size_t n)
{
	switch (dtype) {
	case RS_DTYPE_F32:
		memcpy(dst, src, n * sizeof(float));
		break;
	case RS_DTYPE_F16:
		for (size_t i = 0; i < n; i++)
			dst[i] = rs_f16_to_f32(((const uint16_t *)src)[i]);
		break;
	case RS_DTYPE_BF16:
		for (size_t i = 0; i < n; i++)
			dst[i] = rs_bf16_to_f32(((const uint16_t *)src)[i]);
		break;
	default:
		rs_dequantize(dst, src, dtype, n);
		break;
	}
}
