/* Model loading (format chosen by the file's magic), config checks, and release. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernels/model/dtype.h"
#include "kernels/model/errmsg.h"
#include "kernels/model/gguf.h"
#include "kernels/model/llama2c.h"
#include "kernels/model/mapfile.h"
#include "kernels/model/model.h"
#include "kernels/model/tokenizer.h"

/* Limits well above any Llama-family model, low enough that sizes derived from them fit
 * in 64 bits with room to spare (the loaders rely on that). */
#define MAX_DIM	    (1u << 16)
#define MAX_HIDDEN  (1u << 20)
#define MAX_LAYERS  (1u << 12)
#define MAX_VOCAB   (1u << 22)
#define MAX_SEQ_LEN (1u << 24)

int rs_model_check_config(const struct rs_model_config *c, char *err, size_t err_size)
{
	if (!c->dim || c->dim > MAX_DIM)
		return rs_errmsg(err, err_size, -EINVAL, "dim %u is out of range (1..%u)", c->dim,
				 MAX_DIM);
	if (!c->hidden_dim || c->hidden_dim > MAX_HIDDEN)
		return rs_errmsg(err, err_size, -EINVAL, "hidden_dim %u is out of range (1..%u)",
				 c->hidden_dim, MAX_HIDDEN);
	if (!c->n_layers || c->n_layers > MAX_LAYERS)
		return rs_errmsg(err, err_size, -EINVAL, "n_layers %u is out of range (1..%u)",
				 c->n_layers, MAX_LAYERS);
	if (!c->n_heads || c->n_heads > c->dim || c->dim % c->n_heads ||
	    c->head_dim != c->dim / c->n_heads)
		return rs_errmsg(
		    err, err_size, -EINVAL,
		    "n_heads %u must divide dim %u (head_dim %u must be dim / n_heads)", c->n_heads,
		    c->dim, c->head_dim);
	if (!c->n_kv_heads || c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads)
		return rs_errmsg(err, err_size, -EINVAL, "n_kv_heads %u must divide n_heads %u",
				 c->n_kv_heads, c->n_heads);
	if (!c->vocab_size || c->vocab_size > MAX_VOCAB)
		return rs_errmsg(err, err_size, -EINVAL, "vocab_size %u is out of range (1..%u)",
				 c->vocab_size, MAX_VOCAB);
	if (!c->max_seq_len || c->max_seq_len > MAX_SEQ_LEN)
		return rs_errmsg(err, err_size, -EINVAL,
				 "context length %u is out of range (1..%u)", c->max_seq_len,
				 MAX_SEQ_LEN);
	if (!c->rope_dim || c->rope_dim > c->head_dim || (c->rope_dim & 1))
		return rs_errmsg(err, err_size, -EINVAL,
				 "rope_dim %u must be even, nonzero and at most head_dim %u",
				 c->rope_dim, c->head_dim);
	if (!(c->rope_theta > 0.0f) || c->rope_theta > 1e30f)
		return rs_errmsg(err, err_size, -EINVAL,
				 "rope_theta %g must be positive and finite",
				 (double)c->rope_theta);
	if (!(c->norm_eps >= 0.0f) || c->norm_eps > 1.0f)
		return rs_errmsg(err, err_size, -EINVAL, "norm_eps %g must be in [0, 1]",
				 (double)c->norm_eps);
	if (!(c->rope_scale >= 0.0f) || c->rope_scale > 1e6f)
		return rs_errmsg(err, err_size, -EINVAL,
				 "rope_scale %g must be 0 (none) or positive and at most 1e6",
				 (double)c->rope_scale);
	return 0;
}

const char *rs_arch_name(enum rs_arch arch)
{
	return arch == RS_ARCH_QWEN2 ? "qwen2" : "llama";
}

int rs_model_rope_freqs(const struct rs_model *model, double *freqs, char *err, size_t err_size)
{
	const struct rs_model_config *c = &model->config;
	uint32_t pairs = c->rope_dim / 2;
	double scale = c->rope_scale > 0.0f ? c->rope_scale : 1.0;
	const struct rs_tensor *t = &model->rope_freqs;
	for (uint32_t i = 0; i < pairs; i++) {
		double divisor = 1.0;
		if (t->data) {
			float v;
			rs_convert_to_f32(&v,
					  (const uint8_t *)t->data + i * rs_dtype_size(t->dtype),
					  t->dtype, 1);
			if (!(v > 0.0f) || v > 1e30f)
				return rs_errmsg(
				    err, err_size, -EINVAL,
				    "rope_freqs[%u] is %g: RoPE frequency divisors must "
				    "be positive and finite",
				    i, (double)v);
			divisor = v;
		}
		freqs[i] = pow((double)c->rope_theta, -2.0 * i / c->rope_dim) / (divisor * scale);
	}
	return 0;
}

