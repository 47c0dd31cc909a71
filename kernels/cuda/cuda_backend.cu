/* The CUDA backend: weights and the paged KV cache in device memory, cuBLAS GEMMs, the
 * kernels of cuda_ops.h for everything else, one stream per lane.
 *
 * Types on the device: matrices (and the token embedding) keep the model's dtype, that of
 * layer 0's wq: f16 and bf16 models run f16/bf16 GEMMs with fp32 accumulation, an f32
 * model runs fp32 GEMMs (tests and tiny models: exact parity with the CPU backend matters
 * more there than memory). A tensor stored in another dtype is converted at upload. Norm
 * weights, activations and the KV cache are fp32. A model with block-quantized matrices
 * keeps each one's blocks as they are (struct qmat), feeds them f16 activations, and runs
 * the unfused path: rs_cuda_qmatmul (matmul_quant.cu) for every product.
 *
 * A step only enqueues: its tokens, positions, KV slots, block tables and sampling
 * descriptors are written to the lane's pinned staging buffer and copied to the device by
 * one cudaMemcpyAsync; then, per layer: rmsnorm and [q|k|v] GEMM -> RoPE and KV store ->
 * attention -> x += att Wo^T (the residual is the GEMM's beta = 1) -> rmsnorm and
 * [gate|up] GEMM -> SwiGLU and x += h Wdown^T; then the final norm of the sampled rows
 * only with the logits GEMM, and the sampling kernel (a norm or SwiGLU and the GEMM
 * after it are one kernel at decode sizes: rs_cuda_norm_matmul, rs_cuda_swiglu_matmul;
 * so are the first norm, the [q|k|v] GEMM, RoPE and the KV store: rs_cuda_qkv_matmul).
 * The sampler writes each id to its out_token through a device-visible address: the
 * address itself when out_token lies in a range registered with rs_engine_register_host,
 * else a mapped pinned staging slot that step_poll / step_wait copy to out_token once the
 * lane's event has fired.
 *
 * Decode steps (every sequence one token, sampled) are replayed from CUDA graphs: the
 * first step of a batch size and context range is captured from the stream (the staging
 * copy and every kernel, their programmatic launches included) and later ones launch it
 * whole, their new tokens, positions and block tables written to the same pinned staging
 * buffer first. A graph's kernels must not depend on the step beyond that buffer: its
 * layout is fixed per batch size (block tables at their most), and attention splits for
 * the range's longest context (its spans past a shorter context find nothing to do).
 * Enqueueing the ~115 kernels of a step took 0.55 ms of host time at batch 1 and 2.2 ms
 * with cuBLAS at batch 8 (docs/perf.md), more than the device's step at small batches.
 *
 * Locking: everything a step touches on the host is per lane (stream, cuBLAS handle,
 * scratch, staging), under the lane's mutex; the KV cache is shared but a step writes
 * only its sequences' private blocks. The registered ranges have their own mutex, taken
 * inside a lane's (never the other way round). */
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "kernels/cuda/cuda_ops.h"

extern "C" {
#include "kernels/model/dtype.h"
#include "kernels/engine/engine_backend.h"
#include "kernels/model/errmsg.h"
#include "kernels/model/quant.h"
#include "kernels/cpu/ops.h"
}

/* Rows sampled per kernel launch: bounds the weight scratch (rows * vocab doubles). */
static const uint32_t SAMPLE_ROWS_PER_LAUNCH = 64;

/* Captured decode steps a lane keeps, and the shortest context range (one attention
 * chunk). */
enum { LANE_GRAPHS = 32, GRAPH_MIN_CTX = 64 };

/* A decode step captured for `rows` sequences whose longest context is at most ctx. */
struct decode_graph {
	uint32_t rows, ctx;
	cudaGraphExec_t exec; /* NULL: a free entry */
	uint64_t last_used;   /* the lane's step count when last launched */
};

/* A matrix of a quantized model: its blocks as the file has them, or f16 (a matrix the
 * quantizer left in f32 or f16); rows of the product's output, and where they start in
 * it. */
struct qmat {
	const void *w;
	enum rs_dtype dtype;
	uint32_t n, offset;
};

struct cuda_layer {
	float *attn_norm, *ffn_norm; /* [dim], fp32 */
	float *bqkv;		     /* [q_dim + 2 kv_dim] q, k, v biases, fp32; NULL: none */
	void *wqkv;                  /* [q_dim + 2 kv_dim][dim] */
	void *wo;                    /* [dim][q_dim] */
	void *w_gate_up;             /* [2 hidden][dim] */
	void *w_down;                /* [dim][hidden] */
	/* Quantized models: the parts of wqkv and w_gate_up (one allocation each, parts 256
	 * bytes aligned, each in its own dtype: Q4_K_M mixes Q4_K and Q6_K), wo, w_down. */
	struct qmat q_qkv[3], q_gate_up[2], q_wo, q_down;
};

struct cuda_lane {
	pthread_mutex_t lock;
	cudaStream_t stream;
	cudaEvent_t done;
	cublasHandle_t blas;
	int busy;   /* a step was enqueued and not yet finished */
	int status; /* 0 or the negative errno of the last step */

	/* Device scratch for max_batch_tokens tokens. xb, att, hidden are GEMM inputs, in
	 * the weights' dtype; the rest fp32. */
	float *x, *qkv, *gate_up, *logits;
	void *xb, *att, *hidden;
	double *sample_scratch;
	float *att_scratch; /* split attention's partial softmaxes */
	void *panel;        /* quantized models: f16 weight panels of batches past 16 rows */

	/* The step's metadata: pinned host staging, its device copy. */
	uint8_t *meta_h, *meta_d;
	size_t meta_cap;

	/* Sampled ids for out_tokens outside registered memory: mapped pinned slots, and
	 * where each goes once the step is done. */
	uint32_t *out_stage_h, *out_stage_d;
	uint32_t **pending; /* [max_batch_tokens]: destination of slot r, or NULL */
	uint32_t n_pending;

	/* Captured decode steps; they read and write the buffers above at their current
	 * addresses, so growing meta_h / meta_d drops them. */
	struct decode_graph graphs[LANE_GRAPHS];
	bool graphs_on; /* options.cuda_graphs, until a capture fails */
	int notify_fd;  /* rs_engine_step_fd's eventfd, or -1 before it was asked for */
	uint64_t steps;
	struct rs_engine_stats stats; /* the graph counters */
};

struct host_range {
	uintptr_t host;
	size_t size;
	uintptr_t dev;
};

struct cuda_engine {
	int device;
	enum rs_dtype wtype;
	struct cuda_layer *layers;
	/* Quantized model: matrices as struct qmat says, activations into them f16 (wtype
	 * F16), the unfused path (rs_cuda_qmatmul between the norm, RoPE, SwiGLU kernels). */
	bool quant;
	enum rs_dtype embedding_dtype; /* quantized or f16 */
	struct qmat q_output;
	size_t panel_elems;
	void *embedding;  /* [vocab][dim] */
	void *output;     /* [vocab][dim]; == embedding when tied */
	float *final_norm;
	float *rope_table;        /* [max_seq_len][rope_dim / 2] (cos, sin) */
	float *k_cache, *v_cache; /* [layer][block][block_size][kv_dim] */
	size_t layer_cache_floats;
	uint32_t pad_block; /* KV block of the padding rows (see cuda_step) */
	struct cuda_lane *lanes;
	uint32_t n_lanes;

	pthread_mutex_t ranges_lock;
	struct host_range *ranges;
	uint32_t n_ranges, cap_ranges;
};

