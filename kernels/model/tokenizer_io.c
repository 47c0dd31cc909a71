/* Tokenizer loaders and writer: GGUF tokenizer.ggml.* keys, llama2.c tokenizer.bin. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/model/errmsg.h"
#include "kernels/model/gguf.h"
#include "kernels/model/mapfile.h"
#include "kernels/model/pretokenize.h"
#include "kernels/model/tokenizer.h"


/* An optional token-id key: default when absent; must name a token. */
static int get_token_id(const struct rs_gguf *g, const char *key, int32_t fallback, uint32_t n,
			int32_t *out, char *err, size_t err_size)
{
	uint32_t v;
	int ret = rs_gguf_get_u32(g, key, &v);
	if (ret == -ENOENT) {
		*out = fallback < (int64_t)n ? fallback : -1;
		return 0;
	}
	if (ret || v >= n)
		return rs_errmsg(err, err_size, -EINVAL,
				 "GGUF: %s must be a token id below the vocabulary size %u", key, n);
	*out = (int32_t)v;
	return 0;
}

/* An optional bool key: fallback when absent. */
static int get_flag(const struct rs_gguf *g, const char *key, bool fallback, bool *out,
		    char *err, size_t err_size)
{
	int ret = rs_gguf_get_bool(g, key, out);
	if (ret == -ENOENT) {
		*out = fallback;
		return 0;
	}
	if (ret)
		return rs_errmsg(err, err_size, -EINVAL, "GGUF: %s must be a bool", key);
	return 0;
}

/* The BPE keys: tokenizer.ggml.pre and tokenizer.ggml.merges into v (merges point into the
 * file; *merges and *merge_lens are allocated). */
static int get_bpe_keys(const struct rs_gguf *g, struct rs_tokenizer_vocab *v, const char ***merges,
			uint32_t **merge_lens, bool *default_add_bos, char *err, size_t err_size)
{
	struct rs_gguf_str pre;
	struct rs_gguf_array arr;
	int ignore_merges, ret;

	ret = rs_gguf_get_string(g, "tokenizer.ggml.pre", &pre);
	if (ret)
		return rs_errmsg(err, err_size, -EINVAL,
				 "GGUF: tokenizer.ggml.pre %s (ringserve needs to know the "
				 "pre-tokenizer of a BPE vocabulary)",
				 ret == -ENOENT ? "is missing" : "must be a string");
	int kind = rs_pretokenizer_from_name(pre.ptr, pre.len, &ignore_merges);
	if (kind < 0)
		return rs_errmsg(err, err_size, -EINVAL,
				 "GGUF: tokenizer.ggml.pre '%.*s' is not a pre-tokenizer ringserve has "
				 "(llama-bpe, qwen2, qwen35, gpt-2, starcoder, smollm, deepseek-coder, "
				 "deepseek-llm, falcon and their aliases)",
				 (int)(pre.len < 32 ? pre.len : 32), pre.ptr);
	v->pre = (uint32_t)kind;
	if (ignore_merges)
		v->flags |= RS_TOKENIZER_IGNORE_MERGES;
	/* llama.cpp's default: Llama 3's vocabularies start with BOS, other BPE ones do not. */
	*default_add_bos = ignore_merges;

	ret = rs_gguf_get_array(g, "tokenizer.ggml.merges", &arr);
	if (ret || arr.elem_type != RS_GGUF_TYPE_STRING)
		return rs_errmsg(err, err_size, -EINVAL, "GGUF: tokenizer.ggml.merges %s",
				 ret == -ENOENT ? "is missing (a BPE vocabulary needs its merges)" :
						  "must be an array of strings");
	if (arr.n > RS_TOKENIZER_MAX_MERGES)
		return rs_errmsg(err, err_size, -EINVAL,
				 "GGUF: tokenizer.ggml.merges has %" PRIu64 " merges (at most %u)",
				 arr.n, RS_TOKENIZER_MAX_MERGES);
	v->n_merges = (uint32_t)arr.n;
	*merges = malloc((arr.n + 1) * sizeof(**merges));
	*merge_lens = malloc((arr.n + 1) * sizeof(**merge_lens));
	if (!*merges || !*merge_lens)
		return rs_errmsg(err, err_size, -ENOMEM, "GGUF: out of memory");
	uint64_t cursor = 0;
	for (uint32_t i = 0; i < v->n_merges; i++) {
		struct rs_gguf_str m;
		if (rs_gguf_array_next_string(&arr, &cursor, &m) || m.len > 2 * RS_TOKENIZER_MAX_PIECE + 1)
			return rs_errmsg(err, err_size, -EINVAL,
					 "GGUF: tokenizer.ggml.merges[%u] is missing or too long", i);
		(*merges)[i] = m.ptr;
		(*merge_lens)[i] = (uint32_t)m.len;
	}
	v->merges = *merges;
	v->merge_lens = *merge_lens;
	return 0;
}

