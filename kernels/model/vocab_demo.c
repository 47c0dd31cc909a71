/* A small, deterministic SentencePiece-style vocabulary for generated test models: the
 * special and byte tokens, the space and printable ASCII characters, then BPE merges learnt
 * from a built-in English text (most frequent pair first; ties broken by ids), padded with
 * unused tokens when the text runs out of pairs. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/model/errmsg.h"
#include "kernels/model/pretokenize.h"
#include "kernels/model/tokenizer.h"

#define MAX_MERGED 24 /* bytes per learnt piece */

static const char corpus[] =
    "once upon a time there was a little girl named lily she liked to play in the "
    "park with her friends one day she saw a big red ball under the tree and she "
    "wanted to play with it she ran to the ball and said hello to the boy who was "
    "there the boy was happy and they played with the ball all day long when the sun "
    "went down they said goodbye and went home the next morning lily woke up and "
    "looked out of the window it was a beautiful day the birds were singing and the "
    "flowers were in the garden her mother made breakfast and they ate it together "
    "then lily went to the park again to find her new friend and they were very happy "
    "because they had a lot of fun the end of the story is that everyone is kind and "
    "the world is good for the people who live in it and work with each other";

struct piece {
	char text[48]; /* learnt pieces (MAX_MERGED) and the longest special names */
	uint32_t len;
};

struct builder {
	struct piece *pieces;
	float *scores;
	uint8_t *types;
	uint32_t n, cap;
};

/* The id of piece s[0..len), or -1 (linear: the vocabulary is built once). */
static int32_t find_piece(const struct builder *b, const char *s, size_t len)
{
	for (uint32_t i = 0; i < b->n; i++)
		if (b->pieces[i].len == len && memcmp(b->pieces[i].text, s, len) == 0)
			return (int32_t)i;
	return -1;
}

/* Append a piece unless the vocabulary is full. */
static void add(struct builder *b, const char *s, size_t len, float score, uint8_t type)
{
	if (b->n == b->cap || len >= sizeof(b->pieces[0].text))
		return;
	memcpy(b->pieces[b->n].text, s, len);
	b->pieces[b->n].text[len] = '\0';
	b->pieces[b->n].len = (uint32_t)len;
	b->scores[b->n] = score;
	b->types[b->n] = type;
	b->n++;
}

/* Learn merges from the corpus: words are space + "word" split into characters (token
 * ids; space is "▁" for SentencePiece, GPT-2's "Ġ" for byte-level BPE). When merges is not
 * NULL, the merged pairs are recorded there (left, right ids, in rank order), at most
 * max_merges, and *n_merges counts them. */
static int learn_merges(struct builder *b, const char *space, uint32_t *merges, uint32_t max_merges,
			uint32_t *n_merges)
{
	size_t max_syms = 2 * sizeof(corpus);
	int32_t *syms = malloc(max_syms * sizeof(*syms));
	struct pair {
		int32_t left, right;
		uint32_t count;
	} *pairs = malloc(max_syms * sizeof(*pairs));
	size_t n_syms = 0;
	if (!syms || !pairs) {
		free(syms);
		free(pairs);
		return -ENOMEM;
	}
	/* -1 separates words, so no pair spans two words. */
	for (const char *p = corpus; *p; p++) {
		if (*p == ' ')
			continue;
		if (p == corpus || p[-1] == ' ') {
			syms[n_syms++] = -1;
			syms[n_syms++] = find_piece(b, space, strlen(space));
		}
		syms[n_syms++] = find_piece(b, p, 1);
	}
	for (uint32_t rank = 0; b->n < b->cap; rank++) {
		size_t n_pairs = 0, best = 0;
		for (size_t i = 0; i + 1 < n_syms; i++) {
			int32_t l = syms[i], r = syms[i + 1];
			if (l < 0 || r < 0 || b->pieces[l].len + b->pieces[r].len > MAX_MERGED)
				continue;
			size_t k = 0;
			while (k < n_pairs && (pairs[k].left != l || pairs[k].right != r))
				k++;
			if (k == n_pairs)
				pairs[n_pairs++] = (struct pair){l, r, 0};
			pairs[k].count++;
		}
		if (n_pairs == 0)
			break;
		for (size_t k = 1; k < n_pairs; k++)
			if (pairs[k].count > pairs[best].count ||
			    (pairs[k].count == pairs[best].count &&
			     (pairs[k].left < pairs[best].left ||
			      (pairs[k].left == pairs[best].left &&
			       pairs[k].right < pairs[best].right))))
				best = k;
		int32_t l = pairs[best].left, r = pairs[best].right;
		if (merges) {
			if (*n_merges == max_merges)
				break;
			merges[2 * *n_merges] = (uint32_t)l;
			merges[2 * *n_merges + 1] = (uint32_t)r;
			++*n_merges;
		}
		char text[2 * MAX_MERGED + 1];
		size_t len = b->pieces[l].len + b->pieces[r].len;
		memcpy(text, b->pieces[l].text, b->pieces[l].len);
		memcpy(text + b->pieces[l].len, b->pieces[r].text, b->pieces[r].len);
		int32_t merged = find_piece(b, text, len);
		if (merged < 0) {
			merged = (int32_t)b->n;
			add(b, text, len, -(float)rank, RS_TOKEN_NORMAL);
		}
		size_t out = 0;
		for (size_t i = 0; i < n_syms; i++) {
			if (i + 1 < n_syms && syms[i] == l && syms[i + 1] == r) {
				syms[out++] = merged;
				i++;
			} else {
				syms[out++] = syms[i];
			}
		}
		n_syms = out;
	}
	free(syms);
	free(pairs);
	return 0;
}

