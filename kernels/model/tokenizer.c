/* The tokenizer: vocabulary, encode and decode for SentencePiece-style and byte-level BPE,
 * serialization. Only libc here (and the pre-tokenizers and Unicode tables, which are libc
 * only too), so that the client library can carry this file. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/model/errmsg.h"
#include "kernels/model/pretokenize.h"
#include "kernels/model/tokenizer.h"
#include "kernels/model/unicode.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "serialized vocab is little-endian");

#define SERIAL_HEADER_SIZE 48u

/* A BPE merge: left and right merge into result, at rank (lower merges first). */
struct merge {
	uint32_t left, right, result, rank;
};
#define MERGE_EMPTY UINT32_MAX /* rank of an empty slot of the merge table */

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
	/* Byte-level BPE: byte_id[b] is the token of byte b's character (GPT-2's map). */
	uint32_t kind, pre;
	uint32_t n_merges;
	uint32_t *merge_pairs;    /* 2 * n_merges, rank order: left, right */
	struct merge *merge_table; /* open addressing on (left, right) */
	uint32_t merge_mask;
	uint16_t byte_cp[256];     /* byte -> code point of its character */
	int16_t cp_byte[324];      /* code point (< 324) -> byte, -1 when none */
	uint32_t n_user_defined;   /* USER_DEFINED tokens (non-empty pieces) */
	uint32_t *user_index;      /* just those, open addressing as match_index */
	uint32_t user_mask;
	uint8_t user_len[RS_TOKENIZER_MAX_PIECE / 8 + 1]; /* bit n: one of them is n bytes long */
	uint32_t user_max_len;
	uint8_t user_first[32];    /* bit b: one of them starts with byte b */
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

/* The id whose piece is s[0..n), whose hash_bytes is hash, in an index, or -1. */
static int32_t index_find_hashed(const struct rs_tokenizer *tok, const uint32_t *slots,
				 uint32_t mask, uint64_t hash, const char *s, size_t n)
{
	for (uint64_t h = hash & mask; slots[h]; h = (h + 1) & mask)
		if (piece_eq(tok, slots[h] - 1, s, n))
			return (int32_t)(slots[h] - 1);
	return -1;
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

static int32_t find_piece(const struct rs_tokenizer *tok, const char *s, size_t n)
{
	return index_find(tok, tok->all_index, tok->all_mask, s, n);
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
	free(tok->merge_pairs);
	free(tok->merge_table);
	free(tok->user_index);
	free(tok);
}

/* GPT-2's byte-to-unicode map: printable Latin-1 bytes stand for themselves, the others
 * (controls, space, DEL, NBSP, soft hyphen) for U+0100 upwards in byte order. */
static void byte_map_init(struct rs_tokenizer *tok)
{
	uint32_t next = 256;
	for (int i = 0; i < 324; i++)
		tok->cp_byte[i] = -1;
	for (uint32_t b = 0; b < 256; b++) {
		bool printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
		tok->byte_cp[b] = (uint16_t)(printable ? b : next++);
		tok->cp_byte[tok->byte_cp[b]] = (int16_t)b;
	}
}

/* Slot of the merge (left, right) in the table: where it is, or the empty slot where it
 * would go. */
static struct merge *merge_slot(const struct rs_tokenizer *tok, uint32_t left, uint32_t right)
{
	uint64_t h = ((uint64_t)left * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)right * 0xc2b2ae3d27d4eb4full);
	h ^= h >> 29;
	for (h &= tok->merge_mask;; h = (h + 1) & tok->merge_mask) {
		struct merge *m = &tok->merge_table[h];
		if (m->rank == MERGE_EMPTY || (m->left == left && m->right == right))
			return m;
	}
}

/* Add merge rank (left + right) of a BPE vocabulary: both and their concatenation must be
 * pieces. Returns 0 or -EINVAL with a message. */