/* The tokenizer.bin next to a checkpoint, if there is one (NULL otherwise). */
static char *sibling_tokenizer(const char *path)
{
	const char *slash = strrchr(path, '/');
	size_t dir_len = slash ? (size_t)(slash - path) + 1 : 0;
	char *candidate = malloc(dir_len + sizeof("tokenizer.bin"));
	if (!candidate)
		return NULL;
	memcpy(candidate, path, dir_len);
	memcpy(candidate + dir_len, "tokenizer.bin", sizeof("tokenizer.bin"));
	if (access(candidate, R_OK) != 0) {
		free(candidate);
		return NULL;
	}
	return candidate;
}

/* The chat keys of a GGUF file: the template (copied: the file may be unmapped) and the
 * end-of-turn token. */
static int load_chat_keys(const struct rs_gguf *g, struct rs_model *model, char *err,
			  size_t err_size)
{
	struct rs_gguf_str tmpl;
	uint32_t eot;
	if (rs_gguf_get_u32(g, "tokenizer.ggml.eot_token_id", &eot) == 0) {
		model->eot_token = eot;
		model->has_eot_token = true;
	}
	if (rs_gguf_get_string(g, "tokenizer.chat_template", &tmpl) != 0)
		return 0;
	/* A NUL inside is kept, counted in chat_template_len: a GGUF string has a length,
	 * and the template only chooses the chat layout, so the model serves on. */
	if (tmpl.len > (64u << 20))
		return rs_errmsg(err, err_size, -EINVAL,
				 "tokenizer.chat_template: %llu bytes, over 64 MiB",
				 (unsigned long long)tmpl.len);
	model->chat_template = malloc(tmpl.len + 1);
	if (!model->chat_template)
		return -ENOMEM;
	memcpy(model->chat_template, tmpl.ptr, tmpl.len);
	model->chat_template[tmpl.len] = '\0';
	model->chat_template_len = tmpl.len;
	return 0;
}

static void add_end_token(uint32_t *ids, uint32_t max, uint32_t *n, int32_t id)
{
	if (id < 0 || *n >= max)
		return;
	for (uint32_t i = 0; i < *n; i++)
		if (ids[i] == (uint32_t)id)
			return;
	ids[(*n)++] = (uint32_t)id;
}

uint32_t rs_model_end_tokens(const struct rs_model *model, uint32_t *ids, uint32_t max)
{
	static const char *const end_pieces[] = {"<|eot_id|>",	  "<|eom_id|>", "<|im_end|>",
						 "<end_of_turn>", "<|end|>",	"<|endoftext|>"};
	uint32_t n = 0;
	if (!model->tokenizer)
		return 0;
	add_end_token(ids, max, &n, rs_tokenizer_eos(model->tokenizer));
	if (model->has_eot_token && model->eot_token < rs_tokenizer_vocab_size(model->tokenizer))
		add_end_token(ids, max, &n, (int32_t)model->eot_token);
	for (size_t i = 0; i < sizeof(end_pieces) / sizeof(end_pieces[0]); i++) {
		int32_t id =
		    rs_tokenizer_find(model->tokenizer, end_pieces[i], strlen(end_pieces[i]));
		uint8_t type = 0;
		float score;
		if (id >= 0 &&
		    rs_tokenizer_token_info(model->tokenizer, (uint32_t)id, &score, &type) == 0 &&
		    (type == RS_TOKEN_CONTROL || type == RS_TOKEN_USER_DEFINED))
			add_end_token(ids, max, &n, id);
	}
	return n;
}