int rs_tokenizer_demo(uint32_t n_tokens, struct rs_tokenizer **out, char *err, size_t err_size)
{
	struct builder b = {.cap = n_tokens};
	int ret = -ENOMEM;

	*out = NULL;
	if (n_tokens < 259 || n_tokens > RS_TOKENIZER_MAX_VOCAB)
		return rs_errmsg(err, err_size, -EINVAL,
				 "demo vocabulary: %u tokens (must be 259..%u: 3 special and 256 "
				 "byte tokens at least)",
				 n_tokens, RS_TOKENIZER_MAX_VOCAB);
	b.pieces = malloc((size_t)n_tokens * sizeof(*b.pieces));
	b.scores = malloc((size_t)n_tokens * sizeof(*b.scores));
	b.types = malloc(n_tokens);
	const char **ptrs = malloc((size_t)n_tokens * sizeof(*ptrs));
	uint32_t *lens = malloc((size_t)n_tokens * sizeof(*lens));
	if (!b.pieces || !b.scores || !b.types || !ptrs || !lens)
		goto out;

	add(&b, "<unk>", 5, 0.0f, RS_TOKEN_UNKNOWN);
	add(&b, "<s>", 3, 0.0f, RS_TOKEN_CONTROL);
	add(&b, "</s>", 4, 0.0f, RS_TOKEN_CONTROL);
	for (int byte = 0; byte < 256; byte++) {
		char s[8];
		snprintf(s, sizeof(s), "<0x%02X>", byte);
		add(&b, s, 6, 0.0f, RS_TOKEN_BYTE);
	}
	/* Characters score below every merge; their scores never decide anything. */
	add(&b, RS_METASPACE_UTF8, 3, -1e6f, RS_TOKEN_NORMAL);
	for (char c = 0x21; c < 0x7f; c++)
		add(&b, &c, 1, -1e6f - (float)c, RS_TOKEN_NORMAL);
	/* characters that did not fit act as word breaks */
	ret = learn_merges(&b, RS_METASPACE_UTF8, NULL, 0, NULL);
	if (ret)
		goto out;
	for (uint32_t i = 0; b.n < b.cap; i++) {
		char s[32];
		int len = snprintf(s, sizeof(s), "<unused%u>", i);
		add(&b, s, (size_t)len, -1e9f, RS_TOKEN_UNUSED);
	}
	for (uint32_t i = 0; i < b.n; i++) {
		ptrs[i] = b.pieces[i].text;
		lens[i] = b.pieces[i].len;
	}
	struct rs_tokenizer_vocab v = {
	    .n = b.n,
	    .pieces = ptrs,
	    .lens = lens,
	    .scores = b.scores,
	    .types = b.types,
	    .bos = 1,
	    .eos = 2,
	    .unk = 0,
	    .flags = RS_TOKENIZER_METASPACE | RS_TOKENIZER_ADD_SPACE_PREFIX | RS_TOKENIZER_ADD_BOS,
	};
	ret = rs_tokenizer_create(&v, out, err, err_size);
out:
	if (ret == -ENOMEM)
		rs_errmsg(err, err_size, ret, "demo vocabulary: out of memory");
	free(b.pieces);
	free(b.scores);
	free(b.types);
	free(ptrs);
	free(lens);
	return ret;
}

/* GPT-2's byte-to-character map: printable Latin-1 bytes stand for themselves, the others
 * for U+0100 onwards in byte order; written as UTF-8 into s (NUL-terminated). */