static int add_merge(struct rs_tokenizer *tok, uint32_t rank, uint32_t left, uint32_t right,
		     char *err, size_t err_size)
{
	char joined[2 * RS_TOKENIZER_MAX_PIECE];
	size_t left_len = piece_len(tok, left), right_len = piece_len(tok, right);
	memcpy(joined, tok->blob + tok->offsets[left], left_len);
	memcpy(joined + left_len, tok->blob + tok->offsets[right], right_len);
	int32_t result = find_piece(tok, joined, left_len + right_len);
	if (result < 0)
		return rs_errmsg(err, err_size, -EINVAL,
				 "tokenizer: merge %u (tokens %u and %u) makes '%.*s', which is no "
				 "token",
				 rank, left, right, (int)(left_len + right_len < 48 ? left_len + right_len : 48),
				 joined);
	tok->merge_pairs[2 * rank] = left;
	tok->merge_pairs[2 * rank + 1] = right;
	struct merge *m = merge_slot(tok, left, right);
	if (m->rank == MERGE_EMPTY) /* a later duplicate changes nothing */
		*m = (struct merge){ .left = left, .right = right, .result = (uint32_t)result,
				     .rank = rank };
	return 0;
}

/* The ids of merge text "left right" (split at its first space after the first byte, as
 * llama.cpp does: a piece of a byte-level vocabulary has no space). */
static int parse_merge(const struct rs_tokenizer *tok, uint32_t rank, const char *s, size_t n,
		       uint32_t *left, uint32_t *right, char *err, size_t err_size)
{
	const char *space = n > 1 ? memchr(s + 1, ' ', n - 1) : NULL;
	int32_t l = -1, r = -1;
	if (space) {
		l = find_piece(tok, s, (size_t)(space - s));
		r = find_piece(tok, space + 1, n - (size_t)(space - s) - 1);
	}
	if (l < 0 || r < 0)
		return rs_errmsg(err, err_size, -EINVAL,
				 "tokenizer: merge %u '%.*s' is not two tokens separated by a space",
				 rank, (int)(n < 48 ? n : 48), s);
	*left = (uint32_t)l;
	*right = (uint32_t)r;
	return 0;
}

