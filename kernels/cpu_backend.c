/* The CPU backend: fp32 weights, an f32 or f16 KV cache (options.kv_dtype), products split over a thread pool that also runs the
 * per-token work (norms, rope, cache stores, swiglu), the attention and the sampling.
 * A product over up to RS_MATMUL_STREAM_MAX_M tokens (decode) is our streaming kernel,
 * above (prefill) a CBLAS SGEMM (see rs_op_matmul_cols).
 *
 * A step runs synchronously inside rs_engine_step. Per layer:
 *   xb = rmsnorm(x); [q|k|v] = xb Wqkv^T (one SGEMM, the three projections fused);
 *   rope(q, k); store k, v in the paged cache; att = attention(q, cache);
 *   x += att Wo^T (the residual fused into the SGEMM's beta = 1);
 *   xb = rmsnorm(x); [g|u] = xb Wgu^T (fused); h = silu(g) u; x += h Wdown^T.
 * x holds every token of the step, so each weight matrix is read once per step. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "kernels/dtype.h"
#include "kernels/engine_backend.h"
#include "kernels/errmsg.h"
#include "kernels/ops.h"
#include "kernels/thread_pool.h"

struct cpu_layer {
	float *attn_norm, *ffn_norm; /* [dim] */
	float *wqkv;                 /* [q_dim + 2 kv_dim][dim] */
	const float *wo;             /* [dim][q_dim] */
	float *w_gate_up;            /* [2 hidden][dim] */
	const float *w_down;         /* [dim][hidden] */
	float *wo_owned, *w_down_owned;
};

struct cpu_engine {
	struct cpu_layer *layers;
	float *final_norm;
	const float *output; /* [vocab][dim] */
	float *output_owned;
	void *k_cache, *v_cache; /* [layer][block][block_size][kv_dim] of kv_dtype */
	enum rs_dtype kv_dtype;  /* RS_DTYPE_F32 or RS_DTYPE_F16 (options.kv_dtype) */
	size_t layer_cache_elems;

	/* Scratch for max_batch_tokens tokens. */
	float *x, *xb, *qkv, *att, *gate_up, *hidden;
	uint32_t *positions;  /* per token */
	uint32_t *seq_offset; /* first token of each sequence in the step */
	uint32_t *token_seq;  /* sequence of each token */
	float *scores;        /* per worker: attention scratch for max_seq_len */
	size_t scores_per_worker;
	uint8_t *sample_scratch; /* per worker */
	size_t sample_scratch_size;
	float *logits; /* [logits_rows][vocab] for sampled rows */
	uint32_t logits_rows;
	uint32_t *sample_rows; /* sequence index of each sampled row */

	struct rs_thread_pool *pool;
	pthread_mutex_t lock; /* serializes steps */
	int *lane_status;     /* 0 or the negative errno of the lane's last step */
};

static float *alloc_floats(size_t n)
{
	/* 64-byte alignment for the GEMM kernels; the size rounded up as aligned_alloc
	 * requires. */
	size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63;
	return aligned_alloc(64, bytes ? bytes : 64);
}

/* Copy a tensor's elements as f32 into dst (a row range of a fused matrix). */
static void to_f32(float *dst, const struct rs_tensor *t)
{
	rs_convert_to_f32(dst, t->data, t->dtype, (size_t)(t->rows * t->cols));
}

/* The tensor itself when it is f32; otherwise a converted copy kept in *owned. */
static const float *f32_view(const struct rs_tensor *t, float **owned)
{
	*owned = NULL;
	if (t->dtype == RS_DTYPE_F32)
		return t->data;
	*owned = alloc_floats((size_t)(t->rows * t->cols));
	if (*owned)
		to_f32(*owned, t);
	return *owned;
}

static void cpu_destroy(struct rs_engine *engine);

