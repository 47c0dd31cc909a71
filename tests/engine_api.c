/* The engine's interface contract: backend choice and its errors, option defaults, and
 * step validation (every invalid step refused with nothing written). */
#include <errno.h>
#include <string.h>

#include "kernels/cpu/ops.h"
#include "kernels/engine/engine.h"
#include "kernels/model/model_random.h"
#include "tests/engine_test.h"

int main(void)
{
	struct rs_model_config cfg = test_config();
	struct rs_model *model = NULL;
	if (rs_model_random(&cfg, RS_DTYPE_F16, 3, true, &model))
		return 1;
	struct rs_engine_options opts;
	struct rs_engine *e = NULL;
	char err[128];

	rs_engine_options_init(&opts);
	opts.backend = "cuda";
#ifndef RS_HAVE_CUDA_BACKEND
	CHECK(rs_engine_create(model, &opts, &e, err, sizeof(err)) == -ENODEV && !e, "cuda");
	CHECK(strcmp(err, "CUDA backend not built") == 0, "message: %s", err);
#endif
	/* A tensor whose shape disagrees with the configuration is refused before any
	 * backend reads it, whatever the backend. */
	opts.backend = "cpu";
	uint64_t saved_rows = model->layers[1].wk.rows;
	model->layers[1].wk.rows += 1;
	CHECK(rs_engine_create(model, &opts, &e, err, sizeof(err)) == -EINVAL && !e, "wrong shape");
	CHECK(strstr(err, "layer 1") != NULL, "message names the layer: %s", err);
	model->layers[1].wk.rows = saved_rows;
	/* Transposed, with the right element count: wk [dim][kv_dim] instead of [kv_dim][dim]
	 * (a backend taking k from cols would read past it). */
	struct rs_tensor saved_wk = model->layers[0].wk;
	model->layers[0].wk.rows = saved_wk.cols;
	model->layers[0].wk.cols = saved_wk.rows;
	CHECK(saved_wk.rows != saved_wk.cols, "the test model's wk is square");
	CHECK(rs_engine_create(model, &opts, &e, err, sizeof(err)) == -EINVAL && !e, "transposed");
	model->layers[0].wk = saved_wk;
	/* A norm vector may be stored [n][1]. */
	struct rs_tensor saved_norm_t = model->final_norm;
	model->final_norm.rows = saved_norm_t.cols;
	model->final_norm.cols = saved_norm_t.rows;
	CHECK(rs_engine_create(model, &opts, &e, err, sizeof(err)) == 0 && e, "norm [n][1]: %s",
	      err);
	rs_engine_destroy(e);
	e = NULL;
	model->final_norm = saved_norm_t;
	/* A KV cache whose size does not fit in 64 bits, each option in range: refused
	 * before any backend computes it. The model's shapes are only metadata here. */
	{
		struct rs_model big = *model;
		struct rs_layer_weights layers[16];
		big.config.dim = big.config.hidden_dim = 4096;
		big.config.n_heads = big.config.n_kv_heads = 64;
		big.config.head_dim = big.config.rope_dim = 64;
		big.config.n_layers = 16;
		struct rs_tensor matrix = {RS_DTYPE_F32, 4096, 4096, model->output.data};
		struct rs_tensor vector = {RS_DTYPE_F32, 1, 4096, model->output.data};
		for (int l = 0; l < 16; l++)
			layers[l] = (struct rs_layer_weights){.attn_norm = vector,
							      .wq = matrix,
							      .wk = matrix,
							      .wv = matrix,
							      .wo = matrix,
							      .ffn_norm = vector,
							      .w_gate = matrix,
							      .w_down = matrix,
							      .w_up = matrix};
		big.layers = layers;
		big.final_norm = vector;
		big.token_embedding.cols = big.output.cols = 4096;
		struct rs_engine_options huge;
		rs_engine_options_init(&huge);
		huge.backend = "cpu";
		huge.kv_blocks = INT32_MAX;
		huge.block_size = 65536;
		CHECK(rs_engine_create(&big, &huge, &e, err, sizeof(err)) == -EINVAL && !e,
		      "KV cache past 64 bits");
		CHECK(strstr(err, "KV cache") != NULL, "message names the KV cache: %s", err);
	}
	const void *saved_norm = model->final_norm.data;
	model->final_norm.data = NULL;
	CHECK(rs_engine_create(model, &opts, &e, err, sizeof(err)) == -EINVAL && !e,
	      "missing tensor");
	model->final_norm.data = saved_norm;

	opts.backend = "tpu";
	CHECK(rs_engine_create(model, &opts, &e, err, sizeof(err)) == -EINVAL && !e, "unknown");
	CHECK(strstr(err, "tpu") != NULL, "message names the backend: %s", err);

	/* Defaults. */
	CHECK(rs_engine_create(model, NULL, &e, err, sizeof(err)) == 0, "defaults: %s", err);
	if (!e) {
		rs_model_free(model);
		TEST_END();
	}
	const struct rs_engine_options *o = rs_engine_options(e);
	/* auto: CUDA when a device answers, else the CPU with a note saying why. */
	if (strcmp(o->backend, "cpu") == 0) {
#ifdef RS_HAVE_CUDA_BACKEND
		CHECK(strcmp(err, "no CUDA device: using the CPU backend") == 0, "note: %s", err);
#else
		CHECK(strcmp(err, "CUDA backend not built: using the CPU backend") == 0, "note: %s",
		      err);
#endif
	} else {
		CHECK(strcmp(o->backend, "cuda") == 0 && !err[0], "auto picked %s (%s)", o->backend,
		      err);
	}
	CHECK(o->block_size == 16 && o->lanes == 1 && o->max_batch_tokens == 512, "defaults");
	CHECK(o->kv_blocks == 8 * (cfg.max_seq_len / 16), "kv_blocks %u", o->kv_blocks);
	/* auto KV dtype: f16 on the CPU for these f16 weights; the CUDA backend stores f32. */
	CHECK(strcmp(o->kv_dtype, strcmp(o->backend, "cpu") == 0 ? "f16" : "f32") == 0,
	      "kv_dtype %s on %s", o->kv_dtype, o->backend);
	CHECK(rs_kv_free_count(rs_engine_kv(e)) == o->kv_blocks, "pool size");
	CHECK(rs_engine_config(e)->dim == cfg.dim, "config");
	CHECK(rs_engine_step_poll(e, 0) == 1, "idle lane polls done");
	CHECK(rs_engine_step_poll(e, 1) == -EINVAL, "lane out of range");
	CHECK(rs_engine_step_wait(e, 0) == 0, "idle lane waits");

	struct rs_kv_cache *kv = rs_engine_kv(e);
	uint32_t table[2] = {(uint32_t)rs_kv_block_alloc(kv), (uint32_t)rs_kv_block_alloc(kv)};
	uint32_t tokens[20] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10,
			       11, 12, 13, 14, 15, 16, 17, 18, 19, 20};
	uint32_t out = 12345;
	struct rs_seq_step good = {.tokens = tokens,
				   .n_tokens = 20,
				   .block_table = table,
				   .n_blocks = 2,
				   .sample = 1,
				   .out_token = &out};
	struct rs_seq_step bad;
