/* The backend-neutral engine: options, validation, dispatch (see engine.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/large_alloc.h"
#include "kernels/cpu/ops.h"
#include "kernels/engine/engine_backend.h"
#include "kernels/model/dtype.h"
#include "kernels/model/errmsg.h"
#include "kernels/model/quant.h"

/* The CUDA backend (kernels/cuda/) is linked in when the Makefile finds nvcc, which then
 * defines RS_HAVE_CUDA_BACKEND; without it "cuda" answers -ENODEV. */
#ifdef RS_HAVE_CUDA_BACKEND
#define CUDA_BACKEND (&rs_engine_backend_cuda)
#else
#define CUDA_BACKEND NULL
#endif

void rs_engine_options_init(struct rs_engine_options *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->backend = "auto";
}

/* Whether the weights that produce keys and values are all f32. */
static bool kv_weights_f32(const struct rs_model *model)
{
	for (uint32_t l = 0; l < model->config.n_layers; l++)
		if (model->layers[l].wk.dtype != RS_DTYPE_F32 ||
		    model->layers[l].wv.dtype != RS_DTYPE_F32)
			return false;
	return true;
}

/* Whether any weight matrix is block-quantized. */
static bool has_quantized(const struct rs_model *m)
{
	if (rs_dtype_is_quant(m->token_embedding.dtype) || rs_dtype_is_quant(m->output.dtype))
		return true;
	for (uint32_t l = 0; l < m->config.n_layers; l++) {
		const struct rs_layer_weights *w = &m->layers[l];
		const struct rs_tensor *t[] = {&w->wq,	   &w->wk,     &w->wv,	&w->wo,
					       &w->w_gate, &w->w_down, &w->w_up};
		for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
			if (rs_dtype_is_quant(t[i]->dtype))
				return true;
	}
	return false;
}

