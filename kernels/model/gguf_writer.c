/* GGUF writer: collects key/values (serialized at once) and tensor references, then writes
 * header, metadata, tensor infos and aligned data in one pass. Also writes a whole model. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/model/errmsg.h"
#include "kernels/model/gguf.h"
#include "kernels/model/pretokenize.h"
#include "kernels/model/quant.h"
#include "kernels/model/tokenizer.h"

struct writer_kv {
	char *key;
	uint32_t type;
	uint8_t *payload; /* the value's bytes as they appear in the file */
	size_t payload_len;
};

struct writer_tensor {
	char name[RS_GGUF_MAX_NAME];
	uint32_t n_dims;
	uint64_t ne[RS_GGUF_MAX_DIMS];
	uint32_t type;
	const void *data;
	uint64_t nbytes;
	uint64_t offset;
};

struct rs_gguf_writer {
	struct writer_kv *kvs;
	size_t n_kv, cap_kv;
	struct writer_tensor *tensors;
	size_t n_tensors, cap_tensors;
	uint32_t alignment;
};

int rs_gguf_writer_create(struct rs_gguf_writer **out)
{
	*out = calloc(1, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	(*out)->alignment = RS_GGUF_DEFAULT_ALIGNMENT;
	return 0;
}

void rs_gguf_writer_free(struct rs_gguf_writer *w)
{
	if (!w)
		return;
	for (size_t i = 0; i < w->n_kv; i++) {
		free(w->kvs[i].key);
		free(w->kvs[i].payload);
	}
	free(w->kvs);
	free(w->tensors);
	free(w);
}

/* Add (or replace) key with an already serialized value; takes ownership of payload. */
static int set_kv(struct rs_gguf_writer *w, const char *key, uint32_t type, uint8_t *payload,
		  size_t payload_len)
{
	size_t key_len = key ? strlen(key) : 0;
	if (key_len == 0 || key_len > RS_GGUF_MAX_KEY) {
		free(payload);
		return -EINVAL;
	}
	/* The alignment key is the one the file's offsets obey, however it is set. */
	if (strcmp(key, "general.alignment") == 0) {
		uint32_t alignment = 0;
		if (type == RS_GGUF_TYPE_UINT32 && payload_len == 4)
			memcpy(&alignment, payload, 4);
		if (alignment == 0 || (alignment & (alignment - 1)) || alignment > (1u << 30)) {
			free(payload);
			return -EINVAL;
		}
		w->alignment = alignment;
	}
	for (size_t i = 0; i < w->n_kv; i++) {
		if (strcmp(w->kvs[i].key, key) == 0) {
			free(w->kvs[i].payload);
			w->kvs[i].type = type;
			w->kvs[i].payload = payload;
			w->kvs[i].payload_len = payload_len;
			return 0;
		}
	}
	if (w->n_kv == w->cap_kv) {
		size_t cap = w->cap_kv ? 2 * w->cap_kv : 16;
		struct writer_kv *kvs = realloc(w->kvs, cap * sizeof(*kvs));
		if (!kvs) {
			free(payload);
			return -ENOMEM;
		}
		w->kvs = kvs;
		w->cap_kv = cap;
	}
	char *copy = strdup(key);
	if (!copy) {
		free(payload);
		return -ENOMEM;
	}
	w->kvs[w->n_kv++] = (struct writer_kv){
	    .key = copy, .type = type, .payload = payload, .payload_len = payload_len};
	return 0;
}

/* Add (or replace) key with a copy of the n value bytes at v. */
static int set_scalar(struct rs_gguf_writer *w, const char *key, uint32_t type, const void *v,
		      size_t n)
{
	uint8_t *payload = malloc(n);
	if (!payload)
		return -ENOMEM;
	memcpy(payload, v, n);
	return set_kv(w, key, type, payload, n);
}

int rs_gguf_writer_set_u32(struct rs_gguf_writer *w, const char *key, uint32_t value)
{
	return set_scalar(w, key, RS_GGUF_TYPE_UINT32, &value, 4);
}

int rs_gguf_writer_set_i32(struct rs_gguf_writer *w, const char *key, int32_t value)
{
	return set_scalar(w, key, RS_GGUF_TYPE_INT32, &value, 4);
}

int rs_gguf_writer_set_u64(struct rs_gguf_writer *w, const char *key, uint64_t value)
{
	return set_scalar(w, key, RS_GGUF_TYPE_UINT64, &value, 8);
}

int rs_gguf_writer_set_f32(struct rs_gguf_writer *w, const char *key, float value)
{
	return set_scalar(w, key, RS_GGUF_TYPE_FLOAT32, &value, 4);
}

int rs_gguf_writer_set_bool(struct rs_gguf_writer *w, const char *key, bool value)
{
	uint8_t b = value;
	return set_scalar(w, key, RS_GGUF_TYPE_BOOL, &b, 1);
}

int rs_gguf_writer_set_string(struct rs_gguf_writer *w, const char *key, const char *value)
{
	return rs_gguf_writer_set_string_len(w, key, value, strlen(value));
}

int rs_gguf_writer_set_string_len(struct rs_gguf_writer *w, const char *key, const char *value,
				  uint64_t len)
{
	uint8_t *payload = malloc(8 + len);
	if (!payload)
		return -ENOMEM;
	memcpy(payload, &len, 8);
	memcpy(payload + 8, value, len);
	return set_kv(w, key, RS_GGUF_TYPE_STRING, payload, 8 + len);
}

int rs_gguf_writer_set_value(struct rs_gguf_writer *w, const char *key, uint32_t type,
			     const void *value)
{
	size_t size = rs_gguf_value_size(type);
	if (!size)
		return -EINVAL;
	return set_scalar(w, key, type, value, size);
}

int rs_gguf_writer_set_array(struct rs_gguf_writer *w, const char *key, uint32_t elem_type,
			     const void *values, uint64_t n)
{
	size_t esize = rs_gguf_value_size(elem_type);
	if (!esize || n > (SIZE_MAX - 12) / esize)
		return -EINVAL;
	uint8_t *payload = malloc(12 + n * esize);
	if (!payload)
		return -ENOMEM;
	memcpy(payload, &elem_type, 4);
	memcpy(payload + 4, &n, 8);
	if (n)
		memcpy(payload + 12, values, n * esize);
	return set_kv(w, key, RS_GGUF_TYPE_ARRAY, payload, 12 + n * esize);
}

int rs_gguf_writer_set_string_array(struct rs_gguf_writer *w, const char *key,
				    const char *const *strings, const uint32_t *lens, uint64_t n)
{
	size_t total = 12;
	for (uint64_t i = 0; i < n; i++)
		total += 8 + (lens ? lens[i] : strlen(strings[i]));
	uint8_t *payload = malloc(total), *p = payload;
	if (!payload)
		return -ENOMEM;
	uint32_t elem_type = RS_GGUF_TYPE_STRING;
	memcpy(p, &elem_type, 4);
	memcpy(p + 4, &n, 8);
	p += 12;
	for (uint64_t i = 0; i < n; i++) {
		uint64_t len = lens ? lens[i] : strlen(strings[i]);
		memcpy(p, &len, 8);
		memcpy(p + 8, strings[i], len);
		p += 8 + len;
	}
	return set_kv(w, key, RS_GGUF_TYPE_ARRAY, payload, total);
}

int rs_gguf_writer_set_alignment(struct rs_gguf_writer *w, uint32_t alignment)
{
	return rs_gguf_writer_set_u32(w, "general.alignment", alignment);
}

int rs_gguf_writer_add_tensor(struct rs_gguf_writer *w, const char *name, uint32_t type,
			      const uint64_t *ne, uint32_t n_dims, const void *data)
{
	size_t name_len = strlen(name);
	enum rs_dtype dtype;
	int bad_type = rs_gguf_tensor_dtype(type, &dtype);
	uint32_t block = bad_type ? 0 : rs_dtype_block_elems(dtype);
	if (name_len == 0 || name_len >= RS_GGUF_MAX_NAME || !block || n_dims == 0 ||
	    n_dims > RS_GGUF_MAX_DIMS || ne[0] % block)
		return -EINVAL;
	/* Rows of whole blocks (ne[0] / block of them, block_bytes each). */
	uint64_t nbytes = rs_dtype_block_bytes(dtype);
	for (uint32_t d = 0; d < n_dims; d++)
		if (ne[d] == 0 ||
		    __builtin_mul_overflow(nbytes, d == 0 ? ne[0] / block : ne[d], &nbytes))
			return -EINVAL;
	for (size_t i = 0; i < w->n_tensors; i++)
		if (strcmp(w->tensors[i].name, name) == 0)
			return -EINVAL;
	if (w->n_tensors == w->cap_tensors) {
		size_t cap = w->cap_tensors ? 2 * w->cap_tensors : 32;
		struct writer_tensor *t = realloc(w->tensors, cap * sizeof(*t));
		if (!t)
			return -ENOMEM;
		w->tensors = t;
		w->cap_tensors = cap;
	}
	struct writer_tensor *t = &w->tensors[w->n_tensors++];
	memset(t, 0, sizeof(*t));
	memcpy(t->name, name, name_len + 1);
	t->n_dims = n_dims;
	for (uint32_t d = 0; d < n_dims; d++)
		t->ne[d] = ne[d];
	t->type = type;
	t->data = data;
	t->nbytes = nbytes;
	return 0;
}

/* Write n bytes; -EIO on a short write. */
static int put(FILE *f, const void *p, size_t n)
{
	return n == 0 || fwrite(p, 1, n, f) == n ? 0 : -EIO;
}

/* Write zeros from pos up to the next multiple of alignment. */
static int pad(FILE *f, uint64_t pos, uint32_t alignment)
{
	static const uint8_t zeros[64];
	uint64_t n = (alignment - pos % alignment) % alignment;
	for (; n > 0; n -= n < 64 ? n : 64)
		if (put(f, zeros, n < 64 ? n : 64))
			return -EIO;
	return 0;
}

int rs_gguf_writer_write_filled(struct rs_gguf_writer *w, const char *path,
				rs_gguf_tensor_fill_fn fill, void *ctx)
{
	/* With fill, one buffer of the largest tensor's size holds each tensor in turn. */
	uint64_t largest = 0;
	for (size_t i = 0; fill && i < w->n_tensors; i++)
		largest = w->tensors[i].nbytes > largest ? w->tensors[i].nbytes : largest;
	void *buf = NULL;
	if (fill && largest && !(buf = malloc(largest)))
		return -ENOMEM;
	FILE *f = fopen(path, "wb");
	if (!f) {
		int err = -errno;
		free(buf);
		return err;
	}
	uint32_t magic = RS_GGUF_MAGIC, version = RS_GGUF_VERSION;
	uint64_t n_tensors = w->n_tensors, n_kv = w->n_kv, pos = 24;
	int ret = put(f, &magic, 4);
	ret = ret ?: put(f, &version, 4);
	ret = ret ?: put(f, &n_tensors, 8);
	ret = ret ?: put(f, &n_kv, 8);
	for (size_t i = 0; i < w->n_kv && !ret; i++) {
		uint64_t len = strlen(w->kvs[i].key);
		ret = put(f, &len, 8);
		ret = ret ?: put(f, w->kvs[i].key, len);
		ret = ret ?: put(f, &w->kvs[i].type, 4);
		ret = ret ?: put(f, w->kvs[i].payload, w->kvs[i].payload_len);
		pos += 12 + len + w->kvs[i].payload_len;
	}
	uint64_t offset = 0;
	for (size_t i = 0; i < w->n_tensors && !ret; i++) {
		struct writer_tensor *t = &w->tensors[i];
		uint64_t len = strlen(t->name);
		t->offset = offset;
		offset += t->nbytes + (w->alignment - t->nbytes % w->alignment) % w->alignment;
		ret = put(f, &len, 8);
		ret = ret ?: put(f, t->name, len);
		ret = ret ?: put(f, &t->n_dims, 4);
		ret = ret ?: put(f, t->ne, 8 * (size_t)t->n_dims);
		ret = ret ?: put(f, &t->type, 4);
		ret = ret ?: put(f, &t->offset, 8);
		pos += 8 + len + 4 + 8 * (uint64_t)t->n_dims + 4 + 8;
	}
	ret = ret ?: pad(f, pos, w->alignment);
	for (size_t i = 0; i < w->n_tensors && !ret; i++) {
		const struct writer_tensor *t = &w->tensors[i];
		if (fill) {
			ret = fill(ctx, t->data, buf, t->nbytes);
			ret = ret ?: put(f, buf, t->nbytes);
		} else {
			ret = put(f, t->data, t->nbytes);
		}
		ret = ret ?: pad(f, t->nbytes, w->alignment);
	}
	if (fclose(f) != 0 && !ret)
		ret = -errno;
	free(buf);
	return ret;
}

int rs_gguf_writer_write(struct rs_gguf_writer *w, const char *path)
{
	return rs_gguf_writer_write_filled(w, path, NULL, NULL);
}

/* --- a whole model ---------------------------------------------------------------------- */

static size_t tensor_bytes(const struct rs_tensor *t)
{
	return (size_t)t->rows * rs_dtype_row_bytes(t->dtype, t->cols);
}

/* The inverse of the loader's rearrangement (gguf_model.c): adjacent RoPE pairs (2i, 2i + 1)
 * of each head back to the NEOX layout (i, i + rope_dim / 2); units are rows of a weight
 * or elements of a bias. */
static void meta_to_neox_rows(uint8_t *dst, const uint8_t *src, size_t unit, uint32_t n_heads,
			      uint32_t head_dim, uint32_t rope_dim)
{
	uint32_t half = rope_dim / 2;
	for (uint32_t h = 0; h < n_heads; h++)
		for (uint32_t j = 0; j < head_dim; j++) {
			uint32_t from = j >= rope_dim ? j : j < half ? 2 * j : 2 * (j - half) + 1;
			memcpy(dst + ((size_t)h * head_dim + j) * unit,
			       src + ((size_t)h * head_dim + from) * unit, unit);
		}
}

/* One model tensor as the file writer sees it: the model's tensor and, for Qwen2's q and k,
 * the heads whose rows go out in the NEOX layout (0: as they are). */
struct model_tensor {
	const struct rs_tensor *t;
	uint32_t neox_heads;
};

/* The model's tensors in file order, and where their bytes come from. */
struct model_tensors {
	struct model_tensor *list;
	size_t n;
	rs_model_tensor_fill_fn fill; /* NULL: the tensors' own data */
	void *fill_ctx;
	const struct rs_model_config *config;
	uint8_t *scratch; /* room for the largest tensor in the NEOX layout */
};

/* Add a model tensor under name: ne = {cols, rows}, or {cols} for a vector. */
static int add_model_tensor(struct rs_gguf_writer *w, struct model_tensors *mt, const char *name,
			    const struct rs_tensor *t, uint32_t neox_heads)
{
	uint64_t ne[2] = {t->cols, t->rows};
	if (rs_dtype_block_elems(t->dtype) == 0)
		return -EINVAL;
	struct model_tensor *entry = &mt->list[mt->n];
	*entry = (struct model_tensor){.t = t, .neox_heads = neox_heads};
	int ret = rs_gguf_writer_add_tensor(w, name, rs_gguf_tensor_type(t->dtype), ne,
					    t->rows == 1 ? 1 : 2, entry);
	mt->n += ret == 0;
	return ret;
}

/* rs_gguf_tensor_fill_fn over struct model_tensors: a tensor's bytes, q and k reordered. */
static int fill_model_tensor(void *ctx, const void *tag, void *buf, uint64_t nbytes)
{
	struct model_tensors *mt = ctx;
	const struct model_tensor *entry = tag;
	int ret = 0;
	if (mt->fill)
		ret = mt->fill(mt->fill_ctx, entry->t, buf);
	else
		memcpy(buf, entry->t->data, nbytes);
	if (ret || !entry->neox_heads)
		return ret;
	const struct rs_model_config *c = mt->config;
	size_t units = (size_t)entry->neox_heads * c->head_dim;
	meta_to_neox_rows(mt->scratch, buf, nbytes / units, entry->neox_heads, c->head_dim,
			  c->rope_dim);
	memcpy(buf, mt->scratch, nbytes);
	return 0;
}

/* A BPE vocabulary's keys: "gpt2", its pre-tokenizer's name and its merges as
 * "left right". */
static int add_bpe_keys(struct rs_gguf_writer *w, const struct rs_tokenizer *tok)
{
	uint32_t n = rs_tokenizer_n_merges(tok);
	char **merges = calloc((size_t)n + 1, sizeof(*merges));
	uint32_t *lens = calloc((size_t)n + 1, sizeof(*lens));
	bool ignore_merges = rs_tokenizer_flags(tok) & RS_TOKENIZER_IGNORE_MERGES;
	const char *pre = rs_pretokenizer_name(rs_tokenizer_pretokenizer(tok), ignore_merges);
	int ret = -ENOMEM;
	if (!merges || !lens)
		goto out;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t left, right;
		const char *l, *r;
		size_t ll, rl;
		rs_tokenizer_merge(tok, i, &left, &right);
		rs_tokenizer_piece(tok, left, &l, &ll);
		rs_tokenizer_piece(tok, right, &r, &rl);
		merges[i] = malloc(ll + rl + 1);
		if (!merges[i])
			goto out;
		memcpy(merges[i], l, ll);
		merges[i][ll] = ' ';
		memcpy(merges[i] + ll + 1, r, rl);
		lens[i] = (uint32_t)(ll + rl + 1);
	}
	ret = pre ? 0 : -EINVAL;
	ret = ret ?: rs_gguf_writer_set_string(w, "tokenizer.ggml.model", "gpt2");
	ret = ret ?: rs_gguf_writer_set_string(w, "tokenizer.ggml.pre", pre);
	ret = ret
		  ?: rs_gguf_writer_set_string_array(w, "tokenizer.ggml.merges",
						     (const char *const *)merges, lens, n);
out:
	for (uint32_t i = 0; merges && i < n; i++)
		free(merges[i]);
	free(merges);
	free(lens);
	return ret;
}

