/* SentencePiece-style BPE tokenizer: vocabulary, encode, decode, serialization.
 * Only libc here, so that the client library can carry this file. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/model/errmsg.h"
#include "kernels/model/tokenizer.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "serialized vocab is little-endian");

#define SERIAL_HEADER_SIZE 40u

struct rs_tokenizer {
	uint32_t n;
	uint32_t flags;
	int32_t bos, eos, unk;
	uint32_t *offsets; /* n + 1; piece i is blob[offsets[i] .. offsets[i + 1]) */
	char *blob;
	float *scores;
	uint8_t *types;
	int16_t *byte_value;  /* per token: the byte of a BYTE token, -1 otherwise */
	int32_t byte_id[256]; /* token of each byte, -1 when absent */
	/* Text-matchable pieces (NORMAL, USER_DEFINED): open addressing, slot = id + 1. */
	uint32_t *match_index;
	uint32_t match_mask;
	/* All pieces, for rs_tokenizer_find. */
	uint32_t *all_index;
	uint32_t all_mask;
};

/* FNV-1a of n bytes. */
static uint64_t hash_bytes(const char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)p[i]) * 0x100000001b3ull;
	return h;
}

/* Length of piece id in bytes. */
static size_t piece_len(const struct rs_tokenizer *tok, uint32_t id)
{
	return tok->offsets[id + 1] - tok->offsets[id];
}

/* Whether piece id is exactly s[0..n). */
static bool piece_eq(const struct rs_tokenizer *tok, uint32_t id, const char *s, size_t n)
{
	return piece_len(tok, id) == n && memcmp(tok->blob + tok->offsets[id], s, n) == 0;
}

/* The id whose piece is s[0..n) in an index, or -1. */
static int32_t index_find(const struct rs_tokenizer *tok, const uint32_t *slots, uint32_t mask,
			  const char *s, size_t n)
{
	for (uint64_t h = hash_bytes(s, n) & mask; slots[h]; h = (h + 1) & mask)
		if (piece_eq(tok, slots[h] - 1, s, n))
			return (int32_t)(slots[h] - 1);
	return -1;
}

/* Insert id unless its piece is already there (the lowest id wins). */
static void index_insert(const struct rs_tokenizer *tok, uint32_t *slots, uint32_t mask,
			 uint32_t id)
{
	const char *s = tok->blob + tok->offsets[id];
	size_t n = piece_len(tok, id);
	uint64_t h = hash_bytes(s, n) & mask;
	for (; slots[h]; h = (h + 1) & mask)
		if (piece_eq(tok, slots[h] - 1, s, n))
			return;
	slots[h] = id + 1;
}

