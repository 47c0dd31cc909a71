/* The CUDA backend against the CPU (never against itself). Skips (77) without a CUDA
 * build or without a device.
 *   - every kernel of kernels/cuda/cuda_ops.h against its CPU twin in ops.h or a float64
 *     reference: embedding, RMSNorm (with row gather), RoPE, SwiGLU, the GEMM wrapper
 *     (f32/f16/bf16, with and without the fused residual; with RMSNorm, SwiGLU, or RoPE
 *     and the KV store fused), KV store, paged attention
 *     (GQA, MQA, MHA; head_dim 16..256; block sizes 3..16; f32 and f16 output), sampling
 *     (greedy, temperature, top-k, top-p, ties, -inf, on 1000 and 32000 tokens);
 *   - the whole forward pass: logits of a CUDA and a CPU engine on the same random GQA
 *     model, f32, f16 and bf16 weights, over a mixed prefill/decode batch;
 *   - greedy decoding, 32 steps of 8 sequences (cuBLAS) and of 3 (our GEMVs), CUDA vs
 *     CPU token by token (teacher forced: both get the CPU's tokens; a different choice
 *     is allowed only where the CPU's top-2 logit gap is within the logit tolerance), on
 *     two lanes;
 *   - quantized models (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K, Q4_K_M from our quantizer): logits
 *     CUDA vs CPU on the same quantized weights (tolerance at quant_rms_tol), greedy
 *     ids of Q8_0 and Q4_K_M as above, through the GEMV and the f16 panels;
 *   - zero-copy: out_token inside a cudaHostRegister'ed memfd mapping, read back through
 *     a second mapping of the same memfd; registration errors.
 *
 * Tolerances (tol + |ref| * eps): f32 kernels differ from the CPU only by summation order
 * (1e-5 relative). A GEMM input rounded to f16 carries a relative error of at most 2^-11
 * (4.9e-4), to bf16 2^-8 (3.9e-3): outputs of one rounding are checked with eps 1e-3 and
 * 8e-3. Whole-model logits pass through a dozen such roundings, partly cancelling, so the
 * logit error is bounded relative to the logits' RMS: 1e-2 (f16) and 5e-2 (bf16), 1e-4 for
 * f32 weights (cuBLAS SGEMM vs OpenBLAS). An emulation on the CPU (the CPU ops with every
 * GEMM input rounded to f16/bf16, this file's model shape, 4 seeds) gave maximum errors of
 * 2.1e-3 and 1.7e-2 of the RMS: margins of 5x and 3x.
 * The matmul check allows K * 1e-6 absolute: fp32 accumulation of K <= 1048 products of
 * size <= 1 (a sum of typical size 6 to 11) stays far below it, while a wrong rounding of
 * an input (unrounded reference) would show as ~3e-3. */
#include <stdio.h>

#ifndef RS_HAVE_CUDA_BACKEND
int main(void)
{
	printf("CUDA backend not built\n");
	return 77;
}
#else

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cuda_runtime_api.h>

#include "kernels/cpu/ops.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/engine/engine.h"
#include "kernels/model/dtype.h"
#include "kernels/model/model_quantize.h"
#include "kernels/model/model_random.h"
#include "tests/engine_test.h"

static void *dev_alloc(size_t bytes)
{
	void *p = NULL;
	if (cudaMalloc(&p, bytes ? bytes : 16) != cudaSuccess) {
		fprintf(stderr, "cudaMalloc(%zu) failed\n", bytes);
		exit(1);
	}
	return p;
}

static void *to_dev(const void *host, size_t bytes)
{
	void *d = dev_alloc(bytes);
	if (cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice) != cudaSuccess)
		exit(1);
	return d;
}

/* Wait for the device and copy back; fails the test on any CUDA error. */
static void from_dev(void *host, const void *dev, size_t bytes)
{
	cudaError_t e = cudaDeviceSynchronize();
	if (e == cudaSuccess)
		e = cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost);
	if (e != cudaSuccess) {
		fprintf(stderr, "CUDA error: %s\n", cudaGetErrorString(e));
		exit(1);
	}
}

static float *rand_floats(size_t n, double scale, uint64_t *s)
{
	float *x = malloc(n * sizeof(float));
	for (size_t i = 0; i < n; i++)
		x[i] = (float)(test_uniform(s) * scale);
	return x;
}

static double *to_double(const float *x, size_t n)
{
	double *d = malloc(n * sizeof(double));
	for (size_t i = 0; i < n; i++)
		d[i] = x[i];
	return d;
}

/* Values of n elements of dtype as float (for the f16/bf16 outputs of kernels). */
static void decode(float *out, const void *in, enum rs_dtype dtype, size_t n)
{
	rs_convert_to_f32(out, in, dtype, n);
}

/* x rounded to dtype and back: the value a GEMM sees. */
static double round_to(float x, enum rs_dtype dtype)
{
	if (dtype == RS_DTYPE_F16)
		return test_f16_value(rs_f32_to_f16(x));
	if (dtype == RS_DTYPE_BF16)
		return test_bf16_value(rs_f32_to_bf16(x));
	return x;
}

/* Relative rounding of one conversion to dtype, for tolerances. */
static double dtype_eps(enum rs_dtype dtype)
{
	return dtype == RS_DTYPE_F16 ? 1e-3 : dtype == RS_DTYPE_BF16 ? 8e-3 : 1e-5;
}

static const enum rs_dtype DTYPES[3] = {RS_DTYPE_F32, RS_DTYPE_F16, RS_DTYPE_BF16};

static void test_embedding(void)
{
	uint64_t s = 1;
	enum { VOCAB = 50, DIM = 77, N = 9 };
	float *table32 = rand_floats(VOCAB * DIM, 2.0, &s);
	uint16_t table16[VOCAB * DIM];
	uint32_t tokens[N] = {0, 49, 3, 3, 17, 48, 1, 25, 0};
	for (int k = 0; k < 3; k++) {
		enum rs_dtype dt = DTYPES[k];
		const void *host = table32;
		if (dt != RS_DTYPE_F32) {
			for (int i = 0; i < VOCAB * DIM; i++)
				table16[i] = dt == RS_DTYPE_F16 ? rs_f32_to_f16(table32[i])
								: rs_f32_to_bf16(table32[i]);
			host = table16;
		}
		struct rs_tensor t = {.dtype = dt, .rows = VOCAB, .cols = DIM, .data = host};
		float want[N * DIM], got[N * DIM];
		rs_op_embedding(want, &t, tokens, N);
		void *d_table = to_dev(host, VOCAB * DIM * rs_dtype_size(dt));
		uint32_t *d_tokens = to_dev(tokens, sizeof(tokens));
		float *d_out = dev_alloc(sizeof(got));
		CHECK(rs_cuda_embedding(d_out, d_table, dt, d_tokens, N, DIM, 0) == 0, "launch");
		from_dev(got, d_out, sizeof(got));
		CHECK(memcmp(got, want, sizeof(got)) == 0, "embedding %s differs",
		      rs_dtype_name(dt));
		cudaFree(d_table), cudaFree(d_tokens), cudaFree(d_out);
	}
	free(table32);
}

static void test_rmsnorm(void)
{
	uint64_t s = 2;
	enum { ROWS = 7, DIM = 333 };
	float *x = rand_floats(ROWS * DIM, 3.0, &s), *w = rand_floats(DIM, 1.0, &s);
	uint32_t rows[4] = {6, 0, 3, 3};
	float *d_x = to_dev(x, ROWS * DIM * sizeof(float)), *d_w = to_dev(w, DIM * sizeof(float));
	uint32_t *d_rows = to_dev(rows, sizeof(rows));
	for (int gather = 0; gather < 2; gather++) {
		uint32_t n = gather ? 4 : ROWS;
		/* float64 reference */
		double ref[ROWS * DIM];
		for (uint32_t r = 0; r < n; r++) {
			const float *xr = x + (size_t)(gather ? rows[r] : r) * DIM;
			double ss = 0;
			for (int i = 0; i < DIM; i++)
				ss += (double)xr[i] * xr[i];
			double scale = 1.0 / sqrt(ss / DIM + 1e-5);
			for (int i = 0; i < DIM; i++)
				ref[r * DIM + i] = xr[i] * scale * w[i];
		}
		for (int k = 0; k < 3; k++) {
			enum rs_dtype dt = DTYPES[k];
			void *d_out = dev_alloc(ROWS * DIM * 4);
			uint8_t raw[ROWS * DIM * 4];
			float got[ROWS * DIM];
			CHECK(rs_cuda_rmsnorm(d_out, dt, d_x, gather ? d_rows : NULL, d_w, n, DIM,
					      1e-5f, 0) == 0,
			      "launch");
			from_dev(raw, d_out, n * DIM * rs_dtype_size(dt));
			decode(got, raw, dt, n * DIM);
			char name[64];
			snprintf(name, sizeof(name), "rmsnorm %s gather %d", rs_dtype_name(dt),
				 gather);
			check_close(name, got, ref, n * DIM, 1e-6, dtype_eps(dt));
			cudaFree(d_out);
		}
	}
	/* f32 output against the CPU op itself (same arithmetic). */
	float want[ROWS * DIM], got[ROWS * DIM];
	rs_op_rmsnorm(want, x, w, ROWS, DIM, 1e-5f);
	float *d_out = dev_alloc(sizeof(got));
	rs_cuda_rmsnorm(d_out, RS_DTYPE_F32, d_x, NULL, d_w, ROWS, DIM, 1e-5f, 0);
	from_dev(got, d_out, sizeof(got));
	double *wd = to_double(want, ROWS * DIM);
	check_close("rmsnorm vs rs_op_rmsnorm", got, wd, ROWS * DIM, 1e-7, 1e-6);
	free(wd), free(x), free(w);
	cudaFree(d_out), cudaFree(d_x), cudaFree(d_w), cudaFree(d_rows);
}

/* The device rotation table, [positions][pairs] of (cos, sin), from rs_op_rope_table. */
static float *rope_table_dev(uint32_t n_pos, uint32_t rope_dim)
{
	size_t floats = (size_t)n_pos * (rope_dim / 2) * 2;
	float *table = malloc(floats * sizeof(float));
	rs_op_rope_table(table, 0, n_pos, rope_dim, 10000.0f);
	float *d_table = to_dev(table, floats * sizeof(float));
	free(table);
	return d_table;
}

