/* The CUDA backend's quantized-weight decoding, run on the host: kernels/cuda/quant_decode.h
 * is the code its kernels (matmul_quant.cu: GEMV, f16 panels, embedding rows) compile
 * for the device, so this checks their arithmetic without one.
 * - Decoding: every 32-element group of random blocks (random bytes, finite f16 scales)
 *   and of our quantizer's blocks equals tests/quant_reference.h's float64 value rounded
 *   to f32, bit for bit. Why exact: a finite f16 is a multiple of 2^-24 below 2^16, so
 *   d sc q and dmin m are multiples of 2^-24 below 2^27 (6-bit sc and m, 5-bit q): the
 *   reference's double arithmetic is exact (51 bits < 53), and the decoder's products
 *   are exact in f32 (at most 23 significant bits) with the K-quants' one fmaf rounding
 *   the exact value once, as the conversion of the double does. The CPU's rs_dequantize
 *   gives the same bits (its dj q product is exact too, so its subtraction rounds once).
 * - The GEMV's arithmetic (rsq_gemv_lane_dot per lane, the warp's butterfly sum):
 *   |y - y_ref| <= (L + 6) 2^-24 sum_i |w_i x_i| (times 1.01), L the longest fma chain of
 *   a lane (32 per group it takes), 5 butterfly additions, 1 for the weights' own
 *   rounding (K-quants); y_ref the float64 dot product of reference weights and the same
 *   f16-rounded activations the device reads. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/quant_decode.h"
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

/* n blocks of random bytes with finite super-scales of either sign and a wide range of
 * magnitudes (subnormal f16 included). */
static void random_blocks(uint8_t *b, enum rs_dtype t, size_t n, uint64_t *s)
{
	size_t bb = ref_block_bytes(t);
	for (size_t i = 0; i < n * bb; i++)
		b[i] = (uint8_t)test_rand(s);
	for (size_t i = 0; i < n; i++, b += bb) {
		float d = (float)ldexp(test_uniform(s) - 0.5, -(int)(test_rand(s) % 26));
		float dmin = (float)ldexp(test_uniform(s) - 0.5, -(int)(test_rand(s) % 26));
		put_f16(t == RS_DTYPE_Q6_K ? b + 208 : b, d);
		if (t == RS_DTYPE_Q4_K || t == RS_DTYPE_Q5_K)
			put_f16(b + 2, dmin);
	}
}

static uint32_t float_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof(u));
	return u;
}

/* Every group of n blocks against the reference, and against rs_dequantize. */
static void check_blocks(const uint8_t *b, enum rs_dtype t, size_t n, const char *what)
{
	size_t bb = ref_block_bytes(t), be = ref_block_elems(t);
	float *cpu = malloc(n * be * sizeof(float));
	rs_dequantize(cpu, b, t, n * be);
	int bad = 0;
	for (size_t i = 0; i < n; i++)
		for (uint32_t g = 0; g < rsq_block_groups(t); g++) {
			float got[32];
			rsq_decode_group(got, b + i * bb, t, (int)g);
			for (uint32_t l = 0; l < 32; l++) {
				uint32_t e = 32 * g + l;
				float want = (float)ref_element(b + i * bb, t, e);
				if (float_bits(got[l]) != float_bits(want) ||
				    float_bits(got[l]) != float_bits(cpu[i * be + e])) {
					if (bad++ < 5)
						fprintf(
						    stderr,
						    "%s %s block %zu element %u: %.9g, reference "
						    "%.9g, CPU %.9g\n",
						    rs_dtype_name(t), what, i, e, got[l], want,
						    cpu[i * be + e]);
				}
			}
		}
	CHECK(bad == 0, "%s %s: %d elements differ from the reference", rs_dtype_name(t), what,
	      bad);
	free(cpu);
}

static void test_decode(enum rs_dtype t)
{
	uint64_t s = 11 + t;
	CHECK(rsq_block_bytes(t) == ref_block_bytes(t) &&
		  32 * rsq_block_groups(t) == ref_block_elems(t),
	      "%s block size", rs_dtype_name(t));
	size_t n = 512, be = ref_block_elems(t);
	uint8_t *b = malloc(n * ref_block_bytes(t));
	random_blocks(b, t, n, &s);
	check_blocks(b, t, n, "random blocks");
	float *x = malloc(n * be * sizeof(float));
	for (size_t i = 0; i < n * be; i++)
		x[i] = (float)(test_uniform(&s) - 0.5) * (float)(1 + i % 7);
	CHECK(rs_quantize(b, x, t, n * be) == 0, "%s quantize", rs_dtype_name(t));
	check_blocks(b, t, n, "quantizer blocks");
	free(x);
	free(b);
}

/* One output of the dequantizing GEMV, emulated, against float64. */
static void test_gemv(enum rs_dtype t, uint32_t k, int rows)
{
	uint64_t s = 101 + t + k;
	size_t row_bytes = rs_dtype_row_bytes(t, k);
	uint8_t *w = malloc(row_bytes);
	float *wx = malloc(k * sizeof(float)), *x = malloc(k * sizeof(float));
	double worst = 0.0;
	for (int r = 0; r < rows; r++) {
		for (uint32_t i = 0; i < k; i++) {
			wx[i] = (float)(test_uniform(&s) - 0.5);
			/* the f16 activations the kernel reads */
			x[i] = rs_f16_to_f32(rs_f32_to_f16((float)(2 * test_uniform(&s) - 1)));
		}
		if (rs_quantize(w, wx, t, k) != 0) {
			CHECK(0, "%s quantize", rs_dtype_name(t));
			break;
		}
		float lanes[32];
		for (unsigned lane = 0; lane < 32; lane++)
			lanes[lane] = rsq_gemv_lane_dot(w, t, x, k, lane);
		float y = rsq_warp_sum_emulate(lanes);
		double ref = 0.0, mag = 0.0;
		for (uint32_t i = 0; i < k; i++) {
			double wi = ref_row_element(w, t, i);
			ref += wi * x[i];
			mag += fabs(wi * x[i]);
		}
		uint32_t chain = 32 * ((k / 32 + 31) / 32);
		double bound = 1.01 * (chain + 6) * ldexp(1.0, -24) * mag;
		double err = fabs(y - ref);
		worst = fmax(worst, err / (bound > 0 ? bound : 1));
		CHECK(err <= bound, "%s k %u row %d: GEMV %.9g, reference %.9g (bound %.3g)",
		      rs_dtype_name(t), k, r, y, ref, bound);
	}
	printf("%-5s k %5u: GEMV emulation error at most %.3f of its bound\n", rs_dtype_name(t), k,
	       worst);
	free(w);
	free(wx);
	free(x);
}

int main(void)
{
	for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
		enum rs_dtype t = formats[i];
		test_decode(t);
		/* k past one pass of the warp (1024 elements), and a partial last pass */
		test_gemv(t, 4096, 8);
		test_gemv(t, 1280, 8);
		if (ref_block_elems(t) == 32)
			test_gemv(t, 288, 8);
	}
	CHECK(rsq_block_bytes(RS_DTYPE_F16) == 0 && rsq_block_groups(RS_DTYPE_F32) == 0,
	      "plain dtypes are not quantized");
	if (test_failures)
		fprintf(stderr, "%d failures\n", test_failures);
	return test_failures ? 1 : 0;
}