/* Value of a hex digit, or -1. */
static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* The byte a "<0xNN>" piece stands for, or -1. */
static int parse_byte_piece(const char *s, size_t n)
{
	if (n != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>')
		return -1;
	int hi = hex_digit(s[3]), lo = hex_digit(s[4]);
	if (hi < 0 || lo < 0)
		return -1;
	return hi * 16 + lo;
}

void rs_tokenizer_free(struct rs_tokenizer *tok)
{
	if (!tok)
		return;
	free(tok->offsets);
	free(tok->blob);
	free(tok->scores);
	free(tok->types);
	free(tok->byte_value);
	free(tok->match_index);
	free(tok->all_index);
	free(tok);
}

int rs_tokenizer_create(const struct rs_tokenizer_vocab *v, struct rs_tokenizer **out,
			char *err, size_t err_size)
{
	struct rs_tokenizer *tok = NULL;
	uint64_t blob_size = 0;
	int ret = -ENOMEM;

	*out = NULL;
	if (v->n == 0 || v->n > RS_TOKENIZER_MAX_VOCAB)
		return rs_errmsg(err, err_size, -EINVAL, "tokenizer: vocabulary size %u (must be 1..%u)",
				 v->n, RS_TOKENIZER_MAX_VOCAB);
	if (v->bos < -1 || v->bos >= (int64_t)v->n || v->eos < -1 || v->eos >= (int64_t)v->n ||
	    v->unk < -1 || v->unk >= (int64_t)v->n)
		return rs_errmsg(err, err_size, -EINVAL,
				 "tokenizer: bos %d, eos %d or unk %d out of range for %u tokens",
				 v->bos, v->eos, v->unk, v->n);
	for (uint32_t i = 0; i < v->n; i++) {
		if (!v->pieces[i])
			return rs_errmsg(err, err_size, -EINVAL, "tokenizer: token %u has no piece", i);
		size_t len = v->lens ? v->lens[i] : strlen(v->pieces[i]);
		if (len > RS_TOKENIZER_MAX_PIECE)
			return rs_errmsg(err, err_size, -EINVAL,
					 "tokenizer: token %u is %zu bytes long (at most %u)", i, len,
					 RS_TOKENIZER_MAX_PIECE);
		blob_size += len;
		if (v->scores && isnan(v->scores[i]))
			return rs_errmsg(err, err_size, -EINVAL, "tokenizer: token %u has a NaN score",
					 i);
		if (v->types && v->types[i] > RS_TOKEN_BYTE)
			return rs_errmsg(err, err_size, -EINVAL, "tokenizer: token %u has type %u",
					 i, v->types[i]);
	}
	if (blob_size > UINT32_MAX - 1)
		return rs_errmsg(err, err_size, -EINVAL, "tokenizer: pieces too large");

	tok = calloc(1, sizeof(*tok));
	if (!tok)
		goto fail;
	tok->n = v->n;
	tok->flags = v->flags;
	tok->bos = v->bos;
	tok->eos = v->eos;
	tok->unk = v->unk;
	tok->offsets = malloc(((size_t)v->n + 1) * sizeof(*tok->offsets));
	tok->blob = malloc(blob_size + 1);
	tok->scores = malloc((size_t)v->n * sizeof(*tok->scores));
	tok->types = malloc(v->n);
	tok->byte_value = malloc((size_t)v->n * sizeof(*tok->byte_value));
	uint32_t cap = 16;
	while (cap < 2 * v->n)
		cap <<= 1;
	tok->match_index = calloc(cap, sizeof(uint32_t));
	tok->all_index = calloc(cap, sizeof(uint32_t));
	if (!tok->offsets || !tok->blob || !tok->scores || !tok->types || !tok->byte_value ||
	    !tok->match_index || !tok->all_index)
		goto fail;
	tok->match_mask = tok->all_mask = cap - 1;
	for (int b = 0; b < 256; b++)
		tok->byte_id[b] = -1;

	uint32_t off = 0;
	for (uint32_t i = 0; i < v->n; i++) {
		size_t len = v->lens ? v->lens[i] : strlen(v->pieces[i]);
		tok->offsets[i] = off;
		memcpy(tok->blob + off, v->pieces[i], len);
		off += (uint32_t)len;
	}
	tok->offsets[v->n] = off;
	tok->blob[off] = '\0';

	for (uint32_t i = 0; i < v->n; i++) {
		const char *s = tok->blob + tok->offsets[i];
		size_t len = piece_len(tok, i);
		int byte = parse_byte_piece(s, len);
		uint8_t type;
		if (v->types)
			type = v->types[i];
		else if ((int32_t)i == v->bos || (int32_t)i == v->eos)
			type = RS_TOKEN_CONTROL;
		else if ((int32_t)i == v->unk)
			type = RS_TOKEN_UNKNOWN;
		else if (byte >= 0)
			type = RS_TOKEN_BYTE;
		else
			type = RS_TOKEN_NORMAL;
		if (type == RS_TOKEN_BYTE && byte < 0) {
			ret = rs_errmsg(err, err_size, -EINVAL,
					"tokenizer: byte token %u has piece '%.*s', not <0xNN>", i,
					(int)(len < 32 ? len : 32), s);
			goto fail;
		}
		tok->types[i] = type;
		tok->scores[i] = v->scores ? v->scores[i] : 0.0f;
		tok->byte_value[i] = type == RS_TOKEN_BYTE ? (int16_t)byte : -1;
		if (type == RS_TOKEN_BYTE && tok->byte_id[byte] < 0)
			tok->byte_id[byte] = (int32_t)i;
		if ((type == RS_TOKEN_NORMAL || type == RS_TOKEN_USER_DEFINED) && len > 0)
			index_insert(tok, tok->match_index, tok->match_mask, i);
		index_insert(tok, tok->all_index, tok->all_mask, i);
	}
	*out = tok;
	return 0;
fail:
	if (ret == -ENOMEM)
		rs_errmsg(err, err_size, ret, "tokenizer: out of memory");
	rs_tokenizer_free(tok);
	return ret;
}

uint32_t rs_tokenizer_vocab_size(const struct rs_tokenizer *tok)
{
	return tok->n;
}

int32_t rs_tokenizer_bos(const struct rs_tokenizer *tok)
{
	return tok->bos;
}

int32_t rs_tokenizer_eos(const struct rs_tokenizer *tok)
{
	return tok->eos;
}

int32_t rs_tokenizer_unk(const struct rs_tokenizer *tok)
{
	return tok->unk;
}

uint32_t rs_tokenizer_flags(const struct rs_tokenizer *tok)
{
	return tok->flags;
}

int rs_tokenizer_piece(const struct rs_tokenizer *tok, uint32_t id, const char **piece,
		       size_t *len)
{
	if (id >= tok->n)
		return -EINVAL;
	*piece = tok->blob + tok->offsets[id];
	*len = piece_len(tok, id);
	return 0;
}

int rs_tokenizer_token_info(const struct rs_tokenizer *tok, uint32_t id, float *score,
			    uint8_t *type)
{
	if (id >= tok->n)
		return -EINVAL;
	if (score)
		*score = tok->scores[id];
	if (type)
		*type = tok->types[id];
	return 0;
}

int32_t rs_tokenizer_find(const struct rs_tokenizer *tok, const char *piece, size_t len)
{
	int32_t id = index_find(tok, tok->all_index, tok->all_mask, piece, len);
	return id < 0 ? -ENOENT : id;
}

/* --- encode ---------------------------------------------------------------------------- */

struct symbol {
	uint32_t start; /* into the normalized text */
	uint32_t len;   /* 0 once merged into its left neighbour */
	int32_t prev, next;
};

struct bigram {
	float score;
	uint32_t left, right;
	uint32_t len; /* of the merged text, to detect a stale entry */
};

/* Max-heap order: higher score first, then the leftmost pair (as llama.cpp and run.c). */
static bool bigram_before(const struct bigram *a, const struct bigram *b)
{
	return a->score > b->score || (a->score == b->score && a->left < b->left);
}

struct heap {
	struct bigram *items;
	size_t n;
};

/* Push b onto the max-heap (the caller sized it). */
static void heap_push(struct heap *h, struct bigram b)
{
	size_t i = h->n++;
	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (!bigram_before(&b, &h->items[parent]))
			break;
		h->items[i] = h->items[parent];
		i = parent;
	}
	h->items[i] = b;
}

