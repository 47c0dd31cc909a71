/* Shared helpers of the engine_* tests: tolerant comparison that reports mismatches,
 * a deterministic generator, and small test models. Header-only (each test is one
 * program). */
#ifndef RS_TESTS_ENGINE_TEST_H
#define RS_TESTS_ENGINE_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/model/model.h"

static int test_failures;

/* Fatal: the rest of the test cannot run. */
#define REQUIRE(cond)                                                                              \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: required: %s\n", __FILE__, __LINE__, #cond);       \
			exit(1);                                                                   \
		}                                                                                  \
	} while (0)

#define CHECK(cond, ...)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			if (test_failures++ < 20) {                                                \
				fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__,   \
					#cond);                                                    \
				fprintf(stderr, __VA_ARGS__);                                      \
				fputc('\n', stderr);                                               \
			}                                                                          \
		}                                                                                  \
	} while (0)

/* Compare n floats to a float64 reference: |got - ref| <= tol + |ref| * eps, NaN fails.
 * Returns the number of mismatches, reporting the first few under name. */
static inline int check_close(const char *name, const float *got, const double *ref, size_t n,
			      double tol, double eps)
{
	int bad = 0;
	double worst = 0.0;
	for (size_t i = 0; i < n; i++) {
		double err = fabs((double)got[i] - ref[i]);
		double limit = tol + fabs(ref[i]) * eps;
		if (!(err <= limit)) {
			if (bad < 5)
				fprintf(stderr, "%s[%zu]: got %.9g want %.9g (err %.3g > %.3g)\n",
					name, i, got[i], ref[i], err, limit);
			bad++;
		}
		if (err > worst)
			worst = err;
	}
	if (bad) {
		fprintf(stderr, "%s: %d of %zu mismatched (worst error %.3g)\n", name, bad, n,
			worst);
		test_failures++;
	}
	return bad;
}

/* xorshift64*: the tests' own generator, independent of the code under test. */
static inline uint64_t test_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

/* Uniform in [-1, 1). */
static inline double test_uniform(uint64_t *s)
{
	return (double)(test_rand(s) >> 11) * 0x1p-52 - 1.0;
}

/* A small GQA configuration that exercises every shape path. */
static inline struct rs_model_config test_config(void)
{
	struct rs_model_config cfg = {
	    .dim = 64,
	    .hidden_dim = 160,
	    .n_layers = 2,
	    .n_heads = 4,
	    .n_kv_heads = 2,
	    .head_dim = 16,
	    .vocab_size = 97,
	    .max_seq_len = 128,
	    .rope_dim = 16,
	    .rope_theta = 10000.0f,
	    .norm_eps = 1e-5f,
	};
	return cfg;
}

#define TEST_END()                                                                                 \
	do {                                                                                       \
		if (test_failures) {                                                               \
			fprintf(stderr, "FAILED: %d failure(s)\n", test_failures);                 \
			return 1;                                                                  \
		}                                                                                  \
		printf("ok\n");                                                                    \
		return 0;                                                                          \
	} while (0)

#endif

#ifndef RS_TESTS_ENGINE_TEST_DECODE
#define RS_TESTS_ENGINE_TEST_DECODE
#include <string.h>

/* Independent decoders (ldexp from the bit fields), for references. */
static inline double test_f16_value(uint16_t h)
{
	int sign = h >> 15, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
	double v;
	if (exponent == 0x1f)
		v = mantissa ? NAN : INFINITY;
	else if (exponent == 0)
		v = ldexp(mantissa, -24);
	else
		v = ldexp(1024 + mantissa, exponent - 25);
	return sign ? -v : v;
}

static inline double test_bf16_value(uint16_t b)
{
	int sign = b >> 15, exponent = (b >> 7) & 0xff, mantissa = b & 0x7f;
	double v;
	if (exponent == 0xff)
		v = mantissa ? NAN : INFINITY;
	else if (exponent == 0)
		v = ldexp(mantissa, -133);
	else
		v = ldexp(128 + mantissa, exponent - 134);
	return sign ? -v : v;
}

/* Element i of a tensor, decoded independently of kernels/model/dtype.c. */
static inline double test_tensor_value(const struct rs_tensor *t, uint64_t i)
{
	switch (t->dtype) {
	case RS_DTYPE_F32:
		return ((const float *)t->data)[i];
	case RS_DTYPE_F16:
		return test_f16_value(((const uint16_t *)t->data)[i]);
	case RS_DTYPE_BF16:
		return test_bf16_value(((const uint16_t *)t->data)[i]);
	default: /* block-quantized: tests/quant_reference.h decodes those */
		break;
	}
	return NAN;
}
#endif