static int cuda_available(char *err, size_t err_size)
{
	int count = 0;
	cudaError_t e = cudaGetDeviceCount(&count);
	if (e != cudaSuccess || count <= 0) {
		cudaGetLastError(); /* not sticky, but leave nothing behind */
		return rs_errmsg(err, err_size, -ENODEV, "no CUDA device (%s)",
				 e != cudaSuccess ? cudaGetErrorString(e) : "none found");
	}
	return 0;
}

/* -ENOMEM for allocation failures, -EIO for anything else the runtime reports.
 * A failed call also leaves its error as this thread's "last error", which the next
 * kernel launch's check (rs_launch_check: cudaGetLastError) would take for its own
 * failure: clear it here (a sticky error stays, and the next call reports it again). */
static int cuda_errno(cudaError_t e)
{
	if (e == cudaSuccess)
		return 0;
	cudaGetLastError();
	return e == cudaErrorMemoryAllocation ? -ENOMEM : -EIO;
}

static int dev_alloc(void **p, size_t bytes)
{
	*p = NULL;
	return cuda_errno(cudaMalloc(p, bytes ? bytes : 16));
}

/* Copy tensor t into device memory dst as dtype `to` (converting on the host, in chunks,
 * when the dtypes differ). */
static int upload(void *dst, const struct rs_tensor *t, enum rs_dtype to)
{
	size_t n = (size_t)(t->rows * t->cols), out_elem = rs_dtype_size(to);
	if (rs_dtype_is_quant(t->dtype))
		return -EINVAL; /* blocks travel as they are (upload_qmat_parts), never here */
	if (t->dtype == to)
		return cuda_errno(cudaMemcpy(dst, t->data, n * out_elem, cudaMemcpyHostToDevice));
	const size_t CHUNK = 1 << 20;
	float *f = (float *)malloc(CHUNK * sizeof(float));
	uint16_t *h = (uint16_t *)malloc(CHUNK * sizeof(uint16_t));
	int rc = f && h ? 0 : -ENOMEM;
	size_t in_elem = rs_dtype_size(t->dtype);
	for (size_t done = 0; done < n && !rc; done += CHUNK) {
		size_t c = n - done < CHUNK ? n - done : CHUNK;
		rs_convert_to_f32(f, (const uint8_t *)t->data + done * in_elem, t->dtype, c);
		const void *src = f;
		if (to != RS_DTYPE_F32) {
			for (size_t i = 0; i < c; i++)
				h[i] = to == RS_DTYPE_F16 ? rs_f32_to_f16(f[i]) : rs_f32_to_bf16(f[i]);
			src = h;
		}
		rc = cuda_errno(cudaMemcpy((uint8_t *)dst + done * out_elem, src, c * out_elem,
					   cudaMemcpyHostToDevice));
	}
	free(f);
	free(h);
	return rc;
}

static int upload_new(void **dst, const struct rs_tensor *t, enum rs_dtype to)
{
	int rc = dev_alloc(dst, (size_t)(t->rows * t->cols) * rs_dtype_size(to));
	return rc ? rc : upload(*dst, t, to);
}

/* Layer l's q, k, v biases (Qwen2), fused as the weights are, into *out; *out stays NULL
 * for a model without them. */
static int upload_qkv_bias(const struct rs_engine *e, const struct rs_model_config *cfg,
			   uint32_t l, float **out)
{
	size_t n = ((size_t)cfg->n_heads + 2 * (size_t)cfg->n_kv_heads) * cfg->head_dim;
	float *bias = (float *)malloc(n * sizeof(float));
	int rc = bias ? 0 : -ENOMEM;
	if (!rc && rs_engine_qkv_bias(e, l, bias)) {
		rc = dev_alloc((void **)out, n * sizeof(float));
		if (!rc)
			rc = cuda_errno(
			    cudaMemcpy(*out, bias, n * sizeof(float), cudaMemcpyHostToDevice));
	}
	free(bias);
	return rc;
}

/* RoPE's cosines and sines for every position, computed once on the host (the CPU's own
 * floats: rs_op_rope_table) rather than in every layer of every step. */
static int upload_rope_table(const struct rs_engine *e, struct cuda_engine *c,
			     const struct rs_model_config *cfg)
{
	size_t floats = (size_t)cfg->max_seq_len * (cfg->rope_dim / 2) * 2;
	float *table = (float *)malloc((floats ? floats : 1) * sizeof(float));
	if (!table)
		return -ENOMEM;
	rs_op_rope_table_freqs(table, 0, cfg->max_seq_len, cfg->rope_dim, e->rope_freqs);
	int rc = dev_alloc((void **)&c->rope_table, floats * sizeof(float));
	if (!rc)
		rc = cuda_errno(cudaMemcpy(c->rope_table, table, floats * sizeof(float),
					   cudaMemcpyHostToDevice));
	free(table);
	return rc;
}

/* Whether any matrix of the model is block-quantized (then every matrix takes the
 * quantized path: struct qmat). */
static bool model_is_quantized(const struct rs_model *m)
{
	if (rs_dtype_is_quant(m->token_embedding.dtype) || rs_dtype_is_quant(m->output.dtype))
		return true;
	for (uint32_t l = 0; l < m->config.n_layers; l++) {
		const struct rs_layer_weights *w = &m->layers[l];
		const struct rs_tensor *t[] = {&w->wq, &w->wk, &w->wv, &w->wo,
					       &w->w_gate, &w->w_up, &w->w_down};
		for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
			if (rs_dtype_is_quant(t[i]->dtype))
				return true;
	}
	return false;
}

/* Device bytes of tensor t in a quantized model: its blocks, or f16. */
static size_t qmat_bytes(const struct rs_tensor *t)
{
	if (rs_dtype_is_quant(t->dtype))
		return (size_t)t->rows * rs_dtype_row_bytes(t->dtype, t->cols);
	return (size_t)(t->rows * t->cols) * sizeof(uint16_t);
}

static size_t align256(size_t n)
{
	return (n + 255) & ~(size_t)255;
}

/* Upload the parts of one matrix of a quantized model (stacked by rows: [q|k|v],
 * [gate|up]) into one allocation, each part as it is when quantized, else as f16. */
static int upload_qmat_parts(void **dst, struct qmat *parts, const struct rs_tensor *const *t,
			     int n_parts)
{
	size_t total = 0;
	for (int i = 0; i < n_parts; i++)
		total += align256(qmat_bytes(t[i]));
	int rc = dev_alloc(dst, total);
	size_t at = 0;
	uint32_t row = 0;
	for (int i = 0; i < n_parts && !rc; i++) {
		uint8_t *p = (uint8_t *)*dst + at;
		bool quant = rs_dtype_is_quant(t[i]->dtype);
		rc = quant ? cuda_errno(cudaMemcpy(p, t[i]->data, qmat_bytes(t[i]),
						   cudaMemcpyHostToDevice))
			   : upload(p, t[i], RS_DTYPE_F16);
		parts[i].w = p;
		parts[i].dtype = quant ? t[i]->dtype : RS_DTYPE_F16;
		parts[i].n = (uint32_t)t[i]->rows;
		parts[i].offset = row;
		row += (uint32_t)t[i]->rows;
		at += align256(qmat_bytes(t[i]));
	}
	return rc;
}

