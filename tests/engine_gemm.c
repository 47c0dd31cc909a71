/* The packed matrix product (kernels/cpu/gemm.h) against float64 sums written here, on every
 * kernel this CPU runs (CBLAS per panel, AVX2, AVX-512) and every packed element type
 * (f32, f16, bf16):
 * - packing: every row unpacks to its source (f32 exactly, f16 and bf16 as their decoded
 *   values, decoded here by the tests' own functions), a 16-bit matrix refuses rows it
 *   would have to round;
 * - products: every m from 1 to 70 (all tile sizes and splits), n and k that are not
 *   multiples of the panel, vector or k-block widths, strided x and y, a panel range
 *   that leaves the other columns alone, with and without accumulate;
 * - the documented bit-level promises: a row's outputs are the same bits alone and
 *   inside any batch, whatever the panel split, the AVX2 and AVX-512 kernels agree
 *   bit for bit, and an f16 or bf16 matrix gives the bits of the f32 matrix holding the
 *   same values. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/model/dtype.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/large_alloc.h"
#include "tests/engine_test.h"

static void fill(float *x, size_t n, uint64_t *s, double scale)
{
	for (size_t i = 0; i < n; i++)
		x[i] = (float)(scale * test_uniform(s));
}

/* Round x to dtype's values (f32: unchanged); bits: the 16-bit encodings. */
static void round_to(float *x, uint16_t *bits, size_t n, enum rs_dtype dtype)
{
	for (size_t i = 0; dtype != RS_DTYPE_F32 && i < n; i++) {
		bits[i] = dtype == RS_DTYPE_F16 ? rs_f32_to_f16(x[i]) : rs_f32_to_bf16(x[i]);
		x[i] = (float)(dtype == RS_DTYPE_F16 ? test_f16_value(bits[i])
						      : test_bf16_value(bits[i]));
	}
}

/* Element (kk, c) of panel p, decoded by the test. */
static double packed_element(const struct rs_packed_matrix *pm, uint32_t p, uint32_t kk,
			     uint32_t c)
{
	size_t i = ((size_t)p * pm->k + kk) * RS_PANEL_COLS + c;
	if (pm->dtype == RS_DTYPE_F32)
		return ((const float *)pm->panels)[i];
	uint16_t h = ((const uint16_t *)pm->panels)[i];
	return pm->dtype == RS_DTYPE_F16 ? test_f16_value(h) : test_bf16_value(h);
}

