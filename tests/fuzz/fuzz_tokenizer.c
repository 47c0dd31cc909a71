/* libFuzzer target: the tokenizer. The first byte picks the mode:
 *   0: the rest is text for a fixed demo vocabulary (SentencePiece and llama2.c spellings)
 *      and a small byte-level BPE vocabulary (the pre-tokenizer picked by the first byte's
 *      upper bits): encode, then decode must give the text back (unless it contains U+2581,
 *      which SentencePiece itself turns into a space; byte-level BPE gives back any bytes),
 *      within rs_tokenizer_max_tokens;
 *   1: the rest is a serialized vocabulary (as clients read from shared memory): load it,
 *      and whatever loads must encode and decode without fault. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/model/pretokenize.h"
#include "kernels/model/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct rs_tokenizer *demo, *demo_spaces, *bpe[8];

/* A byte-level BPE vocabulary: the 256 byte characters (id b is byte b), some merges, a
 * user-defined and a control token. */
static struct rs_tokenizer *small_bpe(uint32_t pre)
{
	static char storage[256][4];
	const char *pieces[264];
	uint8_t types[264];
	for (unsigned b = 0, next = 256; b < 256; b++) {
		int printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
		unsigned cp = printable ? b : next++;
		memset(storage[b], 0, 4);
		if (cp < 0x80) {
			storage[b][0] = (char)cp;
		} else {
			storage[b][0] = (char)(0xc0 | (cp >> 6));
			storage[b][1] = (char)(0x80 | (cp & 0x3f));
		}
		pieces[b] = storage[b];
		types[b] = RS_TOKEN_NORMAL;
	}
	static const char *const more[] = { "\xc4\xa0t", "he", "\xc4\xa0the", "in", "aa",
					    "aaa", "<tool>", "<|end|>" };
	static const char *const merges[] = { "\xc4\xa0 t", "h e", "\xc4\xa0t he", "i n",
					      "a a", "aa a" };
	for (unsigned k = 0; k < 8; k++) {
		pieces[256 + k] = more[k];
		types[256 + k] = k == 6 ? RS_TOKEN_USER_DEFINED : k == 7 ? RS_TOKEN_CONTROL :
									  RS_TOKEN_NORMAL;
	}
	struct rs_tokenizer_vocab v = { .n = 264, .pieces = pieces, .types = types, .bos = 263,
					.eos = 263, .unk = -1,
					.flags = pre == RS_PRETOK_LLAMA3 ? RS_TOKENIZER_IGNORE_MERGES : 0,
					.kind = RS_TOKENIZER_BPE, .pre = pre, .n_merges = 6,
					.merges = merges };
	struct rs_tokenizer *tok;
	char err[256];
	if (rs_tokenizer_create(&v, &tok, err, sizeof(err)))
		abort();
	return tok;
}

static void setup(void)
{
	char err[256];
	if (rs_tokenizer_demo(600, &demo, err, sizeof(err)))
		abort();
	/* The same vocabulary spelled as llama2.c's tokenizer.bin does ("▁" as " "). */
	uint32_t n = rs_tokenizer_vocab_size(demo);
	const char **pieces = calloc(n, sizeof(*pieces));
	uint32_t *lens = calloc(n, sizeof(*lens));
	float *scores = calloc(n, sizeof(*scores));
	char *storage = calloc(n, 64);
	for (uint32_t i = 0; i < n; i++) {
		const char *p;
		size_t len;
		rs_tokenizer_piece(demo, i, &p, &len);
		rs_tokenizer_token_info(demo, i, &scores[i], NULL);
		char *dst = storage + 64 * (size_t)i;
		size_t k = 0;
		for (size_t j = 0; j < len && k < 63;) {
			if (len - j >= 3 && memcmp(p + j, "\xe2\x96\x81", 3) == 0) {
				dst[k++] = ' ';
				j += 3;
			} else {
				dst[k++] = p[j++];
			}
		}
		pieces[i] = dst;
		lens[i] = (uint32_t)k;
	}
	struct rs_tokenizer_vocab v = { .n = n, .pieces = pieces, .lens = lens, .scores = scores,
					.bos = 1, .eos = 2, .unk = 0,
					.flags = RS_TOKENIZER_ADD_SPACE_PREFIX };
	if (rs_tokenizer_create(&v, &demo_spaces, err, sizeof(err)))
		abort();
	for (uint32_t k = 0; k < 8; k++)
		bpe[k] = small_bpe(RS_PRETOK_GPT2 + k);
	free(pieces);
	free(lens);
	free(scores);
	free(storage);
}

static void round_trip(const struct rs_tokenizer *tok, const char *text, size_t len)
{
	size_t cap = rs_tokenizer_max_tokens(len);
	uint32_t *ids = malloc(cap * sizeof(*ids));
	char *out = malloc(4 * len + 16);
	int n = rs_tokenizer_encode(tok, text, len, RS_ENCODE_BOS, ids, cap);
	if (n < 1)
		abort(); /* the bound was respected: encoding must succeed */
	int m = rs_tokenizer_decode(tok, ids, (size_t)n, out, 4 * len + 16);
	int has_metaspace = rs_tokenizer_kind(tok) == RS_TOKENIZER_SPM &&
			    memmem(text, len, "\xe2\x96\x81", 3) != NULL;
	if (!has_metaspace && (m != (int)len || memcmp(out, text, len) != 0))
		abort();
	free(ids);
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!demo)
		setup();
	if (size < 1)
		return 0;
	char *rest = malloc(size);
	if (!rest)
		return 0;
	memcpy(rest, data + 1, size - 1);
	if (data[0] % 2 == 0) {
		round_trip(demo, rest, size - 1);
		round_trip(demo_spaces, rest, size - 1);
		round_trip(bpe[(data[0] >> 1) % 8], rest, size - 1);
	} else {
		struct rs_tokenizer *tok;
		if (rs_tokenizer_load_serialized(rest, size - 1, &tok) == 0) {
			uint32_t ids[512];
			char out[16384];
			int n = rs_tokenizer_encode(tok, "once upon a time \xff\xe2\x96\x81", 21,
						    RS_ENCODE_BOS | RS_ENCODE_EOS, ids, 512);
			if (n > 0)
				rs_tokenizer_decode(tok, ids, (size_t)n, out, sizeof(out));
			for (uint32_t i = 0; i < rs_tokenizer_vocab_size(tok) && i < 64; i++)
				rs_tokenizer_decode_token(tok, -1, i, out, sizeof(out));
			rs_tokenizer_free(tok);
		}
	}
	free(rest);
	return 0;
}