static int load_weights(struct rs_engine *e, struct cpu_engine *c, char *err, size_t err_size)
{
	const struct rs_model *m = e->model;
	const struct rs_model_config *cfg = &e->config;
	size_t dim = cfg->dim, hidden = cfg->hidden_dim;
	size_t q_dim = (size_t)cfg->n_heads * cfg->head_dim;
	size_t kv_dim = (size_t)cfg->n_kv_heads * cfg->head_dim;

	/* Shapes were checked by rs_engine_create. */
	c->layers = calloc(cfg->n_layers, sizeof(*c->layers));
	c->final_norm = alloc_floats(dim);
	if (!c->layers || !c->final_norm)
		return -ENOMEM;
	to_f32(c->final_norm, &m->final_norm);
	c->output = f32_view(&m->output, &c->output_owned);
	if (!c->output)
		return -ENOMEM;
	for (uint32_t l = 0; l < cfg->n_layers; l++) {
		const struct rs_layer_weights *w = &m->layers[l];
		struct cpu_layer *L = &c->layers[l];
		L->attn_norm = alloc_floats(dim);
		L->ffn_norm = alloc_floats(dim);
		L->wqkv = alloc_floats((q_dim + 2 * kv_dim) * dim);
		L->w_gate_up = alloc_floats(2 * hidden * dim);
		if (!L->attn_norm || !L->ffn_norm || !L->wqkv || !L->w_gate_up)
			return -ENOMEM;
		to_f32(L->attn_norm, &w->attn_norm);
		to_f32(L->ffn_norm, &w->ffn_norm);
		to_f32(L->wqkv, &w->wq);
		to_f32(L->wqkv + q_dim * dim, &w->wk);
		to_f32(L->wqkv + (q_dim + kv_dim) * dim, &w->wv);
		to_f32(L->w_gate_up, &w->w_gate);
		to_f32(L->w_gate_up + hidden * dim, &w->w_up);
		L->wo = f32_view(&w->wo, &L->wo_owned);
		L->w_down = f32_view(&w->w_down, &L->w_down_owned);
		if (!L->wo || !L->w_down)
			return -ENOMEM;
	}
	return 0;
}

static int cpu_create(struct rs_engine *e, char *err, size_t err_size)
{
	const struct rs_model_config *cfg = &e->config;
	const struct rs_engine_options *o = &e->options;
	struct cpu_engine *c = calloc(1, sizeof(*c));
	if (!c) {
		rs_errmsg(err, err_size, 0, "out of memory");
		return -ENOMEM;
	}
	e->impl = c;
	pthread_mutex_init(&c->lock, NULL);
	int rc = load_weights(e, c, err, err_size);
	if (rc)
		goto fail;

	rc = -ENOMEM;
	size_t T = o->max_batch_tokens, dim = cfg->dim, hidden = cfg->hidden_dim;
	size_t q_dim = (size_t)cfg->n_heads * cfg->head_dim;
	size_t kv_dim = (size_t)cfg->n_kv_heads * cfg->head_dim;
	c->kv_dtype = strcmp(o->kv_dtype, "f16") == 0 ? RS_DTYPE_F16 : RS_DTYPE_F32;
	c->layer_cache_elems = (size_t)o->kv_blocks * o->block_size * kv_dim;
	size_t cache_bytes = c->layer_cache_elems * cfg->n_layers * rs_dtype_size(c->kv_dtype);
	/* alloc_floats counts 4-byte units: an f16 cache asks for half as many. */
	c->k_cache = alloc_floats((cache_bytes + 3) / 4);
	c->v_cache = alloc_floats((cache_bytes + 3) / 4);
	c->x = alloc_floats(T * dim);
	c->xb = alloc_floats(T * dim);
	c->qkv = alloc_floats(T * (q_dim + 2 * kv_dim));
	c->att = alloc_floats(T * q_dim);
	c->gate_up = alloc_floats(T * 2 * hidden);
	c->hidden = alloc_floats(T * hidden);
	c->positions = calloc(T, sizeof(uint32_t));
	c->seq_offset = calloc(T + 1, sizeof(uint32_t));
	c->token_seq = calloc(T, sizeof(uint32_t));
	c->sample_rows = calloc(T, sizeof(uint32_t));
	c->lane_status = calloc(o->lanes, sizeof(int));
	if (!c->k_cache || !c->v_cache || !c->x || !c->xb || !c->qkv || !c->att ||
	    !c->gate_up || !c->hidden || !c->positions || !c->seq_offset || !c->token_seq ||
	    !c->sample_rows ||
	    !c->lane_status) {
		rs_errmsg(err, err_size, 0, "out of memory (KV cache: %zu MiB)", 2 * cache_bytes >> 20);
		goto fail;
	}
	/* Zeroed so that a read of a never-written slot (a caller bug) stays finite. */
	memset(c->k_cache, 0, cache_bytes);
	memset(c->v_cache, 0, cache_bytes);

	long online = sysconf(_SC_NPROCESSORS_ONLN);
	uint32_t workers = o->threads > 0 ? (uint32_t)o->threads : online > 0 ? (uint32_t)online : 1;
	/* Process-wide: our workers split each GEMM, so OpenBLAS must not thread too. */
	openblas_set_num_threads(1);
	rc = rs_thread_pool_create(workers, &c->pool);
	if (rc) {
		rs_errmsg(err, err_size, 0, "thread pool: %s", strerror(-rc));
		goto fail;
	}
	rc = -ENOMEM;
	c->scores_per_worker =
		(rs_op_attention_scratch(cfg->n_heads, cfg->head_dim, cfg->max_seq_len) + 15) & ~(size_t)15;
	c->scores = alloc_floats(workers * c->scores_per_worker);
	c->sample_scratch_size = (rs_sample_scratch_size(cfg->vocab_size) + 63) & ~(size_t)63;
	c->sample_scratch = aligned_alloc(64, workers * c->sample_scratch_size);
	if (!c->scores || !c->sample_scratch) {
		rs_errmsg(err, err_size, 0, "out of memory");
		goto fail;
	}
	return 0;
fail:
	if (err_size && !err[0])
		rs_errmsg(err, err_size, 0, "out of memory");
	cpu_destroy(e);
	return rc;
}

