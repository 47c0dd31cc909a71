/* A model from a parsed GGUF file: general.architecture selects (llama, qwen2), the
 * {arch}.* keys give the config, the tensors named as llama.cpp names them give the
 * weights, each checked against the config. */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
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
static int get_f32(const struct rs_gguf *g, const char *key, float fallback, float *out, char *err,
		   size_t err_size)
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
				 "GGUF: tensor '%s' has shape ne=[%" PRIu64 ", %" PRIu64
				 ", %" PRIu64 ", %" PRIu64 "], the config needs ne=[%" PRIu64
				 ", %" PRIu64 "] (ne[0] is the column count)",
				 name, gt->ne[0], gt->ne[1], gt->ne[2], gt->ne[3], cols, rows);
	if (rs_gguf_tensor_dtype(gt->type, &t->dtype))
		return rs_errmsg(err, err_size, -EINVAL,
				 "GGUF: tensor '%s' has unsupported type %s", name,
				 rs_gguf_tensor_type_name(gt->type));
	t->rows = rows;
	t->cols = cols;
	t->data = gt->data;
	return 0;
}

/* The architectures general.architecture may name: each reads its keys under its own
 * prefix ("llama.context_length", "qwen2.context_length", ...). */
static const struct {
	const char *name;
	enum rs_arch arch;
} archs[] = {{"llama", RS_ARCH_LLAMA}, {"qwen2", RS_ARCH_QWEN2}};

/* key = "<arch>.<suffix>" */
#define ARCH_KEY(key, arch, suffix)                                                                \
	char key[96];                                                                              \
	snprintf(key, sizeof(key), "%s.%s", rs_arch_name(arch), suffix)

static int get_arch_u32(const struct rs_gguf *g, enum rs_arch arch, const char *suffix,
			const uint32_t *fallback, uint32_t *out, char *err, size_t err_size)
{
	ARCH_KEY(key, arch, suffix);
	return get_u32(g, key, fallback, out, err, err_size);
}

static int get_arch_f32(const struct rs_gguf *g, enum rs_arch arch, const char *suffix,
			float fallback, float *out, char *err, size_t err_size)
{
	ARCH_KEY(key, arch, suffix);
	return get_f32(g, key, fallback, out, err, err_size);
}

/* general.architecture, refused with its value unless ringserve runs it. */
static int read_arch(const struct rs_gguf *g, enum rs_arch *arch, char *err, size_t err_size)
{
	struct rs_gguf_str name;
	int ret = rs_gguf_get_string(g, "general.architecture", &name);
	if (ret == -ENOENT)
		return rs_errmsg(err, err_size, -EINVAL, "GGUF: missing key general.architecture");
	if (ret)
		return rs_errmsg(err, err_size, -EINVAL,
				 "GGUF: key general.architecture must be a string");
	for (size_t i = 0; i < sizeof(archs) / sizeof(archs[0]); i++)
		if (name.len == strlen(archs[i].name) &&
		    !memcmp(name.ptr, archs[i].name, name.len)) {
			*arch = archs[i].arch;
			return 0;
		}
	return rs_errmsg(err, err_size, -EINVAL,
			 "GGUF: general.architecture is '%.*s'; supported: 'llama' (Llama 1/2/3, "
			 "Mistral), 'qwen2'",
			 (int)(name.len < 64 ? name.len : 64), name.ptr);
}

/* {arch}.rope.scaling.*: "none", or "linear" (llama.cpp's default when only a factor is
 * given) with {arch}.rope.scaling.factor (or the older {arch}.rope.scale_linear). Llama 3's
 * scaling is not a key: llama.cpp's converter writes it as the rope_freqs.weight tensor. */
static int read_rope_scaling(const struct rs_gguf *g, enum rs_arch arch,
			     struct rs_model_config *cfg, char *err, size_t err_size)
{
	ARCH_KEY(type_key, arch, "rope.scaling.type");
	struct rs_gguf_str type = {.ptr = "linear", .len = 6};
	int ret = rs_gguf_get_string(g, type_key, &type);
	if (ret && ret != -ENOENT)
		return rs_errmsg(err, err_size, -EINVAL, "GGUF: key %s must be a string", type_key);
	cfg->rope_scale = 0.0f;
	if (type.len == 4 && !memcmp(type.ptr, "none", 4))
		return 0;
	if (type.len != 6 || memcmp(type.ptr, "linear", 6))
		return rs_errmsg(err, err_size, -EINVAL,
				 "GGUF: %s is '%.*s'; supported: 'none', 'linear' (Llama 3's "
				 "scaling comes as the rope_freqs.weight tensor)",
				 type_key, (int)(type.len < 64 ? type.len : 64), type.ptr);
	ARCH_KEY(factor_key, arch, "rope.scaling.factor");
	ARCH_KEY(old_key, arch, "rope.scale_linear");
	const char *key = rs_gguf_find_kv(g, factor_key) ? factor_key : old_key;
	ret = get_f32(g, key, 0.0f, &cfg->rope_scale, err, err_size);
	if (!ret && (!(cfg->rope_scale >= 0.0f) || cfg->rope_scale > 1e6f))
		return rs_errmsg(err, err_size, -EINVAL,
				 "GGUF: %s is %g; it must be 0 (none) or positive and at most 1e6",
				 key, (double)cfg->rope_scale);
	return ret;
}