/* Pop the best bigram of a non-empty heap. */
static struct bigram heap_pop(struct heap *h)
{
	struct bigram top = h->items[0];
	struct bigram last = h->items[--h->n];
	size_t i = 0;
	for (;;) {
		size_t child = 2 * i + 1;
		if (child >= h->n)
			break;
		if (child + 1 < h->n && bigram_before(&h->items[child + 1], &h->items[child]))
			child++;
		if (!bigram_before(&h->items[child], &last))
			break;
		h->items[i] = h->items[child];
		i = child;
	}
	if (h->n)
		h->items[i] = last;
	return top;
}

/* Queue the merge of symbols left and right if their concatenation is a piece. */
static void try_bigram(const struct rs_tokenizer *tok, const char *text,
		       const struct symbol *syms, struct heap *h, int32_t left, int32_t right)
{
	if (left < 0 || right < 0)
		return;
	uint32_t start = syms[left].start, len = syms[left].len + syms[right].len;
	int32_t id = index_find(tok, tok->match_index, tok->match_mask, text + start, len);
	if (id < 0)
		return;
	heap_push(h, (struct bigram){ .score = tok->scores[id],
				      .left = (uint32_t)left,
				      .right = (uint32_t)right,
				      .len = len });
}

/* Length of the UTF-8 character at s (n bytes left), as llama.cpp's utf8_len, except that
 * the continuation bytes must be there: a stray byte is a character of its own, so that
 * it cannot swallow the start of a following character (a "▁" above all, which would
 * then decode as its raw bytes instead of a space). */
