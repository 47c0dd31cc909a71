/* The GGUF block formats (kernels/model/quant.h) and the quantized products
 * (rs_gemm_quant, kernels/cpu/gemm.h) against the float64 reference decoder of
 * tests/quant_reference.h, written from the layout description:
 * - decoding: blocks of random bytes (every bit pattern of codes, scales and mins; sane
 *   f16 super-scales) decode to the reference values, by rs_dequantize and rs_tensor_get;
 * - our quantizer: each element of random data decodes back within the format's bound:
 *   Q8_0 0.57 d (half a step, plus d's f16 rounding: amax may exceed 127 d by 2^-11),
 *   Q4_0 1.01 |d| (the extreme maps to -8, the other side may reach +8, clamped to 7),
 *   Q4_K/Q5_K half a sub-block step plus half a dmin step (the min's 6-bit rounding) plus
 *   1 %, Q6_K 1.01 steps of its group (+32 clamped to 31); the RMS errors are printed;
 * - products, each ISA this CPU has: |y - y_ref| <= sum_i |w_i| d_i / 2 + 2^-18 sum_i
 *   |w_i x_i|, where d_i = amax(x's block)/127 is the activation's 8-bit step (blocks of
 *   32 for Q8_0/Q4_0 weights, of 256 for the K-quants; the
 *   activations round to nearest: half a step each; the weights are exact) and the
 *   second term covers f32 scaling and summation; the ISAs give the same bits; the large
 *   batch path (dequantized panels, SGEMM) within 2^-16 sum |w_i x_i|; a fused matrix of
 *   mixed formats; accumulate;
 * - the same matrices after rs_packed_quant_copy, which interleaves the rows by eight
 *   (kernels/cpu/gemm_quant_x8.h): the same bound, the portable kernel's bits on the rows
 *   as in the file, whole or one call per panel, and every row read back unchanged. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/gemm.h"
#include "kernels/model/dtype.h"
#include "kernels/model/quant.h"
#include "tests/engine_test.h"
#include "tests/quant_reference.h"

static const enum rs_dtype formats[] = {RS_DTYPE_Q8_0, RS_DTYPE_Q4_0, RS_DTYPE_Q4_K, RS_DTYPE_Q5_K,
					RS_DTYPE_Q6_K};

static void put_f16(uint8_t *p, float v)
{
	uint16_t h = rs_f32_to_f16(v);
	p[0] = (uint8_t)h;
	p[1] = (uint8_t)(h >> 8);
}

/* n_blocks random blocks of t: random bytes, then finite super-scales. */
static void random_blocks(uint8_t *b, enum rs_dtype t, size_t n_blocks, uint64_t *s)
{
	size_t bb = ref_block_bytes(t);
	for (size_t i = 0; i < n_blocks * bb; i++)
		b[i] = (uint8_t)test_rand(s);
	for (size_t i = 0; i < n_blocks; i++, b += bb) {
		float d = (float)(0.01 * test_uniform(s)), dmin = (float)(0.01 * test_uniform(s));
		if (t == RS_DTYPE_Q6_K)
			put_f16(b + 208, d);
		else
			put_f16(b, d);
		if (t == RS_DTYPE_Q4_K || t == RS_DTYPE_Q5_K)
			put_f16(b + 2, dmin);
	}
}

static void test_decode(enum rs_dtype t)
{
	uint64_t s = 7 + t;
	size_t nb = 64, be = ref_block_elems(t), n = nb * be;
	CHECK(rs_dtype_block_elems(t) == be && rs_dtype_block_bytes(t) == ref_block_bytes(t),
	      "%s block size", rs_dtype_name(t));
	uint8_t *b = malloc(nb * ref_block_bytes(t));
	float *y = malloc(n * sizeof(float));
	random_blocks(b, t, nb, &s);
	rs_dequantize(y, b, t, n);
	struct rs_tensor tensor = {.dtype = t, .rows = 1, .cols = n, .data = b};
	int bad = 0;
	for (size_t i = 0; i < n; i++) {
		double ref = ref_row_element(b, t, i);
		/* f32 arithmetic on terms no larger than 64 * 64 * d: 2^-22 of that. */
		const uint8_t *blk = b + (i / be) * ref_block_bytes(t);
		double d = fabs(ref_f16(t == RS_DTYPE_Q6_K ? blk + 208 : blk));
		double dmin =
		    (t == RS_DTYPE_Q4_K || t == RS_DTYPE_Q5_K) ? fabs(ref_f16(blk + 2)) : 0;
		double tol = ldexp(4096 * (d + dmin), -22);
		if (fabs(y[i] - ref) > tol || rs_tensor_get(&tensor, i) != y[i])
			bad++;
	}
	CHECK(bad == 0, "%s: %d of %zu elements decode off the reference", rs_dtype_name(t), bad,
	      n);
	free(b);
	free(y);
}