/* The fused rope + KV store against rs_op_rope on the q and k heads: the q part of each
 * row rotated in place, the k part of the rows untouched, cache slot slots[t] holding
 * the token's rotated keys and its values. Rows `extra` floats longer than q|k|v (4-byte
 * aligned only when odd), positions up to 40000. */
static void test_rope_kv_store_shape(uint32_t heads, uint32_t kv_heads, uint32_t hd, uint32_t rope,
				     uint32_t extra)
{
	uint64_t s = 13 + heads;
	enum { T = 7, CACHE_ROWS = 16, MAX_POS = 40001 };
	const uint32_t pos[T] = {0, 1, 7, 100, 2047, 40000, 9};
	const uint32_t slots[T] = {5, 0, 15, 3, 8, 11, 2};
	uint32_t q_dim = heads * hd, kv_dim = kv_heads * hd, stride = q_dim + 2 * kv_dim + extra;
	size_t cache = (size_t)CACHE_ROWS * kv_dim;
	float *rows = rand_floats((size_t)T * stride, 1.0, &s);
	float *want = malloc(sizeof(float) * T * stride),
	      *rotated = malloc(sizeof(float) * T * stride);
	float *want_k = calloc(cache, 4), *want_v = calloc(cache, 4);
	memcpy(want, rows, sizeof(float) * T * stride);
	memcpy(rotated, rows, sizeof(float) * T * stride);
	for (uint32_t t = 0; t < T; t++) {
		float *r = rotated + (size_t)t * stride;
		rs_op_rope(want + (size_t)t * stride, heads, hd, rope, pos[t], 10000.0f);
		rs_op_rope(r, heads + kv_heads, hd, rope, pos[t], 10000.0f);
		memcpy(want_k + (size_t)slots[t] * kv_dim, r + q_dim, kv_dim * 4);
		memcpy(want_v + (size_t)slots[t] * kv_dim, r + q_dim + kv_dim, kv_dim * 4);
	}
	struct rs_cuda_kv_layer gpu = {.k = dev_alloc(cache * 4),
				       .v = dev_alloc(cache * 4),
				       .block_size = 4,
				       .n_kv_heads = kv_heads,
				       .head_dim = hd};
	cudaMemset(gpu.k, 0, cache * 4);
	cudaMemset(gpu.v, 0, cache * 4);
	float *d_rows = to_dev(rows, sizeof(float) * T * stride),
	      *d_table = rope_table_dev(MAX_POS, rope);
	uint32_t *d_pos = to_dev(pos, sizeof(pos)), *d_slots = to_dev(slots, sizeof(slots));
	CHECK(rs_cuda_rope_kv_store(d_rows, stride, d_pos, d_slots, T, heads, &gpu, rope, d_table,
				    0) == 0,
	      "launch");
	float *got = malloc(sizeof(float) * T * stride), *k = malloc(cache * 4),
	      *v = malloc(cache * 4);
	from_dev(got, d_rows, sizeof(float) * T * stride);
	from_dev(k, gpu.k, cache * 4);
	from_dev(v, gpu.v, cache * 4);
	/* The CPU's sines and cosines, the same unfused products: equal but for a compiler
	 * that contracted the CPU's into FMAs. */
	double *wd = to_double(want, (size_t)T * stride), *kd = to_double(want_k, cache);
	char name[96];
	snprintf(name, sizeof(name), "rope_kv_store %u/%u hd %u rope %u: rows", heads, kv_heads, hd,
		 rope);
	check_close(name, got, wd, (size_t)T * stride, 1e-6, 1e-6);
	snprintf(name, sizeof(name), "rope_kv_store %u/%u hd %u rope %u: keys", heads, kv_heads, hd,
		 rope);
	check_close(name, k, kd, cache, 1e-6, 1e-6);
	CHECK(memcmp(v, want_v, cache * 4) == 0, "rope_kv_store %u/%u hd %u: values differ", heads,
	      kv_heads, hd);
	free(rows), free(want), free(rotated), free(want_k), free(want_v), free(got), free(k);
	free(v), free(wd), free(kd);
	cudaFree(gpu.k), cudaFree(gpu.v), cudaFree(d_rows), cudaFree(d_table), cudaFree(d_pos);
	cudaFree(d_slots);
}

static void test_rope_kv_store(void)
{
	test_rope_kv_store_shape(6, 2, 32, 24, 3); /* partial rotation, odd row length */
	test_rope_kv_store_shape(5, 5, 16, 16, 0); /* MHA */
	/* Past one pass of the kernel's 256 threads and its 4-item batches: 2048 query
	 * pairs, 1024 key and value elements per token. */
	test_rope_kv_store_shape(32, 8, 128, 128, 0);
}

static void test_swiglu(void)
{
	uint64_t s = 4;
	enum { ROWS = 5, W = 300 };
	float *gu = rand_floats(ROWS * 2 * W, 4.0, &s);
	double ref[ROWS * W];
	for (int r = 0; r < ROWS; r++)
		for (int i = 0; i < W; i++) {
			double g = gu[r * 2 * W + i], u = gu[r * 2 * W + W + i];
			ref[r * W + i] = g / (1.0 + exp(-g)) * u;
		}
	float *d_gu = to_dev(gu, ROWS * 2 * W * sizeof(float));
	for (int k = 0; k < 3; k++) {
		enum rs_dtype dt = DTYPES[k];
		void *d_out = dev_alloc(ROWS * W * 4);
		uint8_t raw[ROWS * W * 4];
		float got[ROWS * W];
		CHECK(rs_cuda_swiglu(d_out, dt, d_gu, ROWS, W, 0) == 0, "launch");
		from_dev(raw, d_out, ROWS * W * rs_dtype_size(dt));
		decode(got, raw, dt, ROWS * W);
		char name[64];
		snprintf(name, sizeof(name), "swiglu %s", rs_dtype_name(dt));
		check_close(name, got, ref, ROWS * W, 1e-6, dtype_eps(dt));
		cudaFree(d_out);
	}
	free(gu);
	cudaFree(d_gu);
}

/* The GEMM wrapper against float64 over the values the GEMM sees (inputs rounded to
 * dtype). fp32 accumulation over k terms of size <= 1: error below k * 2^-24 * sum|terms|. */
/* One product against float64 over the inputs rounded to dtype. */
static void check_matmul(cublasHandle_t h, enum rs_dtype dt, uint32_t m, uint32_t N, uint32_t K,
			 int acc, uint64_t *s)
{
	float *x = rand_floats((size_t)m * K, 1.0, s);
	float *w = rand_floats((size_t)N * K, 1.0, s);
	float *y0 = rand_floats((size_t)m * N, 1.0, s);
	double *ref = malloc(sizeof(double) * m * N), *wr = malloc(sizeof(double) * K);
	double *xr = malloc(sizeof(double) * m * K);
	for (size_t i = 0; i < (size_t)m * K; i++)
		xr[i] = round_to(x[i], dt);
	for (uint32_t n = 0; n < N; n++) {
		for (uint32_t i = 0; i < K; i++)
			wr[i] = round_to(w[(size_t)n * K + i], dt);
		for (uint32_t r = 0; r < m; r++) {
			double sum = acc ? y0[(size_t)r * N + n] : 0.0;
			for (uint32_t i = 0; i < K; i++)
				sum += xr[(size_t)r * K + i] * wr[i];
			ref[(size_t)r * N + n] = sum;
		}
	}
	float *d_x32 = to_dev(x, sizeof(float) * m * K);
	float *d_w32 = to_dev(w, sizeof(float) * N * K);
	void *d_x = dev_alloc(4 * (size_t)m * K), *d_w = dev_alloc(4 * (size_t)N * K);
	rs_cuda_convert(d_x, dt, d_x32, (size_t)m * K, 0);
	rs_cuda_convert(d_w, dt, d_w32, (size_t)N * K, 0);
	/* Our GEMV reads the weights before its programmatic-launch wait: they must not come
	 * from a kernel still running (the backend uploads them with cudaMemcpy). */
	cudaDeviceSynchronize();
	float *d_y = to_dev(y0, sizeof(float) * m * N);
	CHECK(rs_cuda_matmul(h, d_y, d_x, d_w, dt, m, N, K, acc) == 0, "gemm");
	float *got = malloc(sizeof(float) * m * N);
	from_dev(got, d_y, sizeof(float) * m * N);
	char name[80];
	snprintf(name, sizeof(name), "matmul %s m=%u n=%u k=%u acc=%d", rs_dtype_name(dt), m, N, K,
		 acc);
	check_close(name, got, ref, (size_t)m * N, K * 1e-6, 1e-5);
	free(x), free(w), free(y0), free(ref), free(wr), free(xr), free(got);
	cudaFree(d_x32), cudaFree(d_w32), cudaFree(d_x), cudaFree(d_w), cudaFree(d_y);
}

static void test_matmul(void)
{
	uint64_t s = 5;
	/* Rows: the weight-streaming kernel's row counts (1, 2, up to 4 with float input
	 * rows, up to 8 and 16 with rows in the weights' dtype) and cuBLAS past them. K: 1048
	 * fills 16-byte pieces in every dtype (that kernel), 300 only in f32 (f16/bf16:
	 * cuBLAS). With 131 columns the kernel splits k 8 ways, a lane getting one or two
	 * pieces. */
	const uint32_t ms[] = {1, 2, 3, 7, 8, 9, 16, 17, 64}, ks[] = {300, 1048};
	cublasHandle_t h;
	CHECK(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS, "cublasCreate");
	for (int di = 0; di < 3; di++) {
		for (size_t ki = 0; ki < sizeof(ks) / sizeof(ks[0]); ki++)
			for (size_t mi = 0; mi < sizeof(ms) / sizeof(ms[0]); mi++)
				for (int acc = 0; acc < 2; acc++)
					check_matmul(h, DTYPES[di], ms[mi], 131, ks[ki], acc, &s);
		/* 8194 columns: unsplit, so each lane walks 131 f16 pieces (65 f32) in
		 * steps of 64: the pipelined loop's later iterations, its loads ahead, its
		 * tail; and a last column group with 2 of 4 columns. */
		check_matmul(h, DTYPES[di], 1, 8194, 1048, 1, &s);
		check_matmul(h, DTYPES[di], 3, 8194, 1048, 0, &s);
		check_matmul(h, DTYPES[di], 13, 8194, 1048, 1, &s);
	}
	cublasDestroy(h);
}