/* The config from general.architecture and the {arch}.* keys (vocab_size excepted). */
static int read_config(const struct rs_gguf *g, enum rs_arch *arch, struct rs_model_config *cfg,
		       char *err, size_t err_size)
{
	int ret = read_arch(g, arch, err, err_size);
	if (ret)
		return ret;
	enum rs_arch a = *arch;
	const char *p = rs_arch_name(a);

	memset(cfg, 0, sizeof(*cfg));
	ret = get_arch_u32(g, a, "embedding_length", NULL, &cfg->dim, err, err_size);
	if (!ret)
		ret = get_arch_u32(g, a, "feed_forward_length", NULL, &cfg->hidden_dim, err,
				   err_size);
	if (!ret)
		ret = get_arch_u32(g, a, "block_count", NULL, &cfg->n_layers, err, err_size);
	if (!ret)
		ret =
		    get_arch_u32(g, a, "attention.head_count", NULL, &cfg->n_heads, err, err_size);
	if (!ret)
		ret = get_arch_u32(g, a, "attention.head_count_kv", &cfg->n_heads, &cfg->n_kv_heads,
				   err, err_size);
	if (!ret)
		ret = get_arch_u32(g, a, "context_length", NULL, &cfg->max_seq_len, err, err_size);
	if (ret)
		return ret;
	if (!cfg->n_heads || cfg->dim % cfg->n_heads)
		return rs_errmsg(err, err_size, -EINVAL,
				 "GGUF: %s.attention.head_count %u does not divide "
				 "%s.embedding_length %u",
				 p, cfg->n_heads, p, cfg->dim);
	cfg->head_dim = cfg->dim / cfg->n_heads;
	ret = get_arch_u32(g, a, "rope.dimension_count", &cfg->head_dim, &cfg->rope_dim, err,
			   err_size);
	if (!ret)
		ret =
		    get_arch_f32(g, a, "rope.freq_base", 10000.0f, &cfg->rope_theta, err, err_size);
	if (!ret)
		ret = get_arch_f32(g, a, "attention.layer_norm_rms_epsilon", 1e-5f, &cfg->norm_eps,
				   err, err_size);
	if (!ret)
		ret = read_rope_scaling(g, a, cfg, err, err_size);
	return ret;
}

/* A bias vector of n values: required, or optional (absent: t->data stays NULL). */
static int take_bias(const struct rs_gguf *g, uint32_t layer, const char *part, uint64_t n,
		     bool required, struct rs_tensor *t, char *err, size_t err_size)
{
	char name[RS_GGUF_MAX_NAME];
	snprintf(name, sizeof(name), "blk.%u.%s.bias", layer, part);
	if (!required && !rs_gguf_find_tensor(g, name))
		return 0;
	return take(g, name, 1, n, t, err, err_size);
}

/* Qwen2's files (like every converter's but Llama's) keep q and k rows in the NEOX layout,
 * where RoPE pairs element i of a head with element i + rope_dim / 2; ringserve's engines
 * pair adjacent elements (model.h). The order of a head's elements does not change q.k as
 * long as q and k share it, so the loader moves row (or bias element) i + rope_dim / 2 to
 * 2i + 1 and i to 2i, once, into owned memory. Row bytes come from the file (any dtype). */
static void neox_to_meta_rows(uint8_t *dst, const uint8_t *src, size_t row_bytes, uint32_t n_heads,
			      uint32_t head_dim, uint32_t rope_dim)
{
	uint32_t half = rope_dim / 2;
	for (uint32_t h = 0; h < n_heads; h++) {
		const uint8_t *s = src + (size_t)h * head_dim * row_bytes;
		uint8_t *d = dst + (size_t)h * head_dim * row_bytes;
		for (uint32_t j = 0; j < head_dim; j++) {
			uint32_t from = j >= rope_dim ? j : (j & 1) ? half + j / 2 : j / 2;
			memcpy(d + (size_t)j * row_bytes, s + (size_t)from * row_bytes, row_bytes);
		}
	}
}