static void cpu_destroy(struct rs_engine *e)
{
	struct cpu_engine *c = e->impl;
	if (!c)
		return;
	rs_thread_pool_destroy(c->pool);
	if (c->layers) {
		for (uint32_t l = 0; l < e->config.n_layers; l++) {
			struct cpu_layer *L = &c->layers[l];
			free(L->attn_norm);
			free(L->ffn_norm);
			free(L->wqkv);
			free(L->w_gate_up);
			free(L->wo_owned);
			free(L->w_down_owned);
		}
	}
	free(c->layers);
	free(c->final_norm);
	free(c->output_owned);
	free(c->k_cache);
	free(c->v_cache);
	free(c->x);
	free(c->xb);
	free(c->qkv);
	free(c->att);
	free(c->gate_up);
	free(c->hidden);
	free(c->positions);
	free(c->seq_offset);
	free(c->token_seq);
	free(c->scores);
	free(c->sample_scratch);
	free(c->logits);
	free(c->sample_rows);
	free(c->lane_status);
	pthread_mutex_destroy(&c->lock);
	free(c);
	e->impl = NULL;
}

/* Product work: one item per slice of output columns, so that all workers share one
 * product (OpenBLAS itself runs single-threaded: its spinning threads would otherwise
 * compete with ours for the cores between GEMMs). */
struct matmul_job {
	float *y;
	const float *x, *w;
	uint32_t m, n, k, parts;
	bool accumulate;
};

static void matmul_item(void *ctx, uint32_t part, uint32_t worker)
{
	const struct matmul_job *j = ctx;
	/* Slice edges on multiples of 16 columns (whole vector tiles). */
	uint32_t n0 = (uint32_t)((uint64_t)j->n * part / j->parts) & ~15u;
	uint32_t n1 = (uint32_t)((uint64_t)j->n * (part + 1) / j->parts) & ~15u;
	if (part + 1 == j->parts)
		n1 = j->n;
	rs_op_matmul_cols(j->y, j->x, j->w, j->m, j->n, j->k, n0, n1, j->accumulate);
}

/* Slices of an m x n x k product: one per worker, or one (the caller alone) when it is
 * too small to be worth a split. */
static uint32_t matmul_parts(const struct cpu_engine *c, uint32_t m, uint32_t n, uint32_t k)
{
	uint32_t parts = rs_thread_pool_size(c->pool);
	if ((uint64_t)m * n * k < 65536 || n < 32 * parts)
		parts = 1;
	return parts;
}

/* y (+)= x W^T over the pool; small products run on the caller alone. */
static void matmul(struct cpu_engine *c, float *y, const float *x, const float *w, uint32_t m,
		   uint32_t n, uint32_t k, bool accumulate)
{
	struct matmul_job job = {.y = y, .x = x, .w = w, .m = m, .n = n, .k = k,
				 .parts = matmul_parts(c, m, n, k), .accumulate = accumulate};
	rs_thread_pool_run(c->pool, job.parts, matmul_item, &job);
}

