/* Every CPU operator against a float64 reference written here, and the dtype
 * conversions against independent computations: all 65536 f16 and bf16 bit patterns
 * decoded with ldexp, and f32 -> f16/bf16 rounding against a nearest-value search. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/model/dtype.h"
#include "kernels/cpu/ops.h"
#include "tests/engine_test.h"

static uint32_t f32_bits(float f)
{
	uint32_t b;
	memcpy(&b, &f, 4);
	return b;
}

static float bits_f32(uint32_t b)
{
	float f;
	memcpy(&f, &b, 4);
	return f;
}

/* Decoding: every bit pattern. */
static void test_decode(void)
{
	for (uint32_t h = 0; h < 65536; h++) {
		double want = test_f16_value((uint16_t)h);
		float got = rs_f16_to_f32((uint16_t)h);
		if (isnan(want))
			CHECK(isnan(got), "f16 %#x: got %g, want NaN", h, got);
		else
			CHECK((double)got == want && !signbit(got) == !signbit(want),
			      "f16 %#x: got %.9g want %.9g", h, got, want);
		want = test_bf16_value((uint16_t)h);
		got = rs_bf16_to_f32((uint16_t)h);
		if (isnan(want))
			CHECK(isnan(got), "bf16 %#x: got %g, want NaN", h, got);
		else
			CHECK((double)got == want && !signbit(got) == !signbit(want),
			      "bf16 %#x: got %.9g want %.9g", h, got, want);
	}
}

/* The pattern (sign cleared) of the value nearest to |f| among the sorted values
 * table[0..n) (patterns 0..n-1 of a format, increasing), ties to the even pattern;
 * overflow_at: the smallest magnitude that rounds to infinity (pattern inf_bits). */
static uint16_t nearest(double a, const double *table, uint32_t n, double overflow_at,
			uint16_t inf_bits)
{
	if (a >= overflow_at)
		return inf_bits;
	uint32_t lo = 0, hi = n - 1;
	while (hi - lo > 1) { /* table[lo] <= a < table[hi] */
		uint32_t mid = (lo + hi) / 2;
		if (table[mid] <= a)
			lo = mid;
		else
			hi = mid;
	}
	if (a >= table[hi])
		return (uint16_t)hi;
	double dl = a - table[lo], dh = table[hi] - a;
	if (dl < dh)
		return (uint16_t)lo;
	if (dh < dl)
		return (uint16_t)hi;
	return (uint16_t)((lo & 1) ? hi : lo);
}

static void test_round(void)
{
	static double f16[0x7c00], bf16[0x7f80];
	for (uint32_t i = 0; i < 0x7c00; i++)
		f16[i] = test_f16_value((uint16_t)i);
	for (uint32_t i = 0; i < 0x7f80; i++)
		bf16[i] = test_bf16_value((uint16_t)i);
	/* Halfway to the next power of two past the largest finite value: ties go to the
	 * even pattern, which is infinity (max finite patterns are odd). */
	double f16_over = 65504.0 + 16.0, bf16_over = bf16[0x7f7f] + ldexp(1.0, 127 - 8);

	/* Round trip of every finite pattern. */
	for (uint32_t h = 0; h < 65536; h++) {
		if ((h & 0x7fff) < 0x7c00)
			CHECK(rs_f32_to_f16(rs_f16_to_f32((uint16_t)h)) == h, "f16 round trip %#x", h);
		if ((h & 0x7fff) < 0x7f80)
			CHECK(rs_f32_to_bf16(rs_bf16_to_f32((uint16_t)h)) == h, "bf16 round trip %#x",
			      h);
	}

	/* Samples: random floats over the whole range, and the midpoints between neighbours
	 * (the ties) with one f32 ulp either side. */
	uint64_t s = 42;
	for (int i = 0; i < 400000; i++) {
		float f;
		if (i % 4 == 0) {
			f = bits_f32((uint32_t)test_rand(&s)); /* any pattern */
		} else if (i % 4 == 1) {
			/* magnitudes around the f16 range, 2^-30 .. 2^17 */
			uint32_t e = 97 + (uint32_t)(test_rand(&s) % 48);
			f = bits_f32((e << 23) | ((uint32_t)test_rand(&s) & 0x807fffffu));
		} else {
			uint32_t k = (uint32_t)(test_rand(&s) % 0x7bff);
			float mid = (float)((f16[k] + f16[k + 1]) / 2); /* exact in f32 */
			int32_t nudge = (int32_t)(test_rand(&s) % 3) - 1;
			f = bits_f32(f32_bits(mid) + (uint32_t)nudge);
			if (i % 4 == 3) {
				uint32_t kb = (uint32_t)(test_rand(&s) % 0x7f7f);
				f = bits_f32(f32_bits((float)((bf16[kb] + bf16[kb + 1]) / 2)) +
					     (uint32_t)nudge);
			}
			if (test_rand(&s) & 1)
				f = -f;
		}
		if (isnan(f)) {
			CHECK(isnan(rs_f16_to_f32(rs_f32_to_f16(f))), "f16 NaN");
			CHECK(isnan(rs_bf16_to_f32(rs_f32_to_bf16(f))), "bf16 NaN");
			continue;
		}
		uint16_t sign = signbit(f) ? 0x8000 : 0;
		double a = fabs((double)f);
		uint16_t want = sign | nearest(a, f16, 0x7c00, f16_over, 0x7c00);
		uint16_t got = rs_f32_to_f16(f);
		CHECK(got == want, "f32 %.9g (%#x) -> f16: got %#x want %#x", f, f32_bits(f), got,
		      want);
		want = sign | nearest(a, bf16, 0x7f80, bf16_over, 0x7f80);
		got = rs_f32_to_bf16(f);
		CHECK(got == want, "f32 %.9g (%#x) -> bf16: got %#x want %#x", f, f32_bits(f), got,
		      want);
	}
}