static int load_weights_quant(struct rs_engine *e, struct cuda_engine *c, char *err,
			      size_t err_size)
{
	const struct rs_model *m = e->model;
	const struct rs_model_config *cfg = &e->config;
	c->quant = true;
	c->wtype = RS_DTYPE_F16; /* the activations the products read */
	const struct rs_tensor *emb = &m->token_embedding;
	c->embedding_dtype = rs_dtype_is_quant(emb->dtype) ? emb->dtype : RS_DTYPE_F16;
	int rc = upload_qmat_parts(&c->embedding, &c->q_output, &emb, 1);
	if (!rc && m->output.data == emb->data && m->output.dtype == emb->dtype) {
		c->output = c->embedding; /* tied: q_output describes it already */
	} else if (!rc) {
		const struct rs_tensor *out = &m->output;
		rc = upload_qmat_parts(&c->output, &c->q_output, &out, 1);
	}
	if (!rc)
		rc = upload_new((void **)&c->final_norm, &m->final_norm, RS_DTYPE_F32);
	c->layers = (struct cuda_layer *)calloc(cfg->n_layers, sizeof(*c->layers));
	if (!c->layers)
		rc = rc ? rc : -ENOMEM;
	for (uint32_t l = 0; l < cfg->n_layers && !rc; l++) {
		const struct rs_layer_weights *w = &m->layers[l];
		struct cuda_layer *L = &c->layers[l];
		const struct rs_tensor *qkv[3] = {&w->wq, &w->wk, &w->wv};
		const struct rs_tensor *gu[2] = {&w->w_gate, &w->w_up};
		const struct rs_tensor *wo = &w->wo, *down = &w->w_down;
		rc = upload_new((void **)&L->attn_norm, &w->attn_norm, RS_DTYPE_F32);
		if (!rc)
			rc = upload_new((void **)&L->ffn_norm, &w->ffn_norm, RS_DTYPE_F32);
		if (!rc)
			rc = upload_qmat_parts(&L->wqkv, L->q_qkv, qkv, 3);
		if (!rc)
			rc = upload_qmat_parts(&L->w_gate_up, L->q_gate_up, gu, 2);
		if (!rc)
			rc = upload_qmat_parts(&L->wo, &L->q_wo, &wo, 1);
		if (!rc)
			rc = upload_qmat_parts(&L->w_down, &L->q_down, &down, 1);
		if (!rc)
			rc = upload_qkv_bias(e, cfg, l, &L->bqkv);
	}
	if (!rc)
		rc = upload_rope_table(e, c, cfg);
	/* The f16 panel of batches past the GEMV's 16 rows: the largest matrix, at most
	 * 16 Mi halves (32 MiB) a lane. */
	size_t widest = cfg->vocab_size, deepest = cfg->dim > cfg->hidden_dim ? cfg->dim
									     : cfg->hidden_dim;
	size_t qkv_rows = ((size_t)cfg->n_heads + 2 * (size_t)cfg->n_kv_heads) * cfg->head_dim;
	widest = widest > 2 * (size_t)cfg->hidden_dim ? widest : 2 * (size_t)cfg->hidden_dim;
	widest = widest > qkv_rows ? widest : qkv_rows;
	widest = widest > cfg->dim ? widest : cfg->dim;
	size_t cap = (size_t)16 << 20;
	c->panel_elems = widest * deepest < cap ? widest * deepest : cap;
	if (c->panel_elems < deepest)
		c->panel_elems = deepest;
	if (rc)
		return rs_errmsg(err, err_size, rc, "uploading the quantized weights: %s",
				 rc == -ENOMEM   ? "out of device memory"
				 : rc == -EINVAL ? "a quantized norm weight (only matrices may be)"
						 : "CUDA error");
	return 0;
}

static int load_weights(struct rs_engine *e, struct cuda_engine *c, char *err, size_t err_size)
{
	if (model_is_quantized(e->model))
		return load_weights_quant(e, c, err, err_size);
	const struct rs_model *m = e->model;
	const struct rs_model_config *cfg = &e->config;
	size_t dim = cfg->dim, hidden = cfg->hidden_dim;
	size_t q_dim = (size_t)cfg->n_heads * cfg->head_dim;
	size_t kv_dim = (size_t)cfg->n_kv_heads * cfg->head_dim;

	/* Shapes were checked by rs_engine_create. */
	enum rs_dtype wt = m->layers[0].wq.dtype;
	size_t el = rs_dtype_size(wt);
	c->wtype = wt;

	int rc = upload_new(&c->embedding, &m->token_embedding, wt);
	if (!rc && m->output.data == m->token_embedding.data &&
	    m->output.dtype == m->token_embedding.dtype)
		c->output = c->embedding; /* tied */
	else if (!rc)
		rc = upload_new(&c->output, &m->output, wt);
	if (!rc)
		rc = upload_new((void **)&c->final_norm, &m->final_norm, RS_DTYPE_F32);
	c->layers = (struct cuda_layer *)calloc(cfg->n_layers, sizeof(*c->layers));
	if (!c->layers)
		rc = rc ? rc : -ENOMEM;
	for (uint32_t l = 0; l < cfg->n_layers && !rc; l++) {
		const struct rs_layer_weights *w = &m->layers[l];
		struct cuda_layer *L = &c->layers[l];
		uint8_t *qkv, *gu;
		rc = upload_new((void **)&L->attn_norm, &w->attn_norm, RS_DTYPE_F32);
		if (!rc)
			rc = upload_new((void **)&L->ffn_norm, &w->ffn_norm, RS_DTYPE_F32);
		if (!rc)
			rc = dev_alloc(&L->wqkv, (q_dim + 2 * kv_dim) * dim * el);
		if (!rc) {
			/* Q, K, V fused by rows: one GEMM gives [T][q | k | v]. */
			qkv = (uint8_t *)L->wqkv;
			rc = upload(qkv, &w->wq, wt);
			if (!rc)
				rc = upload(qkv + q_dim * dim * el, &w->wk, wt);
			if (!rc)
				rc = upload(qkv + (q_dim + kv_dim) * dim * el, &w->wv, wt);
		}
		if (!rc)
			rc = dev_alloc(&L->w_gate_up, 2 * hidden * dim * el);
		if (!rc) {
			gu = (uint8_t *)L->w_gate_up;
			rc = upload(gu, &w->w_gate, wt);
			if (!rc)
				rc = upload(gu + hidden * dim * el, &w->w_up, wt);
		}
		if (!rc)
			rc = upload_new(&L->wo, &w->wo, wt);
		if (!rc)
			rc = upload_new(&L->w_down, &w->w_down, wt);
		if (!rc)
			rc = upload_qkv_bias(e, cfg, l, &L->bqkv);
	}
	if (!rc)
		rc = upload_rope_table(e, c, cfg);
	if (rc)
		return rs_errmsg(err, err_size, rc, "uploading the weights: %s",
				 rc == -ENOMEM ? "out of device memory" : "CUDA error");
	return 0;
}

static void drop_graphs(struct cuda_lane *ln)
{
	for (uint32_t i = 0; i < LANE_GRAPHS; i++) {
		if (ln->graphs[i].exec)
			cudaGraphExecDestroy(ln->graphs[i].exec);
		ln->graphs[i].exec = NULL;
	}
}

/* Grow the lane's metadata buffers to hold bytes (the lane is idle). */
static int meta_reserve(struct cuda_lane *ln, size_t bytes)
{
	if (bytes <= ln->meta_cap)
		return 0;
	size_t cap = ln->meta_cap ? ln->meta_cap : 65536;
	while (cap < bytes)
		cap *= 2;
	drop_graphs(ln);
	cudaFreeHost(ln->meta_h);
	cudaFree(ln->meta_d);
	ln->meta_h = ln->meta_d = NULL;
	ln->meta_cap = 0;
	int rc = cuda_errno(cudaHostAlloc((void **)&ln->meta_h, cap, cudaHostAllocDefault));
	if (!rc)
		rc = dev_alloc((void **)&ln->meta_d, cap);
	if (!rc)
		ln->meta_cap = cap;
	return rc;
}