int rs_tokenizer_load_gguf(const struct rs_gguf *g, struct rs_tokenizer **out, char *err,
			   size_t err_size)
{
	struct rs_gguf_str model;
	struct rs_gguf_array tokens, scores, types;
	bool have_scores, have_types, add_space_prefix, add_bos, add_eos, bpe,
		default_add_bos = true;
	const char **merges = NULL;
	uint32_t *merge_lens = NULL;
	const char **pieces = NULL;
	uint32_t *lens = NULL;
	float *score_values = NULL;
	uint8_t *type_values = NULL;
	int ret;

	*out = NULL;
	ret = rs_gguf_get_string(g, "tokenizer.ggml.model", &model);
	if (ret == -ENOENT)
		return -ENOENT;
	if (ret)
		return rs_errmsg(err, err_size, -EINVAL, "GGUF: tokenizer.ggml.model must be a string");
	bpe = model.len == 4 && memcmp(model.ptr, "gpt2", 4) == 0;
	if (!bpe && (model.len != 5 || memcmp(model.ptr, "llama", 5)))
		return rs_errmsg(err, err_size, -EINVAL,
				 "GGUF: tokenizer.ggml.model '%.*s' is not supported (only 'llama', "
				 "SentencePiece BPE, and 'gpt2', byte-level BPE)",
				 (int)(model.len < 32 ? model.len : 32), model.ptr);
	ret = rs_gguf_get_array(g, "tokenizer.ggml.tokens", &tokens);
	if (ret || tokens.elem_type != RS_GGUF_TYPE_STRING)
		return rs_errmsg(err, err_size, -EINVAL,
				 "GGUF: tokenizer.ggml.tokens %s", ret == -ENOENT ? "is missing" :
				 "must be an array of strings");
	if (tokens.n == 0 || tokens.n > RS_TOKENIZER_MAX_VOCAB)
		return rs_errmsg(err, err_size, -EINVAL,
				 "GGUF: tokenizer.ggml.tokens has %" PRIu64 " tokens (must be 1..%u)",
				 tokens.n, RS_TOKENIZER_MAX_VOCAB);
	uint32_t n = (uint32_t)tokens.n;
	/* A BPE vocabulary merges by rank: its scores (if any) play no part. */
	have_scores = !bpe && rs_gguf_get_array(g, "tokenizer.ggml.scores", &scores) == 0;
	if (!bpe && !have_scores && rs_gguf_find_kv(g, "tokenizer.ggml.scores"))
		return rs_errmsg(err, err_size, -EINVAL, "GGUF: tokenizer.ggml.scores must be an array");
	if (have_scores && scores.n != n)
		return rs_errmsg(err, err_size, -EINVAL,
				 "GGUF: tokenizer.ggml.scores has %" PRIu64 " entries for %u tokens",
				 scores.n, n);
	have_types = rs_gguf_get_array(g, "tokenizer.ggml.token_type", &types) == 0;
	if (!have_types && rs_gguf_find_kv(g, "tokenizer.ggml.token_type"))
		return rs_errmsg(err, err_size, -EINVAL,
				 "GGUF: tokenizer.ggml.token_type must be an array");
	if (have_types && types.n != n)
		return rs_errmsg(err, err_size, -EINVAL,
				 "GGUF: tokenizer.ggml.token_type has %" PRIu64
				 " entries for %u tokens",
				 types.n, n);

	struct rs_tokenizer_vocab v = { .n = n };
	if (bpe) {
		v.kind = RS_TOKENIZER_BPE;
		ret = get_bpe_keys(g, &v, &merges, &merge_lens, &default_add_bos, err, err_size);
		/* A BPE vocabulary names its special tokens or has none. */
		if (!ret)
			ret = get_token_id(g, "tokenizer.ggml.bos_token_id", -1, n, &v.bos, err, err_size);
		if (!ret)
			ret = get_token_id(g, "tokenizer.ggml.eos_token_id", -1, n, &v.eos, err, err_size);
		if (!ret)
			ret = get_token_id(g, "tokenizer.ggml.unknown_token_id", -1, n, &v.unk, err,
					   err_size);
		add_space_prefix = false;
	} else {
		v.flags = RS_TOKENIZER_METASPACE;
		/* llama.cpp's defaults for a SentencePiece vocabulary. */
		ret = get_token_id(g, "tokenizer.ggml.bos_token_id", 1, n, &v.bos, err, err_size);
		if (!ret)
			ret = get_token_id(g, "tokenizer.ggml.eos_token_id", 2, n, &v.eos, err, err_size);
		if (!ret)
			ret = get_token_id(g, "tokenizer.ggml.unknown_token_id", 0, n, &v.unk, err,
					   err_size);
		if (!ret)
			ret = get_flag(g, "tokenizer.ggml.add_space_prefix", true, &add_space_prefix,
				       err, err_size);
	}
	if (!ret)
		ret = get_flag(g, "tokenizer.ggml.add_bos_token", default_add_bos, &add_bos, err,
			       err_size);
	if (!ret)
		ret = get_flag(g, "tokenizer.ggml.add_eos_token", false, &add_eos, err, err_size);
	if (ret)
		goto out;
	if (add_space_prefix)
		v.flags |= RS_TOKENIZER_ADD_SPACE_PREFIX;
	if (add_bos)
		v.flags |= RS_TOKENIZER_ADD_BOS;
	if (add_eos)
		v.flags |= RS_TOKENIZER_ADD_EOS;

	pieces = malloc((size_t)n * sizeof(*pieces));
	lens = malloc((size_t)n * sizeof(*lens));
	score_values = have_scores ? malloc((size_t)n * sizeof(float)) : NULL;
	type_values = have_types ? malloc(n) : NULL;
	ret = -ENOMEM;
	if (!pieces || !lens || (have_scores && !score_values) || (have_types && !type_values)) {
		rs_errmsg(err, err_size, ret, "GGUF: out of memory");
		goto out;
	}
	uint64_t cursor = 0;
	for (uint32_t i = 0; i < n; i++) {
		struct rs_gguf_str s;
		if (rs_gguf_array_next_string(&tokens, &cursor, &s) || s.len > RS_TOKENIZER_MAX_PIECE) {
			ret = rs_errmsg(err, err_size, -EINVAL,
					"GGUF: tokenizer.ggml.tokens[%u] is missing or too long", i);
			goto out;
		}
		pieces[i] = s.ptr;
		lens[i] = (uint32_t)s.len;
		if (have_scores) {
			double d;
			if (rs_gguf_array_f64(&scores, i, &d) || d != d) {
				ret = rs_errmsg(err, err_size, -EINVAL,
						"GGUF: tokenizer.ggml.scores[%u] is not a number", i);
				goto out;
			}
			score_values[i] = (float)d;
		}
		if (have_types) {
			int64_t t;
			if (rs_gguf_array_i64(&types, i, &t) || t < 0 || t > RS_TOKEN_BYTE) {
				ret = rs_errmsg(err, err_size, -EINVAL,
						"GGUF: tokenizer.ggml.token_type[%u] is not a token type "
						"(0..6)",
						i);
				goto out;
			}
			type_values[i] = (uint8_t)t;
		}
	}
	v.pieces = pieces;
	v.lens = lens;
	v.scores = score_values;
	v.types = type_values;
	ret = rs_tokenizer_create(&v, out, err, err_size);
out:
	free(pieces);
	free(lens);
	free(score_values);
	free(type_values);
	free(merges);
	free(merge_lens);
	return ret;
}