static void fill(float *x, size_t n, uint64_t *s, double scale)
{
	for (size_t i = 0; i < n; i++)
		x[i] = (float)(scale * test_uniform(s));
}

static void test_embedding(void)
{
	uint64_t s = 7;
	uint32_t vocab = 50, dim = 24, tokens[] = {3, 0, 49, 3, 17};
	float f32[50 * 24], out[5 * 24];
	uint16_t f16[50 * 24], bf16[50 * 24];
	fill(f32, vocab * dim, &s, 2.0);
	for (uint32_t i = 0; i < vocab * dim; i++) {
		f16[i] = (uint16_t)test_rand(&s) & 0x7bff; /* finite patterns */
		bf16[i] = (uint16_t)test_rand(&s) & 0x7eff;
	}
	const void *data[] = {f32, f16, bf16};
	for (int d = 0; d < 3; d++) {
		struct rs_tensor t = {.dtype = (enum rs_dtype)d, .rows = vocab, .cols = dim,
				      .data = data[d]};
		double ref[5 * 24];
		for (uint32_t i = 0; i < 5; i++)
			for (uint32_t j = 0; j < dim; j++)
				ref[i * dim + j] = test_tensor_value(&t, tokens[i] * dim + j);
		rs_op_embedding(out, &t, tokens, 5);
		check_close("embedding", out, ref, 5 * dim, 0.0, 0.0);
	}
}

static void test_rmsnorm(void)
{
	uint64_t s = 8;
	enum { ROWS = 5, DIM = 300 };
	static float x[ROWS * DIM], w[DIM], out[ROWS * DIM];
	static double ref[ROWS * DIM];
	fill(x, ROWS * DIM, &s, 3.0);
	x[0] = 1000.0f; /* a large outlier in row 0 */
	for (int i = DIM; i < 2 * DIM; i++)
		x[i] = 1e-4f * x[i]; /* a tiny row: eps matters */
	fill(w, DIM, &s, 1.0);
	float eps = 1e-5f;
	for (int r = 0; r < ROWS; r++) {
		double ss = 0.0;
		for (int i = 0; i < DIM; i++)
			ss += (double)x[r * DIM + i] * x[r * DIM + i];
		double scale = 1.0 / sqrt(ss / DIM + (double)eps);
		for (int i = 0; i < DIM; i++)
			ref[r * DIM + i] = x[r * DIM + i] * scale * w[i];
	}
	rs_op_rmsnorm(out, x, w, ROWS, DIM, eps);
	check_close("rmsnorm", out, ref, ROWS * DIM, 1e-6, 1e-5);
	rs_op_rmsnorm(x, x, w, ROWS, DIM, eps); /* in place */
	check_close("rmsnorm in place", x, ref, ROWS * DIM, 1e-6, 1e-5);
}