/* Pieces as GGUF spells them: U+2581 for a space (SentencePiece). */
static int add_tokenizer(struct rs_gguf_writer *w, const struct rs_tokenizer *tok)
{
	uint32_t n = rs_tokenizer_vocab_size(tok);
	bool bpe = rs_tokenizer_kind(tok) == RS_TOKENIZER_BPE;
	bool meta = bpe || (rs_tokenizer_flags(tok) & RS_TOKENIZER_METASPACE);
	char **pieces = calloc(n, sizeof(*pieces));
	uint32_t *lens = calloc(n, sizeof(*lens));
	float *scores = calloc(n, sizeof(*scores));
	int32_t *types = calloc(n, sizeof(*types));
	int ret = -ENOMEM;
	if (!pieces || !lens || !scores || !types)
		goto out;
	for (uint32_t i = 0; i < n; i++) {
		const char *s;
		size_t len;
		uint8_t type;
		rs_tokenizer_piece(tok, i, &s, &len);
		rs_tokenizer_token_info(tok, i, &scores[i], &type);
		types[i] = type;
		pieces[i] = malloc(3 * len + 1);
		if (!pieces[i])
			goto out;
		for (size_t k = 0; k < len; k++) {
			if (!meta && s[k] == ' ') {
				memcpy(pieces[i] + lens[i], RS_METASPACE_UTF8, 3);
				lens[i] += 3;
			} else {
				pieces[i][lens[i]++] = s[k];
			}
		}
	}
	ret = bpe ? add_bpe_keys(w, tok)
		  : rs_gguf_writer_set_string(w, "tokenizer.ggml.model", "llama");
	ret = ret
		  ?: rs_gguf_writer_set_string_array(w, "tokenizer.ggml.tokens",
						     (const char *const *)pieces, lens, n);
	if (!bpe)
		ret = ret
			  ?: rs_gguf_writer_set_array(w, "tokenizer.ggml.scores",
						      RS_GGUF_TYPE_FLOAT32, scores, n);
	ret = ret
		  ?: rs_gguf_writer_set_array(w, "tokenizer.ggml.token_type", RS_GGUF_TYPE_INT32,
					      types, n);
	if (!ret && rs_tokenizer_bos(tok) >= 0)
		ret = rs_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id",
					     (uint32_t)rs_tokenizer_bos(tok));
	if (!ret && rs_tokenizer_eos(tok) >= 0)
		ret = rs_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id",
					     (uint32_t)rs_tokenizer_eos(tok));
	if (!ret && rs_tokenizer_unk(tok) >= 0)
		ret = rs_gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id",
					     (uint32_t)rs_tokenizer_unk(tok));
	ret = ret
		  ?: rs_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token",
					     rs_tokenizer_flags(tok) & RS_TOKENIZER_ADD_BOS);
	ret = ret
		  ?: rs_gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token",
					     rs_tokenizer_flags(tok) & RS_TOKENIZER_ADD_EOS);
	if (!bpe)
		ret = ret
			  ?: rs_gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix",
						     rs_tokenizer_flags(tok) &
							 RS_TOKENIZER_ADD_SPACE_PREFIX);