static int lane_create(struct rs_engine *e, struct cuda_engine *c, struct cuda_lane *ln)
{
	const struct rs_model_config *cfg = &e->config;
	size_t T = e->options.max_batch_tokens, el = rs_dtype_size(c->wtype);
	size_t dim = cfg->dim, hidden = cfg->hidden_dim, vocab = cfg->vocab_size;
	size_t q_dim = (size_t)cfg->n_heads * cfg->head_dim;
	size_t kv_dim = (size_t)cfg->n_kv_heads * cfg->head_dim;
	size_t sample_rows = T < SAMPLE_ROWS_PER_LAUNCH ? T : SAMPLE_ROWS_PER_LAUNCH;
	pthread_mutex_init(&ln->lock, NULL);
	ln->notify_fd = -1;
	ln->graphs_on = strcmp(e->options.cuda_graphs, "on") == 0;
	int rc = cuda_errno(cudaStreamCreateWithFlags(&ln->stream, cudaStreamNonBlocking));
	if (!rc)
		rc = cuda_errno(cudaEventCreateWithFlags(&ln->done, cudaEventDisableTiming));
	if (!rc && cublasCreate(&ln->blas) != CUBLAS_STATUS_SUCCESS)
		rc = -EIO;
	if (!rc && cublasSetStream(ln->blas, ln->stream) != CUBLAS_STATUS_SUCCESS)
		rc = -EIO;
	if (!rc)
		rc = dev_alloc((void **)&ln->x, T * dim * sizeof(float));
	if (!rc)
		rc = dev_alloc((void **)&ln->qkv, T * (q_dim + 2 * kv_dim) * sizeof(float));
	if (!rc)
		rc = dev_alloc((void **)&ln->gate_up, T * 2 * hidden * sizeof(float));
	if (!rc)
		rc = dev_alloc((void **)&ln->logits, T * vocab * sizeof(float));
	if (!rc)
		rc = dev_alloc(&ln->xb, T * dim * el);
	if (!rc)
		rc = dev_alloc(&ln->att, T * q_dim * el);
	if (!rc)
		rc = dev_alloc(&ln->hidden, T * hidden * el);
	if (!rc && c->quant)
		rc = dev_alloc(&ln->panel, c->panel_elems * sizeof(uint16_t));
	if (!rc)
		rc = dev_alloc((void **)&ln->sample_scratch,
			       sample_rows * rs_cuda_sample_scratch(cfg->vocab_size) * sizeof(double));
	size_t att_scratch = rs_cuda_attention_scratch(cfg->n_heads, cfg->head_dim) * sizeof(float);
	if (!rc)
		rc = dev_alloc((void **)&ln->att_scratch, att_scratch);
	if (!rc) /* its split counts start at zero (cudaMemset: before any step, see create) */
		rc = cuda_errno(cudaMemset(ln->att_scratch, 0, att_scratch));
	if (!rc)
		rc = cuda_errno(cudaHostAlloc((void **)&ln->out_stage_h, T * sizeof(uint32_t),
					      cudaHostAllocMapped));
	if (!rc)
		rc = cuda_errno(cudaHostGetDevicePointer((void **)&ln->out_stage_d, ln->out_stage_h, 0));
	if (!rc) {
		ln->pending = (uint32_t **)calloc(T, sizeof(uint32_t *));
		rc = ln->pending ? 0 : -ENOMEM;
	}
	if (!rc)
		rc = meta_reserve(ln, 65536);
	return rc;
}

static void lane_destroy(struct cuda_lane *ln)
{
	drop_graphs(ln);
	if (ln->stream)
		cudaStreamSynchronize(ln->stream); /* no host function left to write notify_fd */
	if (ln->notify_fd >= 0)
		close(ln->notify_fd);
	if (ln->blas)
		cublasDestroy(ln->blas);
	if (ln->done)
		cudaEventDestroy(ln->done);
	if (ln->stream)
		cudaStreamDestroy(ln->stream);
	cudaFree(ln->x);
	cudaFree(ln->qkv);
	cudaFree(ln->gate_up);
	cudaFree(ln->logits);
	cudaFree(ln->xb);
	cudaFree(ln->att);
	cudaFree(ln->hidden);
	cudaFree(ln->sample_scratch);
	cudaFree(ln->att_scratch);
	cudaFree(ln->panel);
	cudaFreeHost(ln->out_stage_h);
	cudaFreeHost(ln->meta_h);
	cudaFree(ln->meta_d);
	free(ln->pending);
	pthread_mutex_destroy(&ln->lock);
}

static void cuda_destroy(struct rs_engine *e);

static int cuda_create(struct rs_engine *e, char *err, size_t err_size)
{
	const struct rs_model_config *cfg = &e->config;
	const struct rs_engine_options *o = &e->options;
	if (o->max_batch_tokens > 65535)
		return rs_errmsg(err, err_size, -EINVAL,
				 "CUDA backend: max_batch_tokens %u is above 65535 (grid limit)",
				 o->max_batch_tokens);
	struct cuda_engine *c = (struct cuda_engine *)calloc(1, sizeof(*c));
	if (!c)
		return rs_errmsg(err, err_size, -ENOMEM, "out of memory");
	e->impl = c;
	pthread_mutex_init(&c->ranges_lock, NULL);
	c->device = 0;
	int rc = cuda_errno(cudaSetDevice(c->device));
	if (rc) {
		rs_errmsg(err, err_size, rc, "cudaSetDevice(0) failed");
		goto fail;
	}
	rc = rs_cuda_attention_setup(cfg->n_heads, cfg->n_kv_heads, cfg->head_dim);
	if (rc) {
		rs_errmsg(err, err_size, rc,
			  "CUDA attention cannot run head_dim %u with %u query heads per kv head",
			  cfg->head_dim, cfg->n_heads / cfg->n_kv_heads);
		goto fail;
	}
	rs_cuda_matmul_setup();
	rc = load_weights(e, c, err, err_size);
	if (rc)
		goto fail;

	/* One block more than the allocator hands out: the pad block, where the padding rows
	 * of a replayed decode step store their keys and values. */
	c->pad_block = o->kv_blocks;
	c->layer_cache_floats =
		(size_t)(o->kv_blocks + 1) * o->block_size * cfg->n_kv_heads * cfg->head_dim;
	rc = dev_alloc((void **)&c->k_cache, c->layer_cache_floats * cfg->n_layers * sizeof(float));
	if (!rc)
		rc = dev_alloc((void **)&c->v_cache, c->layer_cache_floats * cfg->n_layers * sizeof(float));
	/* Zeroed so that a read of a never-written slot (a caller bug) stays finite. */
	if (!rc)
		rc = cuda_errno(cudaMemset(c->k_cache, 0,
					   c->layer_cache_floats * cfg->n_layers * sizeof(float)));
	if (!rc)
		rc = cuda_errno(cudaMemset(c->v_cache, 0,
					   c->layer_cache_floats * cfg->n_layers * sizeof(float)));
	if (rc) {
		rs_errmsg(err, err_size, rc, "KV cache: %zu MiB of device memory",
			  2 * c->layer_cache_floats * cfg->n_layers * sizeof(float) >> 20);
		goto fail;
	}
	c->lanes = (struct cuda_lane *)calloc(o->lanes, sizeof(*c->lanes));
	if (!c->lanes) {
		rc = rs_errmsg(err, err_size, -ENOMEM, "out of memory");
		goto fail;
	}
	for (uint32_t i = 0; i < o->lanes; i++) {
		c->n_lanes = i + 1; /* destroy releases what lane_create got so far */
		rc = lane_create(e, c, &c->lanes[i]);
		if (rc) {
			rs_errmsg(err, err_size, rc, "lane %u: %s", i,
				  rc == -ENOMEM ? "out of memory" : "CUDA error");
			goto fail;
		}
	}
	/* The uploads (cudaMemcpy from pageable memory returns before its last DMA lands)
	 * and the KV memsets (asynchronous to the host) ran on the legacy default stream,
	 * with which the lanes' non-blocking streams do not synchronize: finish them before
	 * a step can read the weights or store into the cache. */
	rc = cuda_errno(cudaDeviceSynchronize());
	if (rc) {
		rs_errmsg(err, err_size, rc, "CUDA error while loading the model");
		goto fail;
	}
	return 0;
fail:
	cuda_destroy(e);
	return rc;
}