static void byte_char(unsigned byte, char s[3])
{
	unsigned cp = byte;
	if (!((byte >= '!' && byte <= '~') || (byte >= 0xa1 && byte <= 0xac) || byte >= 0xae)) {
		cp = 256;
		for (unsigned b = 0; b < byte; b++)
			cp += !((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || b >= 0xae);
	}
	if (cp < 0x80) {
		s[0] = (char)cp;
		s[1] = 0;
	} else {
		s[0] = (char)(0xc0 | (cp >> 6));
		s[1] = (char)(0x80 | (cp & 0x3f));
		s[2] = 0;
	}
}

int rs_tokenizer_demo_bpe(uint32_t n_tokens, uint32_t pre, struct rs_tokenizer **out, char *err,
			  size_t err_size)
{
	static const char *const llama3_specials[] = {"<|begin_of_text|>", "<|end_of_text|>"};
	static const char *const qwen2_specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
	bool llama3 = pre == RS_PRETOK_LLAMA3;
	const char *const *specials = llama3 ? llama3_specials : qwen2_specials;
	uint32_t n_specials = llama3 ? 2 : 3;
	struct builder b = {.cap = n_tokens > n_specials ? n_tokens - n_specials : 0};
	uint32_t *merges = NULL, n_merges = 0;
	int ret = -ENOMEM;

	*out = NULL;
	if (pre != RS_PRETOK_LLAMA3 && pre != RS_PRETOK_QWEN2)
		return rs_errmsg(err, err_size, -EINVAL,
				 "demo BPE vocabulary: pre-tokenizer %u (llama3 or qwen2 only)",
				 pre);
	if (n_tokens < 256 + n_specials || n_tokens > RS_TOKENIZER_MAX_VOCAB)
		return rs_errmsg(err, err_size, -EINVAL,
				 "demo BPE vocabulary: %u tokens (must be %u..%u: 256 byte and %u "
				 "special tokens at least)",
				 n_tokens, 256 + n_specials, RS_TOKENIZER_MAX_VOCAB, n_specials);
	b.pieces = malloc((size_t)n_tokens * sizeof(*b.pieces));
	b.scores = malloc((size_t)n_tokens * sizeof(*b.scores));
	b.types = malloc(n_tokens);
	const char **ptrs = malloc((size_t)n_tokens * sizeof(*ptrs));
	uint32_t *lens = malloc((size_t)n_tokens * sizeof(*lens));
	merges = malloc((size_t)2 * n_tokens * sizeof(*merges));
	if (!b.pieces || !b.scores || !b.types || !ptrs || !lens || !merges)
		goto out;
	for (unsigned byte = 0; byte < 256; byte++) {
		char s[3];
		byte_char(byte, s);
		add(&b, s, strlen(s), 0.0f, RS_TOKEN_NORMAL);
	}
	char space[3];
	byte_char(' ', space);
	ret = learn_merges(&b, space, merges, n_tokens, &n_merges);
	if (ret)
		goto out;
	/* Reserved tokens up to the specials, which come last as in Llama 3 and Qwen2. */
	for (uint32_t i = 0; b.n < b.cap; i++) {
		char s[40];
		int len = snprintf(s, sizeof(s), "<|reserved_special_token_%u|>", i);
		add(&b, s, (size_t)len, 0.0f, RS_TOKEN_UNUSED);
	}
	b.cap = n_tokens;
	for (uint32_t i = 0; i < n_specials; i++)
		add(&b, specials[i], strlen(specials[i]), 0.0f, RS_TOKEN_CONTROL);
	for (uint32_t i = 0; i < b.n; i++) {
		ptrs[i] = b.pieces[i].text;
		lens[i] = b.pieces[i].len;
	}
	int32_t first_special = (int32_t)(n_tokens - n_specials);
	struct rs_tokenizer_vocab v = {
	    .n = b.n,
	    .pieces = ptrs,
	    .lens = lens,
	    .types = b.types,
	    .bos = first_special,
	    .eos = llama3 ? first_special + 1 : first_special,
	    .unk = -1,
	    .flags = llama3 ? RS_TOKENIZER_ADD_BOS | RS_TOKENIZER_IGNORE_MERGES : 0,
	    .kind = RS_TOKENIZER_BPE,
	    .pre = pre,
	    .n_merges = n_merges,
	    .merge_ids = merges,
	};
	ret = rs_tokenizer_create(&v, out, err, err_size);
out:
	if (ret == -ENOMEM)
		rs_errmsg(err, err_size, ret, "demo BPE vocabulary: out of memory");
	free(b.pieces);
	free(b.scores);
	free(b.types);
	free(ptrs);
	free(lens);
	free(merges);
	return ret;
}