/* Fill defaults in; pick the backend and the KV dtype. */
static int resolve(const struct rs_model *model, struct rs_engine_options *o,
		   const struct rs_engine_backend **backend, const char **note, char *err,
		   size_t err_size)
{
	const struct rs_model_config *cfg = &model->config;
	if (!o->block_size)
		o->block_size = 16;
	if (!o->kv_blocks)
		o->kv_blocks = 8 * rs_kv_blocks_for(cfg->max_seq_len, o->block_size);
	if (!o->max_batch_tokens)
		o->max_batch_tokens = 512;
	if (!o->lanes)
		o->lanes = 1;
	if (o->threads < 0 || o->threads > 1024 || o->lanes > 1024 || o->kv_blocks > INT32_MAX ||
	    o->block_size > 65536 || o->max_batch_tokens > (1u << 24)) {
		rs_errmsg(err, err_size, 0, "engine options out of range");
		return -EINVAL;
	}
	/* The KV cache's bytes (K and V, f32 at most) must be a number before any backend
	 * computes them: each option is in range, their product may not be. */
	uint64_t cache_bytes = (uint64_t)cfg->n_kv_heads * cfg->head_dim * 2 * sizeof(float);
	if (__builtin_mul_overflow(cache_bytes, (uint64_t)o->kv_blocks, &cache_bytes) ||
	    __builtin_mul_overflow(cache_bytes, (uint64_t)o->block_size, &cache_bytes) ||
	    __builtin_mul_overflow(cache_bytes, (uint64_t)cfg->n_layers, &cache_bytes) ||
	    cache_bytes > SIZE_MAX / 2) {
		rs_errmsg(err, err_size, 0, "KV cache of %u blocks of %u positions is too large",
			  o->kv_blocks, o->block_size);
		return -EINVAL;
	}
	const char *name = o->backend ? o->backend : "auto";
	if (strcmp(name, "auto") == 0) {
		/* CUDA when it is built and a device answers; the CPU otherwise, saying why. */
		*backend = CUDA_BACKEND;
		if (!*backend) {
			*note = "CUDA backend not built: using the CPU backend";
			*backend = &rs_engine_backend_cpu;
		} else if ((*backend)->available && (*backend)->available(NULL, 0) != 0) {
			*note = "no CUDA device: using the CPU backend";
			*backend = &rs_engine_backend_cpu;
		} else if (has_quantized(model)) {
			/* Until tests/engine_cuda's quantized part has passed on a device. */
			*note =
			    "quantized weights: the CUDA kernels for them have not run on a GPU "
			    "yet, using the CPU backend (backend cuda tries them)";
			*backend = &rs_engine_backend_cpu;
		}
	} else if (strcmp(name, "cpu") == 0) {
		*backend = &rs_engine_backend_cpu;
	} else if (strcmp(name, "cuda") == 0) {
		*backend = CUDA_BACKEND;
		if (!*backend) {
			rs_errmsg(err, err_size, 0, "CUDA backend not built");
			return -ENODEV;
		}
		int rc = (*backend)->available ? (*backend)->available(err, err_size) : 0;
		if (rc)
			return rc;
	} else {
		rs_errmsg(err, err_size, 0, "unknown engine backend \"%s\" (auto, cpu, cuda)",
			  name);
		return -EINVAL;
	}
	o->backend = (*backend)->name;

	const char *kv = o->kv_dtype ? o->kv_dtype : "auto";
	bool cpu = *backend == &rs_engine_backend_cpu;
	if (strcmp(kv, "auto") == 0) {
		/* f16 on the CPU for f16/bf16 models: decode at large batches is bound by the
		 * attention reading the cache, f16 halves it, and its rounding (logits move
		 * by ~1e-3 of their RMS) is below the weights' own. f32 models keep f32: their
		 * logits are expected to match f32 arithmetic (the CUDA backend's to 1e-4);
		 * "f16" is one option away. */
		kv = cpu && !kv_weights_f32(model) ? "f16" : "f32";
	} else if (strcmp(kv, "f16") == 0 && !cpu) {
		rs_errmsg(err, err_size, 0, "KV dtype f16 is CPU-only (the %s backend stores f32)",
			  (*backend)->name);
		return -EINVAL;
	} else if (strcmp(kv, "f32") != 0 && strcmp(kv, "f16") != 0) {
		rs_errmsg(err, err_size, 0, "unknown KV dtype \"%s\" (auto, f32, f16)", kv);
		return -EINVAL;
	}
	o->kv_dtype = kv;

	const char *products = o->cpu_products ? o->cpu_products : "auto";
	if (strcmp(products, "auto") == 0) {
		products = rs_cpu_isa() >= RS_ISA_AVX2 ? "ours" : "blas";
	} else if ((strcmp(products, "ours") == 0 || strcmp(products, "avx2") == 0) &&
		   rs_cpu_isa() < RS_ISA_AVX2) {
		rs_errmsg(err, err_size, 0, "CPU products \"%s\" need AVX2 or AVX-512", products);
		return -EINVAL;
	} else if (strcmp(products, "ours") != 0 && strcmp(products, "blas") != 0 &&
		   strcmp(products, "avx2") != 0) {
		rs_errmsg(err, err_size, 0, "unknown CPU products \"%s\" (auto, ours, avx2, blas)",
			  products);
		return -EINVAL;
	}
	o->cpu_products = products;

	const char *weights = o->cpu_weights ? o->cpu_weights : "auto";
	if (strcmp(weights, "auto") == 0) {
		/* The copy takes huge pages where there are some, and interleaves quantized
		 * rows where the AVX2 kernels read them eight at a time: on 4 KiB pages too,
		 * that is 1.3-2x the decode speed of reading the mapping in place. */
		bool interleaves =
		    has_quantized(model) && rs_cpu_isa() >= RS_ISA_AVX2 && rs_cpu_has_f16c();
		weights = rs_huge_pages_available() || interleaves ? "copy" : "mapped";
	} else if (strcmp(weights, "copy") != 0 && strcmp(weights, "mapped") != 0) {
		rs_errmsg(err, err_size, 0,
			  "unknown CPU weights setting \"%s\" (auto, copy, mapped)", weights);
		return -EINVAL;
	}
	o->cpu_weights = weights;

	const char *graphs = o->cuda_graphs ? o->cuda_graphs : "auto";
	if (strcmp(graphs, "auto") == 0)
		graphs = "on";
	else if (strcmp(graphs, "on") != 0 && strcmp(graphs, "off") != 0) {
		rs_errmsg(err, err_size, 0, "unknown CUDA graphs setting \"%s\" (auto, on, off)",
			  graphs);
		return -EINVAL;
	}
	o->cuda_graphs = graphs;
	return 0;
}

/* A matrix is exactly [rows][cols] of a known type: backends take k from cols and the
 * outputs from rows, so a transposed matrix with the right element count must fail. */
static bool shape_ok(const struct rs_tensor *t, uint64_t rows, uint64_t cols)
{
	return t->data && t->rows == rows && t->cols == cols &&
	       rs_dtype_row_bytes(t->dtype, t->cols) != 0;
}

/* A vector of n elements, stored [1][n] or [n][1]. */
static bool vector_ok(const struct rs_tensor *t, uint64_t n)
{
	return shape_ok(t, 1, n) || shape_ok(t, n, 1);
}

/* Every weight has the shape the configuration implies: checked once here, so that no
 * backend reads past a tensor. */