/* Attention work: one item per token of the step (a decode step: one per sequence). */
struct attention_job {
	const struct rs_engine *e;
	struct cpu_engine *c;
	const struct rs_seq_step *seqs;
	struct rs_kv_layer kv;
};

static void attention_item(void *ctx, uint32_t t, uint32_t worker)
{
	struct attention_job *job = ctx;
	const struct rs_model_config *cfg = &job->e->config;
	struct cpu_engine *c = job->c;
	size_t q_dim = (size_t)cfg->n_heads * cfg->head_dim;
	size_t stride = q_dim + 2 * (size_t)cfg->n_kv_heads * cfg->head_dim;
	rs_op_attention(c->att + t * q_dim, c->qkv + t * stride, &job->kv,
			job->seqs[c->token_seq[t]].block_table, c->positions[t], cfg->n_heads,
			c->scores + (size_t)worker * c->scores_per_worker);
}

/* Per-token work between the products, one item per token: on the caller alone it
 * kept the other workers spinning (rope's sin/cos and swiglu's exp for 32 tokens take
 * as long as a small product). */
struct rows_job {
	const struct rs_engine *e;
	struct cpu_engine *c;
	const struct rs_seq_step *seqs;
	const struct cpu_layer *L;
	const struct rs_kv_layer *kv;
	const float *norm; /* for norm_item */
};

/* xb[t] = rmsnorm(x[t]) */
static void norm_item(void *ctx, uint32_t t, uint32_t worker)
{
	const struct rows_job *j = ctx;
	const struct rs_model_config *cfg = &j->e->config;
	rs_op_rmsnorm(j->c->xb + (size_t)t * cfg->dim, j->c->x + (size_t)t * cfg->dim, j->norm, 1,
		      cfg->dim, cfg->norm_eps);
}

/* rope(q[t], k[t]); store k[t], v[t] in the cache at the token's position. */
static void rope_store_item(void *ctx, uint32_t t, uint32_t worker)
{
	const struct rows_job *j = ctx;
	const struct rs_model_config *cfg = &j->e->config;
	struct cpu_engine *c = j->c;
	uint32_t hd = cfg->head_dim, q_dim = cfg->n_heads * hd, kv_dim = cfg->n_kv_heads * hd;
	float *row = c->qkv + (size_t)t * (q_dim + 2 * kv_dim);
	/* q and k are adjacent: one call, one sine/cosine table for both. */
	rs_op_rope(row, cfg->n_heads + cfg->n_kv_heads, hd, cfg->rope_dim, c->positions[t],
		   cfg->rope_theta);
	rs_op_kv_store(j->kv, j->seqs[c->token_seq[t]].block_table, c->positions[t], 1,
		       row + q_dim, row + q_dim + kv_dim, 0);
}

/* hidden[t] = silu(gate[t]) up[t] */
static void swiglu_item(void *ctx, uint32_t t, uint32_t worker)
{
	const struct rows_job *j = ctx;
	size_t hidden = j->e->config.hidden_dim;
	rs_op_swiglu(j->c->hidden + t * hidden, j->c->gate_up + t * 2 * hidden,
		     j->c->gate_up + t * 2 * hidden + hidden, 1, (uint32_t)hidden, 2 * hidden);
}

/* rope_store_item then attention_item for token t: one item when t is the only token of
 * its sequence in the step (a decode step), as its attention then reads no other item's
 * cache stores. */
static void rope_store_attention_item(void *ctx, uint32_t t, uint32_t worker)
{
	const struct rows_job *j = ctx;
	struct attention_job job = {.e = j->e, .c = j->c, .seqs = j->seqs, .kv = *j->kv};
	rope_store_item(ctx, t, worker);
	attention_item(&job, t, worker);
}

/* Column slice [n0, n1) of part of parts over n columns, edges on multiples of 16
 * (whole vector tiles), as matmul_item splits a product. */
static void slice_cols(uint32_t n, uint32_t part, uint32_t parts, uint32_t *n0, uint32_t *n1)
{
	*n0 = (uint32_t)((uint64_t)n * part / parts) & ~15u;
	*n1 = part + 1 == parts ? n : (uint32_t)((uint64_t)n * (part + 1) / parts) & ~15u;
}