/* RMSNorm fused into the product (our kernel) or before it (cuBLAS), against the CPU's
 * normalization, the rounding to dtype, and a float64 product. The device's sum of
 * squares runs in another order: its float scale may differ by an ulp, which can move an
 * input across a rounding boundary of f16/bf16, by one ulp of that input (the normalized
 * inputs here stay below 2, where a bf16 ulp is 2^-7 at most; times |w| <= 1): twice
 * that, 2^-6, is allowed per output on top of the product's K * 1e-6. */
static void test_norm_matmul(void)
{
	uint64_t s = 17;
	enum { N = 75, X_ROWS = 16 };
	const uint32_t ms[] = {1, 3, 4, 6, 9, 16}, ks[] = {300, 1048};
	const uint32_t gather[16] = {11, 0, 5, 5, 2, 9, 1, 7, 3, 4, 10, 6, 8, 0, 11, 2};
	cublasHandle_t h;
	CHECK(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS, "cublasCreate");
	for (int di = 0; di < 3; di++)
		for (size_t ki = 0; ki < 2; ki++)
			for (size_t mi = 0; mi < sizeof(ms) / sizeof(ms[0]); mi++)
				for (int g = 0; g < 2; g++) {
					enum rs_dtype dt = DTYPES[di];
					uint32_t m = ms[mi], K = ks[ki];
					float *x = rand_floats((size_t)X_ROWS * K, 2.0, &s);
					float *nw = rand_floats(K, 1.0, &s),
					      *w = rand_floats((size_t)N * K, 1.0, &s);
					float *normed = malloc(sizeof(float) * K);
					double *ref = malloc(sizeof(double) * m * N);
					for (uint32_t r = 0; r < m; r++) {
						rs_op_rmsnorm(normed,
							      x + (size_t)(g ? gather[r] : r) * K,
							      nw, 1, K, 1e-5f);
						for (int n = 0; n < N; n++) {
							double sum = 0.0;
							for (uint32_t i = 0; i < K; i++)
								sum += round_to(normed[i], dt) *
								       round_to(w[n * K + i], dt);
							ref[r * N + n] = sum;
						}
					}
					float *d_x = to_dev(x, sizeof(float) * X_ROWS * K),
					      *d_nw = to_dev(nw, sizeof(float) * K);
					float *d_w32 = to_dev(w, sizeof(float) * N * K);
					uint32_t *d_rows = to_dev(gather, sizeof(gather));
					void *d_w = dev_alloc(4 * (size_t)N * K),
					     *d_xb = dev_alloc(4 * (size_t)m * K);
					float *d_y = dev_alloc(sizeof(float) * m * N);
					rs_cuda_convert(d_w, dt, d_w32, (size_t)N * K, 0);
					cudaDeviceSynchronize(); /* weights: see check_matmul */
					CHECK(rs_cuda_norm_matmul(h, d_y, d_x, g ? d_rows : NULL,
								  d_nw, 1e-5f, d_xb, d_w, dt, m, N,
								  K, 0) == 0,
					      "norm_matmul");
					float *got = malloc(sizeof(float) * m * N);
					from_dev(got, d_y, sizeof(float) * m * N);
					char name[80];
					snprintf(name, sizeof(name),
						 "norm_matmul %s m=%u k=%u gather=%d",
						 rs_dtype_name(dt), m, K, g);
					double flip = dt == RS_DTYPE_F32 ? 0.0 : 4.0 / 256;
					check_close(name, got, ref, (size_t)m * N, K * 1e-6 + flip,
						    1e-5);
					free(x), free(nw), free(w), free(normed), free(ref),
					    free(got);
					cudaFree(d_x), cudaFree(d_nw), cudaFree(d_w32),
					    cudaFree(d_rows);
					cudaFree(d_w), cudaFree(d_xb), cudaFree(d_y);
				}
	cublasDestroy(h);
}

/* RMSNorm, the [q|k|v] product, RoPE and the KV store in one call (in our kernel's
 * epilogue up to 16 rows when rows are whole 16-byte pieces; two launches past that),
 * against the CPU: the norm and rounding to dtype as in test_norm_matmul, a float64
 * product, rotated in float64 by rs_op_rope_table's cosines and sines. A rotated output
 * mixes two products: twice test_norm_matmul's allowance. The same call is also
 * compared with the two-launch path (rs_cuda_norm_matmul, rs_cuda_rope_kv_store), which
 * the tests above check against the CPU: the epilogue must give the same bits. */
static void check_qkv_matmul(cublasHandle_t h, enum rs_dtype dt, uint32_t m, uint32_t K,
			     uint32_t heads, uint32_t kv_heads, uint32_t hd, uint32_t rope,
			     uint64_t *s)
{
	enum { ROWS = 17, CACHE_ROWS = 20, MAX_POS = 3000 };
	/* Row 0 not at position 0 (an identity rotation would check nothing at m = 1); every
	 * row its own slot (rows that shared one would leave the cache to the order of the
	 * writes). */
	uint32_t pos[ROWS] = {17, 2999, 1, 0, 640, 5};
	const uint32_t slots[ROWS] = {9, 2, 15, 0, 7, 4, 19, 1, 12, 5, 18, 3, 16, 6, 11, 8, 13};
	for (uint32_t r = 6; r < ROWS; r++)
		pos[r] = (17 + 577 * r) % MAX_POS;
	CHECK(m <= ROWS, "check_qkv_matmul takes at most %d rows", ROWS);
	uint32_t q_dim = heads * hd, kv_dim = kv_heads * hd, N = q_dim + 2 * kv_dim;
	uint32_t pairs = rope / 2;
	size_t cache = (size_t)CACHE_ROWS * kv_dim;
	float *x = rand_floats((size_t)m * K, 2.0, s), *nw = rand_floats(K, 1.0, s);
	float *w = rand_floats((size_t)N * K, 1.0, s), *normed = malloc(sizeof(float) * K);
	float *table = malloc(sizeof(float) * MAX_POS * pairs * 2);
	rs_op_rope_table(table, 0, MAX_POS, rope, 10000.0f);
	double *ref = malloc(sizeof(double) * m * N), *ref_k = calloc(cache, sizeof(double));
	double *ref_v = calloc(cache, sizeof(double));
	for (uint32_t r = 0; r < m; r++) {
		double *row = ref + (size_t)r * N;
		rs_op_rmsnorm(normed, x + (size_t)r * K, nw, 1, K, 1e-5f);
		for (uint32_t n = 0; n < N; n++) {
			double sum = 0.0;
			for (uint32_t i = 0; i < K; i++)
				sum += round_to(normed[i], dt) * round_to(w[(size_t)n * K + i], dt);
			row[n] = sum;
		}
		for (uint32_t head = 0; head < heads + kv_heads; head++) /* q, then k */
			for (uint32_t i = 0; i < pairs; i++) {
				const float *cs = table + ((size_t)pos[r] * pairs + i) * 2;
				double *p = row + (size_t)head * hd + 2 * i, a = p[0], b = p[1];
				p[0] = a * cs[0] - b * cs[1];
				p[1] = a * cs[1] + b * cs[0];
			}
		for (uint32_t e = 0; e < kv_dim; e++) {
			ref_k[(size_t)slots[r] * kv_dim + e] = row[q_dim + e];
			ref_v[(size_t)slots[r] * kv_dim + e] = row[q_dim + kv_dim + e];
		}
	}
	float *d_x = to_dev(x, sizeof(float) * m * K), *d_nw = to_dev(nw, sizeof(float) * K);
	float *d_w32 = to_dev(w, sizeof(float) * N * K);
	float *d_table = to_dev(table, sizeof(float) * MAX_POS * pairs * 2);
	uint32_t *d_pos = to_dev(pos, sizeof(pos)), *d_slots = to_dev(slots, sizeof(slots));
	void *d_w = dev_alloc(4 * (size_t)N * K), *d_xb = dev_alloc(4 * (size_t)m * K);
	rs_cuda_convert(d_w, dt, d_w32, (size_t)N * K, 0);
	cudaDeviceSynchronize();     /* weights: see check_matmul */
	float *got[2], *k[2], *v[2]; /* [0]: one call, [1]: two launches */
	for (int path = 0; path < 2; path++) {
		float *d_y = dev_alloc(sizeof(float) * m * N);
		struct rs_cuda_kv_layer kv = {.k = dev_alloc(cache * 4),
					      .v = dev_alloc(cache * 4),
					      .block_size = 4,
					      .n_kv_heads = kv_heads,
					      .head_dim = hd};
		cudaMemset(kv.k, 0, cache * 4);
		cudaMemset(kv.v, 0, cache * 4);
		if (path == 0)
			CHECK(rs_cuda_qkv_matmul(h, d_y, d_x, d_nw, 1e-5f, d_xb, d_w, dt, m, K,
						 heads, &kv, rope, d_table, d_pos, d_slots) == 0,
			      "qkv_matmul");
		else
			CHECK(rs_cuda_norm_matmul(h, d_y, d_x, NULL, d_nw, 1e-5f, d_xb, d_w, dt, m,
						  N, K, 0) == 0 &&
				  rs_cuda_rope_kv_store(d_y, N, d_pos, d_slots, m, heads, &kv, rope,
							d_table, 0) == 0,
			      "norm_matmul + rope_kv_store");
		got[path] = malloc(sizeof(float) * m * N);
		k[path] = malloc(cache * 4);
		v[path] = malloc(cache * 4);
		from_dev(got[path], d_y, sizeof(float) * m * N);
		from_dev(k[path], kv.k, cache * 4);
		from_dev(v[path], kv.v, cache * 4);
		cudaFree(d_y), cudaFree(kv.k), cudaFree(kv.v);
	}
	char name[96];
	snprintf(name, sizeof(name), "qkv_matmul %s m=%u k=%u %u/%u hd %u rope %u",
		 rs_dtype_name(dt), m, K, heads, kv_heads, hd, rope);
	double tol = 2 * (K * 1e-6 + (dt == RS_DTYPE_F32 ? 0.0 : 4.0 / 256));
	/* The rows' q parts (the k parts are unspecified), and the whole caches: unwritten
	 * slots stay 0. */
	float *q = malloc(sizeof(float) * m * q_dim);
	double *q_ref = malloc(sizeof(double) * m * q_dim);
	for (uint32_t r = 0; r < m; r++)
		for (uint32_t e = 0; e < q_dim; e++) {
			q[(size_t)r * q_dim + e] = got[0][(size_t)r * N + e];
			q_ref[(size_t)r * q_dim + e] = ref[(size_t)r * N + e];
		}
	check_close(name, q, q_ref, (size_t)m * q_dim, tol, 1e-5);
	check_close(name, k[0], ref_k, cache, tol, 1e-5);
	check_close(name, v[0], ref_v, cache, tol / 2, 1e-5);
	int same = memcmp(k[0], k[1], cache * 4) == 0 && memcmp(v[0], v[1], cache * 4) == 0;
	for (uint32_t r = 0; r < m; r++)
		same &= memcmp(got[0] + (size_t)r * N, got[1] + (size_t)r * N, q_dim * 4) == 0 &&
			memcmp(got[0] + (size_t)r * N + q_dim + kv_dim,
			       got[1] + (size_t)r * N + q_dim + kv_dim, kv_dim * 4) == 0;
	CHECK(same, "%s: differs from the two-launch path", name);
	for (int path = 0; path < 2; path++)
		free(got[path]), free(k[path]), free(v[path]);
	free(x), free(nw), free(w), free(normed), free(table), free(ref), free(ref_k), free(ref_v);
	free(q), free(q_ref);
	cudaFree(d_x), cudaFree(d_nw), cudaFree(d_w32), cudaFree(d_table), cudaFree(d_pos);
	cudaFree(d_slots), cudaFree(d_w), cudaFree(d_xb);
}