static uint32_t utf8_len(const uint8_t *s, size_t n)
{
	static const uint8_t lens[16] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4 };
	uint32_t len = lens[s[0] >> 4];
	if (len > n)
		return 1;
	for (uint32_t i = 1; i < len; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 1;
	return len;
}

/* Append id to ids; -ENOSPC when max_ids are used. */
static int emit(uint32_t *ids, size_t max_ids, size_t *n, int32_t id)
{
	if (*n >= max_ids)
		return -ENOSPC;
	ids[(*n)++] = (uint32_t)id;
	return 0;
}

int rs_tokenizer_encode(const struct rs_tokenizer *tok, const char *text, size_t len,
			unsigned flags, uint32_t *ids, size_t max_ids)
{
	size_t n_ids = 0;
	int ret = 0;

	if (len > (UINT32_MAX - 8) / 3)
		return -E2BIG;
	if ((flags & RS_ENCODE_BOS) && tok->bos >= 0 && (ret = emit(ids, max_ids, &n_ids, tok->bos)))
		return ret;
	if (len == 0)
		goto done;

	/* 1. normalize */
	/* A space can grow to 3 bytes, and a stray lead byte can split U+2581 into several
	 * symbols, so symbols are bounded by bytes; each merge queues at most two bigrams. */
	size_t max_norm = 3 * len + 3;
	char *norm = malloc(max_norm);
	struct symbol *syms = malloc(max_norm * sizeof(*syms));
	struct heap heap = { .items = malloc(3 * max_norm * sizeof(struct bigram)) };
	if (!norm || !syms || !heap.items) {
		ret = -ENOMEM;
		goto out;
	}
	size_t norm_len = 0;
	bool meta = tok->flags & RS_TOKENIZER_METASPACE;
	if (tok->flags & RS_TOKENIZER_ADD_SPACE_PREFIX) {
		if (meta) {
			memcpy(norm, RS_METASPACE_UTF8, 3);
			norm_len = 3;
		} else {
			norm[norm_len++] = ' ';
		}
	}
	for (size_t i = 0; i < len; i++) {
		if (text[i] == ' ' && meta) {
			memcpy(norm + norm_len, RS_METASPACE_UTF8, 3);
			norm_len += 3;
		} else {
			norm[norm_len++] = text[i];
		}
	}

	/* 2. one symbol per UTF-8 character */
	int32_t n_syms = 0;
	for (size_t pos = 0; pos < norm_len;) {
		uint32_t clen = utf8_len((const uint8_t *)norm + pos, norm_len - pos);
		syms[n_syms] = (struct symbol){ .start = (uint32_t)pos,
						.len = clen,
						.prev = n_syms - 1,
						.next = pos + clen < norm_len ? n_syms + 1 : -1 };
		n_syms++;
		pos += clen;
	}

	/* 3. merge the best-scoring pair until none is left */
	for (int32_t i = 1; i < n_syms; i++)
		try_bigram(tok, norm, syms, &heap, i - 1, i);
	while (heap.n) {
		struct bigram b = heap_pop(&heap);
		struct symbol *left = &syms[b.left], *right = &syms[b.right];
		if (left->len == 0 || right->len == 0 || left->len + right->len != b.len)
			continue; /* stale: one side has merged since */
		left->len += right->len;
		right->len = 0;
		left->next = right->next;
		if (right->next >= 0)
			syms[right->next].prev = (int32_t)b.left;
		try_bigram(tok, norm, syms, &heap, left->prev, (int32_t)b.left);
		try_bigram(tok, norm, syms, &heap, (int32_t)b.left, left->next);
	}

	/* 4. pieces, or byte fallback */
	for (int32_t i = 0; i >= 0 && i < n_syms; i = syms[i].next) {
		const struct symbol *s = &syms[i];
		int32_t id = index_find(tok, tok->match_index, tok->match_mask, norm + s->start,
					s->len);
		if (id >= 0) {
			if ((ret = emit(ids, max_ids, &n_ids, id)))
				goto out;
			continue;
		}
		for (uint32_t k = 0; k < s->len; k++) {
			id = tok->byte_id[(uint8_t)norm[s->start + k]];
			if (id < 0)
				id = tok->unk;
			if (id < 0) {
				ret = -EILSEQ;
				goto out;
			}
			if ((ret = emit(ids, max_ids, &n_ids, id)))
				goto out;
		}
	}
out:
	free(norm);
	free(syms);
	free(heap.items);
	if (ret)
		return ret;
done:
	if ((flags & RS_ENCODE_EOS) && tok->eos >= 0 && (ret = emit(ids, max_ids, &n_ids, tok->eos)))
		return ret;
	return (int)n_ids;
}