static void cuda_destroy(struct rs_engine *e)
{
	struct cuda_engine *c = (struct cuda_engine *)e->impl;
	if (!c)
		return;
	cudaSetDevice(c->device);
	for (uint32_t i = 0; i < c->n_lanes; i++)
		lane_destroy(&c->lanes[i]);
	free(c->lanes);
	for (uint32_t i = 0; i < c->n_ranges; i++)
		cudaHostUnregister((void *)c->ranges[i].host);
	free(c->ranges);
	if (c->layers) {
		for (uint32_t l = 0; l < e->config.n_layers; l++) {
			struct cuda_layer *L = &c->layers[l];
			cudaFree(L->attn_norm);
			cudaFree(L->ffn_norm);
			cudaFree(L->bqkv);
			cudaFree(L->wqkv);
			cudaFree(L->wo);
			cudaFree(L->w_gate_up);
			cudaFree(L->w_down);
		}
	}
	free(c->layers);
	if (c->output != c->embedding)
		cudaFree(c->output);
	cudaFree(c->embedding);
	cudaFree(c->final_norm);
	cudaFree(c->rope_table);
	cudaFree(c->k_cache);
	cudaFree(c->v_cache);
	pthread_mutex_destroy(&c->ranges_lock);
	free(c);
	e->impl = NULL;
}

/* Wait for the lane's step in flight, then hand its staged ids to their out_tokens.
 * Called with the lane locked. Returns the lane's status. */
static int lane_finish(struct cuda_lane *ln)
{
	if (!ln->busy)
		return ln->status;
	ln->busy = 0;
	if (cuda_errno(cudaEventSynchronize(ln->done))) {
		ln->status = -EIO;
		ln->n_pending = 0;
		return ln->status;
	}
	for (uint32_t r = 0; r < ln->n_pending && !ln->status; r++)
		if (ln->pending[r])
			*ln->pending[r] = ln->out_stage_h[r];
	ln->n_pending = 0;
	return ln->status;
}

/* The device address of a registered host uint32_t, or NULL. */
static uint32_t *device_address(struct cuda_engine *c, uint32_t *p)
{
	uintptr_t a = (uintptr_t)p;
	uint32_t *dev = NULL;
	pthread_mutex_lock(&c->ranges_lock);
	for (uint32_t i = 0; i < c->n_ranges; i++) {
		const struct host_range *r = &c->ranges[i];
		if (a >= r->host && a - r->host <= r->size - sizeof(uint32_t) &&
		    r->size >= sizeof(uint32_t)) {
			dev = (uint32_t *)(r->dev + (a - r->host));
			break;
		}
	}
	pthread_mutex_unlock(&c->ranges_lock);
	return dev;
}

/* The step's metadata, as laid out in the staging buffer (byte offsets). */
struct step_meta {
	size_t descs, tokens, positions, slots, table_offset, sample_rows, tables, bytes;
};

static struct step_meta meta_layout(uint32_t T, uint32_t rows, size_t table_entries)
{
	struct step_meta m;
	m.descs = 0; /* first: 8-byte aligned */
	m.tokens = m.descs + (size_t)rows * sizeof(struct rs_cuda_sample_desc);
	m.positions = m.tokens + (size_t)T * 4;
	m.slots = m.positions + (size_t)T * 4;
	m.table_offset = m.slots + (size_t)T * 4;
	m.sample_rows = m.table_offset + (size_t)T * 4;
	m.tables = m.sample_rows + (size_t)rows * 4;
	m.bytes = m.tables + table_entries * 4;
	return m;
}

#define TRY(call)                  \
	do {                       \
		if (!rc)           \
			rc = call; \
	} while (0)

/* rs_cuda_qmatmul of the lane's f16 input x by matrix part p into y (rows ldy apart;
 * the part's columns start at p->offset). */
static int qproduct(const struct cuda_engine *c, struct cuda_lane *ln, float *y, size_t ldy,
		    const void *x, const struct qmat *p, uint32_t m, uint32_t k, int accumulate)
{
	return rs_cuda_qmatmul(ln->blas, y + p->offset, ldy, x, p->w, p->dtype, m, p->n, k,
			       accumulate, ln->panel, c->panel_elems);
}

/* enqueue_layers for a quantized model: the unfused path, every product a
 * rs_cuda_qmatmul per part (the parts of a fused matrix may differ in format). */
static int enqueue_layers_quant(struct rs_engine *e, struct cuda_engine *c,
				struct cuda_lane *ln, const struct step_meta *mt, uint32_t T,
				uint32_t max_ctx)
{
	const struct rs_model_config *cfg = &e->config;
	uint32_t dim = cfg->dim, hidden = cfg->hidden_dim, hd = cfg->head_dim;
	uint32_t q_dim = cfg->n_heads * hd, kv_dim = cfg->n_kv_heads * hd;
	uint32_t stride = q_dim + 2 * kv_dim;
	cudaStream_t s = ln->stream;
	const uint32_t *d_tokens = (const uint32_t *)(ln->meta_d + mt->tokens);
	const uint32_t *d_positions = (const uint32_t *)(ln->meta_d + mt->positions);
	const uint32_t *d_slots = (const uint32_t *)(ln->meta_d + mt->slots);
	const uint32_t *d_table_offset = (const uint32_t *)(ln->meta_d + mt->table_offset);
	const uint32_t *d_tables = (const uint32_t *)(ln->meta_d + mt->tables);
	int rc = rs_dtype_is_quant(c->embedding_dtype)
			 ? rs_cuda_embedding_quant(ln->x, c->embedding, c->embedding_dtype,
						   d_tokens, T, dim, s)
			 : rs_cuda_embedding(ln->x, c->embedding, c->embedding_dtype, d_tokens, T,
					     dim, s);
	for (uint32_t l = 0; l < cfg->n_layers && !rc; l++) {
		const struct cuda_layer *L = &c->layers[l];
		struct rs_cuda_kv_layer kv = {c->k_cache + l * c->layer_cache_floats,
					      c->v_cache + l * c->layer_cache_floats,
					      e->options.block_size, cfg->n_kv_heads, hd};
		TRY(rs_cuda_rmsnorm(ln->xb, RS_DTYPE_F16, ln->x, NULL, L->attn_norm, T, dim,
				    cfg->norm_eps, s));
		for (int p = 0; p < 3; p++)
			TRY(qproduct(c, ln, ln->qkv, stride, ln->xb, &L->q_qkv[p], T, dim, 0));
		if (L->bqkv)
			TRY(rs_cuda_add_bias(ln->qkv, L->bqkv, T, stride, stride, s));
		TRY(rs_cuda_rope_kv_store(ln->qkv, stride, d_positions, d_slots, T, cfg->n_heads,
					  &kv, cfg->rope_dim, c->rope_table, s));
		TRY(rs_cuda_attention(ln->att, RS_DTYPE_F16, ln->qkv, stride, &kv, d_tables,
				      d_table_offset, d_positions, T, cfg->n_heads, max_ctx,
				      ln->att_scratch, s));
		TRY(qproduct(c, ln, ln->x, dim, ln->att, &L->q_wo, T, q_dim, 1));
		TRY(rs_cuda_rmsnorm(ln->xb, RS_DTYPE_F16, ln->x, NULL, L->ffn_norm, T, dim,
				    cfg->norm_eps, s));
		for (int p = 0; p < 2; p++)
			TRY(qproduct(c, ln, ln->gate_up, 2 * hidden, ln->xb, &L->q_gate_up[p], T,
				     dim, 0));
		TRY(rs_cuda_swiglu(ln->hidden, RS_DTYPE_F16, ln->gate_up, T, hidden, s));
		TRY(qproduct(c, ln, ln->x, dim, ln->hidden, &L->q_down, T, hidden, 1));
	}
	return rc;
}