/* The gate/up product and the swiglu in one run: each part takes the same columns of g
 * and of u, so that its swiglu reads only its own outputs (no barrier between them).
 * Streaming products only (T <= RS_MATMUL_STREAM_MAX_M), whose sums do not depend on the
 * column split; above, the SGEMM path keeps matmul's split. */
struct gate_up_job {
	const struct rs_engine *e;
	struct cpu_engine *c;
	const float *w;
	uint32_t T, parts;
};

/* Part of [g|u] = xb Wgu^T; hidden = silu(g) u. */
static void gate_up_swiglu_item(void *ctx, uint32_t part, uint32_t worker)
{
	const struct gate_up_job *j = ctx;
	const struct rs_model_config *cfg = &j->e->config;
	struct cpu_engine *c = j->c;
	uint32_t hidden = cfg->hidden_dim, dim = cfg->dim;
	const float *xb = c->xb;
	uint32_t h0, h1;
	slice_cols(hidden, part, j->parts, &h0, &h1);
	rs_op_matmul_cols(c->gate_up, xb, j->w, j->T, 2 * hidden, dim, h0, h1, false);
	rs_op_matmul_cols(c->gate_up, xb, j->w, j->T, 2 * hidden, dim, hidden + h0, hidden + h1,
			  false);
	for (uint32_t t = 0; t < j->T; t++) {
		const float *g = c->gate_up + (size_t)t * 2 * hidden;
		rs_op_swiglu(c->hidden + (size_t)t * hidden + h0, g + h0, g + hidden + h0, 1,
			     h1 - h0, 2 * (size_t)hidden);
	}
}

/* Sampling work: one item per sampled sequence. */
struct sample_job {
	const struct rs_engine *e;
	struct cpu_engine *c;
	const struct rs_seq_step *seqs;
};

static void sample_item(void *ctx, uint32_t row, uint32_t worker)
{
	struct sample_job *job = ctx;
	uint32_t vocab = job->e->config.vocab_size;
	const struct rs_seq_step *q = &job->seqs[job->c->sample_rows[row]];
	uint32_t token = rs_sample(job->c->logits + (size_t)row * vocab, vocab, &q->sampling,
				   (uint64_t)q->start_pos + q->n_tokens,
				   job->c->sample_scratch + (size_t)worker * job->c->sample_scratch_size);
	*q->out_token = token;
}

static void forward_layers(struct rs_engine *e, struct cpu_engine *c,
			   const struct rs_seq_step *seqs, uint32_t n_seqs, uint32_t T)
{
	const struct rs_model_config *cfg = &e->config;
	uint32_t dim = cfg->dim, hidden = cfg->hidden_dim, hd = cfg->head_dim;
	uint32_t q_dim = cfg->n_heads * hd, kv_dim = cfg->n_kv_heads * hd;
	uint32_t stride = q_dim + 2 * kv_dim;
	size_t layer_cache_bytes = c->layer_cache_elems * rs_dtype_size(c->kv_dtype);

	bool one_token_each = true; /* a decode step: attention reads no other token's stores */
	for (uint32_t s = 0, t = 0; s < n_seqs; s++) {
		one_token_each &= seqs[s].n_tokens == 1;
		c->seq_offset[s] = t;
		rs_op_embedding(c->x + (size_t)t * dim, &e->model->token_embedding, seqs[s].tokens,
				seqs[s].n_tokens);
		for (uint32_t i = 0; i < seqs[s].n_tokens; i++) {
			c->token_seq[t] = s;
			c->positions[t++] = seqs[s].start_pos + i;
		}
	}
	c->seq_offset[n_seqs] = T;

	for (uint32_t l = 0; l < cfg->n_layers; l++) {
		const struct cpu_layer *L = &c->layers[l];
		struct attention_job job = {
			.e = e,
			.c = c,
			.seqs = seqs,
			.kv = {.k = (uint8_t *)c->k_cache + l * layer_cache_bytes,
			       .v = (uint8_t *)c->v_cache + l * layer_cache_bytes,
			       .dtype = c->kv_dtype,
			       .block_size = e->options.block_size,
			       .n_kv_heads = cfg->n_kv_heads,
			       .head_dim = hd},
		};
		struct rows_job rows = {.e = e, .c = c, .seqs = seqs, .L = L, .kv = &job.kv};
		/* Pool runs (barriers) per layer: 7 for a decode step (was 9), up to 9 with a
		 * prefill. */
		rows.norm = L->attn_norm;
		rs_thread_pool_run(c->pool, T, norm_item, &rows);
		matmul(c, c->qkv, c->xb, L->wqkv, T, stride, dim, false);
		if (one_token_each) {
			rs_thread_pool_run(c->pool, T, rope_store_attention_item, &rows);
		} else {
			rs_thread_pool_run(c->pool, T, rope_store_item, &rows);
			rs_thread_pool_run(c->pool, T, attention_item, &job);
		}
		matmul(c, c->x, c->att, L->wo, T, dim, q_dim, true);

		rows.norm = L->ffn_norm;
		rs_thread_pool_run(c->pool, T, norm_item, &rows);
		if (T <= RS_MATMUL_STREAM_MAX_M) {
			struct gate_up_job gate_up = {.e = e, .c = c, .w = L->w_gate_up, .T = T,
						      .parts = matmul_parts(c, T, 2 * hidden, dim)};
			rs_thread_pool_run(c->pool, gate_up.parts, gate_up_swiglu_item, &gate_up);
		} else {
			matmul(c, c->gate_up, c->xb, L->w_gate_up, T, 2 * hidden, dim, false);
			rs_thread_pool_run(c->pool, T, swiglu_item, &rows);
		}
		matmul(c, c->x, c->hidden, L->w_down, T, dim, hidden, true);
	}
}