static void test_quantizer(enum rs_dtype t)
{
	uint64_t s = 100 + t;
	size_t nb = 64, be = ref_block_elems(t), n = nb * be;
	float *x = malloc(n * sizeof(float));
	uint8_t *b = malloc(nb * ref_block_bytes(t));
	for (size_t i = 0; i < n; i++) /* blocks of varied scale and offset */
		x[i] = (float)(test_uniform(&s) * (1 + (i / 32) % 5) + 0.3 * ((i / 64) % 3));
	REQUIRE(rs_quantize(b, x, t, n) == 0);
	int bad = 0;
	double sq_err = 0, sq = 0;
	for (size_t i = 0; i < n; i++) {
		const uint8_t *blk = b + (i / be) * ref_block_bytes(t);
		size_t e = i % be;
		double err = fabs(ref_row_element(b, t, i) - x[i]), bound;
		switch (t) {
		case RS_DTYPE_Q8_0:
			bound = 0.57 * fabs(ref_f16(blk));
			break;
		case RS_DTYPE_Q4_0:
			bound = 1.01 * fabs(ref_f16(blk));
			break;
		case RS_DTYPE_Q4_K:
		case RS_DTYPE_Q5_K: {
			unsigned sc, m;
			ref_k_scale_min(blk + 4, (int)(e / 32), &sc, &m);
			bound = 1.01 * (0.5 * ref_f16(blk) * sc + 0.5 * ref_f16(blk + 2));
			break;
		}
		default:
			bound = 1.01 * fabs(ref_f16(blk + 208) * (int8_t)blk[192 + e / 16]);
			break;
		}
		if (err > bound + 1e-7) {
			if (bad++ < 3)
				fprintf(stderr, "  %s element %zu: %g decodes %g off (bound %g)\n",
					rs_dtype_name(t), i, x[i], err, bound);
		}
		sq_err += err * err;
		sq += (double)x[i] * x[i];
	}
	CHECK(bad == 0, "%s: %d elements beyond the quantization bound", rs_dtype_name(t), bad);
	printf("%s: quantize/decode RMS error %.4f of the data's RMS\n", rs_dtype_name(t),
	       sqrt(sq_err / sq));
	free(x);
	free(b);
}

/* y (m x n) for the quantized rows w (n x k, format t) at isa, checked against the
 * reference; returns the outputs for the bit comparison across ISAs. */
static void product_case(const struct rs_packed_matrix *pm, const uint8_t *const *part_rows,
			 const enum rs_dtype *part_types, const uint32_t *part_n, uint32_t m,
			 enum rs_cpu_isa isa, float *y, const float *x, bool accumulate,
			 const char *what)
{
	uint32_t k = pm->k, n = pm->n;
	for (size_t i = 0; i < (size_t)m * n; i++)
		y[i] = accumulate ? 0.25f * (float)(i % 7) : NAN;
	rs_gemm_quant(y, n, x, k, m, pm, 0, pm->n_panels, accumulate, isa);
	int bad = 0;
	for (uint32_t c = 0, part = 0, r = 0; c < n; c++, r++) {
		while (r >= part_n[part]) {
			r -= part_n[part];
			part++;
		}
		size_t rb = rs_dtype_row_bytes(part_types[part], k);
		const uint8_t *row = part_rows[part] + r * rb;
		for (uint32_t i = 0; i < m; i++) {
			const float *xi = x + (size_t)i * k;
			double ref = accumulate ? 0.25 * (double)(((size_t)i * n + c) % 7) : 0;
			double act_err = 0, mag = 0;
			for (uint32_t kk = 0; kk < k; kk++) {
				double w = ref_row_element(row, part_types[part], kk);
				/* The activations' block: 32 elements for Q8_0/Q4_0, 256 for the
				 * K-quants (one scale per super-block, as llama.cpp's q8_K). */
				uint32_t ab = ref_block_elems(part_types[part]);
				double amax = 0;
				for (uint32_t l = kk / ab * ab; l < kk / ab * ab + ab; l++)
					amax = fmax(amax, fabs(xi[l]));
				ref += w * xi[kk];
				act_err += fabs(w) * amax / 127 / 2;
				mag += fabs(w * xi[kk]);
			}
			double bound = m > RS_QUANT_SMALL_BATCH
					   ? ldexp(mag, -16)
					   : act_err * 1.0001 + ldexp(mag, -18);
			double got = y[(size_t)i * n + c];
			if (!(fabs(got - ref) <= bound)) {
				if (bad++ < 3)
					fprintf(stderr,
						"  %s isa %d m %u: y[%u][%u] = %.7g, ref %.7g, "
						"bound %.3g\n",
						what, isa, m, i, c, got, ref, bound);
			}
		}
	}
	CHECK(bad == 0, "%s, isa %d, m %u%s: %d outputs beyond the bound", what, isa, m,
	      accumulate ? ", accumulate" : "", bad);
}