/* Logits of n_rows rows (rows[r] of x; rows NULL: every row) into ln->logits: the final
 * norm and the output product, fused where the model is not quantized. */
static int enqueue_logits(struct rs_engine *e, struct cuda_engine *c, struct cuda_lane *ln,
			  const uint32_t *rows, uint32_t n_rows)
{
	const struct rs_model_config *cfg = &e->config;
	uint32_t vocab = cfg->vocab_size, dim = cfg->dim;
	if (!c->quant)
		return rs_cuda_norm_matmul(ln->blas, ln->logits, ln->x, rows, c->final_norm,
					   cfg->norm_eps, ln->xb, c->output, c->wtype, n_rows,
					   vocab, dim, 0);
	int rc = rs_cuda_rmsnorm(ln->xb, RS_DTYPE_F16, ln->x, rows, c->final_norm, n_rows, dim,
				 cfg->norm_eps, ln->stream);
	TRY(qproduct(c, ln, ln->logits, vocab, ln->xb, &c->q_output, n_rows, dim, 0));
	return rc;
}

/* Enqueue the layers over the step's T tokens (metadata already on the device), whose
 * longest context is max_ctx positions. */
static int enqueue_layers(struct rs_engine *e, struct cuda_engine *c, struct cuda_lane *ln,
			  const struct step_meta *mt, uint32_t T, uint32_t max_ctx)
{
	if (c->quant)
		return enqueue_layers_quant(e, c, ln, mt, T, max_ctx);
	const struct rs_model_config *cfg = &e->config;
	uint32_t dim = cfg->dim, hidden = cfg->hidden_dim, hd = cfg->head_dim;
	uint32_t q_dim = cfg->n_heads * hd, kv_dim = cfg->n_kv_heads * hd;
	uint32_t stride = q_dim + 2 * kv_dim;
	enum rs_dtype wt = c->wtype;
	cudaStream_t s = ln->stream;
	const uint32_t *d_tokens = (const uint32_t *)(ln->meta_d + mt->tokens);
	const uint32_t *d_positions = (const uint32_t *)(ln->meta_d + mt->positions);
	const uint32_t *d_slots = (const uint32_t *)(ln->meta_d + mt->slots);
	const uint32_t *d_table_offset = (const uint32_t *)(ln->meta_d + mt->table_offset);
	const uint32_t *d_tables = (const uint32_t *)(ln->meta_d + mt->tables);
	int rc = rs_cuda_embedding(ln->x, c->embedding, wt, d_tokens, T, dim, s);
	for (uint32_t l = 0; l < cfg->n_layers && !rc; l++) {
		const struct cuda_layer *L = &c->layers[l];
		struct rs_cuda_kv_layer kv = {c->k_cache + l * c->layer_cache_floats,
					      c->v_cache + l * c->layer_cache_floats,
					      e->options.block_size, cfg->n_kv_heads, hd};
		if (L->bqkv) {
			/* Biased (Qwen2): the unfused path, the bias between the GEMM and RoPE
			 * (the fused GEMV epilogue has no bias). */
			TRY(rs_cuda_norm_matmul(ln->blas, ln->qkv, ln->x, NULL, L->attn_norm,
						cfg->norm_eps, ln->xb, L->wqkv, wt, T, stride, dim,
						0));
			TRY(rs_cuda_add_bias(ln->qkv, L->bqkv, T, stride, stride, s));
			TRY(rs_cuda_rope_kv_store(ln->qkv, stride, d_positions, d_slots, T,
						  cfg->n_heads, &kv, cfg->rope_dim, c->rope_table,
						  s));
		} else {
			TRY(rs_cuda_qkv_matmul(ln->blas, ln->qkv, ln->x, L->attn_norm,
					       cfg->norm_eps, ln->xb, L->wqkv, wt, T, dim,
					       cfg->n_heads, &kv, cfg->rope_dim, c->rope_table,
					       d_positions, d_slots));
		}
		TRY(rs_cuda_attention(ln->att, wt, ln->qkv, stride, &kv, d_tables, d_table_offset,
				      d_positions, T, cfg->n_heads, max_ctx, ln->att_scratch, s));
		TRY(rs_cuda_matmul(ln->blas, ln->x, ln->att, L->wo, wt, T, dim, q_dim, 1));
		TRY(rs_cuda_norm_matmul(ln->blas, ln->gate_up, ln->x, NULL, L->ffn_norm, cfg->norm_eps,
					ln->xb, L->w_gate_up, wt, T, 2 * hidden, dim, 0));
		TRY(rs_cuda_swiglu_matmul(ln->blas, ln->x, ln->gate_up, ln->hidden, L->w_down, wt, T,
					  dim, hidden, 1));
	}
	return rc;
}

/* What a step puts on the lane's stream once its metadata is staged: the metadata's copy
 * to the device, the layers over its T tokens (longest context at most max_ctx), and
 * either every position's logits copied to `logits` or the sampling of `rows` rows. */
static int enqueue_step(struct rs_engine *e, struct cuda_engine *c, struct cuda_lane *ln,
			const struct step_meta *mt, uint32_t T, uint32_t max_ctx, uint32_t rows,
			float *logits)
{
	const struct rs_model_config *cfg = &e->config;
	uint32_t vocab = cfg->vocab_size;
	int rc = cuda_errno(cudaMemcpyAsync(ln->meta_d, ln->meta_h, mt->bytes,
					    cudaMemcpyHostToDevice, ln->stream));
	TRY(enqueue_layers(e, c, ln, mt, T, max_ctx));
	if (logits) {
		TRY(enqueue_logits(e, c, ln, NULL, T));
		TRY(cuda_errno(cudaMemcpyAsync(logits, ln->logits, (size_t)T * vocab * sizeof(float),
					       cudaMemcpyDeviceToHost, ln->stream)));
	} else if (rows) {
		/* Only the last position of each sampled sequence needs logits. */
		const uint32_t *d_rows = (const uint32_t *)(ln->meta_d + mt->sample_rows);
		const struct rs_cuda_sample_desc *d_descs =
			(const struct rs_cuda_sample_desc *)(ln->meta_d + mt->descs);
		TRY(enqueue_logits(e, c, ln, d_rows, rows));
		for (uint32_t r0 = 0; r0 < rows && !rc; r0 += SAMPLE_ROWS_PER_LAUNCH) {
			uint32_t n = rows - r0 < SAMPLE_ROWS_PER_LAUNCH ? rows - r0 : SAMPLE_ROWS_PER_LAUNCH;
			rc = rs_cuda_sample(ln->logits + (size_t)r0 * vocab, vocab, d_descs + r0, n,
					    ln->sample_scratch, ln->stream);
		}
	}
	return rc;
}

