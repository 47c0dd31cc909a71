/* GGUF block-quantized weight formats (ggml's Q8_0, Q4_0, Q4_K, Q5_K, Q6_K): their sizes,
 * dequantization and our own quantizer.
 *
 * Bit layouts (little-endian, packed, no padding), as ggml defines them:
 *   Q8_0, 32 elements, 34 bytes:  f16 d; int8 q[32].                x[i] = d * q[i]
 *   Q4_0, 32 elements, 18 bytes:  f16 d; u8 qs[16]. Element i < 16 is the low nibble of
 *         qs[i], element i + 16 its high nibble.                    x[i] = d * (q[i] - 8)
 *   Q4_K, 256 elements, 144 bytes: f16 d; f16 dmin; u8 scales[12]; u8 qs[128].
 *         Eight sub-blocks of 32, each with a 6-bit scale sc[j] and 6-bit min m[j] packed
 *         in scales[] (bytes 0-3: sc[0..3] in bits 0-5, bits 4-5 of sc[4..7] in bits 6-7;
 *         bytes 4-7: the same for m; bytes 8-11: bits 0-3 of sc[4..7] low, of m[4..7]
 *         high). Chunk c (0..3) of 64 elements is qs[32c..32c+31]: sub-block 2c in the
 *         low nibbles, 2c+1 in the high ones.             x = d*sc[j]*q - dmin*m[j]
 *   Q5_K, 256 elements, 176 bytes: f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128].
 *         As Q4_K, plus a fifth bit: element l of sub-block j has bit j of qh[l] as bit 4.
 *   Q6_K, 256 elements, 210 bytes: u8 ql[128]; u8 qh[64]; int8 scales[16]; f16 d.
 *         Half h (0, 1) of 128 elements: for l < 32, ql[64h+l] holds elements 128h+l (low
 *         nibble) and 128h+64+l (high); ql[64h+32+l] elements 128h+32+l and 128h+96+l;
 *         qh[32h+l] bits 2t..2t+1 are bits 4-5 of element 128h+32t+l. Element e has
 *         scale scales[e/16].                                x = d*scales[e/16]*(q-32)
 * A row of cols elements is cols / block_elems blocks one after the other; cols must be a
 * multiple of the block size. */
#ifndef RS_KERNELS_QUANT_H
#define RS_KERNELS_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/model/model.h"

enum { RS_QK = 32, RS_QK_K = 256 };

/* Whether dtype is a block-quantized format. */
bool rs_dtype_is_quant(enum rs_dtype dtype);

/* Elements per block (1 for f32/f16/bf16) and bytes per block (the element size for
 * those); 0 for an unknown dtype. */
uint32_t rs_dtype_block_elems(enum rs_dtype dtype);
size_t rs_dtype_block_bytes(enum rs_dtype dtype);

/* Bytes of a row of cols elements of dtype; 0 when cols is not a multiple of the block
 * size (or the dtype is unknown). */
size_t rs_dtype_row_bytes(enum rs_dtype dtype, uint64_t cols);

/* Dequantize n elements (a multiple of the block size) of quantized dtype. */
void rs_dequantize(float *dst, const void *src, enum rs_dtype dtype, size_t n);

/* Quantize n elements (a multiple of the block size) into dtype's blocks, rounding to
 * nearest (K-quants: each sub-block's scale and min from its range, then rounded to 6
 * bits against the super-block's f16 scales). -EINVAL for a dtype that is not quantized. */
int rs_quantize(void *dst, const float *src, enum rs_dtype dtype, size_t n);

#endif
