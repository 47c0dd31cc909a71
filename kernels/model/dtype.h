/* Element types of weight tensors and conversions to and from float32.
 * The conversions are exact (f16/bf16 -> f32) or round to nearest even (f32 -> f16/bf16). */
#ifndef RS_KERNELS_DTYPE_H
#define RS_KERNELS_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/model/model.h"

float rs_f16_to_f32(uint16_t h);
uint16_t rs_f32_to_f16(float f);
float rs_bf16_to_f32(uint16_t b);
uint16_t rs_f32_to_bf16(float f);

/* Element i of a row-major tensor, as float32. */
float rs_tensor_get(const struct rs_tensor *t, uint64_t i);

/* Convert n elements of src (of type dtype) to float32 into dst; a block-quantized dtype
 * is dequantized (n a multiple of its block size). */
void rs_convert_to_f32(float *dst, const void *src, enum rs_dtype dtype, size_t n);

/* The dtype's name ("f32", "f16", "bf16"), or "?" for an unknown value. */
const char *rs_dtype_name(enum rs_dtype dtype);

#endif
