/* llama2.c checkpoints: memory-mapped reading with an exact size check, and writing. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/model/dtype.h"
#include "kernels/model/errmsg.h"
#include "kernels/model/llama2c.h"
#include "kernels/model/quant.h"

/* Floats in each part of the file, in file order; the caller has checked the config's
 * limits, so none of these products can overflow 64 bits. */
struct layout {
	uint64_t embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, freq_cis, wcls;
	uint64_t total;
};

/* Fill l with the float counts of a checkpoint for config c. */
static void compute_layout(const struct rs_model_config *c, int shared, struct layout *l)
{
	uint64_t L = c->n_layers, dim = c->dim, hidden = c->hidden_dim;
	uint64_t q_dim = (uint64_t)c->n_heads * c->head_dim;
	uint64_t kv_dim = (uint64_t)c->n_kv_heads * c->head_dim;
	l->embedding = (uint64_t)c->vocab_size * dim;
	l->rms_att = L * dim;
	l->wq = L * q_dim * dim;
	l->wk = L * kv_dim * dim;
	l->wv = L * kv_dim * dim;
	l->wo = L * dim * q_dim;
	l->rms_ffn = L * dim;
	l->w1 = L * hidden * dim;
	l->w2 = L * dim * hidden;
	l->w3 = L * hidden * dim;
	l->rms_final = dim;
	l->freq_cis = 2 * ((uint64_t)c->max_seq_len * c->head_dim / 2);
	l->wcls = shared ? 0 : l->embedding;
	l->total = l->embedding + l->rms_att + l->wq + l->wk + l->wv + l->wo + l->rms_ffn + l->w1 +
		   l->w2 + l->w3 + l->rms_final + l->freq_cis + l->wcls;
}

/* An F32 [rows][cols] tensor over base. */
static struct rs_tensor view(const float *base, uint64_t rows, uint64_t cols)
{
	return (struct rs_tensor){.dtype = RS_DTYPE_F32, .rows = rows, .cols = cols, .data = base};
}