static void test_pack(void)
{
	uint64_t s = 21;
	uint32_t n = 101, k = 37; /* three panels, the last partial; odd k: unaligned panels */
	float *w = malloc(sizeof(float) * n * k), *row = malloc(sizeof(float) * k);
	uint16_t *w16 = malloc(sizeof(uint16_t) * n * k), *wb16 = malloc(sizeof(uint16_t) * n * k);
	fill(w, (size_t)n * k, &s, 3.0);
	for (size_t i = 0; i < (size_t)n * k; i++) {
		w16[i] = rs_f32_to_f16(w[i]);
		wb16[i] = rs_f32_to_bf16(w[i]);
	}
	/* f32 from f32 rows, f32 from f16 rows (widened), f16 and bf16 kept as they are. */
	struct rs_packed_matrix pm, pm_wide, pm16, pmb16;
	CHECK(rs_packed_alloc(&pm, n, k, RS_DTYPE_F32) == 0, "alloc");
	CHECK(rs_packed_alloc(&pm_wide, n, k, RS_DTYPE_F32) == 0, "alloc");
	CHECK(rs_packed_alloc(&pm16, n, k, RS_DTYPE_F16) == 0, "alloc f16");
	CHECK(rs_packed_alloc(&pmb16, n, k, RS_DTYPE_BF16) == 0, "alloc bf16");
	CHECK(pm.n_panels == 3 && pm16.n_panels == 3, "n_panels %u", pm.n_panels);
	/* In uneven parts, as a fused projection is packed. */
	CHECK(rs_packed_set_rows(&pm, 0, 30, w, RS_DTYPE_F32) == 0, "set rows");
	CHECK(rs_packed_set_rows(&pm, 30, 50, w + 30 * k, RS_DTYPE_F32) == 0, "set rows");
	CHECK(rs_packed_set_rows(&pm, 80, 21, w + 80 * k, RS_DTYPE_F32) == 0, "set rows");
	CHECK(rs_packed_set_rows(&pm_wide, 0, n, w16, RS_DTYPE_F16) == 0, "set rows f16 -> f32");
	CHECK(rs_packed_set_rows(&pm16, 0, 40, w16, RS_DTYPE_F16) == 0, "set rows f16");
	CHECK(rs_packed_set_rows(&pm16, 40, 61, w16 + 40 * k, RS_DTYPE_F16) == 0, "set rows f16");
	CHECK(rs_packed_set_rows(&pmb16, 0, n, wb16, RS_DTYPE_BF16) == 0, "set rows bf16");
	/* A 16-bit matrix never rounds: other dtypes are refused. */
	CHECK(rs_packed_set_rows(&pm16, 0, 1, w, RS_DTYPE_F32) == -EINVAL, "f32 rows into f16");
	CHECK(rs_packed_set_rows(&pm16, 0, 1, wb16, RS_DTYPE_BF16) == -EINVAL, "bf16 into f16");
	CHECK(rs_packed_set_rows(&pmb16, 0, 1, w16, RS_DTYPE_F16) == -EINVAL, "f16 into bf16");
	struct rs_packed_matrix bad;
	CHECK(rs_packed_alloc(&bad, n, k, (enum rs_dtype)99) == -EINVAL && !bad.panels,
	      "unknown dtype");
	for (uint32_t r = 0; r < n; r++) {
		rs_packed_get_row(&pm, r, row);
		CHECK(memcmp(row, w + (size_t)r * k, sizeof(float) * k) == 0, "row %u", r);
		for (int which = 0; which < 3; which++) {
			const struct rs_packed_matrix *p = which == 0 ? &pm_wide
							  : which == 1 ? &pm16
								       : &pmb16;
			rs_packed_get_row(p, r, row);
			for (uint32_t i = 0; i < k; i++) {
				size_t e = (size_t)r * k + i;
				double want = which == 2 ? test_bf16_value(wb16[e])
							 : test_f16_value(w16[e]);
				CHECK(row[i] == want, "matrix %d row %u col %u", which, r, i);
				CHECK(packed_element(p, r / RS_PANEL_COLS, i, r % RS_PANEL_COLS) ==
					  want,
				      "matrix %d element %u %u", which, r, i);
			}
		}
	}
	/* The padding of the last panel is zero: the kernels read it. */
	const struct rs_packed_matrix *all[] = {&pm, &pm_wide, &pm16, &pmb16};
	for (int i = 0; i < 4; i++)
		for (uint32_t kk = 0; kk < k; kk++)
			for (uint32_t c = n - 2 * RS_PANEL_COLS; c < RS_PANEL_COLS; c++)
				CHECK(packed_element(all[i], 2, kk, c) == 0.0, "padding %d %u %u", i,
				      kk, c);
	rs_packed_free(&pm);
	rs_packed_free(&pm_wide);
	rs_packed_free(&pm16);
	rs_packed_free(&pmb16);
	free(w), free(w16), free(wb16), free(row);
}

struct gemm_case {
	uint32_t n, k, m_max;
};