/* The BPE parts of create: byte tokens, merges, user-defined tokens. */
static int create_bpe(struct rs_tokenizer *tok, const struct rs_tokenizer_vocab *v, char *err,
		      size_t err_size)
{
	int ret;
	if (v->pre == RS_PRETOK_NONE || v->pre >= RS_PRETOK_COUNT)
		return rs_errmsg(err, err_size, -EINVAL, "tokenizer: pre-tokenizer %u is unknown",
				 v->pre);
	if (v->n_merges > RS_TOKENIZER_MAX_MERGES || (v->n_merges && !v->merges && !v->merge_ids))
		return rs_errmsg(err, err_size, -EINVAL, "tokenizer: %u merges (at most %u)",
				 v->n_merges, RS_TOKENIZER_MAX_MERGES);
	tok->pre = v->pre;
	byte_map_init(tok);
	for (uint32_t b = 0; b < 256; b++) {
		char utf8[4];
		uint32_t len = rs_utf8_encode(tok->byte_cp[b], utf8);
		tok->byte_id[b] = index_find(tok, tok->match_index, tok->match_mask, utf8, len);
	}

	uint32_t cap = 16;
	while (cap < 2 * v->n_merges)
		cap <<= 1;
	tok->merge_pairs = malloc(((size_t)v->n_merges * 2 + 1) * sizeof(uint32_t));
	tok->merge_table = malloc(cap * sizeof(struct merge));
	if (!tok->merge_pairs || !tok->merge_table)
		return -ENOMEM;
	tok->merge_mask = cap - 1;
	for (uint32_t i = 0; i < cap; i++)
		tok->merge_table[i].rank = MERGE_EMPTY;
	for (uint32_t i = 0; i < v->n_merges; i++) {
		uint32_t left = 0, right = 0;
		if (v->merge_ids) {
			left = v->merge_ids[2 * i];
			right = v->merge_ids[2 * i + 1];
			if (left >= tok->n || right >= tok->n)
				return rs_errmsg(err, err_size, -EINVAL,
						 "tokenizer: merge %u names token %u of %u", i,
						 left >= tok->n ? left : right, tok->n);
		} else {
			const char *s = v->merges[i];
			if (!s)
				return rs_errmsg(err, err_size, -EINVAL, "tokenizer: merge %u is missing", i);
			size_t n = v->merge_lens ? v->merge_lens[i] : strlen(s);
			if ((ret = parse_merge(tok, i, s, n, &left, &right, err, err_size)))
				return ret;
		}
		if ((ret = add_merge(tok, i, left, right, err, err_size)))
			return ret;
	}
	tok->n_merges = v->n_merges;

	/* USER_DEFINED tokens: an index of their own, their lengths and first bytes, for
	 * finding them in text (find_cuts). */
	for (uint32_t i = 0; i < tok->n; i++)
		tok->n_user_defined += tok->types[i] == RS_TOKEN_USER_DEFINED && piece_len(tok, i);
	cap = 16;
	while (cap < 2 * tok->n_user_defined)
		cap <<= 1;
	tok->user_index = calloc(cap, sizeof(uint32_t));
	if (!tok->user_index)
		return -ENOMEM;
	tok->user_mask = cap - 1;
	for (uint32_t i = 0; i < tok->n; i++) {
		size_t len = piece_len(tok, i);
		if (tok->types[i] != RS_TOKEN_USER_DEFINED || !len)
			continue;
		index_insert(tok, tok->user_index, tok->user_mask, i);
		uint8_t first = (uint8_t)tok->blob[tok->offsets[i]];
		tok->user_first[first / 8] |= (uint8_t)(1u << (first % 8));
		tok->user_len[len / 8] |= (uint8_t)(1u << (len % 8));
		if (len > tok->user_max_len)
			tok->user_max_len = (uint32_t)len;
	}
	return 0;
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
	if (v->kind != RS_TOKENIZER_SPM && v->kind != RS_TOKENIZER_BPE)
		return rs_errmsg(err, err_size, -EINVAL, "tokenizer: kind %u is unknown", v->kind);
	if (v->flags & ~RS_TOKENIZER_FLAGS_ALL)
		return rs_errmsg(err, err_size, -EINVAL, "tokenizer: flags %#x are unknown",
				 v->flags & ~RS_TOKENIZER_FLAGS_ALL);

	tok = calloc(1, sizeof(*tok));
	if (!tok)
		goto fail;
	tok->n = v->n;
	tok->kind = v->kind;
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
	if (tok->kind == RS_TOKENIZER_BPE && (ret = create_bpe(tok, v, err, err_size)))
		goto fail;
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

enum rs_tokenizer_kind rs_tokenizer_kind(const struct rs_tokenizer *tok)
{
	return (enum rs_tokenizer_kind)tok->kind;
}

uint32_t rs_tokenizer_pretokenizer(const struct rs_tokenizer *tok)
{
	return tok->pre;
}

uint32_t rs_tokenizer_n_merges(const struct rs_tokenizer *tok)
{
	return tok->n_merges;
}

int rs_tokenizer_merge(const struct rs_tokenizer *tok, uint32_t rank, uint32_t *left,
		       uint32_t *right)
{
	if (rank >= tok->n_merges)
		return -EINVAL;
	*left = tok->merge_pairs[2 * rank];
	*right = tok->merge_pairs[2 * rank + 1];
	return 0;
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

/* --- byte-level BPE encode ---------------------------------------------------------------- */

/* A symbol of a word being merged: a token, linked to its live neighbours. */
struct bpe_symbol {
	int32_t id; /* -1: the byte has no token (it becomes <unk>, or fails) */
	int32_t prev, next;
	bool dead;  /* merged into its left neighbour */
};

/* A candidate merge of symbols left and right (whose ids were left_id, right_id when it was
 * queued: it is stale if either has changed). */
struct bpe_pair {
	uint32_t rank, left, right;
	int32_t left_id, right_id, result;
};

/* Min-heap order: lowest rank first, then the leftmost pair. */
static bool pair_before(const struct bpe_pair *a, const struct bpe_pair *b)
{
	return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

struct pair_heap {
	struct bpe_pair *items;
	size_t n;
};

static void pair_push(struct pair_heap *h, struct bpe_pair p)
{
	size_t i = h->n++;
	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (!pair_before(&p, &h->items[parent]))
			break;
		h->items[i] = h->items[parent];
		i = parent;
	}
	h->items[i] = p;
}

static struct bpe_pair pair_pop(struct pair_heap *h)
{
	struct bpe_pair top = h->items[0], last = h->items[--h->n];
	size_t i = 0;
	for (;;) {
		size_t child = 2 * i + 1;
		if (child >= h->n)
			break;
		if (child + 1 < h->n && pair_before(&h->items[child + 1], &h->items[child]))
			child++;
		if (!pair_before(&h->items[child], &last))
			break;
		h->items[i] = h->items[child];
		i = child;
	}
	if (h->n)
		h->items[i] = last;
	return top;
}

/* Queue the merge of symbols left and right if there is one. */
static void bpe_try_pair(const struct rs_tokenizer *tok, const struct bpe_symbol *syms,
			 struct pair_heap *h, int32_t left, int32_t right)
{
	if (left < 0 || right < 0 || syms[left].id < 0 || syms[right].id < 0)
		return;
	const struct merge *m = merge_slot(tok, (uint32_t)syms[left].id, (uint32_t)syms[right].id);
	if (m->rank == MERGE_EMPTY)
		return;
	pair_push(h, (struct bpe_pair){ .rank = m->rank,
					.left = (uint32_t)left,
					.right = (uint32_t)right,
					.left_id = syms[left].id,
					.right_id = syms[right].id,
					.result = (int32_t)m->result });
}

/* Scratch space of one encode call, grown to the longest word so far (not sized for the
 * whole text: a 100 MB text of short words needs kilobytes). */
struct bpe_scratch {
	struct bpe_symbol *syms; /* cap */
	struct pair_heap heap;   /* 3 * cap: n - 1 pairs, then at most 2 per merge */
	char *spelled;           /* 2 * cap: a word in GPT-2's characters */
	size_t cap;
};

/* Make the scratch fit a word of n bytes. Returns 0 or -ENOMEM (the old space stays). */
static int scratch_fit(struct bpe_scratch *sc, size_t n)
{
	if (n <= sc->cap)
		return 0;
	size_t cap = n > 2 * sc->cap ? n : 2 * sc->cap;
	if (cap < 64)
		cap = 64;
	struct bpe_symbol *syms = realloc(sc->syms, cap * sizeof(*syms));
	if (syms)
		sc->syms = syms;
	struct bpe_pair *pairs = realloc(sc->heap.items, 3 * cap * sizeof(*pairs));
	if (pairs)
		sc->heap.items = pairs;
	char *spelled = realloc(sc->spelled, 2 * cap);
	if (spelled)
		sc->spelled = spelled;
	if (!syms || !pairs || !spelled)
		return -ENOMEM;
	sc->cap = cap;
	return 0;
}

/* Encode one word (a pre-token: word[0..n), n >= 1). */
static int bpe_word(const struct rs_tokenizer *tok, const uint8_t *word, size_t n,
		    struct bpe_scratch *sc, uint32_t *ids, size_t max_ids, size_t *n_ids)
{
	int ret = scratch_fit(sc, n);
	if (ret)
		return ret;
	if (tok->flags & RS_TOKENIZER_IGNORE_MERGES) {
		size_t len = 0;
		for (size_t i = 0; i < n; i++)
			len += rs_utf8_encode(tok->byte_cp[word[i]], sc->spelled + len);
		int32_t id = index_find(tok, tok->match_index, tok->match_mask, sc->spelled, len);
		if (id >= 0 && tok->types[id] == RS_TOKEN_NORMAL)
			return emit(ids, max_ids, n_ids, id);
	}
	struct bpe_symbol *syms = sc->syms;
	for (size_t i = 0; i < n; i++)
		syms[i] = (struct bpe_symbol){ .id = tok->byte_id[word[i]],
					       .prev = (int32_t)i - 1,
					       .next = i + 1 < n ? (int32_t)i + 1 : -1 };
	sc->heap.n = 0;
	for (size_t i = 1; i < n; i++)
		bpe_try_pair(tok, syms, &sc->heap, (int32_t)i - 1, (int32_t)i);
	while (sc->heap.n) {
		struct bpe_pair p = pair_pop(&sc->heap);
		struct bpe_symbol *left = &syms[p.left], *right = &syms[p.right];
		if (left->dead || right->dead || left->next != (int32_t)p.right ||
		    left->id != p.left_id || right->id != p.right_id)
			continue; /* stale: a side has merged since */
		left->id = p.result;
		right->dead = true;
		left->next = right->next;
		if (right->next >= 0)
			syms[right->next].prev = (int32_t)p.left;
		bpe_try_pair(tok, syms, &sc->heap, left->prev, (int32_t)p.left);
		bpe_try_pair(tok, syms, &sc->heap, (int32_t)p.left, left->next);
	}
	for (int32_t i = 0; i >= 0; i = syms[i].next) {
		int32_t id = syms[i].id >= 0 ? syms[i].id : tok->unk;
		if (id < 0)
			return -EILSEQ;
		if ((ret = emit(ids, max_ids, n_ids, id)))
			return ret;
	}
	return 0;
}

/* Pre-tokenize and encode a stretch of text that holds no USER_DEFINED token. */
static int bpe_stretch(const struct rs_tokenizer *tok, const uint8_t *s, size_t len,
		       struct bpe_scratch *sc, uint32_t *ids, size_t max_ids, size_t *n_ids)
{
	enum rs_pretokenizer pre = (enum rs_pretokenizer)tok->pre;
	int ret = 0;
	if (len && rs_pretokenize_is_sequence(pre)) {
		uint8_t *starts = calloc(len / 8 + 1, 1);
		if (!starts)
			return -ENOMEM;
		rs_pretokenize_split(pre, s, len, starts);
		for (size_t pos = 0; pos < len && !ret;) {
			size_t end = pos + 1;
			while (end < len && !(starts[end / 8] & (1u << (end % 8))))
				end++;
			ret = bpe_word(tok, s + pos, end - pos, sc, ids, max_ids, n_ids);
			pos = end;
		}
		free(starts);
		return ret;
	}
	for (size_t pos = 0; pos < len && !ret;) {
		size_t n = rs_pretokenize_next(pre, s + pos, len - pos);
		ret = bpe_word(tok, s + pos, n, sc, ids, max_ids, n_ids);
		pos += n;
	}
	return ret;
}

/* Where a USER_DEFINED token cuts the text. */
struct cut {
	uint64_t order; /* the token's turn: (RS_TOKENIZER_MAX_PIECE - length) << 32 | id */
	size_t pos;
	uint32_t id;
};

static int cut_by_turn(const void *a, const void *b)
{
	const struct cut *x = a, *y = b;
	if (x->order != y->order)
		return x->order < y->order ? -1 : 1;
	return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static int cut_by_pos(const void *a, const void *b)
{
	size_t x = ((const struct cut *)a)->pos, y = ((const struct cut *)b)->pos;
	return x < y ? -1 : x > y;
}

/* Find where USER_DEFINED tokens cut text[0..len), in text order, as llama.cpp and Hugging
 * Face's added tokens do: the longest token first (then the lowest id), each at its
 * leftmost occurrences that do not overlap one already cut. All occurrences are found in
 * one pass (at each position where one can start, a lookup per length one has, the hash
 * grown a byte at a time), then taken in that order. Returns the number of cuts (*out
 * allocated, NULL when none) or -ENOMEM. */
static int64_t find_cuts(const struct rs_tokenizer *tok, const char *text, size_t len,
			 struct cut **out)
{
	struct cut *cuts = NULL;
	size_t n = 0, cap = 0, kept = 0;
	uint8_t *taken = NULL;
	*out = NULL;
	for (size_t pos = 0; pos < len; pos++) {
		uint8_t b = (uint8_t)text[pos];
		if (!(tok->user_first[b / 8] & (1u << (b % 8))))
			continue;
		uint64_t h = 0xcbf29ce484222325ull; /* hash_bytes, a byte at a time */
		for (size_t plen = 1; plen <= tok->user_max_len && plen <= len - pos; plen++) {
			h = (h ^ (uint8_t)text[pos + plen - 1]) * 0x100000001b3ull;
			if (!(tok->user_len[plen / 8] & (1u << (plen % 8))))
				continue;
			int32_t id = index_find_hashed(tok, tok->user_index, tok->user_mask, h,
						       text + pos, plen);
			if (id < 0)
				continue;
			if (n == cap) {
				cap = cap ? 2 * cap : 16;
				struct cut *grown = realloc(cuts, cap * sizeof(*cuts));
				if (!grown)
					goto nomem;
				cuts = grown;
			}
			cuts[n++] = (struct cut){
				.order = ((uint64_t)(RS_TOKENIZER_MAX_PIECE - plen) << 32) | (uint32_t)id,
				.pos = pos,
				.id = (uint32_t)id,
			};
		}
	}
	if (n == 0)
		return 0;
	taken = calloc(len / 8 + 1, 1); /* a bit per byte already cut */
	if (!taken)
		goto nomem;
	qsort(cuts, n, sizeof(*cuts), cut_by_turn);
	for (size_t i = 0; i < n; i++) {
		size_t at = cuts[i].pos, plen = piece_len(tok, cuts[i].id), k;
		for (k = 0; k < plen && !(taken[(at + k) / 8] & (1u << ((at + k) % 8))); k++)
			;
		if (k < plen)
			continue; /* overlaps a longer token, or an earlier one of its own */
		for (k = 0; k < plen; k++)
			taken[(at + k) / 8] |= (uint8_t)(1u << ((at + k) % 8));
		cuts[kept++] = cuts[i];
	}
	free(taken);
	qsort(cuts, kept, sizeof(*cuts), cut_by_pos);
	*out = cuts;
	return (int64_t)kept;
nomem:
	free(cuts);
	free(taken);
	return -ENOMEM;
}

static int encode_bpe(const struct rs_tokenizer *tok, const char *text, size_t len, uint32_t *ids,
		      size_t max_ids, size_t *n_ids)
{
	struct bpe_scratch sc = { 0 };
	struct cut *cuts = NULL;
	const uint8_t *s = (const uint8_t *)text;
	int64_t n_cuts = tok->n_user_defined ? find_cuts(tok, text, len, &cuts) : 0;
	int ret = n_cuts < 0 ? (int)n_cuts : 0;
	size_t pos = 0;
	for (int64_t k = 0; k < n_cuts && !ret; k++) {
		ret = bpe_stretch(tok, s + pos, cuts[k].pos - pos, &sc, ids, max_ids, n_ids);
		if (!ret)
			ret = emit(ids, max_ids, n_ids, (int32_t)cuts[k].id);
		pos = cuts[k].pos + piece_len(tok, cuts[k].id);
	}
	if (!ret)
		ret = bpe_stretch(tok, s + pos, len - pos, &sc, ids, max_ids, n_ids);
	free(cuts);
	free(sc.syms);
	free(sc.heap.items);
	free(sc.spelled);
	return ret;
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
	if (tok->kind == RS_TOKENIZER_BPE) {
		if ((ret = encode_bpe(tok, text, len, ids, max_ids, &n_ids)))
			return ret;
		goto done;
	}

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
	} else if (tok->kind == RS_TOKENIZER_BPE &&
		   (type == RS_TOKEN_NORMAL || type == RS_TOKEN_USER_DEFINED)) {
		/* A NORMAL piece spells bytes in GPT-2's characters; a character outside the
		 * map (no byte-level vocabulary has one) is given as it is, as is a
		 * USER_DEFINED piece. */
		const uint8_t *s = (const uint8_t *)tok->blob + tok->offsets[id];
		size_t len = piece_len(tok, id);
		for (size_t i = 0; i < len;) {
			uint32_t cp, clen = rs_utf8_decode(s + i, len - i, &cp);
			if (type == RS_TOKEN_NORMAL && cp < 324 && tok->cp_byte[cp] >= 0) {
				if (n + 1 >= size)
					return -ENOSPC;
				buf[n++] = (char)tok->cp_byte[cp];
			} else {
				if (n + clen >= size)
					return -ENOSPC;
				memcpy(buf + n, s + i, clen);
				n += clen;
			}
			i += clen;
		}
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
	uint32_t blob_size, kind, pre, n_merges;
};
_Static_assert(sizeof(struct serial_header) == SERIAL_HEADER_SIZE, "header layout");

/* Byte offsets of the arrays; false when the counts are out of range. */
struct serial_layout {
	uint64_t scores, offsets, types, blob, merges, total;
};
static bool serial_layout(uint64_t n, uint64_t blob_size, uint64_t n_merges,
			  struct serial_layout *l)
{
	l->scores = SERIAL_HEADER_SIZE;
	l->offsets = l->scores + 4 * n;
	l->types = l->offsets + 4 * (n + 1);
	l->blob = (l->types + n + 3) & ~(uint64_t)3;
	l->merges = (l->blob + blob_size + 3) & ~(uint64_t)3;
	l->total = l->merges + 8 * n_merges;
	return n <= RS_TOKENIZER_MAX_VOCAB && blob_size <= UINT32_MAX &&
	       n_merges <= RS_TOKENIZER_MAX_MERGES;
}

size_t rs_tokenizer_serialized_size(const struct rs_tokenizer *tok)
{
	struct serial_layout l;
	serial_layout(tok->n, tok->offsets[tok->n], tok->n_merges, &l);
	return (size_t)l.total;
}

int64_t rs_tokenizer_serialize(const struct rs_tokenizer *tok, void *buf, size_t size)
{
	struct serial_layout l;
	uint32_t blob_size = tok->offsets[tok->n];
	serial_layout(tok->n, blob_size, tok->n_merges, &l);
	if (size < l.total)
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
		.kind = tok->kind,
		.pre = tok->pre,
		.n_merges = tok->n_merges,
	};
	memset(p, 0, l.total);
	memcpy(p, &h, sizeof(h));
	memcpy(p + l.scores, tok->scores, 4 * (size_t)tok->n);
	memcpy(p + l.offsets, tok->offsets, 4 * ((size_t)tok->n + 1));
	memcpy(p + l.types, tok->types, tok->n);
	memcpy(p + l.blob, tok->blob, blob_size);
	if (tok->n_merges)
		memcpy(p + l.merges, tok->merge_pairs, 8 * (size_t)tok->n_merges);
	return (int64_t)l.total;
}

int rs_tokenizer_load_serialized(const void *buf, size_t size, struct rs_tokenizer **out)
{
	const uint8_t *p = buf;
	struct serial_header h;
	struct serial_layout l;
	int ret;

	*out = NULL;
	if (size < sizeof(h))
		return -EINVAL;
	memcpy(&h, p, sizeof(h));
	if (h.magic != RS_TOKENIZER_SERIAL_MAGIC || h.version != RS_TOKENIZER_SERIAL_VERSION ||
	    h.header_size != SERIAL_HEADER_SIZE || h.n == 0 ||
	    !serial_layout(h.n, h.blob_size, h.n_merges, &l) || l.total != size)
		return -EINVAL;

	/* Copy the arrays out first: buf may be shared memory another process writes. */
	uint32_t *offsets = malloc(4 * ((size_t)h.n + 1));
	float *scores = malloc(4 * (size_t)h.n);
	uint8_t *types = malloc(h.n);
	const char **pieces = malloc((size_t)h.n * sizeof(*pieces));
	uint32_t *lens = malloc(4 * (size_t)h.n);
	char *blob = malloc((size_t)h.blob_size + 1);
	uint32_t *merges = malloc(8 * (size_t)h.n_merges + 1);
	ret = -ENOMEM;
	if (!offsets || !scores || !types || !pieces || !lens || !blob || !merges)
		goto out;
	memcpy(offsets, p + l.offsets, 4 * ((size_t)h.n + 1));
	memcpy(scores, p + l.scores, 4 * (size_t)h.n);
	memcpy(types, p + l.types, h.n);
	memcpy(blob, p + l.blob, h.blob_size);
	memcpy(merges, p + l.merges, 8 * (size_t)h.n_merges);
	ret = -EINVAL;
	if (offsets[0] != 0 || offsets[h.n] != h.blob_size)
		goto out;
	for (uint32_t i = 0; i < h.n; i++) {
		if (offsets[i + 1] < offsets[i])
			goto out;
		pieces[i] = blob + offsets[i];
		lens[i] = offsets[i + 1] - offsets[i];
	}
	if (h.kind == RS_TOKENIZER_SPM && (h.n_merges || h.pre))
		goto out;
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
		.kind = h.kind,
		.pre = h.pre,
		.n_merges = h.n_merges,
		.merge_ids = merges,
	};
	ret = rs_tokenizer_create(&v, out, NULL, 0);
out:
	free(offsets);
	free(scores);
	free(types);
	free(pieces);
	free(lens);
	free(blob);
	free(merges);
	return ret;
}