static void test_rope(void)
{
	uint64_t s = 9;
	struct {
		uint32_t n_heads, head_dim, rope_dim, pos;
		float theta;
	} cases[] = {
		{4, 16, 16, 0, 10000.0f},   {4, 16, 16, 1, 10000.0f},
		{3, 64, 64, 255, 10000.0f}, {2, 32, 16, 1000, 10000.0f},
		{1, 128, 128, 4095, 500000.0f}, {2, 8, 2, 7, 10000.0f},
		{1, 1024, 1024, 77, 10000.0f}, /* more pairs than one table chunk */
	};
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		uint32_t n = cases[c].n_heads * cases[c].head_dim;
		float *x = malloc(n * sizeof(float));
		double *ref = malloc(n * sizeof(double));
		fill(x, n, &s, 1.0);
		for (uint32_t i = 0; i < n; i++)
			ref[i] = x[i];
		for (uint32_t h = 0; h < cases[c].n_heads; h++)
			for (uint32_t i = 0; 2 * i < cases[c].rope_dim; i++) {
				double angle = cases[c].pos *
					       pow(cases[c].theta, -(2.0 * i) / cases[c].rope_dim);
				double *p = ref + h * cases[c].head_dim + 2 * i, a = p[0], b = p[1];
				p[0] = a * cos(angle) - b * sin(angle);
				p[1] = a * sin(angle) + b * cos(angle);
			}
		rs_op_rope(x, cases[c].n_heads, cases[c].head_dim, cases[c].rope_dim, cases[c].pos,
			   cases[c].theta);
		check_close("rope", x, ref, n, 1e-6, 1e-6);

		/* The CUDA backend's table holds rs_op_rope's own cosines and sines: rotating
		 * the pairs (1, 0) yields them, bit for bit; so does a table of one row
		 * starting at the position (the CPU backend's per-step rows). */
		uint32_t pairs = cases[c].rope_dim / 2, hd = cases[c].head_dim;
		float *table = malloc(((size_t)cases[c].pos + 1) * pairs * 2 * sizeof(float));
		float *row = malloc((size_t)pairs * 2 * sizeof(float));
		rs_op_rope_table(table, 0, cases[c].pos + 1, cases[c].rope_dim, cases[c].theta);
		rs_op_rope_table(row, cases[c].pos, 1, cases[c].rope_dim, cases[c].theta);
		for (uint32_t i = 0; i < hd; i++)
			x[i] = i % 2 ? 0.0f : 1.0f;
		rs_op_rope(x, 1, hd, cases[c].rope_dim, cases[c].pos, cases[c].theta);
		CHECK(memcmp(x, table + (size_t)cases[c].pos * pairs * 2, pairs * 2 * sizeof(float)) == 0,
		      "rope table differs from rs_op_rope at position %u", cases[c].pos);
		CHECK(memcmp(x, row, pairs * 2 * sizeof(float)) == 0,
		      "rope row differs from rs_op_rope at position %u", cases[c].pos);

		/* Rotating with the row: rs_op_rope's bits. */
		float *y = malloc(n * sizeof(float));
		fill(x, n, &s, 1.0);
		memcpy(y, x, n * sizeof(float));
		rs_op_rope(x, cases[c].n_heads, hd, cases[c].rope_dim, cases[c].pos, cases[c].theta);
		rs_op_rope_rotate(y, cases[c].n_heads, hd, cases[c].rope_dim, row);
		CHECK(memcmp(x, y, n * sizeof(float)) == 0, "rs_op_rope_rotate differs at position %u",
		      cases[c].pos);
		free(y);
		free(row);
		free(table);
		free(x);
		free(ref);
	}
}

static void test_swiglu_softmax(void)
{
	uint64_t s = 11;
	enum { ROWS = 3, W = 100 };
	float gu[ROWS * 2 * W], out[ROWS * W];
	double ref[ROWS * W];
	fill(gu, ROWS * 2 * W, &s, 8.0);
	/* Gates far out on both sides: exp(-g) overflows float for g < -88.7. */
	gu[5] = -100.0f, gu[6] = 100.0f, gu[7] = -88.0f, gu[8] = 0.0f, gu[9] = -1e-30f;
	for (int r = 0; r < ROWS; r++)
		for (int i = 0; i < W; i++) {
			double g = gu[r * 2 * W + i], u = gu[r * 2 * W + W + i];
			ref[r * W + i] = g / (1.0 + exp(-g)) * u;
		}
	for (int isa = RS_ISA_PORTABLE; isa <= (int)rs_cpu_isa(); isa++) {
		memset(out, 0xff, sizeof(out)); /* NaNs: every output must be written */
		rs_op_swiglu_isa(out, gu, gu + W, ROWS, W, 2 * W, (enum rs_cpu_isa)isa);
		char name[32];
		snprintf(name, sizeof(name), "swiglu isa %d", isa);
		check_close(name, out, ref, ROWS * W, 1e-6, 1e-6);
	}

	uint32_t sizes[] = {1, 2, 97, 32000};
	for (size_t c = 0; c < 4; c++) {
		uint32_t n = sizes[c];
		float *x = malloc(n * sizeof(float));
		double *sref = malloc(n * sizeof(double)), max = -INFINITY, sum = 0.0;
		fill(x, n, &s, 30.0); /* wide logits: overflow without max-subtraction */
		x[n - 1] = 80.0f;
		for (uint32_t i = 0; i < n; i++)
			max = x[i] > max ? x[i] : max;
		for (uint32_t i = 0; i < n; i++)
			sum += sref[i] = exp(x[i] - max);
		for (uint32_t i = 0; i < n; i++)
			sref[i] /= sum;
		rs_op_softmax(x, n);
		check_close("softmax", x, sref, n, 1e-7, 1e-5);
		free(x), free(sref);
	}
}