int rs_llama2c_parse(const void *data, size_t size, struct rs_model *model, char *err,
		     size_t err_size)
{
	int32_t h[7];
	if (size < RS_LLAMA2C_HEADER_SIZE)
		return rs_errmsg(err, err_size, -EINVAL,
				 "llama2.c checkpoint: %zu bytes, too short for its 28-byte header",
				 size);
	/* The backends read the floats in place. */
	if ((uintptr_t)data % 4)
		return rs_errmsg(err, err_size, -EINVAL,
				 "llama2.c checkpoint: data is not 4-byte aligned in memory");
	memcpy(h, data, sizeof(h));
	for (int i = 0; i < 7; i++) {
		static const char *const names[7] = {"dim",	"hidden_dim", "n_layers",
						     "n_heads", "n_kv_heads", "vocab_size",
						     "seq_len"};
		if (h[i] <= 0 && !(i == 5 && h[i] < 0 && h[i] != INT32_MIN))
			return rs_errmsg(
			    err, err_size, -EINVAL,
			    "llama2.c checkpoint: header field %s is %d (not a llama2.c "
			    "checkpoint, or corrupt)",
			    names[i], h[i]);
	}
	int shared = h[5] > 0;
	struct rs_model_config cfg = {
	    .dim = (uint32_t)h[0],
	    .hidden_dim = (uint32_t)h[1],
	    .n_layers = (uint32_t)h[2],
	    .n_heads = (uint32_t)h[3],
	    .n_kv_heads = (uint32_t)h[4],
	    .vocab_size = (uint32_t)(shared ? h[5] : -h[5]),
	    .max_seq_len = (uint32_t)h[6],
	    .rope_theta = 10000.0f,
	    .norm_eps = 1e-5f,
	};
	if (cfg.dim % cfg.n_heads)
		return rs_errmsg(err, err_size, -EINVAL,
				 "llama2.c checkpoint: n_heads %u does not divide dim %u",
				 cfg.n_heads, cfg.dim);
	cfg.head_dim = cfg.dim / cfg.n_heads;
	cfg.rope_dim = cfg.head_dim;
	char inner[200];
	int ret = rs_model_check_config(&cfg, inner, sizeof(inner));
	if (ret)
		return rs_errmsg(err, err_size, ret, "llama2.c checkpoint: %s", inner);

	struct layout l;
	compute_layout(&cfg, shared, &l);
	uint64_t expected = RS_LLAMA2C_HEADER_SIZE + 4 * l.total;
	if (expected != size)
		return rs_errmsg(
		    err, err_size, -EINVAL,
		    "llama2.c checkpoint: header (dim %u, hidden_dim %u, n_layers %u, "
		    "n_heads %u, n_kv_heads %u, vocab_size %d, seq_len %u) implies %" PRIu64
		    " bytes, the file has %zu",
		    cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, h[5],
		    cfg.max_seq_len, expected, size);

	struct rs_layer_weights *layers = calloc(cfg.n_layers, sizeof(*layers));
	if (!layers)
		return rs_errmsg(err, err_size, -ENOMEM, "llama2.c checkpoint: out of memory");
	uint64_t dim = cfg.dim, hidden = cfg.hidden_dim, L = cfg.n_layers;
	uint64_t q_dim = (uint64_t)cfg.n_heads * cfg.head_dim;
	uint64_t kv_dim = (uint64_t)cfg.n_kv_heads * cfg.head_dim;
	const float *p = (const float *)((const uint8_t *)data + RS_LLAMA2C_HEADER_SIZE);
	const float *embedding = p;
	const float *rms_att = embedding + l.embedding, *wq = rms_att + l.rms_att;
	const float *wk = wq + l.wq, *wv = wk + l.wk, *wo = wv + l.wv;
	const float *rms_ffn = wo + l.wo, *w1 = rms_ffn + l.rms_ffn, *w2 = w1 + l.w1;
	const float *w3 = w2 + l.w2, *rms_final = w3 + l.w3;
	const float *wcls = rms_final + l.rms_final + l.freq_cis;
	for (uint64_t i = 0; i < L; i++) {
		struct rs_layer_weights *w = &layers[i];
		w->attn_norm = view(rms_att + i * dim, 1, dim);
		w->wq = view(wq + i * q_dim * dim, q_dim, dim);
		w->wk = view(wk + i * kv_dim * dim, kv_dim, dim);
		w->wv = view(wv + i * kv_dim * dim, kv_dim, dim);
		w->wo = view(wo + i * dim * q_dim, dim, q_dim);
		w->ffn_norm = view(rms_ffn + i * dim, 1, dim);
		w->w_gate = view(w1 + i * hidden * dim, hidden, dim);
		w->w_down = view(w2 + i * dim * hidden, dim, hidden);
		w->w_up = view(w3 + i * hidden * dim, hidden, dim);
	}
	model->config = cfg;
	model->layers = layers;
	model->token_embedding = view(embedding, cfg.vocab_size, dim);
	model->final_norm = view(rms_final, 1, dim);
	model->output = shared ? model->token_embedding : view(wcls, cfg.vocab_size, dim);
	return 0;
}

/* Write a tensor as float32, converting from its dtype in chunks. */
static int write_tensor(FILE *f, const struct rs_tensor *t)
{
	float chunk[1024];
	uint64_t n = t->rows * t->cols;
	if (t->dtype == RS_DTYPE_F32)
		return fwrite(t->data, 4, n, f) == n ? 0 : -EIO;
	for (uint64_t i = 0; i < n; i += 1024) {
		size_t k = n - i < 1024 ? (size_t)(n - i) : 1024;
		/* i is a multiple of 1024, so of any quantized format's block too. */
		rs_convert_to_f32(chunk, (const uint8_t *)t->data + rs_dtype_row_bytes(t->dtype, i),
				  t->dtype, k);
		if (fwrite(chunk, 4, k, f) != k)
			return -EIO;
	}
	return 0;
}

