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

#include "kernels/model/dtype.h"
#include "kernels/cpu/ops.h"

enum { RS_PANEL_COLS = 48 };

struct rs_packed_matrix {
	/* [n_panels][k][RS_PANEL_COLS] of dtype. The allocation is 64-byte aligned, and so
	 * is every f32 step (192 bytes); 16-bit steps are 96 bytes, so half of them, and
	 * the panels after the first when k is odd, are not. */
	void *panels;
	enum rs_dtype dtype; /* RS_DTYPE_F32, RS_DTYPE_F16 or RS_DTYPE_BF16 */
	uint32_t n, k, n_panels;
};

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
