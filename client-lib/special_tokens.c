/* Special tokens read in text: see special_tokens.h. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "client-lib/special_tokens.h"
#include "kernels/model/tokenizer.h"

static size_t special_len(const struct rs_tokenizer *tok, uint32_t id)
{
	const char *piece;
	size_t len = 0;
	rs_tokenizer_piece(tok, id, &piece, &len);
	return len;
}

/* Sorting key: (RS_TOKENIZER_MAX_PIECE - length) << 32 | id, the longest first. */
static int by_key(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

int rs_special_tokens_build(const struct rs_tokenizer *tok, struct rs_special_tokens *out)
{
	memset(out, 0, sizeof(*out));
	uint32_t n = rs_tokenizer_vocab_size(tok), count = 0;
	for (int pass = 0; pass < 2; pass++) {
		for (uint32_t id = 0; id < n; id++) {
			uint8_t type = 0;
			float score;
			const char *piece;
			size_t len;
			rs_tokenizer_token_info(tok, id, &score, &type);
			rs_tokenizer_piece(tok, id, &piece, &len);
			if (!len || (type != RS_TOKEN_CONTROL && type != RS_TOKEN_USER_DEFINED &&
				     type != RS_TOKEN_UNKNOWN))
				continue;
			if (pass == 1) {
				out->ids[out->n++] = id;
				uint8_t b = (uint8_t)piece[0];
				out->first_byte[b / 8] |= (uint8_t)(1u << (b % 8));
			} else {
				count++;
			}
		}
		if (pass == 0 && !(out->ids = malloc((count ? count : 1) * sizeof(uint32_t))))
			return -ENOMEM;
	}
	uint64_t *keys = malloc((out->n ? out->n : 1) * sizeof(*keys));
	if (!keys) {
		rs_special_tokens_free(out);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < out->n; i++)
		keys[i] =
		    ((uint64_t)(RS_TOKENIZER_MAX_PIECE - special_len(tok, out->ids[i])) << 32) |
		    out->ids[i];
	qsort(keys, out->n, sizeof(*keys), by_key);
	for (uint32_t i = 0; i < out->n; i++)
		out->ids[i] = (uint32_t)keys[i];
	free(keys);
	return 0;
}

void rs_special_tokens_free(struct rs_special_tokens *sp)
{
	free(sp->ids);
	memset(sp, 0, sizeof(*sp));
}

/* The special token that starts at text[pos] and ends before limit, longest first, or -1. */
static int32_t special_at(const struct rs_tokenizer *tok, const struct rs_special_tokens *sp,
			  const char *text, size_t pos, size_t limit)
{
	uint8_t b = (uint8_t)text[pos];
	if (!(sp->first_byte[b / 8] & (1u << (b % 8))))
		return -1;
	for (uint32_t i = 0; i < sp->n; i++) {
		const char *piece;
		size_t len;
		rs_tokenizer_piece(tok, sp->ids[i], &piece, &len);
		if (len <= limit - pos && memcmp(text + pos, piece, len) == 0)
			return (int32_t)sp->ids[i];
	}
	return -1;
}

static int encode_stretch(const struct rs_tokenizer *tok, const char *s, size_t n, uint32_t *ids,
			  size_t max_ids, size_t *count)
{
	if (!n)
		return 0;
	int ret = rs_tokenizer_encode(tok, s, n, 0, ids ? ids + *count : NULL, max_ids - *count);
	if (ret < 0)
		return ret;
	*count += (size_t)ret;
	return 0;
}

int rs_encode_special(const struct rs_tokenizer *tok, const struct rs_special_tokens *sp,
		      const char *text, size_t len, const size_t (*literal)[2], size_t n_literal,
		      unsigned encode_flags, uint32_t *ids, size_t max_ids)
{
	size_t count = 0, stretch = 0, next_literal = 0;
	int32_t bos = rs_tokenizer_bos(tok);
	if ((encode_flags & RS_ENCODE_BOS) && bos >= 0) {
		if (max_ids < 1)
			return -ENOSPC;
		ids[count++] = (uint32_t)bos;
	}
	for (size_t pos = 0; pos < len;) {
		while (next_literal < n_literal && literal[next_literal][1] <= pos)
			next_literal++;
		bool in_literal = next_literal < n_literal && literal[next_literal][0] <= pos;
		if (in_literal) {
			pos = literal[next_literal][1];
			continue;
		}
		/* A special token must end before the next literal range begins. */
		size_t limit = next_literal < n_literal ? literal[next_literal][0] : len;
		int32_t id = special_at(tok, sp, text, pos, limit);
		if (id < 0) {
			pos++;
			continue;
		}
		int ret = encode_stretch(tok, text + stretch, pos - stretch, ids, max_ids, &count);
		if (ret)
			return ret;
		if (count >= max_ids)
			return -ENOSPC;
		ids[count++] = (uint32_t)id;
		pos += special_len(tok, (uint32_t)id);
		stretch = pos;
	}
	int ret = encode_stretch(tok, text + stretch, len - stretch, ids, max_ids, &count);
	if (ret)
		return ret;
	if ((encode_flags & RS_ENCODE_EOS) && rs_tokenizer_eos(tok) >= 0) {
		if (count >= max_ids)
			return -ENOSPC;
		ids[count++] = (uint32_t)rs_tokenizer_eos(tok);
	}
	return (int)count;
}
