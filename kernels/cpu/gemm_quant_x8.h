/* Quantized weight rows interleaved eight at a time (internal to kernels/cpu/gemm_quant*.c):
 * the K-quants (Q4_K, Q5_K, Q6_K) and the legacy Q4_0 and Q8_0.
 *
 * Decode multiplies one activation row by every weight row once. Row by row, each
 * super-block of 256 weights costs the unpacking of its scales and mins, the broadcast
 * of each sub-block's scale, a horizontal sum and the float scaling: about 100
 * instructions per 144 bytes, which kept one AVX2 core at ~12 GB/s, below what it can
 * read from memory. Eight rows interleaved in 4-byte units put one 4-byte piece of each
 * row in a 32-bit lane of one vector: the activations' piece is one broadcast shared by
 * the eight rows, the scales and mins of the eight rows unpack with a handful of vector
 * operations, and a lane is already a row, so no horizontal sums are left.
 *
 * The layout holds the same bytes as the rows (nothing widened: decode reads as many
 * bytes as before), rearranged. A part's first rows, whole groups of RS_QX8_ROWS, are
 * interleaved at load (rs_packed_quant_copy); the rest stay row by row.
 *
 * The products are the portable kernel's bits: lane l of a row's eight float sums takes
 * elements 4l..4l+3 of each sub-block of 32 (what row_dot_scalar's acc[l] takes), and
 * step l of the interleaved loop is exactly those elements, so the group kernel keeps
 * one float accumulator per lane l (its vector lanes being the eight rows), with the
 * same integer sums (exact) and the same float multiplies and adds in the same order.
 *
 * Q4_0 and Q8_0 (blocks of 32, one f16 scale each): their products keep eight float lanes
 * per block and row (lane l: elements 4l..4l+3, as llama.cpp's vec_dot), so the float
 * work per byte is the row kernel's; what eight rows at once remove is the rest of it:
 * unpacking the nibbles once for eight rows, no per-row scale broadcast, no sign
 * trick on the activations for Q4_0 (its -8 offset is the activations' sums of four,
 * computed once per row of activations), no horizontal sum. */
#ifndef RS_KERNELS_GEMM_QUANT_X8_H
#define RS_KERNELS_GEMM_QUANT_X8_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/model/dtype.h"

/* RS_QX8_BLOCK_BYTES_MAX: the largest block of an interleaved format (Q6_K's). */
enum { RS_QX8_ROWS = 8, RS_QX8_BLOCK_BYTES_MAX = 210 };

/* The activations of one row as the products take them (gemm_quant.c's act_row). For
 * the K-quants: qk[i] ~ x[i] / dk[i / 256], sumk16[g] the sum of qk over group g of 16.
 * For Q4_0/Q8_0: q[i] ~ x[i] / d[i / 32], sum4x8[j] 8 times the sum of q[4j..4j+3] (Q4_0's
 * codes are stored plus 8). */
struct rs_act_k {
	const int8_t *qk;
	const float *dk;
	const int16_t *sumk16;
	const int8_t *q;
	const float *d;
	const int32_t *sum4x8;
};

/* Whether rows of dtype are interleaved at load. */
bool rs_qx8_format(enum rs_dtype dtype);

/* RS_QX8_ROWS rows of k elements (row_bytes apart at rows) into the interleaved group at
 * group (RS_QX8_ROWS * row_bytes bytes); the inverse gives row r of a group back in the
 * file's layout (k: a multiple of the format's block, e.g. one block). */
void rs_qx8_pack(uint8_t *group, const uint8_t *rows, enum rs_dtype dtype, uint32_t k);
void rs_qx8_unpack_row(uint8_t *row, const uint8_t *group, uint32_t r, enum rs_dtype dtype,
		       uint32_t k);

/* All RS_QX8_ROWS rows of a group at once, row_bytes apart at rows: what
 * rs_qx8_unpack_row gives row by row, by vector transposes (AVX2; the caller checks the
 * CPU). */
void rs_qx8_unpack_group_avx2(uint8_t *rows, const uint8_t *group, enum rs_dtype dtype, uint32_t k);

/* out[r] = row r of the group times the activations, the bits of row_dot_scalar on the
 * same row (AVX2 + F16C; the caller checks the CPU). */
void rs_qx8_dot_avx2(float out[RS_QX8_ROWS], const uint8_t *group, enum rs_dtype dtype,
		     struct rs_act_k a, uint32_t k);

#endif