/* --- decode ---------------------------------------------------------------------------- */

int rs_tokenizer_decode_token(const struct rs_tokenizer *tok, int32_t prev, uint32_t id,
			      char *buf, size_t size)
{
	size_t n = 0;
	if (id >= tok->n)
		return -EINVAL;
	if (size == 0)
		return -ENOSPC;
	uint8_t type = tok->types[id];
	if (type == RS_TOKEN_BYTE) {
		if (size < 2)
			return -ENOSPC;
		buf[n++] = (char)tok->byte_value[id];
	} else if (type != RS_TOKEN_CONTROL && type != RS_TOKEN_UNKNOWN &&
		   type != RS_TOKEN_UNUSED) {
		const char *s = tok->blob + tok->offsets[id];
		size_t len = piece_len(tok, id), i = 0;
		bool meta = tok->flags & RS_TOKENIZER_METASPACE;
		bool strip = (tok->flags & RS_TOKENIZER_ADD_SPACE_PREFIX) &&
			     (prev < 0 || (tok->bos >= 0 && prev == tok->bos));
		while (i < len) {
			char c = s[i];
			size_t step = 1;
			if (meta && len - i >= 3 && memcmp(s + i, RS_METASPACE_UTF8, 3) == 0) {
				c = ' ';
				step = 3;
			}
			i += step;
			if (strip && c == ' ' && n == 0 && i == step) /* the dummy prefix */
				continue;
			if (n + 1 >= size)
				return -ENOSPC;
			buf[n++] = c;
		}
	}
	buf[n] = '\0';
	return (int)n;
}

int rs_tokenizer_decode(const struct rs_tokenizer *tok, const uint32_t *ids, size_t n, char *buf,
			size_t size)
{
	size_t used = 0;
	int32_t prev = -1;
	if (size == 0)
		return -ENOSPC;
	buf[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		int ret = rs_tokenizer_decode_token(tok, prev, ids[i], buf + used, size - used);
		if (ret < 0)
			return ret;
		used += (size_t)ret;
		if (used > INT32_MAX)
			return -EOVERFLOW;
		/* Only BOS (and nothing before it) keeps the next token at the text's start. */
		prev = (prev < 0 && (int32_t)ids[i] == tok->bos) ? -1 : (int32_t)ids[i];
	}
	return (int)used;
}

/* --- serialization --------------------------------------------------------------------- */

struct serial_header {
	uint32_t magic, version, header_size, n, flags;
	int32_t bos, eos, unk;
	uint32_t blob_size, reserved;
};
_Static_assert(sizeof(struct serial_header) == SERIAL_HEADER_SIZE, "header layout");

/* Byte offsets of the arrays for n tokens; false when they overflow. */
static bool serial_layout(uint64_t n, uint64_t blob_size, uint64_t *scores, uint64_t *offsets,
			  uint64_t *types, uint64_t *blob, uint64_t *total)
{
	*scores = SERIAL_HEADER_SIZE;
	*offsets = *scores + 4 * n;
	*types = *offsets + 4 * (n + 1);
	*blob = (*types + n + 3) & ~(uint64_t)3;
	*total = *blob + blob_size;
	return n <= RS_TOKENIZER_MAX_VOCAB && blob_size <= UINT32_MAX;
}