static int check_shapes(const struct rs_model *m, char *err, size_t err_size)
{
	const struct rs_model_config *cfg = &m->config;
	uint64_t dim = cfg->dim, hidden = cfg->hidden_dim;
	uint64_t q_dim = (uint64_t)cfg->n_heads * cfg->head_dim;
	uint64_t kv_dim = (uint64_t)cfg->n_kv_heads * cfg->head_dim;
	if (!shape_ok(&m->token_embedding, cfg->vocab_size, dim) ||
	    !shape_ok(&m->output, cfg->vocab_size, dim) || !vector_ok(&m->final_norm, dim)) {
		rs_errmsg(err, err_size, 0,
			  "model: embedding, output or final norm has a wrong shape");
		return -EINVAL;
	}
	for (uint32_t l = 0; l < cfg->n_layers; l++) {
		const struct rs_layer_weights *w = &m->layers[l];
		if (!vector_ok(&w->attn_norm, dim) || !vector_ok(&w->ffn_norm, dim) ||
		    !shape_ok(&w->wq, q_dim, dim) || !shape_ok(&w->wk, kv_dim, dim) ||
		    !shape_ok(&w->wv, kv_dim, dim) || !shape_ok(&w->wo, dim, q_dim) ||
		    !shape_ok(&w->w_gate, hidden, dim) || !shape_ok(&w->w_up, hidden, dim) ||
		    !shape_ok(&w->w_down, dim, hidden)) {
			rs_errmsg(err, err_size, 0,
				  "model: layer %u has a tensor of the wrong shape", l);
			return -EINVAL;
		}
		if ((w->bq.data && !vector_ok(&w->bq, q_dim)) ||
		    (w->bk.data && !vector_ok(&w->bk, kv_dim)) ||
		    (w->bv.data && !vector_ok(&w->bv, kv_dim))) {
			rs_errmsg(err, err_size, 0,
				  "model: layer %u has a q, k or v bias of the wrong shape", l);
			return -EINVAL;
		}
	}
	if (m->rope_freqs.data && !vector_ok(&m->rope_freqs, cfg->rope_dim / 2)) {
		rs_errmsg(err, err_size, 0, "model: rope_freqs must hold rope_dim / 2 = %u values",
			  cfg->rope_dim / 2);
		return -EINVAL;
	}
	return 0;
}

bool rs_engine_qkv_bias(const struct rs_engine *e, uint32_t layer, float *out)
{
	const struct rs_layer_weights *w = &e->model->layers[layer];
	const struct rs_model_config *cfg = &e->config;
	size_t q_dim = (size_t)cfg->n_heads * cfg->head_dim;
	size_t kv_dim = (size_t)cfg->n_kv_heads * cfg->head_dim;
	if (!w->bq.data && !w->bk.data && !w->bv.data)
		return false;
	const struct {
		const struct rs_tensor *t;
		size_t offset, n;
	} parts[] = {{&w->bq, 0, q_dim}, {&w->bk, q_dim, kv_dim}, {&w->bv, q_dim + kv_dim, kv_dim}};
	for (size_t i = 0; i < 3; i++) {
		if (parts[i].t->data)
			rs_convert_to_f32(out + parts[i].offset, parts[i].t->data,
					  parts[i].t->dtype, parts[i].n);
		else
			memset(out + parts[i].offset, 0, parts[i].n * sizeof(float));
	}
	return true;
}

int rs_engine_create(const struct rs_model *model, const struct rs_engine_options *opts,
		     struct rs_engine **out, char *err, size_t err_size)
{
	*out = NULL;
	rs_errmsg(err, err_size, 0, "%s", "");
	if (!model || !model->layers) {
		rs_errmsg(err, err_size, 0, "no model");
		return -EINVAL;
	}
	int rc = rs_model_check_config(&model->config, err, err_size);
	if (!rc)
		rc = check_shapes(model, err, err_size);
	if (rc)
		return rc;
	struct rs_engine_options o;
	if (opts)
		o = *opts;
	else
		rs_engine_options_init(&o);
	const struct rs_engine_backend *backend = NULL;
	const char *note = NULL;
	rc = resolve(model, &o, &backend, &note, err, err_size);
	if (rc)
		return rc;

	struct rs_engine *engine = calloc(1, sizeof(*engine));
	if (!engine) {
		rs_errmsg(err, err_size, 0, "out of memory");
		return -ENOMEM;
	}
	engine->model = model;
	engine->config = model->config;
	engine->options = o;
	engine->backend = backend;
	engine->rope_freqs = calloc(model->config.rope_dim / 2, sizeof(double));
	rc = engine->rope_freqs ? rs_model_rope_freqs(model, engine->rope_freqs, err, err_size)
				: -ENOMEM;
	if (rc) {
		if (rc == -ENOMEM)
			rs_errmsg(err, err_size, 0, "out of memory");
		free(engine->rope_freqs);
		free(engine);
		return rc;
	}
	rc = rs_kv_cache_create(o.kv_blocks, o.block_size, &engine->kv);
	if (rc) {
		rs_errmsg(err, err_size, 0, "KV allocator: %s", strerror(-rc));
		free(engine->rope_freqs);
		free(engine);
		return rc;
	}
	rc = backend->create(engine, err, err_size);
	if (rc) {
		rs_kv_cache_destroy(engine->kv);
		free(engine->rope_freqs);
		free(engine);
		return rc;
	}
	if (note)
		rs_errmsg(err, err_size, 0, "%s", note);
	*out = engine;
	return 0;
}