int rs_tokenizer_load_llama2c(const void *data, size_t size, uint32_t vocab_size,
			      struct rs_tokenizer **out, char *err, size_t err_size)
{
	const uint8_t *p = data;
	int32_t max_len;
	int ret;

	*out = NULL;
	if (size < 4)
		return rs_errmsg(err, err_size, -EINVAL,
				 "tokenizer.bin: %zu bytes, too short for its header", size);
	memcpy(&max_len, p, 4);
	if (max_len < 0 || max_len > RS_TOKENIZER_MAX_PIECE)
		return rs_errmsg(err, err_size, -EINVAL,
				 "tokenizer.bin: max_token_length %d is out of range (0..%u)", max_len,
				 RS_TOKENIZER_MAX_PIECE);
	if (vocab_size > RS_TOKENIZER_MAX_VOCAB)
		return rs_errmsg(err, err_size, -EINVAL, "tokenizer.bin: vocabulary size %u too large",
				 vocab_size);

	/* First pass: validate and count, so the second needs no checks. */
	size_t pos = 4;
	uint32_t n = 0;
	while (vocab_size ? n < vocab_size : pos < size) {
		int32_t len;
		if (size - pos < 8)
			return rs_errmsg(err, err_size, -EINVAL,
					 "tokenizer.bin: truncated at token %u (offset %zu of %zu)", n,
					 pos, size);
		memcpy(&len, p + pos + 4, 4);
		if (len < 0 || len > RS_TOKENIZER_MAX_PIECE || (size_t)len > size - pos - 8)
			return rs_errmsg(err, err_size, -EINVAL,
					 "tokenizer.bin: token %u has length %d (offset %zu of %zu)",
					 n, len, pos, size);
		pos += 8 + (size_t)len;
		if (++n > RS_TOKENIZER_MAX_VOCAB)
			return rs_errmsg(err, err_size, -EINVAL, "tokenizer.bin: too many tokens");
	}
	if (pos != size)
		return rs_errmsg(err, err_size, -EINVAL,
				 "tokenizer.bin: %zu bytes left after the %u tokens of the model's "
				 "vocabulary",
				 size - pos, n);
	if (n == 0)
		return rs_errmsg(err, err_size, -EINVAL, "tokenizer.bin: no tokens");

