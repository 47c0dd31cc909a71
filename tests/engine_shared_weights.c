/* Engines created from one model on the CPU backend share one packed weight set (the
 * daemon's --workers):
 * - two engines give the logits of an engine alone, bit for bit (same threads, same
 *   kernels), and the greedy ids that follow from them; the survivor still does after the
 *   other is destroyed, whichever goes first;
 * - resident memory grows by the weights at the first engine's creation and not at the
 *   second's: the bound is derived from the model's own matrix bytes W (f32: packed as
 *   f32, W again; Q4_K_M copied, W again): the first grows by > W / 2 (so the measure can
 *   see a copy), the second by < W / 4 (KV pool and scratch are allocated, not touched);
 * - a second engine whose creation fails after taking the shared weights (a KV pool no
 *   address space holds) leaves the first running and frees nothing of it.
 * Everything freed (ASan leak check) in either destruction order. */
#include <errno.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/engine/engine.h"
#include "kernels/model/dtype.h"
#include "kernels/model/model_quantize.h"
#include "kernels/model/model_random.h"
#include "kernels/model/quant.h"
#include "tests/engine_test.h"

enum { PREFILL = 5, N_POS = 24 };

/* Big enough that the weights dwarf the scratch: ~58 MB of f32 matrices. */
static const struct rs_model_config config = {
    .dim = 512,
    .hidden_dim = 1536,
    .n_layers = 4,
    .n_heads = 8,
    .n_kv_heads = 4,
    .head_dim = 64,
    .vocab_size = 4096,
    .max_seq_len = 64,
    .rope_dim = 64,
    .rope_theta = 10000.0f,
    .norm_eps = 1e-5f,
};

/* Resident bytes, after giving back the heap's free pages (glibc keeps freed chunks
 * resident and reuses them: an earlier engine's weights would hide a new copy). */
static long rss_bytes(void)
{
	malloc_trim(0);
	long pages = -1, resident = -1;
	FILE *f = fopen("/proc/self/statm", "r");
	REQUIRE(f);
	REQUIRE(fscanf(f, "%ld %ld", &pages, &resident) == 2);
	fclose(f);
	return resident * sysconf(_SC_PAGESIZE);
}

/* The bytes of the matrices the CPU backend packs or copies. */
static size_t matrix_bytes(const struct rs_model *m)
{
	size_t n = m->output.rows * rs_dtype_row_bytes(m->output.dtype, m->output.cols);
	for (uint32_t l = 0; l < m->config.n_layers; l++) {
		const struct rs_layer_weights *w = &m->layers[l];
		const struct rs_tensor *t[] = {&w->wq,	   &w->wk,     &w->wv,	&w->wo,
					       &w->w_gate, &w->w_down, &w->w_up};
		for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
			n += t[i]->rows * rs_dtype_row_bytes(t[i]->dtype, t[i]->cols);
	}
	return n;
}

static char last_err[256]; /* create's message */

static int create(const struct rs_model *m, uint32_t kv_blocks, uint32_t block_size,
		  struct rs_engine **e)
{
	struct rs_engine_options opts;
	rs_engine_options_init(&opts);
	opts.backend = "cpu";
	opts.block_size = block_size;
	opts.kv_blocks = kv_blocks;
	opts.max_batch_tokens = 32;
	opts.threads = 2;
	opts.kv_dtype = "f32";
	opts.cpu_weights = "copy";
	last_err[0] = 0;
	int rc = rs_engine_create(m, &opts, e, last_err, sizeof(last_err));
	if (rc && kv_blocks < 1000)
		fprintf(stderr, "engine: %d %s\n", rc, last_err);
	return rc;
}

/* Logits of every position, the decode tokens greedy (argmax of the previous position),
 * written into tokens. */