/* Write n zero floats. */
static int write_zeros(FILE *f, uint64_t n)
{
	static const float zeros[256];
	for (uint64_t i = 0; i < n; i += 256) {
		size_t k = n - i < 256 ? (size_t)(n - i) : 256;
		if (fwrite(zeros, 4, k, f) != k)
			return -EIO;
	}
	return 0;
}

int rs_llama2c_write(const char *path, const struct rs_model *model, char *err, size_t err_size)
{
	const struct rs_model_config *c = &model->config;
	int shared = model->output.data == model->token_embedding.data;
	char inner[200];
	int ret = rs_model_check_config(c, inner, sizeof(inner));
	if (ret)
		return rs_errmsg(err, err_size, ret, "llama2.c writer: %s", inner);
	if (c->head_dim * c->n_heads != c->dim || c->rope_dim != c->head_dim ||
	    c->rope_theta != 10000.0f || c->norm_eps != 1e-5f || c->vocab_size > INT32_MAX)
		return rs_errmsg(err, err_size, -EINVAL,
				 "llama2.c writer: the format implies rope_theta 10000, norm_eps "
				 "1e-5 and rope_dim == head_dim == dim / n_heads");
	bool biased = false;
	for (uint32_t l = 0; l < c->n_layers; l++)
		biased |= model->layers[l].bq.data || model->layers[l].bk.data ||
			  model->layers[l].bv.data;
	if (model->arch != RS_ARCH_LLAMA || biased || model->rope_freqs.data ||
	    (c->rope_scale > 0.0f && c->rope_scale != 1.0f))
		return rs_errmsg(err, err_size, -EINVAL,
				 "llama2.c writer: the format holds plain Llama 2 models only (no "
				 "biases, rope_freqs or RoPE scaling)");

	FILE *f = fopen(path, "wb");
	if (!f) {
		ret = -errno;
		return rs_errmsg(err, err_size, ret, "%s: %s", path, strerror(-ret));
	}
	int32_t h[7] = {
	    (int32_t)c->dim,	    (int32_t)c->hidden_dim,
	    (int32_t)c->n_layers,   (int32_t)c->n_heads,
	    (int32_t)c->n_kv_heads, shared ? (int32_t)c->vocab_size : -(int32_t)c->vocab_size,
	    (int32_t)c->max_seq_len};
	ret = fwrite(h, sizeof(h), 1, f) == 1 ? 0 : -EIO;
	if (!ret)
		ret = write_tensor(f, &model->token_embedding);
	/* Each per-layer kind is stored for all layers before the next kind. */
	static const size_t kinds[] = {
	    offsetof(struct rs_layer_weights, attn_norm),
	    offsetof(struct rs_layer_weights, wq),
	    offsetof(struct rs_layer_weights, wk),
	    offsetof(struct rs_layer_weights, wv),
	    offsetof(struct rs_layer_weights, wo),
	    offsetof(struct rs_layer_weights, ffn_norm),
	    offsetof(struct rs_layer_weights, w_gate),
	    offsetof(struct rs_layer_weights, w_down),
	    offsetof(struct rs_layer_weights, w_up),
	};
	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]) && !ret; k++)
		for (uint32_t i = 0; i < c->n_layers && !ret; i++)
			ret = write_tensor(
			    f, (const struct rs_tensor *)((const uint8_t *)&model->layers[i] +
							  kinds[k]));
	if (!ret)
		ret = write_tensor(f, &model->final_norm);
	if (!ret) /* freq_cis_real and freq_cis_imag: unused by run.c */
		ret = write_zeros(f, 2 * ((uint64_t)c->max_seq_len * c->head_dim / 2));
	if (!ret && !shared)
		ret = write_tensor(f, &model->output);
	if (fclose(f) != 0 && !ret)
		ret = -errno;
	if (ret)
		return rs_errmsg(err, err_size, ret, "%s: write failed: %s", path, strerror(-ret));
	return 0;
}
