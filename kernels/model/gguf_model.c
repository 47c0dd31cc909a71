/* A Llama model from a parsed GGUF file: the llama.* keys give the config, the tensors named
 * as llama.cpp names them give the weights, each checked against the config. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/model/errmsg.h"
#include "kernels/model/gguf.h"

/* Read a required (or, with fallback != NULL, optional) u32 key, with a message on error. */
static int get_u32(const struct rs_gguf *g, const char *key, const uint32_t *fallback,
		   uint32_t *out, char *err, size_t err_size)
{
	int ret = rs_gguf_get_u32(g, key, out);
	if (ret == -ENOENT && fallback) {
		*out = *fallback;
		return 0;
	}
	if (ret == -ENOENT)
		return rs_errmsg(err, err_size, -EINVAL, "GGUF: missing key %s", key);
	if (ret)
		return rs_errmsg(err, err_size, -EINVAL,
				 "GGUF: key %s must be an integer in 0..2^32-1", key);
	return 0;
}

/* Read an optional float key (fallback when absent), with a message on error. */
static int get_f32(const struct rs_gguf *g, const char *key, float fallback, float *out,
		   char *err, size_t err_size)
{
	int ret = rs_gguf_get_f32(g, key, out);
	if (ret == -ENOENT) {
		*out = fallback;
		return 0;
	}
	if (ret)
		return rs_errmsg(err, err_size, -EINVAL, "GGUF: key %s must be a float", key);
	return 0;
}

/* Find tensor name and check that it is [rows][cols] (ne = {cols, rows}; a vector when
 * rows == 1, which may also be written as ne = {cols}). */
static int take(const struct rs_gguf *g, const char *name, uint64_t rows, uint64_t cols,
		struct rs_tensor *t, char *err, size_t err_size)
{
	const struct rs_gguf_tensor *gt = rs_gguf_find_tensor(g, name);
	if (!gt)
		return rs_errmsg(err, err_size, -EINVAL, "GGUF: missing tensor '%s'", name);
	if (gt->ne[0] != cols || gt->ne[1] != rows || gt->ne[2] != 1 || gt->ne[3] != 1 ||
	    (rows > 1 && gt->n_dims < 2))
		return rs_errmsg(err, err_size, -EINVAL,
				 "GGUF: tensor '%s' has shape ne=[%" PRIu64 ", %" PRIu64 ", %" PRIu64
				 ", %" PRIu64 "], the config needs ne=[%" PRIu64 ", %" PRIu64
				 "] (ne[0] is the column count)",
				 name, gt->ne[0], gt->ne[1], gt->ne[2], gt->ne[3], cols, rows);
	if (rs_gguf_tensor_dtype(gt->type, &t->dtype))
		return rs_errmsg(err, err_size, -EINVAL, "GGUF: tensor '%s' has unsupported type %s",
				 name, rs_gguf_tensor_type_name(gt->type));
	t->rows = rows;
	t->cols = cols;
	t->data = gt->data;
	return 0;
}

/* The config from general.architecture and the llama.* keys (vocab_size excepted). */
static int read_config(const struct rs_gguf *g, struct rs_model_config *cfg, char *err,
		       size_t err_size)
{
	struct rs_gguf_str arch;
	int ret = rs_gguf_get_string(g, "general.architecture", &arch);
	if (ret == -ENOENT)
		return rs_errmsg(err, err_size, -EINVAL, "GGUF: missing key general.architecture");
	if (ret)
		return rs_errmsg(err, err_size, -EINVAL,
				 "GGUF: key general.architecture must be a string");
	if (arch.len != 5 || memcmp(arch.ptr, "llama", 5))
		return rs_errmsg(err, err_size, -EINVAL,
				 "GGUF: general.architecture is '%.*s'; only 'llama' is supported",
				 (int)(arch.len < 64 ? arch.len : 64), arch.ptr);

	memset(cfg, 0, sizeof(*cfg));
	ret = get_u32(g, "llama.embedding_length", NULL, &cfg->dim, err, err_size);
	if (!ret)
		ret = get_u32(g, "llama.feed_forward_length", NULL, &cfg->hidden_dim, err, err_size);
	if (!ret)
		ret = get_u32(g, "llama.block_count", NULL, &cfg->n_layers, err, err_size);
	if (!ret)
		ret = get_u32(g, "llama.attention.head_count", NULL, &cfg->n_heads, err, err_size);
	if (!ret)
		ret = get_u32(g, "llama.attention.head_count_kv", &cfg->n_heads, &cfg->n_kv_heads,
			      err, err_size);
	if (!ret)
		ret = get_u32(g, "llama.context_length", NULL, &cfg->max_seq_len, err, err_size);
	if (ret)
		return ret;
	if (!cfg->n_heads || cfg->dim % cfg->n_heads)
		return rs_errmsg(err, err_size, -EINVAL,
				 "GGUF: llama.attention.head_count %u does not divide "
				 "llama.embedding_length %u",
				 cfg->n_heads, cfg->dim);
	cfg->head_dim = cfg->dim / cfg->n_heads;
	ret = get_u32(g, "llama.rope.dimension_count", &cfg->head_dim, &cfg->rope_dim, err,
		      err_size);
	if (!ret)
		ret = get_f32(g, "llama.rope.freq_base", 10000.0f, &cfg->rope_theta, err, err_size);
	if (!ret)
		ret = get_f32(g, "llama.attention.layer_norm_rms_epsilon", 1e-5f, &cfg->norm_eps,
			      err, err_size);
	return ret;
}