/* The product over W packed as dtype (W's values rounded to dtype first). */
static void gemm_case(const struct gemm_case *gc, enum rs_cpu_isa isa, enum rs_dtype dtype,
		      uint64_t *s)
{
	uint32_t n = gc->n, k = gc->k, m_max = gc->m_max;
	size_t ldx = k + 3, ldy = n + 5; /* strided rows; y's extra columns stay untouched */
	float *w = malloc(sizeof(float) * n * k), *x = malloc(sizeof(float) * m_max * ldx);
	uint16_t *w16 = malloc(sizeof(uint16_t) * n * k);
	float *y0 = malloc(sizeof(float) * m_max * ldy), *y = malloc(sizeof(float) * m_max * ldy);
	float *alone = malloc(sizeof(float) * ldy), *split = malloc(sizeof(float) * m_max * ldy);
	double *ref = malloc(sizeof(double) * m_max * ldy);
	fill(w, (size_t)n * k, s, 1.0 / sqrt(k));
	fill(x, (size_t)m_max * ldx, s, 1.0);
	round_to(w, w16, (size_t)n * k, dtype);
	/* pm in dtype; pm32 the same values as f32 (for a 16-bit dtype). */
	struct rs_packed_matrix pm, pm32;
	CHECK(rs_packed_alloc(&pm, n, k, dtype) == 0 &&
		  rs_packed_set_rows(&pm, 0, n, dtype == RS_DTYPE_F32 ? (const void *)w : w16,
				     dtype) == 0,
	      "pack");
	CHECK(rs_packed_alloc(&pm32, n, k, RS_DTYPE_F32) == 0 &&
		  rs_packed_set_rows(&pm32, 0, n, w, RS_DTYPE_F32) == 0,
	      "pack f32");
	/* A panel range inside when there are three panels or more. */
	uint32_t p0 = pm.n_panels > 2, p1 = pm.n_panels - (pm.n_panels > 2);
	uint32_t c0 = p0 * RS_PANEL_COLS, c1 = p1 * RS_PANEL_COLS < n ? p1 * RS_PANEL_COLS : n;
	for (uint32_t m = 1; m <= m_max; m++)
		for (int acc = 0; acc < 2; acc++) {
			fill(y0, (size_t)m * ldy, s, 1.0);
			memcpy(y, y0, sizeof(float) * m * ldy);
			for (uint32_t i = 0; i < m; i++)
				for (uint32_t j = 0; j < ldy; j++) {
					bool inside = j >= c0 && j < c1;
					double sum = acc || !inside ? y0[i * ldy + j] : 0.0;
					for (uint32_t l = 0; inside && l < k; l++)
						sum +=
						    (double)x[i * ldx + l] * w[(size_t)j * k + l];
					ref[i * ldy + j] = sum;
				}
			rs_gemm_packed(y, ldy, x, ldx, m, &pm, p0, p1, acc, isa);
			char what[96];
			snprintf(what, sizeof(what), "gemm isa %d %s m %u n %u k %u%s", isa,
				 rs_dtype_name(dtype), m, n, k, acc ? " accumulate" : "");
			/* Errors grow like sqrt(k) ulps of terms of size ~1/sqrt(k). */
			check_close(what, y, ref, (size_t)m * ldy, 1e-5, 1e-5);

			/* The same product in two panel ranges (two threads' shares): the same
			 * bits, on every kernel (CBLAS gets one call per panel either way). */
			memcpy(split, y0, sizeof(float) * m * ldy);
			uint32_t mid = (p0 + p1) / 2;
			rs_gemm_packed(split, ldy, x, ldx, m, &pm, p0, mid, acc, isa);
			rs_gemm_packed(split, ldy, x, ldx, m, &pm, mid, p1, acc, isa);
			CHECK(memcmp(split, y, sizeof(float) * m * ldy) == 0, "%s: split differs",
			      what);

			/* The last row alone: the same bits as inside the batch (our kernels). */
			if (isa == RS_ISA_PORTABLE)
				continue;
			/* A 16-bit W: the bits of the f32 W of the same values. */
			if (dtype != RS_DTYPE_F32) {
				memcpy(split, y0, sizeof(float) * m * ldy);
				rs_gemm_packed(split, ldy, x, ldx, m, &pm32, p0, p1, acc, isa);
				CHECK(memcmp(split, y, sizeof(float) * m * ldy) == 0,
				      "%s: differs from f32 panels", what);
			}
			memcpy(alone, y0 + (size_t)(m - 1) * ldy, sizeof(float) * ldy);
			rs_gemm_packed(alone, ldy, x + (size_t)(m - 1) * ldx, ldx, 1, &pm, p0, p1,
				       acc, isa);
			CHECK(memcmp(alone, y + (size_t)(m - 1) * ldy, sizeof(float) * ldy) == 0,
			      "%s: last row alone differs", what);
		}
	rs_packed_free(&pm);
	rs_packed_free(&pm32);
	free(w), free(w16), free(x), free(y0), free(y), free(alone), free(split), free(ref);
}

