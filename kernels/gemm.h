/* The CPU backend's matrix product: y = x W^T with W packed once, at load, into column
 * panels (see gemm_cpu.c for why).
 *
 * A model stores a linear layer's W row-major [n][k] (one row per output). Packed, the
 * outputs are cut into panels of RS_PANEL_COLS, and each panel is stored [k][RS_PANEL_COLS]:
 * step kk of every output of the panel is one contiguous 192-byte run, three AVX-512
 * vectors. The columns of the last panel past n are zero. */
#ifndef RS_KERNELS_GEMM_H
#define RS_KERNELS_GEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/dtype.h"
#include "kernels/ops.h"

enum { RS_PANEL_COLS = 48 };

struct rs_packed_matrix {
	float *panels; /* [n_panels][k][RS_PANEL_COLS], 64-byte aligned */
	uint32_t n, k, n_panels;
};

/* Allocates an n x k packed matrix: its rows hold garbage until rs_packed_set_rows
 * writes them; the columns of the last panel past n are zero. 0 or -ENOMEM (*w then
 * holds nothing). */
int rs_packed_alloc(struct rs_packed_matrix *w, uint32_t n, uint32_t k);

/* Packs n_rows rows of a row-major [n_rows][k] matrix of dtype as rows row0.. of W
 * (outputs row0..): a fused projection packs its parts one after the other.
 * row0 + n_rows <= n. 0 or -ENOMEM. */
int rs_packed_set_rows(struct rs_packed_matrix *w, uint32_t row0, uint32_t n_rows, const void *rows,
		       enum rs_dtype dtype);

void rs_packed_free(struct rs_packed_matrix *w);

/* Row r of W (output r) as k floats, unpacked: for tests and tools. */
void rs_packed_get_row(const struct rs_packed_matrix *w, uint32_t r, float *out);

/* y[i][c] (+)= sum_kk x[i][kk] * W[c][kk] for rows i < m and the columns c of panels
 * [p0, p1) (c < w->n); other columns of y are not touched. Rows of x are ldx floats
 * apart, rows of y ldy. With accumulate the product is added to y (a fused residual).
 *
 * isa picks the kernel, capped at rs_cpu_isa(): RS_ISA_AVX512 and RS_ISA_AVX2 run ours,
 * RS_ISA_PORTABLE one CBLAS SGEMM per panel. Ours sum every output as one fused
 * multiply-add chain in increasing kk, starting from 0 (or from y with accumulate): the
 * bits of an output depend on its own row of x and column of W only, never on m, the
 * other rows, the panel range or the ISA (AVX2 and AVX-512 give the same bits), so a
 * sequence gets the same result alone, in any batch, and split over any threads. */
void rs_gemm_packed(float *y, size_t ldy, const float *x, size_t ldx, uint32_t m,
		    const struct rs_packed_matrix *w, uint32_t p0, uint32_t p1, bool accumulate,
		    enum rs_cpu_isa isa);

#endif