int rs_gguf_build_model(const struct rs_gguf *g, struct rs_model *model, char *err,
			size_t err_size)
{
	struct rs_model_config cfg;
	int ret = read_config(g, &cfg, err, err_size);
	if (ret)
		return ret;

	/* The vocabulary size is the embedding's row count. */
	const struct rs_gguf_tensor *embd = rs_gguf_find_tensor(g, "token_embd.weight");
	if (!embd)
		return rs_errmsg(err, err_size, -EINVAL, "GGUF: missing tensor 'token_embd.weight'");
	if (embd->n_dims != 2 || embd->ne[1] > UINT32_MAX)
		return rs_errmsg(err, err_size, -EINVAL,
				 "GGUF: tensor 'token_embd.weight' must be 2-D [dim][vocab]");
	cfg.vocab_size = (uint32_t)embd->ne[1];
	uint32_t vocab_key;
	ret = rs_gguf_get_u32(g, "llama.vocab_size", &vocab_key);
	if (ret == 0 && vocab_key != cfg.vocab_size)
		return rs_errmsg(err, err_size, -EINVAL,
				 "GGUF: llama.vocab_size %u differs from token_embd.weight's %u rows",
				 vocab_key, cfg.vocab_size);

	ret = rs_model_check_config(&cfg, err, err_size);
	if (ret)
		return ret;
	/* Each layer has nine tensors: a block count beyond that is not worth allocating for. */
	if ((uint64_t)cfg.n_layers * 9 + 2 > rs_gguf_n_tensors(g))
		return rs_errmsg(err, err_size, -EINVAL,
				 "GGUF: llama.block_count %u needs at least %" PRIu64
				 " tensors, the file has %" PRIu64,
				 cfg.n_layers, (uint64_t)cfg.n_layers * 9 + 2, rs_gguf_n_tensors(g));

	struct rs_layer_weights *layers = calloc(cfg.n_layers, sizeof(*layers));
	if (!layers)
		return rs_errmsg(err, err_size, -ENOMEM, "GGUF: out of memory");
	uint64_t dim = cfg.dim, hidden = cfg.hidden_dim;
	uint64_t q_dim = (uint64_t)cfg.n_heads * cfg.head_dim;
	uint64_t kv_dim = (uint64_t)cfg.n_kv_heads * cfg.head_dim;
	struct rs_model m = { .config = cfg, .layers = layers };

	ret = take(g, "token_embd.weight", cfg.vocab_size, dim, &m.token_embedding, err, err_size);
	for (uint32_t l = 0; l < cfg.n_layers && !ret; l++) {
		struct rs_layer_weights *w = &layers[l];
		const struct {
			const char *suffix;
			uint64_t rows, cols;
			struct rs_tensor *dst;
		} parts[] = {
			{ "attn_norm", 1, dim, &w->attn_norm },
			{ "attn_q", q_dim, dim, &w->wq },
			{ "attn_k", kv_dim, dim, &w->wk },
			{ "attn_v", kv_dim, dim, &w->wv },
			{ "attn_output", dim, q_dim, &w->wo },
			{ "ffn_norm", 1, dim, &w->ffn_norm },
			{ "ffn_gate", hidden, dim, &w->w_gate },
			{ "ffn_down", dim, hidden, &w->w_down },
			{ "ffn_up", hidden, dim, &w->w_up },
		};
		for (size_t p = 0; p < sizeof(parts) / sizeof(parts[0]) && !ret; p++) {
			char name[RS_GGUF_MAX_NAME];
			snprintf(name, sizeof(name), "blk.%u.%s.weight", l, parts[p].suffix);
			ret = take(g, name, parts[p].rows, parts[p].cols, parts[p].dst, err,
				   err_size);
		}
	}
	if (!ret)
		ret = take(g, "output_norm.weight", 1, dim, &m.final_norm, err, err_size);
	if (!ret) {
		if (rs_gguf_find_tensor(g, "output.weight"))
			ret = take(g, "output.weight", cfg.vocab_size, dim, &m.output, err,
				   err_size);
		else
			m.output = m.token_embedding; /* tied, as llama.cpp does */
	}
	if (ret) {
		free(layers);
		return ret;
	}
	model->config = m.config;
	model->token_embedding = m.token_embedding;
	model->layers = m.layers;
	model->final_norm = m.final_norm;
	model->output = m.output;
	return 0;
}