static int cpu_step(struct rs_engine *e, uint32_t lane, const struct rs_seq_step *seqs,
		    uint32_t n_seqs, uint32_t T, float *logits)
{
	struct cpu_engine *c = e->impl;
	const struct rs_model_config *cfg = &e->config;
	uint32_t dim = cfg->dim, vocab = cfg->vocab_size;
	int rc = 0;

	pthread_mutex_lock(&c->lock);
	forward_layers(e, c, seqs, n_seqs, T);
	if (logits) {
		rs_op_rmsnorm(c->xb, c->x, c->final_norm, T, dim, cfg->norm_eps);
		matmul(c, logits, c->xb, c->output, T, vocab, dim, false);
		goto out;
	}
	/* Only the last position of each sampled sequence needs logits: gather those rows. */
	uint32_t rows = 0;
	for (uint32_t s = 0; s < n_seqs; s++) {
		if (!seqs[s].sample)
			continue;
		uint32_t last = c->seq_offset[s + 1] - 1;
		memcpy(c->xb + (size_t)rows * dim, c->x + (size_t)last * dim, dim * sizeof(float));
		c->sample_rows[rows++] = s;
	}
	if (!rows)
		goto out;
	if (rows > c->logits_rows) {
		/* Grows to the largest sampled batch seen, then stays. */
		float *grown = alloc_floats((size_t)rows * vocab);
		if (!grown) {
			rc = -ENOMEM;
			goto out;
		}
		free(c->logits);
		c->logits = grown;
		c->logits_rows = rows;
	}
	rs_op_rmsnorm(c->xb, c->xb, c->final_norm, rows, dim, cfg->norm_eps);
	matmul(c, c->logits, c->xb, c->output, rows, vocab, dim, false);
	struct sample_job job = {.e = e, .c = c, .seqs = seqs};
	rs_thread_pool_run(c->pool, rows, sample_item, &job);
out:
	c->lane_status[lane] = rc;
	pthread_mutex_unlock(&c->lock);
	return rc;
}

static int cpu_poll(struct rs_engine *e, uint32_t lane)
{
	struct cpu_engine *c = e->impl;
	pthread_mutex_lock(&c->lock);
	int rc = c->lane_status[lane];
	pthread_mutex_unlock(&c->lock);
	return rc ? rc : 1;
}

static int cpu_wait(struct rs_engine *e, uint32_t lane)
{
	struct cpu_engine *c = e->impl;
	pthread_mutex_lock(&c->lock);
	int rc = c->lane_status[lane];
	pthread_mutex_unlock(&c->lock);
	return rc;
}

const struct rs_engine_backend rs_engine_backend_cpu = {
	.name = "cpu",
	.create = cpu_create,
	.destroy = cpu_destroy,
	.step = cpu_step,
	.poll = cpu_poll,
	.wait = cpu_wait,
};