static void test_products(const enum rs_dtype *types, uint32_t n_parts, const uint32_t *part_n,
			  uint32_t k, const char *what)
{
	uint64_t s = 1000 + k + part_n[0];
	uint8_t *rows[RS_QUANT_PARTS];
	struct rs_quant_part parts[RS_QUANT_PARTS];
	uint32_t n = 0;
	for (uint32_t p = 0; p < n_parts; p++) {
		size_t nb = (size_t)part_n[p] * (k / ref_block_elems(types[p]));
		rows[p] = malloc(nb * ref_block_bytes(types[p]));
		random_blocks(rows[p], types[p], nb, &s);
		parts[p] =
		    (struct rs_quant_part){.rows = rows[p], .dtype = types[p], .n_rows = part_n[p]};
		n += part_n[p];
	}
	struct rs_packed_matrix pm;
	REQUIRE(rs_packed_quant_init(&pm, k, parts, n_parts) == 0);
	CHECK(pm.n == n && pm.panels == NULL, "%s: matrix shape", what);
	uint32_t m_max = 12;
	float *x = malloc(sizeof(float) * m_max * k);
	for (size_t i = 0; i < (size_t)m_max * k; i++)
		x[i] = (float)(test_uniform(&s) * (1 + (i / 32) % 4));
	float *y = malloc(sizeof(float) * m_max * n), *y_portable[4];
	const uint8_t *const *crow = (const uint8_t *const *)rows;
	for (uint32_t m = 1, t = 0; m <= m_max; m += (m < 3 ? 1 : 9), t++) {
		y_portable[t] = malloc(sizeof(float) * m_max * n);
		product_case(&pm, crow, types, part_n, m, RS_ISA_PORTABLE, y_portable[t], x, false,
			     what);
		for (enum rs_cpu_isa isa = RS_ISA_AVX2; isa <= rs_cpu_isa(); isa++) {
			product_case(&pm, crow, types, part_n, m, isa, y, x, false, what);
			CHECK(memcmp(y, y_portable[t], sizeof(float) * m * n) == 0,
			      "%s m %u: isa %d differs from the portable kernel's bits", what, m,
			      isa);
		}
	}
	product_case(&pm, crow, types, part_n, 2, rs_cpu_isa(), y, x, true, what);
	float *got_row = malloc(sizeof(float) * k), *file_rows = malloc(sizeof(float) * n * k);
	for (uint32_t c = 0; c < n; c++)
		rs_packed_get_row(&pm, c, file_rows + (size_t)c * k);

	/* Copied as the engine copies it, which interleaves the rows by eight on
	 * an AVX2 + F16C CPU (the rest of a part, n_rows % 8, stays row by row): within the
	 * bound and the portable kernel's bits on the rows as in the file, at every ISA,
	 * whole or cut into one call per panel as the threads cut it (where a part does not
	 * start at a multiple of 8, groups straddle the cut). */
	REQUIRE(rs_packed_quant_copy(&pm) == 0);
	bool x8 = rs_cpu_isa() >= RS_ISA_AVX2 && rs_cpu_has_f16c();
	for (uint32_t p = 0; p < n_parts; p++) {
		CHECK(pm.quant_parts[p].interleaved_rows == (x8 ? part_n[p] / 8 * 8 : 0),
		      "%s part %u: %u rows interleaved", what, p,
		      pm.quant_parts[p].interleaved_rows);
	}
	for (uint32_t m = 1, t = 0; m <= m_max; m += (m < 3 ? 1 : 9), t++) {
		for (enum rs_cpu_isa isa = RS_ISA_PORTABLE; isa <= rs_cpu_isa(); isa++) {
			product_case(&pm, crow, types, part_n, m, isa, y, x, false, what);
			CHECK(memcmp(y, y_portable[t], sizeof(float) * m * n) == 0,
			      "%s copied, m %u: isa %d differs from the portable kernel's bits",
			      what, m, isa);
			for (size_t i = 0; i < (size_t)m * n; i++)
				y[i] = NAN;
			for (uint32_t p = 0; p < pm.n_panels; p++)
				rs_gemm_quant(y, n, x, k, m, &pm, p, p + 1, false, isa);
			CHECK(memcmp(y, y_portable[t], sizeof(float) * m * n) == 0,
			      "%s copied, m %u, a call per panel: isa %d differs", what, m, isa);
		}
	}
	product_case(&pm, crow, types, part_n, 2, rs_cpu_isa(), y, x, true, what);
	int rows_differ = 0;
	for (uint32_t c = 0; c < n; c++) {
		rs_packed_get_row(&pm, c, got_row);
		rows_differ += memcmp(got_row, file_rows + (size_t)c * k, sizeof(float) * k) != 0;
	}
	CHECK(rows_differ == 0, "%s copied: %d rows read back differently", what, rows_differ);
	free(got_row);
	free(file_rows);
	for (uint32_t t = 0; t < 4; t++)
		free(y_portable[t]);
	rs_packed_free(&pm);
	for (uint32_t p = 0; p < n_parts; p++)
		free(rows[p]);
	free(x);
	free(y);
}