static void test_qkv_matmul(void)
{
	uint64_t s = 29;
	/* m 1..16 take the epilogue when K is whole 16-byte pieces (128 and 1048: every dtype;
	 * 300: f32 only), 17 the two launches; 6 and 16 hold their rows in the weights' dtype
	 * and 16 writes in two passes of 8 rows. K 128 leaves k unsplit, 1048 splits it 4 or
	 * 8 ways. Full and partial rotation, MHA and GQA; head_dim 6 makes 18 columns (a
	 * last column group of 2, pairs starting mid-group); head_dim 5 (odd) takes the two
	 * launches whatever m. */
	const uint32_t ms[] = {1, 2, 3, 4, 6, 16, 17}, ks[] = {128, 300, 1048};
	cublasHandle_t h;
	CHECK(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS, "cublasCreate");
	for (int di = 0; di < 3; di++)
		for (size_t ki = 0; ki < 3; ki++)
			for (size_t mi = 0; mi < sizeof(ms) / sizeof(ms[0]); mi++) {
				check_qkv_matmul(h, DTYPES[di], ms[mi], ks[ki], 4, 2, 32, 32, &s);
				check_qkv_matmul(h, DTYPES[di], ms[mi], ks[ki], 3, 3, 64, 16, &s);
				check_qkv_matmul(h, DTYPES[di], ms[mi], ks[ki], 1, 1, 6, 6, &s);
				check_qkv_matmul(h, DTYPES[di], ms[mi], ks[ki], 1, 1, 5, 4, &s);
			}
	cublasDestroy(h);
}

/* SwiGLU fused into the product (our kernel) or before it (cuBLAS), against SwiGLU in
 * float64 rounded to dtype and a float64 product. The device computes it in float: an
 * input near a rounding boundary of f16/bf16 may round the other way, by one ulp (the
 * SwiGLU outputs here stay below 2 in magnitude: 2^-7 at most for bf16, times |w| <= 1);
 * twice that, 2^-6, is allowed per output on top of K * 1e-6. */
static void test_swiglu_matmul(void)
{
	uint64_t s = 23;
	enum { N = 75 };
	const uint32_t ms[] = {1, 3, 6, 9, 16, 17}, ks[] = {300, 1048};
	cublasHandle_t h;
	CHECK(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS, "cublasCreate");
	for (int di = 0; di < 3; di++)
		for (size_t ki = 0; ki < 2; ki++)
			for (size_t mi = 0; mi < sizeof(ms) / sizeof(ms[0]); mi++) {
				enum rs_dtype dt = DTYPES[di];
				uint32_t m = ms[mi], K = ks[ki];
				float *gu = rand_floats((size_t)m * 2 * K, 1.5, &s);
				float *w = rand_floats((size_t)N * K, 1.0, &s);
				double *hidden = malloc(sizeof(double) * K),
				       *ref = malloc(sizeof(double) * m * N);
				for (uint32_t r = 0; r < m; r++) {
					for (uint32_t i = 0; i < K; i++) {
						double g = gu[(size_t)r * 2 * K + i],
						       u = gu[(size_t)r * 2 * K + K + i];
						hidden[i] =
						    round_to((float)(g / (1.0 + exp(-g)) * u), dt);
					}
					for (int n = 0; n < N; n++) {
						double sum = 0.0;
						for (uint32_t i = 0; i < K; i++)
							sum +=
							    hidden[i] * round_to(w[n * K + i], dt);
						ref[r * N + n] = sum;
					}
				}
				float *d_gu = to_dev(gu, sizeof(float) * m * 2 * K);
				float *d_w32 = to_dev(w, sizeof(float) * N * K);
				void *d_w = dev_alloc(4 * (size_t)N * K),
				     *d_hidden = dev_alloc(4 * (size_t)m * K);
				float *d_y = dev_alloc(sizeof(float) * m * N);
				rs_cuda_convert(d_w, dt, d_w32, (size_t)N * K, 0);
				cudaDeviceSynchronize(); /* weights: see check_matmul */
				CHECK(rs_cuda_swiglu_matmul(h, d_y, d_gu, d_hidden, d_w, dt, m, N,
							    K, 0) == 0,
				      "swiglu_matmul");
				float *got = malloc(sizeof(float) * m * N);
				from_dev(got, d_y, sizeof(float) * m * N);
				char name[80];
				snprintf(name, sizeof(name), "swiglu_matmul %s m=%u k=%u",
					 rs_dtype_name(dt), m, K);
				double flip = dt == RS_DTYPE_F32 ? 0.0 : 4.0 / 256;
				check_close(name, got, ref, (size_t)m * N, K * 1e-6 + flip, 1e-5);
				free(gu), free(w), free(hidden), free(ref), free(got);
				cudaFree(d_gu), cudaFree(d_w32), cudaFree(d_w), cudaFree(d_hidden),
				    cudaFree(d_y);
			}
	cublasDestroy(h);
}

/* Attention against rs_op_attention on the same paged cache (the CPU's, copied to the
 * device), blocks scattered and shuffled. */