/* AVX2 and AVX-512 sum in the same order: the same bits. */
static void test_isas_agree(void)
{
	if (rs_cpu_isa() < RS_ISA_AVX512)
		return;
	uint64_t s = 31;
	uint32_t m = 19, n = 150, k = 700;
	float *w = malloc(sizeof(float) * n * k), *x = malloc(sizeof(float) * m * k);
	float *y2 = malloc(sizeof(float) * m * n), *y512 = malloc(sizeof(float) * m * n);
	fill(w, (size_t)n * k, &s, 1.0);
	fill(x, (size_t)m * k, &s, 1.0);
	fill(y2, (size_t)m * n, &s, 1.0);
	memcpy(y512, y2, sizeof(float) * m * n);
	struct rs_packed_matrix pm;
	CHECK(rs_packed_alloc(&pm, n, k, RS_DTYPE_F32) == 0 &&
		  rs_packed_set_rows(&pm, 0, n, w, RS_DTYPE_F32) == 0,
	      "pack");
	rs_gemm_packed(y2, n, x, k, m, &pm, 0, pm.n_panels, true, RS_ISA_AVX2);
	rs_gemm_packed(y512, n, x, k, m, &pm, 0, pm.n_panels, true, RS_ISA_AVX512);
	CHECK(memcmp(y2, y512, sizeof(float) * m * n) == 0, "AVX2 and AVX-512 differ");
	rs_packed_free(&pm);
	free(w), free(x), free(y2), free(y512);
}

/* Packed matrices come from rs_alloc_large: 64-byte aligned (the f32 kernels' aligned
 * loads), and 2 MiB aligned from 2 MiB up (whole huge pages). */
static void test_alignment(void)
{
	struct rs_packed_matrix small, big;
	CHECK(rs_packed_alloc(&small, 101, 37, RS_DTYPE_F16) == 0, "alloc small");
	CHECK(rs_packed_alloc(&big, 4800, 1024, RS_DTYPE_F32) == 0, "alloc 18.75 MiB");
	CHECK((uintptr_t)small.panels % 64 == 0, "small matrix not 64-byte aligned");
	CHECK((uintptr_t)big.panels % (2u << 20) == 0, "large matrix not 2 MiB aligned");
	void *p = rs_alloc_large(1);
	CHECK(p && (uintptr_t)p % 64 == 0, "one byte");
	free(p);
	CHECK(rs_alloc_large(SIZE_MAX - 10) == NULL, "an overflowing size is refused");
	rs_packed_free(&small);
	rs_packed_free(&big);
}

/* The engine packs 16-bit weights as they are only where our kernels widen them. */
static void test_packed_dtype(void)
{
	for (int isa = RS_ISA_PORTABLE; isa <= RS_ISA_AVX512; isa++) {
		enum rs_cpu_isa i = (enum rs_cpu_isa)isa, cpu = rs_cpu_isa();
		enum rs_cpu_isa runs = i < cpu ? i : cpu; /* capped at the CPU's */
		bool f16 = runs == RS_ISA_AVX512 || (runs == RS_ISA_AVX2 && rs_cpu_has_f16c());
		CHECK(rs_packed_dtype(RS_DTYPE_F32, i) == RS_DTYPE_F32, "f32 isa %d", isa);
		CHECK(rs_packed_dtype(RS_DTYPE_BF16, i) ==
			  (runs >= RS_ISA_AVX2 ? RS_DTYPE_BF16 : RS_DTYPE_F32),
		      "bf16 isa %d", isa);
		CHECK(rs_packed_dtype(RS_DTYPE_F16, i) == (f16 ? RS_DTYPE_F16 : RS_DTYPE_F32),
		      "f16 isa %d", isa);
	}
	CHECK(rs_packed_dtype(RS_DTYPE_F16, RS_ISA_PORTABLE) == RS_DTYPE_F32, "CBLAS wants f32");
}

int main(void)
{
	test_pack();
	test_alignment();
	test_packed_dtype();
	/* k past one 512-step block (1030: three blocks, the last short); n of one
	 * partial panel, of whole panels, and of a partial last panel. */
	static const struct gemm_case cases[] = {
	    {1, 1, 70},	   {5, 17, 70},	   {37, 33, 70},   {48, 16, 70},  {97, 295, 70},
	    {21, 768, 20}, {150, 513, 12}, {100, 1030, 9}, {200, 64, 70},
	};
	uint64_t s = 13;
	static const enum rs_dtype dtypes[] = {RS_DTYPE_F32, RS_DTYPE_F16, RS_DTYPE_BF16};
	for (int isa = RS_ISA_PORTABLE; isa <= (int)rs_cpu_isa(); isa++)
		for (size_t d = 0; d < 3; d++)
			for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++)
				gemm_case(&cases[c], (enum rs_cpu_isa)isa, dtypes[d], &s);
	test_isas_agree();
	TEST_END();
}
