/* The CPU backend's matrix product: y = x W^T with W packed once, at load, into column
 * panels (see gemm_cpu.c for why).
 *
 * A model stores a linear layer's W row-major [n][k] (one row per output). Packed, the
 * outputs are cut into panels of RS_PANEL_COLS, and each panel is stored [k][RS_PANEL_COLS]:
 * step kk of every output of the panel is one contiguous run of 48 elements (three
 * AVX-512 vectors once widened). The columns of the last panel past n are zero.
 *
 * The elements are f32, or f16 / bf16 as the model stores them: the kernels widen them to
 * f32 in registers as they load them (exactly: every f16 and bf16 value is an f32 value),
 * so the arithmetic is the same fp32 arithmetic, with the same bits, while decode
 * streams half the bytes and the packed model takes half the memory. */
#ifndef RS_KERNELS_GEMM_H
#define RS_KERNELS_GEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/cpu/ops.h"
#include "kernels/model/dtype.h"

enum { RS_PANEL_COLS = 48 };

struct rs_packed_matrix {
	/* [n_panels][k][RS_PANEL_COLS] of dtype. The allocation is 64-byte aligned, and so
	 * is every f32 step (192 bytes); 16-bit steps are 96 bytes, so half of them, and
	 * the panels after the first when k is odd, are not. */
	void *panels;
	enum rs_dtype dtype; /* RS_DTYPE_F32, RS_DTYPE_F16 or RS_DTYPE_BF16 */
	uint32_t n, k, n_panels;
	/* A quantized matrix (rs_packed_quant_init) is not packed: panels is NULL and its
	 * rows stay where the model has them (the mapped file), as up to RS_QUANT_PARTS
	 * row-major parts, each in its own block format (Q4_K_M mixes Q4_K and Q6_K within
	 * one fused projection). Panels still cut its outputs into RS_PANEL_COLS for the
	 * threads. */
	uint32_t n_quant_parts; /* 0: packed as above */
	void *quant_copy;	/* the parts' rows when rs_packed_quant_copy moved them */
	struct rs_quant_part {
		const uint8_t *rows;
		enum rs_dtype dtype;
		uint32_t n_rows;
		size_t row_bytes;
		/* rows [0, interleaved_rows) are in groups of 8 interleaved for decode
		 * (gemm_quant_x8.h; rs_packed_quant_copy makes them), the rest as in the
		 * file; 0 for rows as in the file */
		uint32_t interleaved_rows;
	} quant_parts[3];
};

enum { RS_QUANT_PARTS = 3 };

/* A quantized n x k matrix over the rows of parts (a fused projection: [q|k|v]); at least
 * every part is block-quantized (any mix of formats). Nothing is copied: the parts'
 * memory must outlive w. 0 or -EINVAL (k not a multiple of a part's block, too many
 * parts, a part not quantized). */
int rs_packed_quant_init(struct rs_packed_matrix *w, uint32_t k, const struct rs_quant_part *parts,
			 uint32_t n_parts);

/* Move a quantized matrix's rows out of the model (the file mapping, in 4 KiB pages) into
 * memory of its own from rs_alloc_large (2 MiB transparent huge pages where the kernel
 * gives them): decode streams every weight once per token, and in a VM each 4 KiB page
 * of the stream costs a two-level page walk; the TinyLlama-width Q8_0 model decoded at
 * 83 tok/s mapped against 106 in huge pages (docs/perf.md). On a CPU with AVX2 and F16C
 * the rows (Q4_0, Q8_0, Q4_K, Q5_K, Q6_K) are interleaved eight at a time on the way (same
 * bytes, same results; gemm_quant_x8.h). The parts then point into the copy, which rs_packed_free
 * releases. 0 or -ENOMEM (w unchanged). */
int rs_packed_quant_copy(struct rs_packed_matrix *w);

/* Row r of a quantized matrix, dequantized to f32 (k elements), wherever its bytes are. */
void rs_packed_quant_get_row(const struct rs_packed_matrix *w, uint32_t r, float *out);

/* The quantized product behind rs_gemm_packed for a matrix from rs_packed_quant_init
 * (same contract, other numerics): for m <= RS_QUANT_SMALL_BATCH each row of x is
 * quantized to 8 bits in blocks of 32 (an f32 scale each) and every output is a sum of
 * exact integer block dot products scaled in f32, in the same order at every isa (the
 * ISAs give the same bits); above it, a panel of rows at a time is dequantized to f32
 * and multiplied by CBLAS SGEMM. */
enum { RS_QUANT_SMALL_BATCH = 8 };
void rs_gemm_quant(float *y, size_t ldy, const float *x, size_t ldx, uint32_t m,
		   const struct rs_packed_matrix *w, uint32_t p0, uint32_t p1, bool accumulate,
		   enum rs_cpu_isa isa);

/* Allocates an n x k packed matrix of dtype (f32, f16 or bf16): its rows hold garbage
 * until rs_packed_set_rows writes them; the columns of the last panel past n are zero.
 * 0, -EINVAL (another dtype) or -ENOMEM (*w then holds nothing). */
int rs_packed_alloc(struct rs_packed_matrix *w, uint32_t n, uint32_t k, enum rs_dtype dtype);

/* Packs n_rows rows of a row-major [n_rows][k] matrix of dtype as rows row0.. of W
 * (outputs row0..): a fused projection packs its parts one after the other. An f32 W
 * takes rows of any dtype (widened); an f16 or bf16 W only rows of its own dtype (never
 * rounded). row0 + n_rows <= n. 0, -EINVAL (a dtype W cannot hold exactly) or -ENOMEM. */
int rs_packed_set_rows(struct rs_packed_matrix *w, uint32_t row0, uint32_t n_rows, const void *rows,
		       enum rs_dtype dtype);

/* The dtype to pack a weight of dtype in for products run with isa: its own when the
 * kernels widen it (bf16 with AVX2 or AVX-512, f16 with AVX-512 or AVX2 + F16C), else
 * f32 (CBLAS wants f32). */
enum rs_dtype rs_packed_dtype(enum rs_dtype dtype, enum rs_cpu_isa isa);

void rs_packed_free(struct rs_packed_matrix *w);

/* Row r of W (output r) as k floats, unpacked (widened): for tests and tools. */
void rs_packed_get_row(const struct rs_packed_matrix *w, uint32_t r, float *out);

/* y[i][c] (+)= sum_kk x[i][kk] * W[c][kk] for rows i < m and the columns c of panels
 * [p0, p1) (c < w->n); other columns of y are not touched. Rows of x are ldx floats
 * apart, rows of y ldy. With accumulate the product is added to y (a fused residual).
 *
 * isa picks the kernel, capped at rs_cpu_isa(): RS_ISA_AVX512 and RS_ISA_AVX2 run ours,
 * RS_ISA_PORTABLE one CBLAS SGEMM per panel (an f16 or bf16 panel widened first, in
 * blocks). Ours sum every output as one fused multiply-add chain in increasing kk,
 * starting from 0 (or from y with accumulate): the bits of an output depend on its own
 * row of x and column of W only, never on m, the other rows, the panel range, the ISA
 * (AVX2 and AVX-512 give the same bits) or the packed dtype (an f16 W gives the bits of
 * the f32 W holding the same values), so a sequence gets the same result alone, in any
 * batch, and split over any threads. */
void rs_gemm_packed(float *y, size_t ldy, const float *x, size_t ldx, uint32_t m,
		    const struct rs_packed_matrix *w, uint32_t p0, uint32_t p1, bool accumulate,
		    enum rs_cpu_isa isa);

#endif