static void test_attention_shape(uint32_t n_heads, uint32_t n_kv, uint32_t hd, uint32_t bs,
				 enum rs_dtype out_dt)
{
	uint64_t s = 6 + n_heads * 31 + hd;
	enum { SEQS = 3, MAX_CTX = 150 };
	const uint32_t ctx[SEQS] = {MAX_CTX, 1, 70};
	uint32_t q_dim = n_heads * hd, kv_dim = n_kv * hd, stride = q_dim + 2 * kv_dim;
	uint32_t per_seq = (MAX_CTX + bs - 1) / bs, n_blocks = SEQS * per_seq + 5;
	/* A shuffled permutation of block ids. */
	uint32_t *perm = malloc(n_blocks * sizeof(uint32_t));
	for (uint32_t i = 0; i < n_blocks; i++)
		perm[i] = i;
	for (uint32_t i = n_blocks - 1; i > 0; i--) {
		uint32_t j = (uint32_t)(test_rand(&s) % (i + 1)), t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	size_t cache_floats = (size_t)n_blocks * bs * kv_dim;
	struct rs_kv_layer cpu = {.k = calloc(cache_floats, 4),
				  .v = calloc(cache_floats, 4),
				  .block_size = bs,
				  .n_kv_heads = n_kv,
				  .head_dim = hd};
	struct rs_cuda_kv_layer gpu = {.k = dev_alloc(cache_floats * 4),
				       .v = dev_alloc(cache_floats * 4),
				       .block_size = bs,
				       .n_kv_heads = n_kv,
				       .head_dim = hd};

	/* Every sequence's whole context is one "prefill": T = sum ctx tokens, and every
	 * token attends (prefill rows), the last of each being a decode-like query. */
	uint32_t T = 0;
	for (int q = 0; q < SEQS; q++)
		T += ctx[q];
	float *rows = rand_floats((size_t)T * stride, 1.0, &s);
	uint32_t *tables = malloc(SEQS * per_seq * sizeof(uint32_t));
	uint32_t *positions = malloc(T * 4), *offsets = malloc(T * 4);
	for (uint32_t q = 0, t = 0; q < SEQS; q++) {
		uint32_t *table = tables + q * per_seq;
		memcpy(table, perm + q * per_seq, per_seq * 4);
		rs_op_kv_store(&cpu, table, 0, ctx[q], rows + (size_t)t * stride + q_dim,
			       rows + (size_t)t * stride + q_dim + kv_dim, stride);
		for (uint32_t i = 0; i < ctx[q]; i++, t++) {
			positions[t] = i;
			offsets[t] = q * per_seq;
		}
	}
	float *d_rows = to_dev(rows, (size_t)T * stride * 4);
	uint32_t *d_pos = to_dev(positions, T * 4), *d_offsets = to_dev(offsets, T * 4);
	uint32_t *d_tables = to_dev(tables, SEQS * per_seq * 4);
	/* The device cache: the CPU's, as the backend's stores would have made it (those are
	 * checked by test_rope_kv_store). */
	cudaMemcpy(gpu.k, cpu.k, cache_floats * 4, cudaMemcpyHostToDevice);
	cudaMemcpy(gpu.v, cpu.v, cache_floats * 4, cudaMemcpyHostToDevice);

	float *want = malloc((size_t)T * q_dim * 4), *got = malloc((size_t)T * q_dim * 4);
	float *scratch = malloc(rs_op_attention_scratch(n_heads, hd, MAX_CTX) * 4);
	for (uint32_t t = 0; t < T; t++)
		rs_op_attention(want + (size_t)t * q_dim, rows + (size_t)t * stride, &cpu,
				tables + offsets[t], positions[t], n_heads, scratch);
	CHECK(rs_cuda_attention_setup(n_heads, n_kv, hd) == 0, "setup %u/%u hd %u", n_heads, n_kv,
	      hd);
	float *d_scratch = dev_alloc(rs_cuda_attention_scratch(n_heads, hd) * 4);
	cudaMemset(d_scratch, 0, rs_cuda_attention_scratch(n_heads, hd) * 4);
	void *d_out = dev_alloc((size_t)T * q_dim * 4);
	uint8_t *raw = malloc((size_t)T * q_dim * 4);
	double *wd = to_double(want, (size_t)T * q_dim);
	char name[96];
	/* Every token at once: enough blocks without splitting. */
	CHECK(rs_cuda_attention(d_out, out_dt, d_rows, stride, &gpu, d_tables, d_offsets, d_pos, T,
				n_heads, MAX_CTX, d_scratch, 0) == 0,
	      "attention launch");
	from_dev(raw, d_out, (size_t)T * q_dim * rs_dtype_size(out_dt));
	decode(got, raw, out_dt, (size_t)T * q_dim);
	snprintf(name, sizeof(name), "attention heads %u/%u hd %u bs %u %s", n_heads, n_kv, hd, bs,
		 rs_dtype_name(out_dt));
	/* Outputs are convex combinations of V values in [-1, 1]: absolute tolerance. */
	double atol = out_dt == RS_DTYPE_F32 ? 1e-5 : 2e-3;
	check_close(name, got, wd, (size_t)T * q_dim, atol, dtype_eps(out_dt));

	/* The last token of each sequence alone (decode): contexts split over blocks, one
	 * sequence (of one position) shorter than every split but the first. */
	uint32_t last_rows = 0, last_t[SEQS];
	for (uint32_t q = 0, t = 0; q < SEQS; t += ctx[q++])
		last_t[last_rows++] = t + ctx[q] - 1;
	float *last_q = malloc((size_t)SEQS * stride * 4);
	uint32_t last_pos[SEQS], last_off[SEQS];
	double *last_want = malloc((size_t)SEQS * q_dim * sizeof(double));
	for (uint32_t i = 0; i < SEQS; i++) {
		memcpy(last_q + (size_t)i * stride, rows + (size_t)last_t[i] * stride, stride * 4);
		last_pos[i] = positions[last_t[i]];
		last_off[i] = offsets[last_t[i]];
		memcpy(last_want + (size_t)i * q_dim, wd + (size_t)last_t[i] * q_dim,
		       q_dim * sizeof(double));
	}
	float *d_last_q = to_dev(last_q, (size_t)SEQS * stride * 4);
	uint32_t *d_last_pos = to_dev(last_pos, sizeof(last_pos));
	uint32_t *d_last_off = to_dev(last_off, sizeof(last_off));
	/* Twice: the first launch must leave the scratch's split counts ready for the next. */
	for (int run = 0; run < 2; run++) {
		cudaMemset(d_out, 0, (size_t)SEQS * q_dim * 4);
		CHECK(rs_cuda_attention(d_out, out_dt, d_last_q, stride, &gpu, d_tables, d_last_off,
					d_last_pos, SEQS, n_heads, MAX_CTX, d_scratch, 0) == 0,
		      "split attention launch");
		from_dev(raw, d_out, (size_t)SEQS * q_dim * rs_dtype_size(out_dt));
		decode(got, raw, out_dt, (size_t)SEQS * q_dim);
		snprintf(name, sizeof(name), "split attention heads %u/%u hd %u bs %u %s, run %d",
			 n_heads, n_kv, hd, bs, rs_dtype_name(out_dt), run);
		check_close(name, got, last_want, (size_t)SEQS * q_dim, atol, dtype_eps(out_dt));
	}
	free(last_q), free(last_want);
	cudaFree(d_last_q), cudaFree(d_last_pos), cudaFree(d_last_off), cudaFree(d_scratch);
	free(perm), free(cpu.k), free(cpu.v), free(rows), free(tables), free(positions);
	free(offsets), free(want), free(got), free(scratch), free(raw), free(wd);
	cudaFree(gpu.k), cudaFree(gpu.v), cudaFree(d_rows), cudaFree(d_pos);
	cudaFree(d_offsets), cudaFree(d_tables), cudaFree(d_out);
}

/* Decode tokens with long contexts: more chunks than splits, so that each split walks
 * several chunks (its later slot lookups, its online softmax across chunks) before the
 * merge. Three sequences of 2900, 1 and 700 positions, 2 kv heads: 6 (kv head, token)
 * blocks, 42 splits allowed, 182 spans of 16: 37 splits of 80 positions (a chunk of 64
 * and one of 16 each). */
static void test_attention_long(void)
{
	uint64_t s = 77;
	enum { SEQS = 3, HEADS = 8, KV = 2, HD = 64, BS = 16, MAX_CTX = 2900 };
	const uint32_t ctx[SEQS] = {MAX_CTX, 1, 700};
	uint32_t q_dim = HEADS * HD, kv_dim = KV * HD, per_seq = (MAX_CTX + BS - 1) / BS;
	uint32_t n_blocks = SEQS * per_seq;
	size_t cache_floats = (size_t)n_blocks * BS * kv_dim;
	struct rs_kv_layer cpu = {.k = malloc(cache_floats * 4),
				  .v = malloc(cache_floats * 4),
				  .block_size = BS,
				  .n_kv_heads = KV,
				  .head_dim = HD};
	float *kv_rows = rand_floats(cache_floats * 2, 1.0, &s);
	memcpy(cpu.k, kv_rows, cache_floats * 4);
	memcpy(cpu.v, kv_rows + cache_floats, cache_floats * 4);
	/* Sequence q owns blocks q, q + SEQS, q + 2 SEQS, ... (interleaved). */
	uint32_t *tables = malloc(sizeof(uint32_t) * n_blocks), pos[SEQS], off[SEQS];
	for (uint32_t q = 0; q < SEQS; q++) {
		for (uint32_t b = 0; b < per_seq; b++)
			tables[q * per_seq + b] = b * SEQS + q;
		pos[q] = ctx[q] - 1;
		off[q] = q * per_seq;
	}
	float *q_rows = rand_floats((size_t)SEQS * q_dim, 1.0, &s);
	float *want = malloc(sizeof(float) * SEQS * q_dim),
	      *got = malloc(sizeof(float) * SEQS * q_dim);
	float *scratch = malloc(rs_op_attention_scratch(HEADS, HD, MAX_CTX) * 4);
	for (uint32_t q = 0; q < SEQS; q++)
		rs_op_attention(want + (size_t)q * q_dim, q_rows + (size_t)q * q_dim, &cpu,
				tables + off[q], pos[q], HEADS, scratch);
	struct rs_cuda_kv_layer gpu = {.k = to_dev(cpu.k, cache_floats * 4),
				       .v = to_dev(cpu.v, cache_floats * 4),
				       .block_size = BS,
				       .n_kv_heads = KV,
				       .head_dim = HD};
	float *d_q = to_dev(q_rows, sizeof(float) * SEQS * q_dim);
	uint32_t *d_tables = to_dev(tables, sizeof(uint32_t) * n_blocks);
	uint32_t *d_pos = to_dev(pos, sizeof(pos)), *d_off = to_dev(off, sizeof(off));
	float *d_scratch = dev_alloc(rs_cuda_attention_scratch(HEADS, HD) * 4);
	cudaMemset(d_scratch, 0, rs_cuda_attention_scratch(HEADS, HD) * 4);
	float *d_out = dev_alloc(sizeof(float) * SEQS * q_dim);
	CHECK(rs_cuda_attention_setup(HEADS, KV, HD) == 0, "setup");
	CHECK(rs_cuda_attention(d_out, RS_DTYPE_F32, d_q, q_dim, &gpu, d_tables, d_off, d_pos, SEQS,
				HEADS, MAX_CTX, d_scratch, 0) == 0,
	      "launch");
	from_dev(got, d_out, sizeof(float) * SEQS * q_dim);
	double *wd = to_double(want, (size_t)SEQS * q_dim);
	check_close("attention, long contexts in multi-chunk splits", got, wd, (size_t)SEQS * q_dim,
		    1e-5, 1e-5);
	/* max_ctx above every context, as a CUDA graph captured for a context range passes:
	 * the splits past a context's end add nothing. */
	cudaMemset(d_out, 0, sizeof(float) * SEQS * q_dim);
	CHECK(rs_cuda_attention(d_out, RS_DTYPE_F32, d_q, q_dim, &gpu, d_tables, d_off, d_pos, SEQS,
				HEADS, 4096, d_scratch, 0) == 0,
	      "launch");
	from_dev(got, d_out, sizeof(float) * SEQS * q_dim);
	check_close("attention, max_ctx beyond every context", got, wd, (size_t)SEQS * q_dim, 1e-5,
		    1e-5);
	/* The 700-position sequence's token alone: 44 splits of 16 positions. */
	CHECK(rs_cuda_attention(d_out, RS_DTYPE_F32, d_q + 2 * q_dim, q_dim, &gpu, d_tables,
				d_off + 2, d_pos + 2, 1, HEADS, 700, d_scratch, 0) == 0,
	      "launch");
	from_dev(got, d_out, sizeof(float) * q_dim);
	check_close("attention, one token in 16-position splits", got, wd + 2 * q_dim, q_dim, 1e-5,
		    1e-5);
	free(cpu.k), free(cpu.v), free(kv_rows), free(tables), free(q_rows), free(want), free(got);
	free(scratch), free(wd);
	cudaFree(gpu.k), cudaFree(gpu.v), cudaFree(d_q), cudaFree(d_tables), cudaFree(d_pos);
	cudaFree(d_off), cudaFree(d_scratch), cudaFree(d_out);
}

static void test_attention(void)
{
	test_attention_shape(8, 2, 64, 16, RS_DTYPE_F32);   /* GQA, TinyLlama's head_dim */
	test_attention_shape(4, 4, 16, 5, RS_DTYPE_F32);    /* MHA, odd block size */
	test_attention_shape(12, 1, 40, 7, RS_DTYPE_F32);   /* MQA, head_dim not a warp multiple */
	test_attention_shape(4, 2, 256, 3, RS_DTYPE_F32);   /* largest head_dim */
	test_attention_shape(32, 1, 256, 16, RS_DTYPE_F32); /* 72 KiB of shared memory (opt-in) */
	test_attention_shape(8, 2, 64, 16, RS_DTYPE_F16);
	test_attention_shape(8, 2, 64, 16, RS_DTYPE_BF16);
	CHECK(rs_cuda_attention_setup(4, 2, 512) == -EINVAL, "head_dim 512 accepted");
	test_attention_long();
}

/* The device sampler against rs_sample over many parameter sets and logit shapes. */
static void test_sampling_vocab(uint32_t vocab)
{
	static const float temps[] = {0.0f, 0.5f, 1.0f, 3.0f};
	static const uint32_t topks[] = {0, 1, 2, 3, 50, 999, 1000, 2000};
	static const float topps[] = {0.0f, 0.05f, 0.5f, 0.9f, 0.999f, 1.0f};
	enum { KINDS = 3, SEEDS = 2 };
	uint32_t rows = 4 * 8 * 6 * SEEDS * KINDS;
	float *logits = malloc((size_t)rows * vocab * sizeof(float));
	struct rs_sampling_params *params = malloc(rows * sizeof(*params));
	uint64_t *position = malloc(rows * sizeof(uint64_t));
	struct rs_cuda_sample_desc *descs = malloc(rows * sizeof(*descs));
	uint32_t *d_out = dev_alloc(rows * sizeof(uint32_t)), *got = malloc(rows * 4);
	uint64_t s = 7 + vocab;
	uint32_t r = 0;
	for (int a = 0; a < 4; a++)
		for (int b = 0; b < 8; b++)
			for (int c = 0; c < 6; c++)
				for (int seed = 0; seed < SEEDS; seed++)
					for (int kind = 0; kind < KINDS; kind++, r++) {
						float *x = logits + (size_t)r * vocab;
						for (uint32_t i = 0; i < vocab; i++) {
							double v = test_uniform(&s) * 4.0;
							if (kind == 1) /* coarse: many exact ties */
								v = floor(v * 2.0) / 2.0;
							x[i] = (float)v;
							if (kind == 2 && i % 7 == 3)
								x[i] = -INFINITY;
						}
						params[r] = (struct rs_sampling_params){
						    .temperature = temps[a],
						    .top_k = topks[b],
						    .top_p = topps[c],
						    .seed = test_rand(&s)};
						position[r] = test_rand(&s) % 5000;
						rs_cuda_sample_desc_init(&descs[r], &params[r],
									 position[r], d_out + r);
					}
	float *d_logits = to_dev(logits, (size_t)rows * vocab * sizeof(float));
	struct rs_cuda_sample_desc *d_descs = to_dev(descs, rows * sizeof(*descs));
	double *d_scratch =
	    dev_alloc((size_t)rows * rs_cuda_sample_scratch(vocab) * sizeof(double));
	cudaMemset(d_out, 0xff, rows * 4);
	CHECK(rs_cuda_sample(d_logits, vocab, d_descs, rows, d_scratch, 0) == 0, "launch");
	from_dev(got, d_out, rows * 4);
	void *scratch = malloc(rs_sample_scratch_size(vocab));
	int bad = 0;
	for (r = 0; r < rows; r++) {
		uint32_t want =
		    rs_sample(logits + (size_t)r * vocab, vocab, &params[r], position[r], scratch);
		if (got[r] != want && bad++ < 10)
			fprintf(stderr, "sample vocab %u row %u (T %g k %u p %g): got %u want %u\n",
				vocab, r, params[r].temperature, params[r].top_k, params[r].top_p,
				got[r], want);
	}
	CHECK(bad == 0, "sampling: %d of %u rows differ (vocab %u)", bad, rows, vocab);
	free(logits), free(params), free(position), free(descs), free(got), free(scratch);
	cudaFree(d_out), cudaFree(d_logits), cudaFree(d_descs), cudaFree(d_scratch);
}

/* u = 1 puts the target at the kept total, which sampling.h's walk never passes: it
 * returns the last kept candidate. With nothing cut that is the lowest logit (ties: the
 * highest id), with top-k the k-th best; never an id outside the vocabulary. */
static void test_sampling_last_kept(void)
{
	enum { VOCAB = 1000, ROWS = 3 };
	static const uint32_t topks[ROWS] = {0, 7, VOCAB};
	uint64_t s = 8;
	float *logits = malloc((size_t)ROWS * VOCAB * sizeof(float));
	for (int i = 0; i < ROWS * VOCAB; i++)
		logits[i] = (float)floor(test_uniform(&s) * 8.0); /* ties */
	uint32_t *d_out = dev_alloc(ROWS * sizeof(uint32_t)), got[ROWS];
	struct rs_cuda_sample_desc descs[ROWS];
	for (int r = 0; r < ROWS; r++) {
		struct rs_sampling_params p = {.temperature = 1.0f, .top_k = topks[r], .seed = 1};
		rs_cuda_sample_desc_init(&descs[r], &p, 0, d_out + r);
		descs[r].u = 1.0;
	}
	float *d_logits = to_dev(logits, (size_t)ROWS * VOCAB * sizeof(float));
	struct rs_cuda_sample_desc *d_descs = to_dev(descs, sizeof(descs));
	double *d_scratch =
	    dev_alloc((size_t)ROWS * rs_cuda_sample_scratch(VOCAB) * sizeof(double));
	CHECK(rs_cuda_sample(d_logits, VOCAB, d_descs, ROWS, d_scratch, 0) == 0, "launch");
	from_dev(got, d_out, sizeof(got));
	for (int r = 0; r < ROWS; r++) {
		const float *x = logits + (size_t)r * VOCAB;
		uint32_t want = 0;
		if (topks[r] == 7) {
			/* The 7th in (descending logit, ascending id) order. */
			uint32_t idx[VOCAB];
			for (uint32_t i = 0; i < VOCAB; i++) {
				uint32_t j = i;
				while (j > 0 && x[idx[j - 1]] < x[i])
					idx[j] = idx[j - 1], j--;
				idx[j] = i;
			}
			want = idx[6];
		} else {
			for (uint32_t i = 1; i < VOCAB; i++)
				if (x[i] <= x[want])
					want = i;
		}
		CHECK(got[r] == want, "sampling u = 1, top_k %u: got %u want %u", topks[r], got[r],
		      want);
	}
	free(logits);
	cudaFree(d_out), cudaFree(d_logits), cudaFree(d_descs), cudaFree(d_scratch);
}

static struct rs_engine *make_engine(const struct rs_model *model, const char *backend,
				     uint32_t lanes, const char *graphs)
{
	struct rs_engine_options opts;
	rs_engine_options_init(&opts);
	opts.backend = backend;
	opts.block_size = 16;
	opts.kv_blocks = 256;
	opts.max_batch_tokens = 512;
	opts.lanes = lanes;
	opts.threads = 2;
	/* Both backends keep K and V in f32 (the CUDA backend always does; the CPU one
	 * would pick f16 for f16/bf16 weights): the comparison is about the kernels, and
	 * the f16 cache alone moves CPU logits by ~1e-3 of their RMS. */
	opts.kv_dtype = "f32";
	opts.cuda_graphs = graphs;
	struct rs_engine *e = NULL;
	char err[200];
	int rc = rs_engine_create(model, &opts, &e, err, sizeof(err));
	CHECK(rc == 0, "%s engine: %d %s", backend, rc, err);
	if (rc)
		exit(1);
	return e;
}

static uint32_t *alloc_blocks(struct rs_engine *e, uint32_t n)
{
	uint32_t *t = malloc(n * sizeof(uint32_t));
	for (uint32_t i = 0; i < n; i++) {
		int b = rs_kv_block_alloc(rs_engine_kv(e));
		CHECK(b >= 0, "out of blocks");
		t[i] = b < 0 ? 0 : (uint32_t)b;
	}
	return t;
}

static struct rs_model_config gqa_config(void)
{
	struct rs_model_config cfg = test_config();
	cfg.dim = 128; /* head_dim 32 */
	cfg.hidden_dim = 352;
	cfg.n_layers = 3;
	cfg.vocab_size = 300;
	cfg.rope_dim = 32;
	cfg.head_dim = 32;
	return cfg;
}

/* The architecture test_forward and test_greedy build their models with (NULL: Llama). */
static const struct rs_model_random_extras *arch_extras;

/* The quantization scheme ("q8_0", "q4_k_m", ...) test_forward and test_greedy apply to
 * their random f32 model (NULL: none, the model in the test's dtype). */
static const char *quant_scheme;

/* The quantized models' shape: rows of 256 (dim, hidden, q_dim), so that the K-quants
 * are not replaced by Q8_0 (rs_model_quantize's fallback for other row lengths). */
static struct rs_model_config quant_config(void)
{
	struct rs_model_config cfg = gqa_config();
	cfg.dim = 256;
	cfg.hidden_dim = 512;
	cfg.n_heads = 8;
	cfg.n_kv_heads = 2;
	return cfg;
}

/* Relative RMS error of quantized-model logits, CUDA vs CPU on the same quantized weights
 * (decoded exactly by both): the CPU's decode rounds each product's input to 8 bits
 * (a step of amax/127 per block, RMS error step/sqrt(12): 0.0039 of the data's RMS for
 * uniform data, as tests/engine_quant_model.c takes it), the GPU's to f16 (2^-11/sqrt(3)
 * = 0.0003); the 4 L + 1 products to the logits add independent errors (square root),
 * times 3 for the network amplifying them. Individual logits: within 5 times that of the
 * RMS (a normal tail over the ~10^4 logits compared stays under 4.5). For this shape
 * (L = 3) that is 0.045 and 0.23 of the logits' RMS. Checked on the CPU alone (the same
 * quantized models, 40 positions decoded one at a time, 8-bit activations, against one
 * prefill of them, f32 activations: the GPU's side up to its f16 rounding), every
 * scheme, seeds 11 and 21: relative RMS differences 0.012-0.018, largest 0.086 of the
 * RMS: margins of 2.5 and 2.6. (The forward part's CPU batches exceed 8 rows, so the
 * CPU takes its f32 path there; the 8-bit one is met in greedy decoding of 3.) */
static double quant_rms_tol(const struct rs_model_config *cfg)
{
	return 3 * (0.0039 + 0.0003) * sqrt(4.0 * cfg->n_layers + 1);
}

/* Logit tolerance relative to the logits' RMS (see the top comment). */
static double logit_rel_tol(enum rs_dtype dt)
{
	if (quant_scheme) {
		struct rs_model_config cfg = quant_config();
		return 5 * quant_rms_tol(&cfg);
	}
	return dt == RS_DTYPE_F16 ? 1e-2 : dt == RS_DTYPE_BF16 ? 5e-2 : 1e-4;
}

/* What test_forward and test_greedy run: a random model of dtype dt, or (quant_scheme)
 * a random f32 model of quant_config's shape quantized by that scheme; NULL on failure. */
static struct rs_model *test_model(struct rs_model_config *cfg, enum rs_dtype dt, uint64_t seed)
{
	struct rs_model *model = NULL, *q = NULL;
	if (quant_scheme) {
		*cfg = quant_config();
		dt = RS_DTYPE_F32;
	}
	CHECK(rs_model_random_arch(cfg, dt, seed, false, arch_extras, &model) == 0, "model");
	if (!model || !quant_scheme)
		return model;
	enum rs_quant_scheme scheme;
	CHECK(rs_quant_scheme_parse(quant_scheme, &scheme) == 0 &&
		  rs_model_quantize(model, scheme, &q) == 0,
	      "quantize %s", quant_scheme);
	rs_model_free(model);
	return q;
}

/* The name of what test_model builds. */
static const char *model_name(enum rs_dtype dt)
{
	return quant_scheme ? quant_scheme : rs_dtype_name(dt);
}

static double rms(const float *x, size_t n)
{
	double ss = 0;
	for (size_t i = 0; i < n; i++)
		ss += (double)x[i] * x[i];
	return sqrt(ss / n);
}

/* Whole forward pass: a prefill batch of three sequences, then a mixed step (one decodes,
 * one prefills a second chunk), logits compared CUDA vs CPU. */
static void test_forward(enum rs_dtype dt)
{
	struct rs_model_config cfg = gqa_config();
	struct rs_model *model = test_model(&cfg, dt, 11);
	if (!model)
		return;
	struct rs_engine *ec = make_engine(model, "cpu", 1, NULL),
			 *eg = make_engine(model, "cuda", 1, NULL);
	enum { SEQS = 3 };
	const uint32_t len[SEQS] = {13, 1, 40}, more[SEQS] = {1, 0, 9};
	uint32_t tokens[SEQS][64];
	uint64_t s = 12;
	for (int q = 0; q < SEQS; q++)
		for (int i = 0; i < 64; i++)
			tokens[q][i] = (uint32_t)(test_rand(&s) % cfg.vocab_size);
	uint32_t *tc[SEQS], *tg[SEQS];
	for (int q = 0; q < SEQS; q++) {
		tc[q] = alloc_blocks(ec, 4);
		tg[q] = alloc_blocks(eg, 4);
	}
	for (int phase = 0; phase < 2; phase++) {
		struct rs_seq_step sc[SEQS], sg[SEQS];
		uint32_t n = 0, T = 0;
		for (int q = 0; q < SEQS; q++) {
			uint32_t start = phase ? len[q] : 0, count = phase ? more[q] : len[q];
			if (!count)
				continue;
			sc[n] = (struct rs_seq_step){.tokens = tokens[q] + start,
						     .n_tokens = count,
						     .start_pos = start,
						     .block_table = tc[q],
						     .n_blocks = 4};
			sg[n] = sc[n];
			sg[n++].block_table = tg[q];
			T += count;
		}
		float *lc = malloc((size_t)T * cfg.vocab_size * 4),
		      *lg = malloc((size_t)T * cfg.vocab_size * 4);
		CHECK(rs_engine_forward_logits(ec, sc, n, lc) == 0, "cpu logits");
		CHECK(rs_engine_forward_logits(eg, sg, n, lg) == 0, "cuda logits");
		double *ref = to_double(lc, (size_t)T * cfg.vocab_size);
		char name[64];
		snprintf(name, sizeof(name), "forward %s phase %d", model_name(dt), phase);
		check_close(name, lg, ref, (size_t)T * cfg.vocab_size,
			    logit_rel_tol(dt) * rms(lc, (size_t)T * cfg.vocab_size), 0.0);
		if (quant_scheme) {
			size_t nl = (size_t)T * cfg.vocab_size;
			double se = 0;
			for (size_t i = 0; i < nl; i++)
				se += ((double)lg[i] - lc[i]) * ((double)lg[i] - lc[i]);
			double rel = sqrt(se / nl) / rms(lc, nl), tol = quant_rms_tol(&cfg);
			printf("%s: logits relative RMS difference %.4f (tolerance %.4f)\n", name,
			       rel, tol);
			CHECK(rel <= tol, "%s: relative RMS difference %.4f > %.4f", name, rel,
			      tol);
		}
		free(lc), free(lg), free(ref);
	}
	for (int q = 0; q < SEQS; q++)
		free(tc[q]), free(tg[q]);
	rs_engine_destroy(ec);
	rs_engine_destroy(eg);
	rs_model_free(model);
}

/* seqs (up to 20) sequences joining at steps 0..2, prefilling 1..40 tokens, then
 * decoding to 32 steps in all; CUDA samples greedily through rs_engine_step (alternating
 * two lanes, each step waited for: the next one reads its KV), the CPU gives logits. */
static void test_greedy(enum rs_dtype dt, int seqs, const char *graphs)
{
	struct rs_model_config cfg = gqa_config();
	struct rs_model *model = test_model(&cfg, dt, 21);
	if (!model)
		return;
	struct rs_engine *ec = make_engine(model, "cpu", 1, NULL);
	struct rs_engine *eg = make_engine(model, "cuda", 2, graphs);
	enum { SEQS = 20, STEPS = 32 };
	if (seqs > SEQS)
		seqs = SEQS;
	uint32_t V = cfg.vocab_size, n_blocks = 6; /* 96 positions */
	struct {
		uint32_t tokens[96], n_prompt, join, pos, *tc, *tg, out;
	} q[SEQS];
	uint64_t s = 22;
	for (int i = 0; i < seqs; i++) {
		q[i].n_prompt = 1 + (uint32_t)(i * 13 % 40);
		q[i].join = (uint32_t)(i % 3);
		q[i].pos = 0;
		for (uint32_t j = 0; j < q[i].n_prompt; j++)
			q[i].tokens[j] = (uint32_t)(test_rand(&s) % V);
		q[i].tc = alloc_blocks(ec, n_blocks);
		q[i].tg = alloc_blocks(eg, n_blocks);
	}
	float *logits = malloc(sizeof(float) * 512 * V);
	double tol = 2 * logit_rel_tol(dt); /* times the RMS of the step's logits */
	int compared = 0, excused = 0;
	for (uint32_t step = 0; step < STEPS + 2; step++) {
		struct rs_seq_step sc[SEQS], sg[SEQS];
		int idx[SEQS];
		uint32_t n = 0, T = 0;
		for (int i = 0; i < seqs; i++) {
			if (step < q[i].join || q[i].pos >= q[i].n_prompt + STEPS - 1)
				continue;
			uint32_t count = q[i].pos == 0 ? q[i].n_prompt : 1;
			sc[n] = (struct rs_seq_step){.tokens = q[i].tokens + q[i].pos,
						     .n_tokens = count,
						     .start_pos = q[i].pos,
						     .block_table = q[i].tc,
						     .n_blocks = n_blocks};
			sg[n] = sc[n];
			sg[n].block_table = q[i].tg;
			sg[n].sample = 1;
			sg[n].out_token = &q[i].out;
			q[i].out = UINT32_MAX;
			idx[n++] = i;
			T += count;
		}
		if (!n)
			break;
		uint32_t lane = step % 2;
		CHECK(rs_engine_step(eg, lane, sg, n) == 0, "cuda step %u", step);
		CHECK(rs_engine_forward_logits(ec, sc, n, logits) == 0, "cpu step %u", step);
		CHECK(rs_engine_step_wait(eg, lane) == 0, "cuda wait %u", step);
		CHECK(rs_engine_step_poll(eg, lane) == 1, "poll after wait");
		for (uint32_t k = 0, row = 0; k < n; k++) {
			int i = idx[k];
			row += sc[k].n_tokens;
			const float *last = logits + (size_t)(row - 1) * V;
			uint32_t want = rs_argmax(last, V);
			compared++;
			if (q[i].out != want) {
				/* Excused only when the CUDA token's own CPU logit is within the
				 * tolerance of the best (never an unwritten or out-of-range id). */
				float gap = q[i].out < V ? last[want] - last[q[i].out] : INFINITY;
				if (gap <= tol * rms(last, V)) {
					excused++;
				} else {
					CHECK(0, "%s seq %d step %u: cuda %u, cpu %u (gap %g)",
					      model_name(dt), i, step, q[i].out, want, gap);
				}
			}
			/* Teacher forcing: both continue with the CPU's token. */
			q[i].pos += sc[k].n_tokens;
			q[i].tokens[q[i].pos] = want;
		}
	}
	struct rs_engine_stats st;
	rs_engine_stats(eg, &st);
	printf("greedy %s, %d sequences, graphs %s: %d tokens compared, %d near-tie differences; "
	       "%llu steps replayed from %llu graphs\n",
	       model_name(dt), seqs, graphs, compared, excused,
	       (unsigned long long)st.graph_launches, (unsigned long long)st.graph_captures);
	/* From step 3 on every sequence decodes (joins are at steps 0-2): with graphs on, each
	 * such step replays one; the context grows past 64 positions only for some. */
	if (strcmp(graphs, "on") == 0) {
		CHECK(st.graph_failures == 0, "graph capture failed: %s", st.graph_error);
		CHECK(st.graph_launches >= STEPS - 8, "only %llu graph launches",
		      (unsigned long long)st.graph_launches);
		/* Batches shrink as sequences end, contexts cross 64 (two ranges), two lanes:
		 * a graph per power-of-two batch size, range and lane at most, each replayed
		 * (a capture per step would cost more than it saves). */
		uint32_t sizes = 1;
		while ((1u << (sizes - 1)) < (uint32_t)seqs)
			sizes++;
		CHECK(st.graph_captures >= 2 && st.graph_captures <= 2 * 2 * sizes &&
			  st.graph_captures < st.graph_launches,
		      "%llu captures for %llu launches", (unsigned long long)st.graph_captures,
		      (unsigned long long)st.graph_launches);
	} else {
		CHECK(st.graph_launches == 0 && st.graph_captures == 0, "graphs used while off");
	}
	CHECK(compared >= seqs * (STEPS - 3), "only %d tokens compared", compared);
	CHECK(excused * 10 <= compared, "%d of %d tokens differ at near ties", excused, compared);
	for (int i = 0; i < seqs; i++)
		free(q[i].tc), free(q[i].tg);
	free(logits);
	rs_engine_destroy(ec);
	rs_engine_destroy(eg);
	rs_model_free(model);
}

/* out_token in a registered memfd mapping: the GPU writes the shared page itself, seen
 * through a second mapping of the same file. */
static void test_zero_copy(void)
{
	struct rs_model_config cfg = gqa_config();
	struct rs_model *model = NULL;
	CHECK(rs_model_random(&cfg, RS_DTYPE_F16, 31, false, &model) == 0, "model");
	if (!model)
		return;
	struct rs_engine *ec = make_engine(model, "cpu", 1, NULL),
			 *eg = make_engine(model, "cuda", 1, NULL);
	size_t size = 2 * 4096;
	int fd = memfd_create("engine_cuda", 0);
	CHECK(fd >= 0 && ftruncate(fd, (off_t)size) == 0, "memfd");
	uint8_t *a = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	uint8_t *b = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	CHECK(a != MAP_FAILED && b != MAP_FAILED, "mmap");
	if (a == MAP_FAILED || b == MAP_FAILED)
		return;
	CHECK(rs_engine_register_host(eg, a, size) == 0, "register");
	CHECK(rs_engine_register_host(eg, a + 4096, 4096) == -EEXIST, "overlap accepted");
	CHECK(rs_engine_unregister_host(eg, a + 8) == -ENOENT, "unknown range");
	CHECK(rs_engine_register_host(ec, a, size) == 0, "cpu register is a no-op");

	enum { SEQS = 3 };
	uint32_t prompt[SEQS][20], V = cfg.vocab_size;
	uint64_t s = 32;
	struct rs_seq_step sc[SEQS], sg[SEQS];
	uint32_t *outs = (uint32_t *)(a + 4096 + 64); /* in the second page */
	for (int i = 0; i < SEQS; i++) {
		for (int j = 0; j < 20; j++)
			prompt[i][j] = (uint32_t)(test_rand(&s) % V);
		sc[i] = (struct rs_seq_step){.tokens = prompt[i],
					     .n_tokens = 5 + 7 * i,
					     .block_table = alloc_blocks(ec, 2),
					     .n_blocks = 2};
		sg[i] = sc[i];
		sg[i].block_table = alloc_blocks(eg, 2);
		sg[i].sample = 1;
		sg[i].out_token = &outs[i];
		outs[i] = UINT32_MAX;
	}
	CHECK(rs_engine_step(eg, 0, sg, SEQS) == 0, "step");
	int polls = 0, rc;
	while ((rc = rs_engine_step_poll(eg, 0)) == 0)
		polls++;
	CHECK(rc == 1, "poll: %d", rc);
	float *logits = malloc(sizeof(float) * 60 * V);
	CHECK(rs_engine_forward_logits(ec, sc, SEQS, logits) == 0, "cpu logits");
	const uint32_t *seen = (const uint32_t *)(b + 4096 + 64);
	/* Checked twice: after the first step, and after the same step run twice more with
	 * a poll between (a poll that finds the step running leaves "not ready" as the
	 * thread's last CUDA error; the next step's launch checks must not take it for their
	 * own). */
	for (int round = 0; round < 2; round++) {
		if (round) {
			for (int i = 0; i < SEQS; i++)
				outs[i] = UINT32_MAX;
			CHECK(rs_engine_step(eg, 0, sg, SEQS) == 0, "step again");
			int running = rs_engine_step_poll(eg, 0) == 0;
			CHECK(rs_engine_step(eg, 0, sg, SEQS) == 0,
			      "step after a poll (running: %d)", running);
			CHECK(rs_engine_step_wait(eg, 0) == 0, "wait after a poll");
		}
		for (uint32_t i = 0, row = 0; i < SEQS; i++) {
			row += sc[i].n_tokens;
			const float *last = logits + (size_t)(row - 1) * V;
			uint32_t want = rs_argmax(last, V);
			CHECK(seen[i] == want || (seen[i] < V && last[want] - last[seen[i]] <=
								     2e-2 * rms(last, V)),
			      "zero-copy seq %u round %d: %u through the other mapping, cpu %u", i,
			      round, seen[i], want);
		}
	}
	CHECK(rs_engine_unregister_host(eg, a) == 0, "unregister");
	CHECK(rs_engine_unregister_host(eg, a) == -ENOENT, "unregistered twice");
	for (int i = 0; i < SEQS; i++)
		free((void *)sc[i].block_table), free((void *)sg[i].block_table);
	free(logits);
	munmap(a, size);
	munmap(b, size);
	close(fd);
	rs_engine_destroy(ec);
	rs_engine_destroy(eg);
	rs_model_free(model);
}

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Run the named part when no names were given or it is among them (for a quick rerun
 * of one part, or under compute-sanitizer), printing its time. */
#define PART(name, call)                                                                           \
	do {                                                                                       \
		int run_it = argc < 2;                                                             \
		for (int a = 1; a < argc; a++)                                                     \
			run_it |= strcmp(argv[a], name) == 0;                                      \
		if (run_it) {                                                                      \
			double t0 = now_seconds();                                                 \
			call;                                                                      \
			printf("%-16s %6.2f s\n", name, now_seconds() - t0);                       \
			fflush(stdout);                                                            \
		}                                                                                  \
	} while (0)

/* Usage: engine_cuda [part...] with parts embedding rmsnorm rope swiglu matmul attention
 * sampling forward greedy zero_copy qwen2 llama3 quant (none: all). */
int main(int argc, char **argv)
{
	int devices = 0;
	cudaError_t e = cudaGetDeviceCount(&devices);
	if (e != cudaSuccess || devices == 0) {
		printf("no CUDA device (%s)\n", e != cudaSuccess ? cudaGetErrorString(e) : "none");
		return 77;
	}
	PART("embedding", test_embedding());
	PART("rmsnorm", test_rmsnorm());
	PART("rope", test_rope_kv_store());
	PART("swiglu", test_swiglu());
	PART("matmul",
	     (test_matmul(), test_norm_matmul(), test_swiglu_matmul(), test_qkv_matmul()));
	PART("attention", test_attention());
	PART("sampling",
	     (test_sampling_vocab(1000), test_sampling_vocab(32000), test_sampling_last_kept()));
	PART("forward",
	     (test_forward(RS_DTYPE_F32), test_forward(RS_DTYPE_F16), test_forward(RS_DTYPE_BF16)));
	/* 20 sequences decode through cuBLAS; 8 and 3 through our GEMVs (and the fused
	 * [q|k|v] epilogue), the path of decode at small batches; decode steps replay CUDA
	 * graphs unless they are off. */
	PART("greedy", (test_greedy(RS_DTYPE_F16, 20, "on"), test_greedy(RS_DTYPE_BF16, 8, "on"),
			test_greedy(RS_DTYPE_F16, 8, "off"), test_greedy(RS_DTYPE_F16, 3, "on"),
			test_greedy(RS_DTYPE_F32, 3, "on"), test_greedy(RS_DTYPE_F32, 3, "off")));
	PART("zero_copy", test_zero_copy());
	/* Qwen2's biases (the unfused [q|k|v] path with its bias kernel, at decode sizes too)
	 * and Llama 3's RoPE divisors (in the device's cosine table). */
	static const struct rs_model_random_extras qwen2 = {.arch = RS_ARCH_QWEN2};
	static const struct rs_model_random_extras llama3 = {.arch = RS_ARCH_LLAMA,
							     .rope_factor = 8.0f,
							     .low_freq_factor = 1.0f,
							     .high_freq_factor = 4.0f,
							     .original_context = 32};
	arch_extras = &qwen2;
	PART("qwen2", (test_forward(RS_DTYPE_F32), test_forward(RS_DTYPE_BF16),
		       test_greedy(RS_DTYPE_F16, 3, "on"), test_greedy(RS_DTYPE_F32, 8, "off")));
	arch_extras = &llama3;
	PART("llama3", (test_forward(RS_DTYPE_F16), test_greedy(RS_DTYPE_BF16, 3, "on")));
	arch_extras = NULL;
	/* Quantized models (matmul_quant.cu): every format's forward pass (prefill of 13-40
	 * tokens: f16 panels and cuBLAS; the mixed step: the GEMV), then greedy decoding of
	 * Q8_0 and Q4_K_M (Q4_K with Q6_K parts: mixed formats in one fused matrix) through
	 * the GEMV (3 sequences) and the panels (20), graphs on and off. */
	static const char *const schemes[] = {"q8_0", "q4_0", "q4_k", "q5_k", "q6_k", "q4_k_m"};
	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
		quant_scheme = schemes[i];
		PART("quant", test_forward(RS_DTYPE_F32));
	}
	quant_scheme = "q8_0";
	PART("quant", (test_greedy(RS_DTYPE_F32, 3, "on"), test_greedy(RS_DTYPE_F32, 20, "on")));
	quant_scheme = "q4_k_m";
	PART("quant", (test_greedy(RS_DTYPE_F32, 3, "on"), test_greedy(RS_DTYPE_F32, 3, "off"),
		       test_greedy(RS_DTYPE_F32, 20, "on")));
	quant_scheme = NULL;
	TEST_END();
}
#endif