static void run(struct rs_engine *e, uint32_t *tokens, float *logits)
{
	struct rs_kv_cache *kv = rs_engine_kv(e);
	uint32_t table[2];
	for (int b = 0; b < 2; b++)
		table[b] = (uint32_t)rs_kv_block_alloc(kv);
	struct rs_seq_step step = {
	    .tokens = tokens, .n_tokens = PREFILL, .block_table = table, .n_blocks = 2};
	CHECK(rs_engine_forward_logits(e, &step, 1, logits) == 0, "prefill");
	for (uint32_t p = PREFILL; p < N_POS; p++) {
		const float *prev = logits + (size_t)(p - 1) * config.vocab_size;
		uint32_t best = 0;
		for (uint32_t v = 1; v < config.vocab_size; v++)
			if (prev[v] > prev[best])
				best = v;
		tokens[p] = best;
		step = (struct rs_seq_step){.tokens = tokens + p,
					    .n_tokens = 1,
					    .start_pos = p,
					    .block_table = table,
					    .n_blocks = 2};
		CHECK(rs_engine_forward_logits(e, &step, 1,
					       logits + (size_t)p * config.vocab_size) == 0,
		      "decode at %u", p);
	}
	for (int b = 0; b < 2; b++)
		rs_kv_block_unref(kv, table[b]);
}

static void same_output(struct rs_engine *e, const uint32_t *ref_ids, const float *ref,
			const char *what)
{
	size_t n = (size_t)N_POS * config.vocab_size;
	float *got = malloc(n * sizeof(float));
	uint32_t ids[N_POS];
	REQUIRE(got);
	memcpy(ids, ref_ids, PREFILL * sizeof(uint32_t));
	run(e, ids, got);
	CHECK(memcmp(ids, ref_ids, sizeof(ids)) == 0, "%s: greedy ids differ", what);
	CHECK(memcmp(got, ref, n * sizeof(float)) == 0, "%s: logits differ", what);
	free(got);
}

static void check_model(const struct rs_model *m, const char *name, bool first_goes_first)
{
	size_t n = (size_t)N_POS * config.vocab_size;
	float *ref = malloc(n * sizeof(float));
	uint32_t ref_ids[N_POS];
	uint64_t s = 7;
	for (int i = 0; i < PREFILL; i++)
		ref_ids[i] = (uint32_t)(test_rand(&s) % config.vocab_size);
	REQUIRE(ref);

	/* One engine alone: the reference. */
	struct rs_engine *alone = NULL, *a = NULL, *b = NULL, *failed = NULL;
	REQUIRE(create(m, 8, 16, &alone) == 0);
	run(alone, ref_ids, ref);
	rs_engine_destroy(alone);

	size_t W = matrix_bytes(m);
	long r0 = rss_bytes();
	REQUIRE(create(m, 8, 16, &a) == 0);
	long r1 = rss_bytes();
	REQUIRE(create(m, 8, 16, &b) == 0);
	long r2 = rss_bytes();
	printf("%-6s weights %zu B: first engine +%ld B, second +%ld B\n", name, W, r1 - r0,
	       r2 - r1);
	CHECK(r1 - r0 > (long)(W / 2),
	      "%s: the first engine grew by %ld B <= W/2 = %zu: the "
	      "measure cannot tell a copy",
	      name, r1 - r0, W / 2);
	CHECK(r2 - r1 < (long)(W / 4),
	      "%s: the second engine grew by %ld B >= W/4 = %zu: "
	      "weights not shared",
	      name, r2 - r1, W / 4);

	/* A second engine that fails after taking the weights: a KV pool of 2^48 bytes each for K
	 * and V, more than the address space. */
	CHECK(create(m, 1u << 20, 65536, &failed) == -ENOMEM, "%s: huge KV pool created", name);
	CHECK(failed == NULL, "%s: failed creation returned an engine", name);
	/* The CPU backend's KV allocation, which comes after the weights are taken. */
	CHECK(strstr(last_err, "KV cache") != NULL, "%s: failed elsewhere: %s", name, last_err);

	same_output(a, ref_ids, ref, "first of two");
	same_output(b, ref_ids, ref, "second of two");
	rs_engine_destroy(first_goes_first ? a : b);
	same_output(first_goes_first ? b : a, ref_ids, ref, "survivor");
	rs_engine_destroy(first_goes_first ? b : a);
	free(ref);
}

int main(void)
{
	struct rs_model *f32 = NULL, *q = NULL;
	REQUIRE(rs_model_random(&config, RS_DTYPE_F32, 3, false, &f32) == 0);
	REQUIRE(rs_model_quantize(f32, RS_QUANT_Q4_K_M, &q) == 0);
	check_model(f32, "f32", true);
	check_model(q, "q4_k_m", false);
	rs_model_free(q);
	rs_model_free(f32);
	TEST_END();
}