#define REFUSED(errno_, mutate, why)                                                               \
	do {                                                                                       \
		bad = good;                                                                        \
		mutate;                                                                            \
		CHECK(rs_engine_step(e, 0, &bad, 1) == (errno_), why);                             \
		CHECK(out == 12345, why ": token written");                                        \
	} while (0)
	REFUSED(-EINVAL, bad.n_tokens = 0, "no tokens");
	REFUSED(-EINVAL, bad.tokens = NULL, "NULL tokens");
	REFUSED(-EINVAL, bad.block_table = NULL, "NULL table");
	REFUSED(-EINVAL, bad.out_token = NULL, "NULL out_token");
	REFUSED(-EINVAL, bad.n_blocks = 1, "table too short");
	REFUSED(-EINVAL, tokens[19] = cfg.vocab_size; bad.tokens = tokens, "token out of vocab");
	tokens[19] = 20;
	REFUSED(-EINVAL, bad.start_pos = cfg.max_seq_len - 10, "past max_seq_len");
	uint32_t freed[2] = {table[0], 9999};
	REFUSED(-EINVAL, bad.block_table = freed, "unknown block");
	uint32_t unallocated[2] = {table[0], table[1] + 1};
	REFUSED(-EINVAL, bad.block_table = unallocated, "free block");
	CHECK(rs_engine_step(e, 1, &good, 1) == -EINVAL, "lane 1");
	CHECK(rs_engine_step(e, 0, &good, 0) == -EINVAL, "no sequences");
	struct rs_seq_step many[40];
	for (int i = 0; i < 40; i++)
		many[i] = good; /* 800 tokens > 512 */
	CHECK(rs_engine_step(e, 0, many, 40) == -E2BIG, "too many tokens");
	CHECK(rs_engine_forward_logits(e, &good, 1, NULL) == -EINVAL, "NULL logits");

	CHECK(rs_engine_step(e, 0, &good, 1) == 0, "valid step");
	/* out_token is written when the step completes (later than the call on CUDA). */
	CHECK(rs_engine_step_wait(e, 0) == 0, "wait");
	CHECK(out < cfg.vocab_size, "sampled %u", out);
	CHECK(rs_engine_step_poll(e, 0) == 1 && rs_engine_step_wait(e, 0) == 0, "done");
	rs_kv_block_unref(kv, table[0]);
	rs_kv_block_unref(kv, table[1]);
	rs_engine_destroy(e);
	rs_engine_destroy(NULL);

	/* Options out of range. */
	rs_engine_options_init(&opts);
	opts.threads = -1;
	CHECK(rs_engine_create(model, &opts, &e, err, sizeof(err)) == -EINVAL, "threads -1");
	rs_engine_options_init(&opts);
	opts.backend = "cpu";
	opts.kv_dtype = "bf16";
	CHECK(rs_engine_create(model, &opts, &e, err, sizeof(err)) == -EINVAL && !e, "kv bf16");
	CHECK(strstr(err, "bf16") != NULL, "message names the KV dtype: %s", err);
	opts.kv_dtype = "f32";
	CHECK(rs_engine_create(model, &opts, &e, err, sizeof(err)) == 0, "kv f32: %s", err);
	CHECK(e && strcmp(rs_engine_options(e)->kv_dtype, "f32") == 0, "kv f32 resolved");
	rs_engine_destroy(e);
	e = NULL;
	opts.kv_dtype = NULL;
	opts.cpu_products = "mkl";
	CHECK(rs_engine_create(model, &opts, &e, err, sizeof(err)) == -EINVAL && !e,
	      "products mkl");
	CHECK(strstr(err, "mkl") != NULL, "message names the products: %s", err);
	opts.cpu_products = "blas";
	CHECK(rs_engine_create(model, &opts, &e, err, sizeof(err)) == 0, "products blas: %s", err);
	CHECK(e && strcmp(rs_engine_options(e)->cpu_products, "blas") == 0, "blas resolved");
	rs_engine_destroy(e);
	e = NULL;
	/* What an engine resolved to is accepted back. */
	opts.cpu_products = "ours";
	CHECK(rs_engine_create(model, &opts, &e, err, sizeof(err)) ==
		  (rs_cpu_isa() >= RS_ISA_AVX2 ? 0 : -EINVAL),
	      "products ours: %s", err);
	rs_engine_destroy(e);
	e = NULL;
	opts.cpu_products = NULL;
	CHECK(rs_engine_create(model, &opts, &e, err, sizeof(err)) == 0, "products auto: %s", err);
	CHECK(e && strcmp(rs_engine_options(e)->cpu_products,
			  rs_cpu_isa() >= RS_ISA_AVX2 ? "ours" : "blas") == 0,
	      "auto resolved to %s", e ? rs_engine_options(e)->cpu_products : "-");
	rs_engine_destroy(e);
	e = NULL;
	struct rs_model broken = *model;
	broken.config.n_kv_heads = 3; /* does not divide n_heads */
	CHECK(rs_engine_create(&broken, NULL, &e, err, sizeof(err)) == -EINVAL, "bad config");
	rs_model_free(model);
	TEST_END();
}