static void test_malformed(void)
{
	struct rs_quant_part part = {
	    .rows = (const uint8_t *)"", .dtype = RS_DTYPE_Q4_K, .n_rows = 1};
	struct rs_packed_matrix pm;
	CHECK(rs_packed_quant_init(&pm, 288, &part, 1) == -EINVAL, "k not a multiple of 256");
	part.dtype = RS_DTYPE_F16;
	CHECK(rs_packed_quant_init(&pm, 256, &part, 1) == -EINVAL, "an f16 part");
	CHECK(rs_dtype_row_bytes(RS_DTYPE_Q8_0, 48) == 0 &&
		  rs_dtype_row_bytes(RS_DTYPE_Q8_0, 64) == 68,
	      "row bytes");
	float x[32] = {0};
	uint8_t b[34];
	CHECK(rs_quantize(b, x, RS_DTYPE_Q8_0, 31) == -EINVAL, "n not a multiple of 32");
	CHECK(rs_quantize(b, x, RS_DTYPE_F32, 32) == -EINVAL, "f32 is not quantized");
}

int main(void)
{
	for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
		test_decode(formats[i]);
		test_quantizer(formats[i]);
		uint32_t n = 50; /* two panels, the last partial */
		test_products(&formats[i], 1, &n, 512, rs_dtype_name(formats[i]));
		/* 9 blocks of 32: a row that is not whole super-blocks of 256. */
		if (ref_block_elems(formats[i]) == 32)
			test_products(&formats[i], 1, &n, 288, rs_dtype_name(formats[i]));
	}
	/* A fused projection of three formats (Q4_K_M's q, k, v), n not a panel multiple. */
	enum rs_dtype mixed[3] = {RS_DTYPE_Q4_K, RS_DTYPE_Q6_K, RS_DTYPE_Q8_0};
	uint32_t mixed_n[3] = {40, 17, 9};
	test_products(mixed, 3, mixed_n, 768, "mixed q4_k|q6_k|q8_0");
	/* Interleaved parts off the groups of 8: a Q4_K part starting at row 17 (one group
	 * straddles the panel boundary at 48), 13 and 3 rows (one group and none). */
	enum rs_dtype shifted[3] = {RS_DTYPE_Q6_K, RS_DTYPE_Q4_K, RS_DTYPE_Q8_0};
	uint32_t shifted_n[3] = {17, 43, 9};
	test_products(shifted, 3, shifted_n, 512, "mixed q6_k|q4_k|q8_0");
	/* The same with Q4_0 at row 17 and Q8_0 at row 60 (Q4_0 files keep output.weight in
	 * Q6_K), both with groups off the panels' multiples of 8; 9 blocks of 32 a row. */
	enum rs_dtype legacy[3] = {RS_DTYPE_Q6_K, RS_DTYPE_Q4_0, RS_DTYPE_Q8_0};
	test_products(legacy, 3, shifted_n, 512, "mixed q6_k|q4_0|q8_0");
	test_products(&legacy[1], 2, &shifted_n[1], 288, "mixed q4_0|q8_0, k 288");
	for (uint32_t n = 3; n <= 13; n += 10) {
		test_products(&mixed[0], 1, &n, 256, "q4_k, odd rows");
		test_products(&formats[3], 1, &n, 256, "q5_k, odd rows");
		test_products(&mixed[1], 1, &n, 256, "q6_k, odd rows");
		test_products(&formats[1], 1, &n, 288, "q4_0, odd rows");
		test_products(&formats[0], 1, &n, 288, "q8_0, odd rows");
	}
	test_malformed();
	if (test_failures)
		fprintf(stderr, "%d failures\n", test_failures);
	return test_failures ? 1 : 0;
}