	const char **pieces = malloc((size_t)n * sizeof(*pieces));
	uint32_t *lens = malloc((size_t)n * sizeof(*lens));
	float *scores = malloc((size_t)n * sizeof(*scores));
	ret = -ENOMEM;
	if (!pieces || !lens || !scores) {
		rs_errmsg(err, err_size, ret, "tokenizer.bin: out of memory");
		goto out;
	}
	uint32_t metaspace = 0, space = 0;
	pos = 4;
	for (uint32_t i = 0; i < n; i++) {
		int32_t len;
		memcpy(&scores[i], p + pos, 4);
		memcpy(&len, p + pos + 4, 4);
		pieces[i] = (const char *)p + pos + 8;
		lens[i] = (uint32_t)len;
		pos += 8 + (size_t)len;
		if (scores[i] != scores[i]) {
			ret = rs_errmsg(err, err_size, -EINVAL, "tokenizer.bin: token %u has a NaN score",
					i);
			goto out;
		}
		if (len >= 3 && memcmp(pieces[i], RS_METASPACE_UTF8, 3) == 0)
			metaspace++;
		else if (len >= 1 && pieces[i][0] == ' ')
			space++;
	}
	/* llama2.c's exporter writes "▁" as " "; a file that kept "▁" is read as it is. */
	struct rs_tokenizer_vocab v = {
		.n = n,
		.pieces = pieces,
		.lens = lens,
		.scores = scores,
		.bos = n > 1 ? 1 : -1,
		.eos = n > 2 ? 2 : -1,
		.unk = 0,
		.flags = RS_TOKENIZER_ADD_SPACE_PREFIX | RS_TOKENIZER_ADD_BOS |
			 (metaspace > space ? RS_TOKENIZER_METASPACE : 0),
	};
	ret = rs_tokenizer_create(&v, out, err, err_size);
out:
	free(pieces);
	free(lens);
	free(scores);
	return ret;
}