out:
	for (uint32_t i = 0; pieces && i < n; i++)
		free(pieces[i]);
	free(pieces);
	free(lens);
	free(scores);
	free(types);
	return ret;
}

/* llama.cpp's llama_ftype for the bulk of the weights (those of attn_q). */
static uint32_t llama_ftype(const struct rs_model *model)
{
	enum rs_dtype bulk =
	    model->config.n_layers ? model->layers[0].wq.dtype : model->token_embedding.dtype;
	bool q6_output = model->output.dtype == RS_DTYPE_Q6_K;
	switch (bulk) {
	case RS_DTYPE_F16:
		return 1;
	case RS_DTYPE_BF16:
		return 32;
	case RS_DTYPE_Q4_0:
		return 2;
	case RS_DTYPE_Q8_0:
		return 7;
	case RS_DTYPE_Q4_K:
		return q6_output ? 15 : 14; /* Q4_K_M : Q4_K_S */
	case RS_DTYPE_Q5_K:
		return q6_output ? 17 : 16; /* Q5_K_M : Q5_K_S */
	case RS_DTYPE_Q6_K:
		return 18;
	default:
		return 0;
	}
}

int rs_gguf_write_model_filled(const char *path, const struct rs_model *model,
			       const struct rs_tokenizer *tok, rs_model_tensor_fill_fn fill,
			       void *fill_ctx, char *err, size_t err_size)
{
	const struct rs_model_config *c = &model->config;
	struct rs_gguf_writer *w;
	char inner[200];
	int ret = rs_model_check_config(c, inner, sizeof(inner));
	if (ret)
		return rs_errmsg(err, err_size, ret, "GGUF writer: %s", inner);
	ret = rs_gguf_writer_create(&w);
	if (ret)
		return rs_errmsg(err, err_size, ret, "GGUF writer: out of memory");
	/* Per layer 9 matrices and norms and up to 3 biases; embedding, rope_freqs, final
	 * norm, output. */
	struct model_tensors mt = {.list = calloc((size_t)c->n_layers * 12 + 4, sizeof(*mt.list)),
				   .fill = fill,
				   .fill_ctx = fill_ctx,
				   .config = c};
	ret = mt.list ? 0 : -ENOMEM;
	/* Qwen2's q and k rows go out in the NEOX layout its files have (see model.h). */
	bool neox = model->arch == RS_ARCH_QWEN2;
	size_t largest_qk = 0;
	for (uint32_t l = 0; neox && l < c->n_layers; l++) {
		const struct rs_layer_weights *lw = &model->layers[l];
		const struct rs_tensor *ts[] = {&lw->wq, &lw->wk, &lw->bq, &lw->bk};
		for (size_t i = 0; i < 4; i++)
			if (ts[i]->data && tensor_bytes(ts[i]) > largest_qk)
				largest_qk = tensor_bytes(ts[i]);
	}
	if (!ret && largest_qk && !(mt.scratch = malloc(largest_qk)))
		ret = -ENOMEM;

	/* llama.cpp's llama_ftype for the bulk of the weights. */
	uint32_t file_type = llama_ftype(model);
	const char *arch = rs_arch_name(model->arch);
	char k[16][96];
	static const char *const suffixes[] = {
	    "context_length",
	    "embedding_length",
	    "block_count",
	    "feed_forward_length",
	    "rope.dimension_count",
	    "attention.head_count",
	    "attention.head_count_kv",
	    "attention.layer_norm_rms_epsilon",
	    "rope.freq_base",
	    "vocab_size",
	    "rope.scaling.type",
	    "rope.scaling.factor",
	};
	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++)
		snprintf(k[i], sizeof(k[i]), "%s.%s", arch, suffixes[i]);
	ret = ret ?: rs_gguf_writer_set_string(w, "general.architecture", arch);
	ret = ret ?: rs_gguf_writer_set_string(w, "general.name", "ringserve");
	ret = ret ?: rs_gguf_writer_set_u32(w, "general.file_type", file_type);
	ret = ret ?: rs_gguf_writer_set_u32(w, "general.alignment", RS_GGUF_DEFAULT_ALIGNMENT);
	ret = ret ?: rs_gguf_writer_set_u32(w, k[0], c->max_seq_len);
	ret = ret ?: rs_gguf_writer_set_u32(w, k[1], c->dim);
	ret = ret ?: rs_gguf_writer_set_u32(w, k[2], c->n_layers);
	ret = ret ?: rs_gguf_writer_set_u32(w, k[3], c->hidden_dim);
	ret = ret ?: rs_gguf_writer_set_u32(w, k[4], c->rope_dim);
	ret = ret ?: rs_gguf_writer_set_u32(w, k[5], c->n_heads);
	ret = ret ?: rs_gguf_writer_set_u32(w, k[6], c->n_kv_heads);
	ret = ret ?: rs_gguf_writer_set_f32(w, k[7], c->norm_eps);
	ret = ret ?: rs_gguf_writer_set_f32(w, k[8], c->rope_theta);
	ret = ret ?: rs_gguf_writer_set_u32(w, k[9], c->vocab_size);
	if (!ret && c->rope_scale > 0.0f && c->rope_scale != 1.0f) {
		ret = rs_gguf_writer_set_string(w, k[10], "linear");
		ret = ret ?: rs_gguf_writer_set_f32(w, k[11], c->rope_scale);
	}
	if (!ret && tok)
		ret = add_tokenizer(w, tok);
	if (!ret && model->chat_template)
		ret = rs_gguf_writer_set_string_len(w, "tokenizer.chat_template",
						    model->chat_template, model->chat_template_len);

	ret = ret ?: add_model_tensor(w, &mt, "token_embd.weight", &model->token_embedding, 0);
	for (uint32_t l = 0; l < c->n_layers && !ret; l++) {
		const struct rs_layer_weights *lw = &model->layers[l];
		const struct {
			const char *suffix;
			const struct rs_tensor *t;
			uint32_t neox_heads;
		} parts[] = {
		    {"attn_norm", &lw->attn_norm, 0},
		    {"attn_q", &lw->wq, neox ? c->n_heads : 0},
		    {"attn_k", &lw->wk, neox ? c->n_kv_heads : 0},
		    {"attn_v", &lw->wv, 0},
		    {"attn_output", &lw->wo, 0},
		    {"ffn_norm", &lw->ffn_norm, 0},
		    {"ffn_gate", &lw->w_gate, 0},
		    {"ffn_down", &lw->w_down, 0},
		    {"ffn_up", &lw->w_up, 0},
		};
		for (size_t p = 0; p < sizeof(parts) / sizeof(parts[0]) && !ret; p++) {
			char name[RS_GGUF_MAX_NAME];
			snprintf(name, sizeof(name), "blk.%u.%s.weight", l, parts[p].suffix);
			ret = add_model_tensor(w, &mt, name, parts[p].t, parts[p].neox_heads);
		}
		const struct {
			const char *name;
			const struct rs_tensor *t;
			uint32_t neox_heads;
		} biases[] = {{"attn_q", &lw->bq, neox ? c->n_heads : 0},
			      {"attn_k", &lw->bk, neox ? c->n_kv_heads : 0},
			      {"attn_v", &lw->bv, 0}};
		for (size_t b = 0; b < 3 && !ret; b++) {
			if (!biases[b].t->data)
				continue;
			char name[RS_GGUF_MAX_NAME];
			snprintf(name, sizeof(name), "blk.%u.%s.bias", l, biases[b].name);
			ret = add_model_tensor(w, &mt, name, biases[b].t, biases[b].neox_heads);
		}
	}
	if (!ret && model->rope_freqs.data)
		ret = add_model_tensor(w, &mt, "rope_freqs.weight", &model->rope_freqs, 0);
	ret = ret ?: add_model_tensor(w, &mt, "output_norm.weight", &model->final_norm, 0);
	if (!ret && model->output.data != model->token_embedding.data)
		ret = add_model_tensor(w, &mt, "output.weight", &model->output, 0);
	if (ret) {
		rs_gguf_writer_free(w);
		free(mt.list);
		free(mt.scratch);
		return rs_errmsg(err, err_size, ret, "GGUF writer: cannot describe the model");
	}
	ret = rs_gguf_writer_write_filled(w, path, fill_model_tensor, &mt);
	rs_gguf_writer_free(w);
	free(mt.list);
	free(mt.scratch);
	if (ret)
		return rs_errmsg(err, err_size, ret, "%s: write failed: %s", path, strerror(-ret));
	return 0;
}

int rs_gguf_write_model(const char *path, const struct rs_model *model,
			const struct rs_tokenizer *tok, char *err, size_t err_size)
{
	return rs_gguf_write_model_filled(path, model, tok, NULL, NULL, err, err_size);
}