void rs_engine_destroy(struct rs_engine *engine)
{
	if (!engine)
		return;
	for (uint32_t lane = 0; lane < engine->options.lanes; lane++)
		engine->backend->wait(engine, lane);
	engine->backend->destroy(engine);
	rs_kv_cache_destroy(engine->kv);
	free(engine->rope_freqs);
	free(engine);
}

struct rs_kv_cache *rs_engine_kv(struct rs_engine *engine)
{
	return engine->kv;
}

const struct rs_engine_options *rs_engine_options(const struct rs_engine *engine)
{
	return &engine->options;
}

int rs_engine_step_fd(struct rs_engine *engine, uint32_t lane)
{
	if (lane >= engine->options.lanes)
		return -EINVAL;
	return engine->backend->step_fd ? engine->backend->step_fd(engine, lane) : -ENOTSUP;
}

void rs_engine_stats(struct rs_engine *engine, struct rs_engine_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (engine->backend->stats)
		engine->backend->stats(engine, out);
}

const struct rs_model_config *rs_engine_config(const struct rs_engine *engine)
{
	return &engine->config;
}

/* Check a whole step before anything runs. Returns the token count or -errno. */
static int64_t validate(const struct rs_engine *e, const struct rs_seq_step *seqs, uint32_t n_seqs,
			int sampling)
{
	const struct rs_model_config *cfg = &e->config;
	uint32_t bs = e->options.block_size;
	uint64_t total = 0;
	if (!seqs || !n_seqs)
		return -EINVAL;
	for (uint32_t s = 0; s < n_seqs; s++) {
		const struct rs_seq_step *q = &seqs[s];
		if (!q->tokens || !q->n_tokens || !q->block_table)
			return -EINVAL;
		uint64_t end = (uint64_t)q->start_pos + q->n_tokens;
		if (end > cfg->max_seq_len || (uint64_t)q->n_blocks * bs < end)
			return -EINVAL;
		if (sampling && q->sample && !q->out_token)
			return -EINVAL;
		for (uint32_t i = 0; i < q->n_tokens; i++)
			if (q->tokens[i] >= cfg->vocab_size)
				return -EINVAL;
		uint32_t used = rs_kv_blocks_for((uint32_t)end, bs);
		for (uint32_t b = 0; b < used; b++) {
			uint32_t refs = rs_kv_block_refcount(e->kv, q->block_table[b]);
			/* Blocks holding new positions must be private: see kv_cache.h. */
			if (refs == 0 || ((b + 1) * (uint64_t)bs > q->start_pos && refs != 1))
				return -EINVAL;
		}
		total += q->n_tokens;
	}
	if (total > e->options.max_batch_tokens)
		return -E2BIG;
	return (int64_t)total;
}

int rs_engine_step(struct rs_engine *engine, uint32_t lane, const struct rs_seq_step *seqs,
		   uint32_t n_seqs)
{
	if (lane >= engine->options.lanes)
		return -EINVAL;
	int64_t total = validate(engine, seqs, n_seqs, 1);
	if (total < 0)
		return (int)total;
	return engine->backend->step(engine, lane, seqs, n_seqs, (uint32_t)total, NULL);
}

int rs_engine_step_poll(struct rs_engine *engine, uint32_t lane)
{
	if (lane >= engine->options.lanes)
		return -EINVAL;
	return engine->backend->poll(engine, lane);
}

int rs_engine_step_wait(struct rs_engine *engine, uint32_t lane)
{
	if (lane >= engine->options.lanes)
		return -EINVAL;
	return engine->backend->wait(engine, lane);
}

int rs_engine_register_host(struct rs_engine *engine, void *ptr, size_t size)
{
	if (!ptr || !size)
		return -EINVAL;
	if (!engine->backend->register_host)
		return 0;
	return engine->backend->register_host(engine, ptr, size);
}

int rs_engine_unregister_host(struct rs_engine *engine, void *ptr)
{
	if (!ptr)
		return -EINVAL;
	if (!engine->backend->unregister_host)
		return 0;
	return engine->backend->unregister_host(engine, ptr);
}

int rs_engine_forward_logits(struct rs_engine *engine, const struct rs_seq_step *seqs,
			     uint32_t n_seqs, float *logits)
{
	if (!logits)
		return -EINVAL;
	int64_t total = validate(engine, seqs, n_seqs, 0);
	if (total < 0)
		return (int)total;
	return engine->backend->step(engine, 0, seqs, n_seqs, (uint32_t)total, logits);
}
