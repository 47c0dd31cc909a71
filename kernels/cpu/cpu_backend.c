/* The CPU backend: weights packed once into column panels (gemm.h; f16 and bf16 weights
 * stay 16-bit there and are widened in registers, the arithmetic is fp32), an f32 or f16
 * KV cache (options.kv_dtype), products split over a thread pool that also runs the
 * per-token work (norms, rope, cache stores, swiglu), the attention and the sampling.
 * Products run our AVX-512/AVX2 kernels, or one CBLAS SGEMM per panel on other CPUs
 * (rs_gemm_packed).
 *
 * A step runs synchronously inside rs_engine_step. Per layer:
 *   xb = rmsnorm(x); [q|k|v] = xb Wqkv^T (one product, the three projections fused);
 *   [q|k|v] += bias (Qwen2); rope(q, k) (pair frequencies: rs_model_rope_freqs);
 *   store k, v in the paged cache; att = attention(q, cache);
 *   x += att Wo^T (the residual fused into the product);
 *   xb = rmsnorm(x); g = xb Wg^T, u = xb Wu^T, h = silu(g) u (one pool run); x += h Wdown^T.
 * x holds every token of the step, so each weight matrix is read once per step. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/large_alloc.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/engine/engine_backend.h"
#include "kernels/model/dtype.h"
#include "kernels/model/errmsg.h"
#include "kernels/model/mapfile.h"
#include "kernels/model/quant.h"

struct cpu_layer {
	float *attn_norm, *ffn_norm;	/* [dim] */
	float *bqkv;			/* [q_dim + 2 kv_dim] q, k, v biases; NULL: none */
	struct rs_packed_matrix wqkv;	/* (q_dim + 2 kv_dim) x dim */
	struct rs_packed_matrix wo;	/* dim x q_dim */
	struct rs_packed_matrix w_gate; /* hidden x dim */
	struct rs_packed_matrix w_up;	/* hidden x dim */
	struct rs_packed_matrix w_down; /* dim x hidden */
};

/* The packed (and copied) weights of one model for one ISA and cpu_weights setting,
 * shared read-only by every engine created from that model with those settings (the
 * daemon's --workers): only the KV pool, the scratch and the thread pool are per engine.
 * Reference-counted in shared_weights (below); freed with the last engine. */
struct cpu_weights {
	const struct rs_model *model; /* the key: model, isa, copy_quant */
	enum rs_cpu_isa isa;
	bool copy_quant;
	uint32_t n_layers;
	uint32_t refs; /* engines using it; under shared_weights_lock */
	struct cpu_weights *next;
	struct cpu_layer *layers;
	float *final_norm;
	struct rs_packed_matrix output; /* vocab x dim */
};

struct cpu_engine {
	struct cpu_weights *w;	 /* shared with the model's other engines */
	enum rs_cpu_isa isa;	 /* of the products */
	bool copy_quant;	 /* options.cpu_weights "copy" */
	void *k_cache, *v_cache; /* [layer][block][block_size][kv_dim] of kv_dtype */
	size_t kv_cache_bytes;	 /* each of k_cache, v_cache (rs_alloc_zeroed_large) */
	enum rs_dtype kv_dtype;	 /* RS_DTYPE_F32 or RS_DTYPE_F16 (options.kv_dtype) */
	size_t layer_cache_elems;