/* Parse a model from bytes: GGUF (with its tokenizer) or llama2.c (without). */
static int load_bytes(const void *data, size_t size, struct rs_model *model, char *err,
		      size_t err_size)
{
	if (size < 4)
		return rs_errmsg(err, err_size, -EINVAL,
				 "%zu bytes: too short to be a GGUF file or a llama2.c checkpoint",
				 size);
	if (memcmp(data, "GGUF", 4) == 0) {
		struct rs_gguf *g;
		int ret = rs_gguf_parse(data, size, &g, err, err_size);
		if (ret)
			return ret;
		ret = rs_gguf_build_model(g, model, err, err_size);
		if (!ret) {
			ret = rs_tokenizer_load_gguf(g, &model->tokenizer, err, err_size);
			if (ret == -ENOENT)
				ret = 0; /* a model without a tokenizer still serves token ids */
		}
		if (!ret)
			ret = load_chat_keys(g, model, err, err_size);
		rs_gguf_free(g);
		return ret;
	}
	if (memcmp(data, "ak42", 4) == 0) {
		uint32_t version = 0;
		if (size >= 8)
			memcpy(&version, (const uint8_t *)data + 4, 4);
		return rs_errmsg(err, err_size, -EINVAL,
				 "llama2.c export format version %u (magic \"ak42\") is not "
				 "supported; export the legacy format (export.py --version 0)",
				 version);
	}
	return rs_llama2c_parse(data, size, model, err, err_size);
}

/* The tokenizer must not name tokens the model cannot embed. */
static int check_tokenizer(const struct rs_model *model, char *err, size_t err_size)
{
	if (model->tokenizer &&
	    rs_tokenizer_vocab_size(model->tokenizer) > model->config.vocab_size)
		return rs_errmsg(
		    err, err_size, -EINVAL, "the tokenizer has %u tokens, the model only %u",
		    rs_tokenizer_vocab_size(model->tokenizer), model->config.vocab_size);
	return 0;
}

int rs_model_load_memory(const void *data, size_t size, struct rs_model **out, char *err,
			 size_t err_size)
{
	*out = NULL;
	struct rs_model *model = calloc(1, sizeof(*model));
	if (!model)
		return rs_errmsg(err, err_size, -ENOMEM, "out of memory");
	int ret = load_bytes(data, size, model, err, err_size);
	if (!ret)
		ret = check_tokenizer(model, err, err_size);
	if (ret) {
		rs_model_free(model);
		return ret;
	}
	*out = model;
	return 0;
}

int rs_model_load(const char *path, const char *tokenizer_path, struct rs_model **out, char *err,
		  size_t err_size)
{
	char inner[512] = "";
	char *sibling = NULL;
	void *data;
	size_t size;
	int ret;

	*out = NULL;
	ret = rs_map_file(path, &data, &size, err, err_size);
	if (ret)
		return ret;
	struct rs_model *model = calloc(1, sizeof(*model));
	if (!model) {
		rs_unmap_file(data, size);
		return rs_errmsg(err, err_size, -ENOMEM, "out of memory");
	}
	model->mapping = data;
	model->mapping_size = size;
	ret = load_bytes(data, size, model, inner, sizeof(inner));
	if (ret) {
		rs_errmsg(err, err_size, ret, "%s: %s", path, inner);
		goto fail;
	}
	/* llama2.c checkpoints carry no tokenizer: look next to them unless told. */
	bool is_gguf = memcmp(data, "GGUF", 4) == 0;
	if (!tokenizer_path && !is_gguf)
		tokenizer_path = sibling = sibling_tokenizer(path);
	if (tokenizer_path) {
		rs_tokenizer_free(model->tokenizer);
		model->tokenizer = NULL;
		ret = rs_tokenizer_load_file(tokenizer_path, is_gguf ? 0 : model->config.vocab_size,
					     &model->tokenizer, err, err_size);
		if (ret)
			goto fail;
	}
	ret = check_tokenizer(model, inner, sizeof(inner));
	if (ret) {
		rs_errmsg(err, err_size, ret, "%s: %s", path, inner);
		goto fail;
	}
	free(sibling);
	*out = model;
	return 0;
fail:
	free(sibling);
	rs_model_free(model);
	return ret;
}

void rs_model_free(struct rs_model *model)
{
	if (!model)
		return;
	rs_tokenizer_free(model->tokenizer);
	free(model->chat_template);
	if (model->mapping)
		munmap(model->mapping, model->mapping_size);
	free(model->owned);
	free(model->owned_arch);
	free(model->layers);
	free(model);
}