/* Note why capturing failed (the first time), and enqueue kernel by kernel from now on. */
static void graph_failed(struct cuda_lane *ln, const char *what, cudaError_t err, int rc)
{
	cudaGetLastError(); /* not the next launch check's */
	ln->graphs_on = false;
	if (!ln->stats.graph_failures++)
		snprintf(ln->stats.graph_error, sizeof(ln->stats.graph_error), "%s: %s", what,
			 err != cudaSuccess ? cudaGetErrorString(err) : strerror(-rc));
}

/* The lane's graph for a decode step of `rows` sequences whose longest context is
 * max_ctx, captured now if the lane has none (replacing its least recently used), from
 * the metadata staged in mt's layout. NULL when capturing fails. */
static struct decode_graph *decode_graph_for(struct rs_engine *e, struct cuda_engine *c,
					     struct cuda_lane *ln, const struct step_meta *mt,
					     uint32_t rows, uint32_t max_ctx)
{
	/* Context ranges double from one attention chunk, up to the model's longest. */
	uint32_t ctx = GRAPH_MIN_CTX;
	while (ctx < max_ctx)
		ctx *= 2;
	if (ctx > e->config.max_seq_len)
		ctx = max_ctx > e->config.max_seq_len ? max_ctx : e->config.max_seq_len;
	struct decode_graph *victim = &ln->graphs[0];
	for (uint32_t i = 0; i < LANE_GRAPHS; i++) {
		struct decode_graph *g = &ln->graphs[i];
		if (g->exec && g->rows == rows && g->ctx == ctx)
			return g;
		if (victim->exec && (!g->exec || g->last_used < victim->last_used))
			victim = g;
	}
	cudaGraph_t graph = NULL;
	cudaGraphExec_t exec = NULL;
	/* Thread-local: other threads' CUDA calls (other lanes) go on meanwhile. */
	cudaError_t err = cudaStreamBeginCapture(ln->stream, cudaStreamCaptureModeThreadLocal);
	if (err != cudaSuccess) {
		graph_failed(ln, "beginning the capture", err, 0);
		return NULL;
	}
	int rc = enqueue_step(e, c, ln, mt, rows, ctx, rows, NULL);
	err = cudaStreamEndCapture(ln->stream, &graph);
	if (rc || err != cudaSuccess) {
		if (graph)
			cudaGraphDestroy(graph);
		graph_failed(ln, rc ? "a launch under capture" : "ending the capture", err, rc);
		return NULL;
	}
	err = cudaGraphInstantiate(&exec, graph, 0);
	cudaGraphDestroy(graph);
	if (err != cudaSuccess) {
		graph_failed(ln, "instantiating the graph", err, 0);
		return NULL;
	}
	if (victim->exec)
		cudaGraphExecDestroy(victim->exec);
	*victim = (struct decode_graph){rows, ctx, exec, 0};
	ln->stats.graph_captures++;
	return victim;
}

/* A host function on the lane's stream (a CUDA thread runs it; no CUDA calls allowed):
 * the step before it is done. An eventfd write fails only on counter overflow. */
static void CUDART_CB notify_step_done(void *arg)
{
	const struct cuda_lane *ln = (const struct cuda_lane *)arg;
	uint64_t one = 1;
	ssize_t written = write(ln->notify_fd, &one, sizeof(one));
	(void)written;
}

static int cuda_step(struct rs_engine *e, uint32_t lane, const struct rs_seq_step *seqs,
		     uint32_t n_seqs, uint32_t T, float *logits)
{
	struct cuda_engine *c = (struct cuda_engine *)e->impl;
	struct cuda_lane *ln = &c->lanes[lane];
	const struct rs_model_config *cfg = &e->config;
	uint32_t bs = e->options.block_size;

	pthread_mutex_lock(&ln->lock);
	cudaSetDevice(c->device);
	lane_finish(ln); /* one step in flight per lane: the staging buffers are ours again */
	ln->status = 0;

	uint32_t rows = 0, max_ctx = 0;
	size_t table_entries = 0;
	for (uint32_t s = 0; s < n_seqs; s++) {
		uint32_t end = seqs[s].start_pos + seqs[s].n_tokens;
		rows += !logits && seqs[s].sample;
		table_entries += rs_kv_blocks_for(end, bs);
		max_ctx = end > max_ctx ? end : max_ctx;
	}
	/* A decode step: every sequence one token (n_tokens >= 1 each), every one sampled.
	 * With graphs it runs `padded` rows, the next power of two (serving changes the batch
	 * size nearly every step: a graph per size would be captured more often than
	 * replayed), the extra rows decoding a dummy token into the pad block. Its staging
	 * layout is the one its graph was captured with: tables at their most. */
	bool graph = !logits && n_seqs == T && rows == T && ln->graphs_on;
	uint32_t padded = T;
	if (graph) {
		while (padded & (padded - 1))
			padded += padded & -padded; /* up to the next power of two */
		if (padded > e->options.max_batch_tokens)
			padded = T;
		table_entries = (size_t)padded * rs_kv_blocks_for(cfg->max_seq_len, bs);
	}
	struct step_meta mt = meta_layout(padded, graph ? padded : rows, table_entries);
	int rc = meta_reserve(ln, mt.bytes);
	if (rc)
		goto out;

	{
		struct rs_cuda_sample_desc *descs = (struct rs_cuda_sample_desc *)(ln->meta_h + mt.descs);
		uint32_t *tokens = (uint32_t *)(ln->meta_h + mt.tokens);
		uint32_t *positions = (uint32_t *)(ln->meta_h + mt.positions);
		uint32_t *slots = (uint32_t *)(ln->meta_h + mt.slots);
		uint32_t *table_offset = (uint32_t *)(ln->meta_h + mt.table_offset);
		uint32_t *sample_rows = (uint32_t *)(ln->meta_h + mt.sample_rows);
		uint32_t *tables = (uint32_t *)(ln->meta_h + mt.tables);
		uint32_t t = 0, r = 0, cursor = 0;
		for (uint32_t s = 0; s < n_seqs; s++) {
			const struct rs_seq_step *q = &seqs[s];
			uint32_t used = rs_kv_blocks_for(q->start_pos + q->n_tokens, bs);
			memcpy(tables + cursor, q->block_table, used * sizeof(uint32_t));
			for (uint32_t i = 0; i < q->n_tokens; i++, t++) {
				uint32_t p = q->start_pos + i;
				tokens[t] = q->tokens[i];
				positions[t] = p;
				slots[t] = q->block_table[p / bs] * bs + p % bs;
				table_offset[t] = cursor;
			}
			cursor += used;
			if (logits || !q->sample)
				continue;
			uint32_t *dev = device_address(c, q->out_token);
			ln->pending[r] = dev ? NULL : q->out_token;
			rs_cuda_sample_desc_init(&descs[r], &q->sampling,
						 (uint64_t)q->start_pos + q->n_tokens,
						 dev ? dev : ln->out_stage_d + r);
			sample_rows[r++] = t - 1;
		}
		/* Padding rows: position 0 of the pad block, greedy, into their own staging
		 * slots, which nobody reads. */
		const struct rs_sampling_params greedy = {};
		for (; t < padded; t++, r++) {
			tokens[t] = 0;
			positions[t] = 0;
			slots[t] = c->pad_block * bs;
			table_offset[t] = cursor;
			tables[cursor] = c->pad_block;
			ln->pending[r] = NULL;
			rs_cuda_sample_desc_init(&descs[r], &greedy, 1, ln->out_stage_d + r);
			sample_rows[r] = t;
		}
	}
	ln->steps++;
	if (graph) {
		struct decode_graph *g = decode_graph_for(e, c, ln, &mt, padded, max_ctx);
		if (g) {
			rc = cuda_errno(cudaGraphLaunch(g->exec, ln->stream));
			g->last_used = ln->steps;
			ln->stats.graph_launches += !rc;
		} else {
			rc = enqueue_step(e, c, ln, &mt, padded, max_ctx, padded, NULL);
		}
		rows = padded; /* the padding rows' ids land in staging slots nobody reads */
	} else {
		rc = enqueue_step(e, c, ln, &mt, T, max_ctx, rows, logits);
	}
	if (!rc && rows && !logits)
		ln->n_pending = rows;
	/* Recorded even after a failed launch, so that finish waits for what did go in. The
	 * notification follows the event on the stream: whoever it wakes finds it fired. */
	if (cudaEventRecord(ln->done, ln->stream) == cudaSuccess)
		ln->busy = 1;
	else
		rc = rc ? rc : -EIO;
	if (ln->busy && ln->notify_fd >= 0 &&
	    cudaLaunchHostFunc(ln->stream, notify_step_done, ln) != cudaSuccess)
		rc = rc ? rc : -EIO;
	if (rc)
		ln->n_pending = 0;
out:
	ln->status = rc;
	if (logits && !rc)
		rc = lane_finish(ln);
	pthread_mutex_unlock(&ln->lock);
	return rc;
}