int rs_tokenizer_load_file(const char *path, uint32_t vocab_size, struct rs_tokenizer **out,
			   char *err, size_t err_size)
{
	void *data;
	size_t size;
	char inner[256] = "";
	int ret;

	*out = NULL;
	ret = rs_map_file(path, &data, &size, err, err_size);
	if (ret)
		return ret;
	if (size >= 4 && memcmp(data, "GGUF", 4) == 0) {
		struct rs_gguf *g;
		ret = rs_gguf_parse(data, size, &g, inner, sizeof(inner));
		if (!ret) {
			ret = rs_tokenizer_load_gguf(g, out, inner, sizeof(inner));
			if (ret == -ENOENT)
				snprintf(inner, sizeof(inner), "the GGUF file has no tokenizer");
			rs_gguf_free(g);
		}
	} else {
		ret = rs_tokenizer_load_llama2c(data, size, vocab_size, out, inner, sizeof(inner));
	}
	if (ret)
		rs_errmsg(err, err_size, ret, "%s: %s", path, inner);
	rs_unmap_file(data, size);
	return ret;
}

/* The piece as tokenizer.bin spells it: "▁" as " ". */
static size_t llama2c_piece(const struct rs_tokenizer *tok, uint32_t id, char *buf)
{
	const char *s;
	size_t len, n = 0;
	rs_tokenizer_piece(tok, id, &s, &len);
	bool meta = rs_tokenizer_flags(tok) & RS_TOKENIZER_METASPACE;
	for (size_t i = 0; i < len;) {
		if (meta && len - i >= 3 && memcmp(s + i, RS_METASPACE_UTF8, 3) == 0) {
			buf[n++] = ' ';
			i += 3;
		} else {
			buf[n++] = s[i++];
		}
	}
	return n;
}

int rs_tokenizer_write_llama2c(const struct rs_tokenizer *tok, const char *path)
{
	char piece[RS_TOKENIZER_MAX_PIECE];
	uint32_t n = rs_tokenizer_vocab_size(tok);
	int32_t max_len = 0;
	int ret = 0;

	for (uint32_t i = 0; i < n; i++) {
		size_t len = llama2c_piece(tok, i, piece);
		if ((int32_t)len > max_len)
			max_len = (int32_t)len;
	}
	FILE *f = fopen(path, "wb");
	if (!f)
		return -errno;
	if (fwrite(&max_len, 4, 1, f) != 1)
		ret = -EIO;
	for (uint32_t i = 0; i < n && !ret; i++) {
		float score;
		rs_tokenizer_token_info(tok, i, &score, NULL);
		int32_t len = (int32_t)llama2c_piece(tok, i, piece);
		if (fwrite(&score, 4, 1, f) != 1 || fwrite(&len, 4, 1, f) != 1 ||
		    (len && fwrite(piece, (size_t)len, 1, f) != 1))
			ret = -EIO;
	}
	if (fclose(f) != 0 && !ret)
		ret = -errno;
	return ret;
}