/* Rearrange m's q and k weights and biases from the NEOX layout (see above). */
static int qk_to_meta_layout(const struct rs_gguf *g, struct rs_model *m, char *err,
			     size_t err_size)
{
	const struct rs_model_config *cfg = &m->config;
	size_t total = 0;
	for (uint32_t l = 0; l < cfg->n_layers; l++) {
		const struct rs_layer_weights *w = &m->layers[l];
		const struct rs_tensor *ts[] = {&w->wq, &w->wk, &w->bq, &w->bk};
		for (size_t i = 0; i < 4; i++)
			if (ts[i]->data)
				total += 64; /* alignment */
	}
	/* Sizes from the file's own tensors (nbytes), so that any dtype works. */
	char name[RS_GGUF_MAX_NAME];
	static const char *const parts[] = {"attn_q.weight", "attn_k.weight", "attn_q.bias",
					    "attn_k.bias"};
	for (uint32_t l = 0; l < cfg->n_layers; l++)
		for (size_t i = 0; i < 4; i++) {
			snprintf(name, sizeof(name), "blk.%u.%s", l, parts[i]);
			const struct rs_gguf_tensor *gt = rs_gguf_find_tensor(g, name);
			if (gt)
				total += gt->nbytes;
		}
	uint8_t *buf = malloc(total ? total : 1);
	if (!buf)
		return rs_errmsg(err, err_size, -ENOMEM, "GGUF: out of memory");
	size_t used = 0;
	for (uint32_t l = 0; l < cfg->n_layers; l++) {
		struct rs_layer_weights *w = &m->layers[l];
		struct rs_tensor *ts[] = {&w->wq, &w->wk, &w->bq, &w->bk};
		uint32_t heads[] = {cfg->n_heads, cfg->n_kv_heads, cfg->n_heads, cfg->n_kv_heads};
		for (size_t i = 0; i < 4; i++) {
			snprintf(name, sizeof(name), "blk.%u.%s", l, parts[i]);
			const struct rs_gguf_tensor *gt = rs_gguf_find_tensor(g, name);
			if (!ts[i]->data || !gt)
				continue;
			uint64_t n_rows = (uint64_t)heads[i] *
					  cfg->head_dim; /* weights: rows; biases: elements */
			size_t unit = (size_t)(gt->nbytes / n_rows);
			used = (used + 63) & ~(size_t)63;
			neox_to_meta_rows(buf + used, gt->data, unit, heads[i], cfg->head_dim,
					  cfg->rope_dim);
			ts[i]->data = buf + used;
			used += gt->nbytes;
		}
	}
	m->owned_arch = buf;
	return 0;
}