size_t rs_tokenizer_serialized_size(const struct rs_tokenizer *tok)
{
	uint64_t s, o, t, b, total;
	serial_layout(tok->n, tok->offsets[tok->n], &s, &o, &t, &b, &total);
	return (size_t)total;
}

int64_t rs_tokenizer_serialize(const struct rs_tokenizer *tok, void *buf, size_t size)
{
	uint64_t s, o, t, b, total;
	uint32_t blob_size = tok->offsets[tok->n];
	serial_layout(tok->n, blob_size, &s, &o, &t, &b, &total);
	if (size < total)
		return -ENOSPC;
	uint8_t *p = buf;
	struct serial_header h = {
		.magic = RS_TOKENIZER_SERIAL_MAGIC,
		.version = RS_TOKENIZER_SERIAL_VERSION,
		.header_size = SERIAL_HEADER_SIZE,
		.n = tok->n,
		.flags = tok->flags,
		.bos = tok->bos,
		.eos = tok->eos,
		.unk = tok->unk,
		.blob_size = blob_size,
	};
	memset(p, 0, total);
	memcpy(p, &h, sizeof(h));
	memcpy(p + s, tok->scores, 4 * (size_t)tok->n);
	memcpy(p + o, tok->offsets, 4 * ((size_t)tok->n + 1));
	memcpy(p + t, tok->types, tok->n);
	memcpy(p + b, tok->blob, blob_size);
	return (int64_t)total;
}

int rs_tokenizer_load_serialized(const void *buf, size_t size, struct rs_tokenizer **out)
{
	const uint8_t *p = buf;
	struct serial_header h;
	uint64_t s, o, t, b, total;
	int ret;

	*out = NULL;
	if (size < sizeof(h))
		return -EINVAL;
	memcpy(&h, p, sizeof(h));
	if (h.magic != RS_TOKENIZER_SERIAL_MAGIC || h.version != RS_TOKENIZER_SERIAL_VERSION ||
	    h.header_size != SERIAL_HEADER_SIZE || h.n == 0 ||
	    !serial_layout(h.n, h.blob_size, &s, &o, &t, &b, &total) || total != size)
		return -EINVAL;

	/* Copy the arrays out first: buf may be shared memory another process writes. */
	uint32_t *offsets = malloc(4 * ((size_t)h.n + 1));
	float *scores = malloc(4 * (size_t)h.n);
	uint8_t *types = malloc(h.n);
	const char **pieces = malloc((size_t)h.n * sizeof(*pieces));
	uint32_t *lens = malloc(4 * (size_t)h.n);
	char *blob = malloc((size_t)h.blob_size + 1);
	ret = -ENOMEM;
	if (!offsets || !scores || !types || !pieces || !lens || !blob)
		goto out;
	memcpy(offsets, p + o, 4 * ((size_t)h.n + 1));
	memcpy(scores, p + s, 4 * (size_t)h.n);
	memcpy(types, p + t, h.n);
	memcpy(blob, p + b, h.blob_size);
	ret = -EINVAL;
	if (offsets[0] != 0 || offsets[h.n] != h.blob_size)
		goto out;
	for (uint32_t i = 0; i < h.n; i++) {
		if (offsets[i + 1] < offsets[i])
			goto out;
		pieces[i] = blob + offsets[i];
		lens[i] = offsets[i + 1] - offsets[i];
	}
	struct rs_tokenizer_vocab v = {
		.n = h.n,
		.pieces = pieces,
		.lens = lens,
		.scores = scores,
		.types = types,
		.bos = h.bos,
		.eos = h.eos,
		.unk = h.unk,
		.flags = h.flags,
	};
	if (h.flags & ~(RS_TOKENIZER_METASPACE | RS_TOKENIZER_ADD_SPACE_PREFIX |
			RS_TOKENIZER_ADD_BOS))
		goto out;
	ret = rs_tokenizer_create(&v, out, NULL, 0);
out:
	free(offsets);
	free(scores);
	free(types);
	free(pieces);
	free(lens);
	free(blob);
	return ret;
}