/* Paged attention over scattered blocks, grouped-query, against contiguous float64, on
 * every ISA this CPU runs and both cache dtypes: head sizes that are and are not
 * multiples of the vector width (136: more than the 128 the AVX-512 kernel keeps in
 * registers), block and context lengths with tails. With an f16 cache the store must
 * hold exactly rs_f32_to_f16 of each key and value (tested above against a nearest-value
 * search), and the reference attends over those f16 values: only the f32 arithmetic of
 * the kernel is left, under the same tolerance as with an f32 cache. */
static void attention_case(uint32_t n_heads, uint32_t n_kv_heads, uint32_t hd, uint32_t bs,
			   uint32_t start, enum rs_dtype kv_dtype, enum rs_cpu_isa isa)
{
	uint64_t s = 12;
	const uint32_t pool = 20;
	const uint32_t kv_dim = n_kv_heads * hd, q_dim = n_heads * hd;
	const uint32_t n_tok = 6, total = start + n_tok;
	const size_t elem = rs_dtype_size(kv_dtype), cache_elems = (size_t)pool * bs * kv_dim;
	uint32_t table[20]; /* scattered: 7 is prime to the pool size */
	for (uint32_t b = 0; b < pool; b++)
		table[b] = (b * 7 + 13) % pool;
	/* Garbage elsewhere must not be read: random f32, or random finite f16 patterns. */
	void *kc = malloc(cache_elems * elem), *vc = malloc(cache_elems * elem);
	if (kv_dtype == RS_DTYPE_F16) {
		for (size_t i = 0; i < cache_elems; i++) {
			((uint16_t *)kc)[i] = (uint16_t)test_rand(&s) & 0xbbff;
			((uint16_t *)vc)[i] = (uint16_t)test_rand(&s) & 0xbbff;
		}
	} else {
		fill(kc, cache_elems, &s, 5.0);
		fill(vc, cache_elems, &s, 5.0);
	}
	struct rs_kv_layer kv = {.k = kc, .v = vc, .dtype = kv_dtype, .block_size = bs,
				 .n_kv_heads = n_kv_heads, .head_dim = hd};
	/* Contiguous truth for all positions; store them through rs_op_kv_store with a
	 * strided source (the engine's fused q|k|v rows). */
	float *keys = malloc(sizeof(float) * total * kv_dim);
	float *vals = malloc(sizeof(float) * total * kv_dim);
	fill(keys, (size_t)total * kv_dim, &s, 1.0);
	fill(vals, (size_t)total * kv_dim, &s, 1.0);
	/* Some keys and values that round exactly halfway, f16 subnormals and zeros. */
	keys[0] = 1.0f + 0x1p-11f, vals[0] = -(1.0f + 3 * 0x1p-11f);
	keys[1] = 3e-6f, vals[1] = -0.0f;
	size_t stride = 3 * kv_dim;
	float *rows = calloc((size_t)total * stride, sizeof(float));
	for (uint32_t p = 0; p < total; p++) {
		memcpy(rows + p * stride, keys + p * kv_dim, kv_dim * sizeof(float));
		memcpy(rows + p * stride + kv_dim, vals + p * kv_dim, kv_dim * sizeof(float));
	}
	rs_op_kv_store_isa(&kv, table, 0, start, rows, rows + kv_dim, stride, isa);
	rs_op_kv_store_isa(&kv, table, start, n_tok, rows + start * stride,
			   rows + start * stride + kv_dim, stride, isa);
	/* What the cache holds, as double: the reference attends over these. */
	double *kref = malloc(sizeof(double) * total * kv_dim);
	double *vref = malloc(sizeof(double) * total * kv_dim);
	int misplaced = 0;
	for (uint32_t p = 0; p < total; p++)
		for (uint32_t d = 0; d < kv_dim; d++) {
			size_t off = ((size_t)table[p / bs] * bs + p % bs) * kv_dim + d, i = p * kv_dim + d;
			if (kv_dtype == RS_DTYPE_F16) {
				uint16_t kh = ((uint16_t *)kc)[off], vh = ((uint16_t *)vc)[off];
				misplaced += kh != rs_f32_to_f16(keys[i]) || vh != rs_f32_to_f16(vals[i]);
				kref[i] = test_f16_value(kh);
				vref[i] = test_f16_value(vh);
			} else {
				misplaced += ((float *)kc)[off] != keys[i] || ((float *)vc)[off] != vals[i];
				kref[i] = keys[i];
				vref[i] = vals[i];
			}
		}
	CHECK(misplaced == 0, "kv_store %s isa %d: %d values misplaced or misrounded",
	      rs_dtype_name(kv_dtype), isa, misplaced);

	float *q = malloc(sizeof(float) * n_tok * q_dim), *out = calloc(n_tok * q_dim, sizeof(float));
	double *ref = calloc(n_tok * q_dim, sizeof(double));
	float *scratch = malloc(sizeof(float) * rs_op_attention_scratch(n_heads, hd, total));
	double *sc = malloc(sizeof(double) * total);
	fill(q, (size_t)n_tok * q_dim, &s, 2.0);
	for (uint32_t i = 0; i < n_tok; i++)
		for (uint32_t h = 0; h < n_heads; h++) {
			uint32_t kvh = h / (n_heads / n_kv_heads), ctx = start + i + 1;
			double max = -INFINITY, sum = 0.0;
			for (uint32_t j = 0; j < ctx; j++) {
				double dot = 0.0;
				for (uint32_t d = 0; d < hd; d++)
					dot += (double)q[i * q_dim + h * hd + d] * kref[j * kv_dim + kvh * hd + d];
				sc[j] = dot / sqrt(hd);
				max = sc[j] > max ? sc[j] : max;
			}
			for (uint32_t j = 0; j < ctx; j++)
				sum += sc[j] = exp(sc[j] - max);
			for (uint32_t d = 0; d < hd; d++) {
				double acc = 0.0;
				for (uint32_t j = 0; j < ctx; j++)
					acc += sc[j] / sum * vref[j * kv_dim + kvh * hd + d];
				ref[i * q_dim + h * hd + d] = acc;
			}
		}
	for (uint32_t i = 0; i < n_tok; i++)
		rs_op_attention_isa(out + i * q_dim, q + i * q_dim, &kv, table, start + i, n_heads,
				    scratch, isa);
	char what[80];
	snprintf(what, sizeof(what), "attention %s isa %d heads %u/%u hd %u bs %u ctx %u",
		 rs_dtype_name(kv_dtype), isa, n_heads, n_kv_heads, hd, bs, total);
	check_close(what, out, ref, (size_t)n_tok * q_dim, 1e-6, 1e-5);
	free(kc), free(vc), free(keys), free(vals), free(rows), free(kref), free(vref);
	free(q), free(out), free(ref), free(scratch), free(sc);
}

static void test_attention(void)
{
	enum rs_dtype dtypes[] = {RS_DTYPE_F32, RS_DTYPE_F16};
	for (int isa = RS_ISA_PORTABLE; isa <= (int)rs_cpu_isa(); isa++)
		for (int d = 0; d < 2; d++) {
			enum rs_cpu_isa i = (enum rs_cpu_isa)isa;
			attention_case(6, 2, 16, 4, 9, dtypes[d], i);
			attention_case(6, 6, 48, 16, 40, dtypes[d], i);
			attention_case(4, 1, 20, 3, 17, dtypes[d], i);
			attention_case(2, 2, 136, 7, 30, dtypes[d], i);
			/* The head sizes with kernels of their own (48 above). */
			attention_case(8, 2, 64, 16, 70, dtypes[d], i);
			attention_case(4, 4, 128, 5, 23, dtypes[d], i);
			attention_case(3, 3, 8, 1, 0, dtypes[d], i);
		}
}

int main(void)
{
	test_decode();
	test_round();
	test_embedding();
	test_rmsnorm();
	test_rope();
	test_swiglu_softmax();
	test_attention();
	TEST_END();
}