int rs_gguf_build_model(const struct rs_gguf *g, struct rs_model *model, char *err, size_t err_size)
{
	struct rs_model_config cfg;
	enum rs_arch arch = RS_ARCH_LLAMA;
	int ret = read_config(g, &arch, &cfg, err, err_size);
	if (ret)
		return ret;

	/* The vocabulary size is the embedding's row count. */
	const struct rs_gguf_tensor *embd = rs_gguf_find_tensor(g, "token_embd.weight");
	if (!embd)
		return rs_errmsg(err, err_size, -EINVAL,
				 "GGUF: missing tensor 'token_embd.weight'");
	if (embd->n_dims != 2 || embd->ne[1] > UINT32_MAX)
		return rs_errmsg(err, err_size, -EINVAL,
				 "GGUF: tensor 'token_embd.weight' must be 2-D [dim][vocab]");
	cfg.vocab_size = (uint32_t)embd->ne[1];
	uint32_t vocab_key;
	ARCH_KEY(vocab_name, arch, "vocab_size");
	ret = rs_gguf_get_u32(g, vocab_name, &vocab_key);
	if (ret == 0 && vocab_key != cfg.vocab_size)
		return rs_errmsg(err, err_size, -EINVAL,
				 "GGUF: %s %u differs from token_embd.weight's %u rows", vocab_name,
				 vocab_key, cfg.vocab_size);

	ret = rs_model_check_config(&cfg, err, err_size);
	if (ret)
		return ret;
	/* Each layer has nine tensors: a block count beyond that is not worth allocating for. */
	if ((uint64_t)cfg.n_layers * 9 + 2 > rs_gguf_n_tensors(g))
		return rs_errmsg(err, err_size, -EINVAL,
				 "GGUF: %s.block_count %u needs at least %" PRIu64
				 " tensors, the file has %" PRIu64,
				 rs_arch_name(arch), cfg.n_layers, (uint64_t)cfg.n_layers * 9 + 2,
				 rs_gguf_n_tensors(g));

	struct rs_layer_weights *layers = calloc(cfg.n_layers, sizeof(*layers));
	if (!layers)
		return rs_errmsg(err, err_size, -ENOMEM, "GGUF: out of memory");
	uint64_t dim = cfg.dim, hidden = cfg.hidden_dim;
	uint64_t q_dim = (uint64_t)cfg.n_heads * cfg.head_dim;
	uint64_t kv_dim = (uint64_t)cfg.n_kv_heads * cfg.head_dim;
	struct rs_model m = {.config = cfg, .layers = layers, .arch = arch};

	ret = take(g, "token_embd.weight", cfg.vocab_size, dim, &m.token_embedding, err, err_size);
	for (uint32_t l = 0; l < cfg.n_layers && !ret; l++) {
		struct rs_layer_weights *w = &layers[l];
		const struct {
			const char *suffix;
			uint64_t rows, cols;
			struct rs_tensor *dst;
		} parts[] = {
		    {"attn_norm", 1, dim, &w->attn_norm},  {"attn_q", q_dim, dim, &w->wq},
		    {"attn_k", kv_dim, dim, &w->wk},	   {"attn_v", kv_dim, dim, &w->wv},
		    {"attn_output", dim, q_dim, &w->wo},   {"ffn_norm", 1, dim, &w->ffn_norm},
		    {"ffn_gate", hidden, dim, &w->w_gate}, {"ffn_down", dim, hidden, &w->w_down},
		    {"ffn_up", hidden, dim, &w->w_up},
		};
		for (size_t p = 0; p < sizeof(parts) / sizeof(parts[0]) && !ret; p++) {
			char name[RS_GGUF_MAX_NAME];
			snprintf(name, sizeof(name), "blk.%u.%s.weight", l, parts[p].suffix);
			ret = take(g, name, parts[p].rows, parts[p].cols, parts[p].dst, err,
				   err_size);
		}
		/* Qwen2 has q, k, v biases; llama.cpp takes them from Llama files too. */
		bool need = arch == RS_ARCH_QWEN2;
		if (!ret)
			ret = take_bias(g, l, "attn_q", q_dim, need, &w->bq, err, err_size);
		if (!ret)
			ret = take_bias(g, l, "attn_k", kv_dim, need, &w->bk, err, err_size);
		if (!ret)
			ret = take_bias(g, l, "attn_v", kv_dim, need, &w->bv, err, err_size);
	}
	/* Llama 3.1+'s RoPE scaling: per-pair frequency divisors. */
	if (!ret && rs_gguf_find_tensor(g, "rope_freqs.weight")) {
		ret =
		    take(g, "rope_freqs.weight", 1, cfg.rope_dim / 2, &m.rope_freqs, err, err_size);
		double *freqs = ret ? NULL : malloc((cfg.rope_dim / 2) * sizeof(double));
		if (!ret && !freqs)
			ret = rs_errmsg(err, err_size, -ENOMEM, "GGUF: out of memory");
		if (!ret) {
			char inner[200];
			ret = rs_model_rope_freqs(&m, freqs, inner, sizeof(inner));
			if (ret)
				rs_errmsg(err, err_size, ret,
					  "GGUF: tensor 'rope_freqs.weight': %s", inner);
		}
		free(freqs);
	}
	if (!ret && arch == RS_ARCH_QWEN2)
		ret = qk_to_meta_layout(g, &m, err, err_size);
	if (!ret)
		ret = take(g, "output_norm.weight", 1, dim, &m.final_norm, err, err_size);
	if (!ret) {
		if (rs_gguf_find_tensor(g, "output.weight"))
			ret =
			    take(g, "output.weight", cfg.vocab_size, dim, &m.output, err, err_size);
		else
			m.output = m.token_embedding; /* tied, as llama.cpp does */
	}
	if (ret) {
		free(m.owned_arch);
		free(layers);
		return ret;
	}
	model->config = m.config;
	model->arch = m.arch;
	model->rope_freqs = m.rope_freqs;
	model->owned_arch = m.owned_arch;
	model->token_embedding = m.token_embedding;
	model->layers = m.layers;
	model->final_norm = m.final_norm;
	model->output = m.output;
	return 0;
}