static int cuda_poll(struct rs_engine *e, uint32_t lane)
{
	struct cuda_engine *c = (struct cuda_engine *)e->impl;
	struct cuda_lane *ln = &c->lanes[lane];
	pthread_mutex_lock(&ln->lock);
	int running = 0;
	if (ln->busy) {
		cudaSetDevice(c->device);
		running = cudaEventQuery(ln->done) == cudaErrorNotReady;
		/* "Not ready" is recorded as this thread's last error like any failure: left
		 * there, it would fail the next step's first launch check with -EIO. */
		if (running)
			cudaGetLastError();
	}
	/* Done (or failed): finish returns at once, delivering the staged ids. */
	int rc = running ? 0 : lane_finish(ln);
	pthread_mutex_unlock(&ln->lock);
	if (running)
		return 0;
	return rc ? rc : 1;
}

static int cuda_wait(struct rs_engine *e, uint32_t lane)
{
	struct cuda_engine *c = (struct cuda_engine *)e->impl;
	struct cuda_lane *ln = &c->lanes[lane];
	pthread_mutex_lock(&ln->lock);
	cudaSetDevice(c->device);
	int rc = lane_finish(ln);
	pthread_mutex_unlock(&ln->lock);
	return rc;
}

static int cuda_register_host(struct rs_engine *e, void *ptr, size_t size)
{
	struct cuda_engine *c = (struct cuda_engine *)e->impl;
	uintptr_t a = (uintptr_t)ptr;
	if (a + size < a)
		return -EINVAL;
	pthread_mutex_lock(&c->ranges_lock);
	int rc = 0;
	for (uint32_t i = 0; i < c->n_ranges && !rc; i++)
		if (a < c->ranges[i].host + c->ranges[i].size && c->ranges[i].host < a + size)
			rc = -EEXIST;
	if (!rc && c->n_ranges == c->cap_ranges) {
		uint32_t cap = c->cap_ranges ? 2 * c->cap_ranges : 16;
		struct host_range *grown =
			(struct host_range *)realloc(c->ranges, cap * sizeof(*grown));
		if (grown) {
			c->ranges = grown;
			c->cap_ranges = cap;
		} else {
			rc = -ENOMEM;
		}
	}
	if (!rc) {
		cudaSetDevice(c->device);
		cudaError_t err = cudaHostRegister(ptr, size, cudaHostRegisterMapped |
								      cudaHostRegisterPortable);
		void *dev = NULL;
		if (err == cudaSuccess) {
			err = cudaHostGetDevicePointer(&dev, ptr, 0);
			if (err != cudaSuccess)
				cudaHostUnregister(ptr);
		}
		if (err == cudaSuccess)
			c->ranges[c->n_ranges++] = (struct host_range){a, size, (uintptr_t)dev};
		else
			rc = err == cudaErrorInvalidValue	       ? -EINVAL
			     : err == cudaErrorHostMemoryAlreadyRegistered ? -EEXIST
			     : err == cudaErrorMemoryAllocation	       ? -ENOMEM
									       : -EIO;
		cudaGetLastError();
	}
	pthread_mutex_unlock(&c->ranges_lock);
	return rc;
}

static int cuda_unregister_host(struct rs_engine *e, void *ptr)
{
	struct cuda_engine *c = (struct cuda_engine *)e->impl;
	/* A step in flight may still write into the range: wait for every lane first (lane
	 * locks are never taken under ranges_lock). */
	for (uint32_t i = 0; i < c->n_lanes; i++) {
		pthread_mutex_lock(&c->lanes[i].lock);
		cudaSetDevice(c->device);
		lane_finish(&c->lanes[i]);
		pthread_mutex_unlock(&c->lanes[i].lock);
	}
	pthread_mutex_lock(&c->ranges_lock);
	int rc = -ENOENT;
	for (uint32_t i = 0; i < c->n_ranges; i++) {
		if (c->ranges[i].host != (uintptr_t)ptr)
			continue;
		c->ranges[i] = c->ranges[--c->n_ranges];
		cudaSetDevice(c->device);
		rc = cuda_errno(cudaHostUnregister(ptr)) ? -EIO : 0;
		break;
	}
	pthread_mutex_unlock(&c->ranges_lock);
	return rc;
}

static int cuda_step_fd(struct rs_engine *e, uint32_t lane)
{
	struct cuda_lane *ln = &((struct cuda_engine *)e->impl)->lanes[lane];
	pthread_mutex_lock(&ln->lock);
	if (ln->notify_fd < 0)
		ln->notify_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	int fd = ln->notify_fd >= 0 ? ln->notify_fd : -errno;
	pthread_mutex_unlock(&ln->lock);
	return fd;
}

static void cuda_stats(struct rs_engine *e, struct rs_engine_stats *out)
{
	struct cuda_engine *c = (struct cuda_engine *)e->impl;
	for (uint32_t i = 0; i < c->n_lanes; i++) {
		struct cuda_lane *ln = &c->lanes[i];
		pthread_mutex_lock(&ln->lock);
		out->graph_launches += ln->stats.graph_launches;
		out->graph_captures += ln->stats.graph_captures;
		out->graph_failures += ln->stats.graph_failures;
		if (!out->graph_error[0])
			memcpy(out->graph_error, ln->stats.graph_error, sizeof(out->graph_error));
		pthread_mutex_unlock(&ln->lock);
	}
}

/* Positional: C++17 has no designated initializers; the order is engine_backend.h's. */
extern "C" const struct rs_engine_backend rs_engine_backend_cuda = {
	"cuda",
	cuda_create,
	cuda_destroy,
	cuda_step,
	cuda_poll,
	cuda_wait,
	cuda_available,
	cuda_register_host,
	cuda_unregister_host,
	cuda_step_fd,
	cuda_stats,
};