	/* Scratch for max_batch_tokens tokens. */
	float *x, *xb, *qkv, *att, *gate_up, *hidden;
	uint32_t *positions;  /* per token */
	float *rope_cos_sin;  /* per token: its row of rs_op_rope_table, made in layer 0 */
	uint32_t *seq_offset; /* first token of each sequence in the step */
	uint32_t *token_seq;  /* sequence of each token */
	float *scores;	      /* per worker: attention scratch for max_seq_len */
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

/* Copy a tensor's elements as f32 (norm weights). */
static void to_f32(float *dst, const struct rs_tensor *t)
{
	rs_convert_to_f32(dst, t->data, t->dtype, (size_t)(t->rows * t->cols));
}

/* Packing on the pool: a 1.1B model took 15 s on one thread. Items are ranges of
 * PACK_ROWS rows of the fused matrix (whole panels: no two items write one panel). */
enum { PACK_ROWS = 16 * RS_PANEL_COLS };

struct pack_job {
	struct rs_packed_matrix *w;
	const struct rs_tensor *const *parts;
	uint32_t n_parts;
	int *rc; /* per worker: 0 or its first error */
};

static void pack_item(void *ctx, uint32_t item, uint32_t worker)
{
	struct pack_job *j = ctx;
	uint32_t begin = item * PACK_ROWS, end = begin + PACK_ROWS;
	for (uint32_t i = 0, part0 = 0; i < j->n_parts && !j->rc[worker]; i++) {
		const struct rs_tensor *t = j->parts[i];
		uint32_t part_end = part0 + (uint32_t)t->rows;
		uint32_t from = begin > part0 ? begin : part0, to = end < part_end ? end : part_end;
		if (from < to)
			j->rc[worker] = rs_packed_set_rows(
			    j->w, from, to - from,
			    (const uint8_t *)t->data +
				(size_t)(from - part0) * rs_dtype_row_bytes(t->dtype, t->cols),
			    t->dtype);
		part0 = part_end;
	}
}

/* W = the parts' rows one after the other, packed (a fused projection: [q|k|v]), in
 * their own dtype when they share one the product kernels widen, else as f32. */
static int pack(struct rs_thread_pool *pool, enum rs_cpu_isa isa, struct rs_packed_matrix *w,
		const struct rs_tensor *const *parts, uint32_t n_parts)
{
	uint64_t n = 0;
	bool all_quant = true;
	for (uint32_t i = 0; i < n_parts; i++)
		all_quant = all_quant && rs_dtype_is_quant(parts[i]->dtype);
	if (all_quant && n_parts <= RS_QUANT_PARTS) {
		/* Block-quantized weights stay as the model has them (mapped), not packed. */
		struct rs_quant_part q[RS_QUANT_PARTS];
		for (uint32_t i = 0; i < n_parts; i++)
			q[i] = (struct rs_quant_part){.rows = parts[i]->data,
						      .dtype = parts[i]->dtype,
						      .n_rows = (uint32_t)parts[i]->rows};
		return rs_packed_quant_init(w, (uint32_t)parts[0]->cols, q, n_parts);
	}
	/* Otherwise packed, a quantized part (mixed with float ones) dequantized to f32. */
	enum rs_dtype dtype = rs_packed_dtype(parts[0]->dtype, isa);
	for (uint32_t i = 0; i < n_parts; i++) {
		n += parts[i]->rows;
		if (parts[i]->dtype != parts[0]->dtype)
			dtype = RS_DTYPE_F32;
	}
	int rc = rs_packed_alloc(w, (uint32_t)n, (uint32_t)parts[0]->cols, dtype);
	if (rc)
		return rc;
	uint32_t workers = rs_thread_pool_size(pool);
	struct pack_job job = {
	    .w = w, .parts = parts, .n_parts = n_parts, .rc = calloc(workers, sizeof(int))};
	if (!job.rc)
		return -ENOMEM;
	rs_thread_pool_run(pool, (uint32_t)((n + PACK_ROWS - 1) / PACK_ROWS), pack_item, &job);
	for (uint32_t i = 0; i < workers && !rc; i++)
		rc = job.rc[i];
	free(job.rc);
	return rc;
}

#define PACK(w, ...)                                                                               \
	pack(pool, W->isa, w, (const struct rs_tensor *const[]){__VA_ARGS__},                      \
	     sizeof((const struct rs_tensor *const[]){__VA_ARGS__}) / sizeof(void *))

static void cpu_destroy(struct rs_engine *engine);

/* A quantized matrix's rows into huge-page memory of its own, the model's mapped pages of
 * them given back (options.cpu_weights "copy"). Rows outside the file mapping (a model
 * loaded from memory, Qwen2's rearranged q and k) are copied and left as they are. */
static int copy_quant(const struct rs_model *m, struct rs_packed_matrix *w)
{
	if (!w->n_quant_parts)
		return 0;
	struct rs_quant_part was[RS_QUANT_PARTS];
	memcpy(was, w->quant_parts, sizeof(was));
	int rc = rs_packed_quant_copy(w);
	for (uint32_t i = 0; !rc && i < w->n_quant_parts; i++)
		rs_mapping_drop_pages(m->mapping, m->mapping_size, was[i].rows,
				      (size_t)was[i].n_rows * was[i].row_bytes);
	return rc;
}

static void free_weights(struct cpu_weights *W)
{
	if (!W)
		return;
	if (W->layers) {
		for (uint32_t l = 0; l < W->n_layers; l++) {
			struct cpu_layer *L = &W->layers[l];
			free(L->attn_norm);
			free(L->ffn_norm);
			free(L->bqkv);
			rs_packed_free(&L->wqkv);
			rs_packed_free(&L->wo);
			rs_packed_free(&L->w_gate);
			rs_packed_free(&L->w_up);
			rs_packed_free(&L->w_down);
		}
	}
	free(W->layers);
	free(W->final_norm);
	rs_packed_free(&W->output);
	free(W);
}

static int load_weights(struct rs_engine *e, struct rs_thread_pool *pool, struct cpu_weights *W)
{
	const struct rs_model *m = e->model;
	const struct rs_model_config *cfg = &e->config;
	size_t dim = cfg->dim;

	/* Shapes were checked by rs_engine_create. */
	W->layers = calloc(cfg->n_layers, sizeof(*W->layers));
	W->n_layers = cfg->n_layers;
	W->final_norm = alloc_floats(dim);
	if (!W->layers || !W->final_norm)
		return -ENOMEM;
	to_f32(W->final_norm, &m->final_norm);
	int rc = PACK(&W->output, &m->output);
	for (uint32_t l = 0; !rc && l < cfg->n_layers; l++) {
		const struct rs_layer_weights *w = &m->layers[l];
		struct cpu_layer *L = &W->layers[l];
		L->attn_norm = alloc_floats(dim);
		L->ffn_norm = alloc_floats(dim);
		if (!L->attn_norm || !L->ffn_norm)
			return -ENOMEM;
		to_f32(L->attn_norm, &w->attn_norm);
		to_f32(L->ffn_norm, &w->ffn_norm);
		size_t qkv_dim = (size_t)cfg->head_dim * (cfg->n_heads + 2 * cfg->n_kv_heads);
		float *bias = alloc_floats(qkv_dim);
		if (!bias)
			return -ENOMEM;
		if (rs_engine_qkv_bias(e, l, bias))
			L->bqkv = bias;
		else
			free(bias);
		rc = PACK(&L->wqkv, &w->wq, &w->wk, &w->wv);
		rc = rc ? rc : PACK(&L->wo, &w->wo);
		rc = rc ? rc : PACK(&L->w_gate, &w->w_gate);
		rc = rc ? rc : PACK(&L->w_up, &w->w_up);
		rc = rc ? rc : PACK(&L->w_down, &w->w_down);
		struct rs_packed_matrix *mats[] = {&L->wqkv, &L->wo, &L->w_gate, &L->w_up,
						   &L->w_down};
		for (int i = 0; i < 5 && !rc && W->copy_quant; i++)
			rc = copy_quant(m, mats[i]);
	}
	if (!rc && W->copy_quant)
		rc = copy_quant(m, &W->output);
	return rc;
}

/* Every weight set in use, process-wide. The lock is held while a set is packed, so that
 * two engines created at once from one model pack it once (creation is rare; a step never
 * takes this lock). */
static pthread_mutex_t shared_weights_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cpu_weights *shared_weights;

/* The weights of e's model for c's settings: an existing set with one more reference, or
 * a new one packed on c's pool. 0 or a negative errno (nothing held). */
static int acquire_weights(struct rs_engine *e, struct cpu_engine *c)
{
	pthread_mutex_lock(&shared_weights_lock);
	struct cpu_weights *W = shared_weights;
	while (W && (W->model != e->model || W->isa != c->isa || W->copy_quant != c->copy_quant))
		W = W->next;
	int rc = 0;
	if (W) {
		W->refs++;
	} else if (!(W = calloc(1, sizeof(*W)))) {
		rc = -ENOMEM;
	} else {
		*W = (struct cpu_weights){
		    .model = e->model, .isa = c->isa, .copy_quant = c->copy_quant, .refs = 1};
		rc = load_weights(e, c->pool, W); /* packs on the pool */
		if (rc) {
			free_weights(W);
			W = NULL;
		} else {
			W->next = shared_weights;
			shared_weights = W;
		}
	}
	pthread_mutex_unlock(&shared_weights_lock);
	c->w = W;
	return rc;
}

static void release_weights(struct cpu_weights *W)
{
	if (!W)
		return;
	pthread_mutex_lock(&shared_weights_lock);
	bool last = --W->refs == 0;
	if (last) {
		struct cpu_weights **p = &shared_weights;
		while (*p != W)
			p = &(*p)->next;
		*p = W->next;
	}
	pthread_mutex_unlock(&shared_weights_lock);
	if (last)
		free_weights(W);
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
	c->isa = strcmp(o->cpu_products, "blas") == 0	? RS_ISA_PORTABLE
		 : strcmp(o->cpu_products, "avx2") == 0 ? RS_ISA_AVX2
							: rs_cpu_isa();
	c->copy_quant = strcmp(o->cpu_weights, "copy") == 0;
	long online = sysconf(_SC_NPROCESSORS_ONLN);
	uint32_t workers = o->threads > 0 ? (uint32_t)o->threads
			   : online > 0	  ? (uint32_t)online
					  : 1;
	/* Process-wide: our workers split each product, so OpenBLAS (the per-panel SGEMMs on
	 * CPUs without our kernels) must not thread too. */
	openblas_set_num_threads(1);
	int rc = rs_thread_pool_create(workers, &c->pool);
	if (rc) {
		rs_errmsg(err, err_size, 0, "thread pool: %s", strerror(-rc));
		goto fail;
	}
	rc = acquire_weights(e, c);
	if (rc)
		goto fail;

	rc = -ENOMEM;
	size_t T = o->max_batch_tokens, dim = cfg->dim, hidden = cfg->hidden_dim;
	size_t q_dim = (size_t)cfg->n_heads * cfg->head_dim;
	size_t kv_dim = (size_t)cfg->n_kv_heads * cfg->head_dim;
	c->kv_dtype = strcmp(o->kv_dtype, "f16") == 0 ? RS_DTYPE_F16 : RS_DTYPE_F32;
	c->layer_cache_elems = (size_t)o->kv_blocks * o->block_size * kv_dim;
	size_t cache_bytes = c->layer_cache_elems * cfg->n_layers * rs_dtype_size(c->kv_dtype);
	/* Zeroed (a read of a never-written slot, a caller bug, stays finite) by the kernel,
	 * page by page at first use: no memset of the whole pool, no RSS until used. */
	c->kv_cache_bytes = cache_bytes;
	c->k_cache = rs_alloc_zeroed_large(cache_bytes);
	c->v_cache = rs_alloc_zeroed_large(cache_bytes);
	c->x = alloc_floats(T * dim);
	c->xb = alloc_floats(T * dim);
	c->qkv = alloc_floats(T * (q_dim + 2 * kv_dim));
	c->att = alloc_floats(T * q_dim);
	c->gate_up = alloc_floats(T * 2 * hidden);
	c->hidden = alloc_floats(T * hidden);
	c->positions = calloc(T, sizeof(uint32_t));
	c->rope_cos_sin = alloc_floats(T * cfg->rope_dim);
	c->seq_offset = calloc(T + 1, sizeof(uint32_t));
	c->token_seq = calloc(T, sizeof(uint32_t));
	c->sample_rows = calloc(T, sizeof(uint32_t));
	c->lane_status = calloc(o->lanes, sizeof(int));
	if (!c->k_cache || !c->v_cache || !c->x || !c->xb || !c->qkv || !c->att || !c->gate_up ||
	    !c->hidden || !c->positions || !c->rope_cos_sin || !c->seq_offset || !c->token_seq ||
	    !c->sample_rows || !c->lane_status) {
		rs_errmsg(err, err_size, 0, "out of memory (KV cache: %zu MiB)",
			  2 * cache_bytes >> 20);
		goto fail;
	}
	rc = -ENOMEM;
	c->scores_per_worker =
	    (rs_op_attention_scratch(cfg->n_heads, cfg->head_dim, cfg->max_seq_len) + 15) &
	    ~(size_t)15;
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
	release_weights(c->w);
	rs_free_zeroed_large(c->k_cache, c->kv_cache_bytes);
	rs_free_zeroed_large(c->v_cache, c->kv_cache_bytes);
	free(c->x);
	free(c->xb);
	free(c->qkv);
	free(c->att);
	free(c->gate_up);
	free(c->hidden);
	free(c->positions);
	free(c->rope_cos_sin);
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

/* Product work: one item per range of panels, so that all workers share one product
 * (OpenBLAS itself runs single-threaded: its spinning threads would otherwise compete
 * with ours for the cores between products). */
struct matmul_job {
	float *y;
	size_t ldy;
	const float *x;
	const struct rs_packed_matrix *w;
	uint32_t m, parts;
	bool accumulate;
	enum rs_cpu_isa isa;
};

/* Panels [p0, p1) of part of parts over w's panels. */
static void slice_panels(const struct rs_packed_matrix *w, uint32_t part, uint32_t parts,
			 uint32_t *p0, uint32_t *p1)
{
	*p0 = (uint32_t)((uint64_t)w->n_panels * part / parts);
	*p1 = (uint32_t)((uint64_t)w->n_panels * (part + 1) / parts);
}

static void matmul_item(void *ctx, uint32_t part, uint32_t worker)
{
	const struct matmul_job *j = ctx;
	uint32_t p0, p1;
	slice_panels(j->w, part, j->parts, &p0, &p1);
	rs_gemm_packed(j->y, j->ldy, j->x, j->w->k, j->m, j->w, p0, p1, j->accumulate, j->isa);
}

/* Parts of an m-row product by w: one per worker (at most one per panel), or one (the
 * caller alone) when it is too small to be worth a split. */
static uint32_t matmul_parts(const struct cpu_engine *c, uint32_t m,
			     const struct rs_packed_matrix *w)
{
	uint32_t parts = rs_thread_pool_size(c->pool);
	if ((uint64_t)m * w->n * w->k < 65536)
		return 1;
	return parts < w->n_panels ? parts : w->n_panels;
}

/* y (+)= x W^T over the pool (x rows are w->k floats apart, y rows w->n). */
static void matmul(struct cpu_engine *c, float *y, const float *x, const struct rs_packed_matrix *w,
		   uint32_t m, bool accumulate)
{
	struct matmul_job job = {.y = y,
				 .ldy = w->n,
				 .x = x,
				 .w = w,
				 .m = m,
				 .parts = matmul_parts(c, m, w),
				 .accumulate = accumulate,
				 .isa = c->isa};
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
	const struct rs_kv_layer *kv;
	const float *norm; /* for norm_item */
	uint32_t layer;
};

/* xb[t] = rmsnorm(x[t]) */
static void norm_item(void *ctx, uint32_t t, uint32_t worker)
{
	const struct rows_job *j = ctx;
	const struct rs_model_config *cfg = &j->e->config;
	rs_op_rmsnorm(j->c->xb + (size_t)t * cfg->dim, j->c->x + (size_t)t * cfg->dim, j->norm, 1,
		      cfg->dim, cfg->norm_eps);
}

/* Add the q, k, v biases (Qwen2) to row t; rope(q[t], k[t]); store k[t], v[t] in the cache
 * at the token's position. */
static void rope_store_item(void *ctx, uint32_t t, uint32_t worker)
{
	const struct rows_job *j = ctx;
	const struct rs_model_config *cfg = &j->e->config;
	struct cpu_engine *c = j->c;
	uint32_t hd = cfg->head_dim, q_dim = cfg->n_heads * hd, kv_dim = cfg->n_kv_heads * hd;
	float *row = c->qkv + (size_t)t * (q_dim + 2 * kv_dim);
	const float *bias = c->w->layers[j->layer].bqkv;
	if (bias)
		rs_op_add_bias(row, bias, 1, q_dim + 2 * kv_dim, 0);
	/* The token's cosines and sines once per step (the sines, cosines and powers were a
	 * few % of a batch-32 decode step when every layer made them). */
	float *cos_sin = c->rope_cos_sin + (size_t)t * cfg->rope_dim;
	if (j->layer == 0)
		rs_op_rope_table_freqs(cos_sin, c->positions[t], 1, cfg->rope_dim,
				       j->e->rope_freqs);
	/* q and k are adjacent: one call for both. */
	rs_op_rope_rotate(row, cfg->n_heads + cfg->n_kv_heads, hd, cfg->rope_dim, cos_sin);
	rs_op_kv_store(j->kv, j->seqs[c->token_seq[t]].block_table, c->positions[t], 1, row + q_dim,
		       row + q_dim + kv_dim, 0);
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

/* The gate and up products and the swiglu in one run: each part takes the same panels
 * of g and of u, so that its swiglu reads only its own outputs (no barrier between
 * them; the panel split does not change any sum). */
struct gate_up_job {
	struct cpu_engine *c;
	const struct cpu_layer *L;
	uint32_t T, parts;
};

/* Part of g = xb Wg^T, u = xb Wu^T ([g|u] rows of gate_up); hidden = silu(g) u. */
static void gate_up_swiglu_item(void *ctx, uint32_t part, uint32_t worker)
{
	const struct gate_up_job *j = ctx;
	struct cpu_engine *c = j->c;
	const struct rs_packed_matrix *wg = &j->L->w_gate, *wu = &j->L->w_up;
	uint32_t hidden = wg->n, p0, p1;
	slice_panels(wg, part, j->parts, &p0, &p1);
	rs_gemm_packed(c->gate_up, 2 * (size_t)hidden, c->xb, wg->k, j->T, wg, p0, p1, false,
		       c->isa);
	rs_gemm_packed(c->gate_up + hidden, 2 * (size_t)hidden, c->xb, wu->k, j->T, wu, p0, p1,
		       false, c->isa);
	uint32_t h0 = p0 * RS_PANEL_COLS,
		 h1 = p1 * RS_PANEL_COLS < hidden ? p1 * RS_PANEL_COLS : hidden;
	for (uint32_t t = 0; h1 > h0 && t < j->T; t++) {
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
	uint32_t token =
	    rs_sample(job->c->logits + (size_t)row * vocab, vocab, &q->sampling,
		      (uint64_t)q->start_pos + q->n_tokens,
		      job->c->sample_scratch + (size_t)worker * job->c->sample_scratch_size);
	*q->out_token = token;
}

static void forward_layers(struct rs_engine *e, struct cpu_engine *c,
			   const struct rs_seq_step *seqs, uint32_t n_seqs, uint32_t T)
{
	const struct rs_model_config *cfg = &e->config;
	uint32_t dim = cfg->dim, hd = cfg->head_dim;
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
		const struct cpu_layer *L = &c->w->layers[l];
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
		struct rows_job rows = {.e = e, .c = c, .seqs = seqs, .kv = &job.kv, .layer = l};
		/* Pool runs (barriers) per layer: 7 for a decode step (was 9), up to 9 with a
		 * prefill. */
		rows.norm = L->attn_norm;
		rs_thread_pool_run(c->pool, T, norm_item, &rows);
		matmul(c, c->qkv, c->xb, &L->wqkv, T, false);
		if (one_token_each) {
			rs_thread_pool_run(c->pool, T, rope_store_attention_item, &rows);
		} else {
			rs_thread_pool_run(c->pool, T, rope_store_item, &rows);
			rs_thread_pool_run(c->pool, T, attention_item, &job);
		}
		matmul(c, c->x, c->att, &L->wo, T, true);

		rows.norm = L->ffn_norm;
		rs_thread_pool_run(c->pool, T, norm_item, &rows);
		struct gate_up_job gate_up = {
		    .c = c, .L = L, .T = T, .parts = matmul_parts(c, T, &L->w_gate)};
		rs_thread_pool_run(c->pool, gate_up.parts, gate_up_swiglu_item, &gate_up);
		matmul(c, c->x, c->hidden, &L->w_down, T, true);
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
		rs_op_rmsnorm(c->xb, c->x, c->w->final_norm, T, dim, cfg->norm_eps);
		matmul(c, logits, c->xb, &c->w->output, T, false);
		goto out;
	}
	/* Only the last position of each sampled sequence needs logits: gather those rows,
	 * normalized on the way. */
	uint32_t rows = 0;
	for (uint32_t s = 0; s < n_seqs; s++) {
		if (!seqs[s].sample)
			continue;
		uint32_t last = c->seq_offset[s + 1] - 1;
		rs_op_rmsnorm(c->xb + (size_t)rows * dim, c->x + (size_t)last * dim,
			      c->w->final_norm, 1, dim, cfg->norm_eps);
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
	matmul(c, c->logits, c->xb, &c->w->output, rows, false);
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
