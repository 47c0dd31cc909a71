/* Byte-level BPE on a hand-written vocabulary (no download needed; expected ids and words
 * worked out by hand from the definitions below and the pre-tokenizers' regexes):
 *   - the Unicode classes of a few characters;
 *   - each pre-tokenizer's words for texts that exercise its alternatives;
 *   - merges by rank (ties: leftmost), ignore_merges, USER_DEFINED tokens cut out first,
 *     CONTROL tokens never spelled, decoding back to bytes (a character split between
 *     tokens included);
 *   - the serialized form and the GGUF writer keep the merges;
 *   - malformed vocabularies and GGUF tokenizer metadata are errors, not crashes. */
#include "kernels/model/gguf.h"
#include "kernels/model/model_random.h"
#include "kernels/model/pretokenize.h"
#include "kernels/model/tokenizer.h"
#include "kernels/model/unicode.h"
#include "tests/model_test.h"

/* GPT-2's bytes_to_unicode, written out here from its definition: printable Latin-1
 * stands for itself, every other byte for U+0100 + its rank among those bytes. */
static uint32_t gpt2_char(unsigned b)
{
	unsigned rank = 0;
	for (unsigned x = 0; x < 256; x++) {
		int printable = (x >= '!' && x <= '~') || (x >= 0xa1 && x <= 0xac) || x >= 0xae;
		if (x == b)
			return printable ? b : 256 + rank;
		rank += !printable;
	}
	return 0;
}

static size_t put_utf8(uint32_t cp, char *out)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	out[0] = (char)(0xc0 | (cp >> 6)); /* all of GPT-2's characters are below U+0800 */
	out[1] = (char)(0x80 | (cp & 0x3f));
	return 2;
}

/* The hand vocabulary: ids 0..255 are the bytes (id b spells byte b), then: */
#define G "\xc4\xa0" /* "Ġ", byte 0x20 */
static const struct {
	const char *piece;
	uint8_t type;
	const char *merge; /* the merge that makes it, in rank order, or NULL */
} extra[] = {
    {G "t", RS_TOKEN_NORMAL, G " t"},				/* 256, rank 0 */
    {"he", RS_TOKEN_NORMAL, "h e"},				/* 257, rank 1 */
    {G "the", RS_TOKEN_NORMAL, G "t he"},			/* 258, rank 2 */
    {G "a", RS_TOKEN_NORMAL, G " a"},				/* 259, rank 3 */
    {"in", RS_TOKEN_NORMAL, "i n"},				/* 260, rank 4 */
    {"\xc3\x83\xc2\xa9", RS_TOKEN_NORMAL, "\xc3\x83 \xc2\xa9"}, /* 261 "Ã©" = "é", rank 5 */
    {"<|end|>", RS_TOKEN_CONTROL, NULL},			/* 262 */
    {"<tool>", RS_TOKEN_USER_DEFINED, NULL},			/* 263 */
    {"ab", RS_TOKEN_NORMAL, "a b"},				/* 264, rank 6 */
    {"bc", RS_TOKEN_NORMAL, "b c"},				/* 265, rank 7 */
    {"aa", RS_TOKEN_NORMAL, "a a"},				/* 266, rank 8 */
    {"xyz", RS_TOKEN_NORMAL, NULL},				/* 267: no merge makes it */
    {"<tool>x", RS_TOKEN_USER_DEFINED, NULL},			/* 268: longer, so cut first */
};
#define N_EXTRA (sizeof(extra) / sizeof(extra[0]))
#define N_HAND	(256 + N_EXTRA)

static struct rs_tokenizer *hand_bpe(uint32_t pre, uint32_t flags, const char *bad_merge)
{
	static char bytes[256][4];
	const char *pieces[N_HAND], *merges[N_EXTRA + 1];
	uint8_t types[N_HAND];
	uint32_t n_merges = 0;
	for (unsigned b = 0; b < 256; b++) {
		size_t n = put_utf8(gpt2_char(b), bytes[b]);
		bytes[b][n] = '\0';
		pieces[b] = bytes[b];
		types[b] = RS_TOKEN_NORMAL;
	}
	for (size_t i = 0; i < N_EXTRA; i++) {
		pieces[256 + i] = extra[i].piece;
		types[256 + i] = extra[i].type;
		if (extra[i].merge)
			merges[n_merges++] = extra[i].merge;
	}
	if (bad_merge)
		merges[n_merges++] = bad_merge;
	struct rs_tokenizer_vocab v = {
	    .n = N_HAND,
	    .pieces = pieces,
	    .types = types,
	    .bos = -1,
	    .eos = 262,
	    .unk = -1,
	    .flags = flags,
	    .kind = RS_TOKENIZER_BPE,
	    .pre = pre,
	    .n_merges = n_merges,
	    .merges = merges,
	};
	struct rs_tokenizer *tok = NULL;
	char err[256] = "";
	int ret = rs_tokenizer_create(&v, &tok, err, sizeof(err));
	if (bad_merge) {
		CHECK(ret == -EINVAL && tok == NULL && err[0]);
		printf("  bad merge '%s': %s\n", bad_merge, err);
		return NULL;
	}
	REQUIRE(ret == 0);
	return tok;
}

/* Encode text; the ids must be expected[0..n) (terminated by -1). */
static void expect_ids(const struct rs_tokenizer *tok, const char *text, const int *expected)
{
	uint32_t ids[64];
	int n = rs_tokenizer_encode(tok, text, strlen(text), 0, ids, 64), k = 0;
	while (expected[k] >= 0)
		k++;
	int same = n == k;
	for (int i = 0; same && i < n; i++)
		same = ids[i] == (uint32_t)expected[i];
	if (!same) {
		fprintf(stderr, "'%s': got", text);
		for (int i = 0; i < n; i++)
			fprintf(stderr, " %u", ids[i]);
		fprintf(stderr, " (%d), expected", n);
		for (int i = 0; i < k; i++)
			fprintf(stderr, " %d", expected[i]);
		fprintf(stderr, "\n");
		test_failures++;
		return;
	}
	/* And back. */
	char out[256];
	int len = rs_tokenizer_decode(tok, ids, (size_t)n, out, sizeof(out));
	if (len != (int)strlen(text) || memcmp(out, text, (size_t)len) != 0) {
		fprintf(stderr, "'%s' decodes to '%.*s'\n", text, len > 0 ? len : 0, out);
		test_failures++;
	}
}

#define IDS(...) ((const int[]){__VA_ARGS__, -1})

static void test_encode(void)
{
	struct rs_tokenizer *tok = hand_bpe(RS_PRETOK_GPT2, 0, NULL);
	expect_ids(tok, "the", IDS('t', 257));		 /* t+h is no merge; h+e is */
	expect_ids(tok, " the", IDS(258));		 /* Ġ+t (0), h+e (1), Ġt+he (2) */
	expect_ids(tok, "abc", IDS(264, 'c'));		 /* a+b (6) before b+c (7) */
	expect_ids(tok, "aaa", IDS(266, 'a'));		 /* equal ranks: the leftmost */
	expect_ids(tok, "\xc3\xa9", IDS(261));		 /* é's two bytes merge */
	expect_ids(tok, "x<tool>y", IDS('x', 263, 'y')); /* user-defined: cut out */
	expect_ids(tok, "<tool>xy", IDS(268, 'y'));	 /* the longer one first */
	expect_ids(tok, "<tool><tool>x", IDS(263, 268)); /* the longer one wherever it is */
	expect_ids(tok, "<tool>x<tool>", IDS(268, 263));
	expect_ids(tok, "<|end|>", IDS('<', '|', 'e', 'n', 'd', '|', '>')); /* control: no */
	expect_ids(tok, "a  b", IDS('a', ' ', ' ', 'b'));		    /* "a", " ", " b" */
	expect_ids(tok, " a", IDS(259));
	expect_ids(tok, "xyz", IDS('x', 'y', 'z')); /* no merge makes "xyz" */
	expect_ids(tok, "", IDS(-1) + 1);

	/* A long word (the scratch space grows): 1001 a's are 500 "aa" and an "a". */
	char *long_word = malloc(1002);
	uint32_t *long_ids = malloc(1002 * sizeof(uint32_t));
	memset(long_word, 'a', 1001);
	long_word[1001] = '\0';
	int n_long = rs_tokenizer_encode(tok, long_word, 1001, 0, long_ids, 1002);
	CHECK(n_long == 501 && long_ids[0] == 266 && long_ids[499] == 266 && long_ids[500] == 'a');
	free(long_word);
	free(long_ids);

	/* Decoding: control tokens are nothing, user-defined pieces as they are, and a
	 * character split between tokens comes back whole when they are joined. */
	char out[64];
	uint32_t split[] = {0xc3, 0xa9, 262, 263, 258};
	CHECK(rs_tokenizer_decode(tok, split, 5, out, sizeof(out)) == 12 &&
	      strcmp(out, "\xc3\xa9<tool> the") == 0);
	CHECK(rs_tokenizer_decode_token(tok, -1, 0xc3, out, sizeof(out)) == 1 &&
	      (unsigned char)out[0] == 0xc3);
	CHECK(rs_tokenizer_decode_token(tok, -1, 258, out, 4) == -ENOSPC);
	CHECK(rs_tokenizer_decode_token(tok, -1, 258, out, 5) == 4);
	/* BOS/EOS flags: this vocabulary has EOS only. */
	uint32_t ids[8];
	CHECK(rs_tokenizer_encode(tok, " the", 4, RS_ENCODE_BOS | RS_ENCODE_EOS, ids, 8) == 2 &&
	      ids[0] == 258 && ids[1] == 262);
	CHECK(rs_tokenizer_encode(tok, " the a", 6, 0, ids, 1) == -ENOSPC);
	rs_tokenizer_free(tok);

	/* ignore_merges: a word that is a token is that token. */
	tok = hand_bpe(RS_PRETOK_LLAMA3, RS_TOKENIZER_IGNORE_MERGES, NULL);
	expect_ids(tok, "xyz", IDS(267));
	expect_ids(tok, "the", IDS('t', 257));
	rs_tokenizer_free(tok);
}

/* The words pre splits text into, joined by '|', must be expected. */
static void expect_words(enum rs_pretokenizer pre, const char *text, const char *expected)
{
	char got[256];
	uint8_t starts[32] = {0};
	size_t len = strlen(text), used = 0;
	if (rs_pretokenize_is_sequence(pre))
		rs_pretokenize_split(pre, (const uint8_t *)text, len, starts);
	for (size_t pos = 0; pos < len;) {
		size_t n = 1;
		if (!rs_pretokenize_is_sequence(pre))
			n = rs_pretokenize_next(pre, (const uint8_t *)text + pos, len - pos);
		else
			while (pos + n < len && !(starts[(pos + n) / 8] & (1u << ((pos + n) % 8))))
				n++;
		if (pos)
			got[used++] = '|';
		memcpy(got + used, text + pos, n);
		used += n;
		pos += n;
	}
	got[used] = '\0';
	if (strcmp(got, expected) != 0) {
		fprintf(stderr, "pre-tokenizer %d: '%s' splits as '%s', expected '%s'\n", pre, text,
			got, expected);
		test_failures++;
	}
}

static void test_pretokenizers(void)
{
	/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
	expect_words(RS_PRETOK_GPT2, "Hello world", "Hello| world");
	expect_words(RS_PRETOK_GPT2, "I'm here", "I|'m| here");
	expect_words(RS_PRETOK_GPT2, "I'M", "I|'|M"); /* case-sensitive */
	expect_words(RS_PRETOK_GPT2, "a  b", "a| | b");
	expect_words(RS_PRETOK_GPT2, "x \n y", "x| \n| y");
	expect_words(RS_PRETOK_GPT2, "3.14 12345", "3|.|14| 12345");
	expect_words(RS_PRETOK_GPT2, "end  ", "end|  ");
	expect_words(RS_PRETOK_GPT2, " (hi)!", " (|hi|)!");
	expect_words(RS_PRETOK_GPT2, "caf\xc3\xa9 \xc2\xbd",
		     "caf\xc3\xa9| \xc2\xbd"); /* é L, ½ N */
	/* Llama 3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
	 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
	expect_words(RS_PRETOK_LLAMA3, "12345", "123|45");
	expect_words(RS_PRETOK_LLAMA3, "I'M", "I|'M");
	expect_words(RS_PRETOK_LLAMA3, "Hello\n\nworld", "Hello|\n\n|world");
	expect_words(RS_PRETOK_LLAMA3, " (hi)", " (|hi|)");
	expect_words(RS_PRETOK_LLAMA3, "(hi", "(hi");
	expect_words(RS_PRETOK_LLAMA3, "!!\n\nx", "!!\n\n|x");
	expect_words(RS_PRETOK_LLAMA3, "a \n b", "a| \n| b");
	expect_words(RS_PRETOK_LLAMA3, "\tx", "\tx");
	expect_words(RS_PRETOK_LLAMA3, "4 \xc2\xbd", "4| |\xc2\xbd");
	/* Qwen2: Llama 3's with \p{N} one at a time. */
	expect_words(RS_PRETOK_QWEN2, "12345", "1|2|3|4|5");
	/* Qwen3.5: marks count as letters (e, U+0301 combining acute, x). */
	expect_words(RS_PRETOK_QWEN2, "e\xcc\x81x 12", "e|\xcc\x81x| |1|2");
	expect_words(RS_PRETOK_QWEN35, "e\xcc\x81x 12", "e\xcc\x81x| |1|2");
	expect_words(RS_PRETOK_QWEN35, "!\xcc\x81", "!\xcc\x81");
	/* DeepSeek Coder: [\r\n], then \s?\p{L}+, \s?\p{P}+, [一-龥ࠀ-一가-퟿]+, \p{N} in
	 * turn, each within the pieces the previous left (日本 are letters, so \s?\p{L}+ takes
	 * 日本x whole before the CJK range splits it). */
	expect_words(RS_PRETOK_DEEPSEEK_CODER, "a1 b\n\xe6\x97\xa5\xe6\x9c\xacx",
		     "a|1| b|\n|\xe6\x97\xa5\xe6\x9c\xac|x");
	expect_words(RS_PRETOK_DEEPSEEK_CODER, "x, y", "x|,| y");
	expect_words(RS_PRETOK_DEEPSEEK_CODER, " ,,a", " ,,|a");
	/* DeepSeek LLM: [\r\n], \s?[cased letters]+, \s?[!-/:-~...]+, \s+$, the CJK range,
	 * \p{N}+ (U+01BB is a letter of no case: not one of its letters). */
	expect_words(RS_PRETOK_DEEPSEEK_LLM, "Hi  there\n", "Hi| | there|\n");
	expect_words(RS_PRETOK_DEEPSEEK_LLM, "ab  ", "ab|  ");
	expect_words(RS_PRETOK_DEEPSEEK_LLM, "x 123", "x| |123");
	expect_words(RS_PRETOK_DEEPSEEK_LLM,
		     "a\xc6\xbb"
		     "b",
		     "a|\xc6\xbb|b");
	/* Falcon: [\p{P}\$\+<=>\^~\|`]+, then GPT-2's, then [0-9][0-9][0-9], each within the
	 * pieces the previous left. */
	expect_words(RS_PRETOK_FALCON, "Hello, world!!", "Hello|,| world|!!");
	expect_words(RS_PRETOK_FALCON, "12345", "123|45");
	expect_words(RS_PRETOK_FALCON, "a$b (x", "a|$|b| |(|x");
	/* StarCoder: digits apart, then GPT-2's within the stretches between them. */
	expect_words(RS_PRETOK_DIGITS_GPT2, "a12 b", "a|1|2| b");
	expect_words(RS_PRETOK_DIGITS_GPT2, "x  3", "x|  |3");

	CHECK(rs_unicode_flags(0xe9) == RS_UNICODE_LETTER);    /* é */
	CHECK(rs_unicode_flags(0x65e5) == RS_UNICODE_LETTER);  /* 日 */
	CHECK(rs_unicode_flags(0xbd) == RS_UNICODE_NUMBER);    /* ½ */
	CHECK(rs_unicode_flags(0x3000) == RS_UNICODE_SPACE);   /* ideographic space */
	CHECK(rs_unicode_flags(0xa0) == RS_UNICODE_SPACE);     /* no-break space */
	CHECK(rs_unicode_flags(0x200b) == 0);		       /* zero width space: Cf */
	CHECK(rs_unicode_flags(0x301) == RS_UNICODE_MARK);     /* combining acute */
	CHECK(rs_unicode_flags(0x20ac) == RS_UNICODE_SYMBOL);  /* € */
	CHECK(rs_unicode_flags(0x1f600) == RS_UNICODE_SYMBOL); /* 😀 */
	CHECK(rs_unicode_flags(0xe000) == 0);		       /* private use */
	/* The ASCII fast path agrees with the table. */
	for (uint32_t cp = 0; cp < 0x80; cp++) {
		uint32_t lo = 0, hi = rs_unicode_n_runs;
		while (hi - lo > 1) {
			uint32_t mid = (lo + hi) / 2;
			if ((rs_unicode_runs[mid] >> 8) <= cp)
				lo = mid;
			else
				hi = mid;
		}
		CHECK(rs_unicode_flags(cp) == (rs_unicode_runs[lo] & 0xff));
	}
	uint32_t cp;
	CHECK(rs_utf8_decode((const uint8_t *)"\xe2\x82\xac", 3, &cp) == 3 && cp == 0x20ac);
	CHECK(rs_utf8_decode((const uint8_t *)"\xe2\x82", 2, &cp) == 1 && cp == RS_UNICODE_INVALID);
	CHECK(rs_utf8_decode((const uint8_t *)"\xc0\x80", 2, &cp) == 1 && cp == RS_UNICODE_INVALID);
	CHECK(rs_utf8_decode((const uint8_t *)"\xed\xa0\x80", 3, &cp) == 1);
	/* Invalid bytes go through the BPE path as bytes and come back. */
	struct rs_tokenizer *tok = hand_bpe(RS_PRETOK_LLAMA3, 0, NULL);
	expect_ids(tok, "a\xff\xc3 b", IDS('a', 0xff, 0xc3, ' ', 'b'));
	rs_tokenizer_free(tok);
}

/* The serialized form and a GGUF file keep everything encode needs. */
static void test_round_trips(void)
{
	struct rs_tokenizer *tok = hand_bpe(RS_PRETOK_QWEN2, RS_TOKENIZER_ADD_EOS, NULL), *copy;
	static const char text[] = " the abc<tool>x aaa 123 \xc3\xa9!";
	uint32_t ids[64], ids2[64];
	int n = rs_tokenizer_encode(tok, text, sizeof(text) - 1, 0, ids, 64);
	REQUIRE(n > 0);

	size_t size = rs_tokenizer_serialized_size(tok);
	uint8_t *buf = malloc(size);
	REQUIRE(rs_tokenizer_serialize(tok, buf, size) == (int64_t)size);
	REQUIRE(rs_tokenizer_load_serialized(buf, size, &copy) == 0);
	CHECK(rs_tokenizer_kind(copy) == RS_TOKENIZER_BPE &&
	      rs_tokenizer_pretokenizer(copy) == RS_PRETOK_QWEN2 &&
	      rs_tokenizer_n_merges(copy) == 9 && rs_tokenizer_flags(copy) == RS_TOKENIZER_ADD_EOS);
	CHECK(rs_tokenizer_encode(copy, text, sizeof(text) - 1, 0, ids2, 64) == n &&
	      memcmp(ids, ids2, (size_t)n * 4) == 0);
	rs_tokenizer_free(copy);
	/* A merge naming a token that does not exist, or making one that does not. */
	uint32_t merges_at = (uint32_t)(size - 8 * 9);
	uint32_t bad = N_HAND;
	memcpy(buf + merges_at, &bad, 4);
	CHECK(rs_tokenizer_load_serialized(buf, size, &copy) == -EINVAL);
	bad = 'x'; /* "x" + "t" is no token */
	memcpy(buf + merges_at, &bad, 4);
	CHECK(rs_tokenizer_load_serialized(buf, size, &copy) == -EINVAL);
	uint32_t pre = RS_PRETOK_COUNT; /* the header's pre-tokenizer field */
	REQUIRE(rs_tokenizer_serialize(tok, buf, size) == (int64_t)size);
	memcpy(buf + 40, &pre, 4);
	CHECK(rs_tokenizer_load_serialized(buf, size, &copy) == -EINVAL);
	free(buf);

	/* Through a GGUF model file. */
	char path[512], err[256];
	struct rs_model_config cfg = {.dim = 16,
				      .hidden_dim = 32,
				      .n_layers = 1,
				      .n_heads = 2,
				      .n_kv_heads = 1,
				      .head_dim = 8,
				      .rope_dim = 8,
				      .vocab_size = N_HAND,
				      .max_seq_len = 32,
				      .rope_theta = 10000.0f,
				      .norm_eps = 1e-5f};
	struct rs_model *model;
	REQUIRE(rs_model_random(&cfg, RS_DTYPE_F32, 3, false, &model) == 0);
	test_path(path, sizeof(path), "bpe.gguf");
	REQUIRE(rs_gguf_write_model(path, model, tok, err, sizeof(err)) == 0);
	rs_model_free(model);
	int ret = rs_tokenizer_load_file(path, 0, &copy, err, sizeof(err));
	if (ret)
		fprintf(stderr, "%s\n", err);
	REQUIRE(ret == 0);
	CHECK(rs_tokenizer_kind(copy) == RS_TOKENIZER_BPE &&
	      rs_tokenizer_pretokenizer(copy) == RS_PRETOK_QWEN2 &&
	      rs_tokenizer_n_merges(copy) == 9 && rs_tokenizer_eos(copy) == 262 &&
	      rs_tokenizer_bos(copy) == -1 && rs_tokenizer_flags(copy) == RS_TOKENIZER_ADD_EOS);
	CHECK(rs_tokenizer_encode(copy, text, sizeof(text) - 1, 0, ids2, 64) == n &&
	      memcmp(ids, ids2, (size_t)n * 4) == 0);
	rs_tokenizer_free(copy);
	rs_tokenizer_free(tok);
}

/* A GGUF file with the hand vocabulary's tokenizer keys, one of them broken by how. */
enum breakage {
	FINE,
	NO_MERGES,
	MERGES_NOT_STRINGS,
	MERGE_UNKNOWN_TOKEN,
	MERGE_NO_SPACE,
	NO_PRE,
	UNKNOWN_PRE,
	PRE_NOT_STRING,
	BOS_OUT_OF_RANGE,
	BAD_TOKEN_TYPE,
	ADD_BOS_NOT_BOOL,
	N_BREAKAGES
};

static int load_broken(enum breakage how, char *err, size_t err_size)
{
	static char bytes[256][4];
	const char *pieces[N_HAND], *merges[N_EXTRA];
	int32_t types[N_HAND];
	uint32_t n_merges = 0;
	for (unsigned b = 0; b < 256; b++) {
		bytes[b][put_utf8(gpt2_char(b), bytes[b])] = '\0';
		pieces[b] = bytes[b];
		types[b] = RS_TOKEN_NORMAL;
	}
	for (size_t i = 0; i < N_EXTRA; i++) {
		pieces[256 + i] = extra[i].piece;
		types[256 + i] = extra[i].type;
		if (extra[i].merge)
			merges[n_merges++] = extra[i].merge;
	}
	if (how == MERGE_UNKNOWN_TOKEN)
		merges[3] = "q zz";
	if (how == MERGE_NO_SPACE)
		merges[3] = "qz";
	if (how == BAD_TOKEN_TYPE)
		types[7] = 9;
	struct rs_gguf_writer *w;
	char path[512];
	REQUIRE(rs_gguf_writer_create(&w) == 0);
	int ret = rs_gguf_writer_set_string(w, "tokenizer.ggml.model", "gpt2");
	ret = ret
		  ?: rs_gguf_writer_set_string_array(w, "tokenizer.ggml.tokens", pieces, NULL,
						     N_HAND);
	ret = ret
		  ?: rs_gguf_writer_set_array(w, "tokenizer.ggml.token_type", RS_GGUF_TYPE_INT32,
					      types, N_HAND);
	if (how == MERGES_NOT_STRINGS)
		ret = ret
			  ?: rs_gguf_writer_set_array(w, "tokenizer.ggml.merges",
						      RS_GGUF_TYPE_INT32, types, 4);
	else if (how != NO_MERGES)
		ret = ret
			  ?: rs_gguf_writer_set_string_array(w, "tokenizer.ggml.merges", merges,
							     NULL, n_merges);
	if (how == UNKNOWN_PRE)
		ret = ret ?: rs_gguf_writer_set_string(w, "tokenizer.ggml.pre", "no-such-pre");
	else if (how == PRE_NOT_STRING)
		ret = ret ?: rs_gguf_writer_set_u32(w, "tokenizer.ggml.pre", 2);
	else if (how != NO_PRE)
		ret = ret ?: rs_gguf_writer_set_string(w, "tokenizer.ggml.pre", "llama-bpe");
	ret = ret
		  ?: rs_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id",
					    how == BOS_OUT_OF_RANGE ? N_HAND : 262);
	if (how == ADD_BOS_NOT_BOOL)
		ret = ret ?: rs_gguf_writer_set_u32(w, "tokenizer.ggml.add_bos_token", 1);
	test_path(path, sizeof(path), "broken.gguf");
	ret = ret ?: rs_gguf_writer_write(w, path);
	rs_gguf_writer_free(w);
	REQUIRE(ret == 0);
	struct rs_tokenizer *tok = NULL;
	ret = rs_tokenizer_load_file(path, 0, &tok, err, err_size);
	if (how == FINE && ret == 0) {
		/* llama-bpe: ignore_merges, and BOS first by default. */
		CHECK(rs_tokenizer_flags(tok) ==
		      (RS_TOKENIZER_IGNORE_MERGES | RS_TOKENIZER_ADD_BOS));
		CHECK(rs_tokenizer_bos(tok) == 262 && rs_tokenizer_eos(tok) == -1);
	}
	rs_tokenizer_free(tok);
	return ret;
}

static void test_malformed(void)
{
	char err[512];
	hand_bpe(RS_PRETOK_GPT2, 0, "x y");  /* makes "xy", no token */
	hand_bpe(RS_PRETOK_GPT2, 0, "x zz"); /* "zz" is no token */
	hand_bpe(RS_PRETOK_GPT2, 0, "xy");   /* no space */
	hand_bpe(RS_PRETOK_GPT2, 0, " x");   /* a space first is no separator */
	/* No pre-tokenizer, an unknown one, an unknown kind. */
	const char *one = "a";
	struct rs_tokenizer_vocab v = {
	    .n = 1, .pieces = &one, .bos = -1, .eos = -1, .unk = -1, .kind = RS_TOKENIZER_BPE};
	struct rs_tokenizer *tok;
	CHECK(rs_tokenizer_create(&v, &tok, err, sizeof(err)) == -EINVAL);
	v.pre = RS_PRETOK_COUNT;
	CHECK(rs_tokenizer_create(&v, &tok, err, sizeof(err)) == -EINVAL);
	v.pre = RS_PRETOK_GPT2;
	v.kind = 2;
	CHECK(rs_tokenizer_create(&v, &tok, err, sizeof(err)) == -EINVAL);
	/* A vocabulary without byte tokens: unknown bytes fail, or become <unk>. */
	v.kind = RS_TOKENIZER_BPE;
	REQUIRE(rs_tokenizer_create(&v, &tok, err, sizeof(err)) == 0);
	uint32_t ids[8];
	CHECK(rs_tokenizer_encode(tok, "ab", 2, 0, ids, 8) == -EILSEQ);
	rs_tokenizer_free(tok);
	v.unk = 0;
	REQUIRE(rs_tokenizer_create(&v, &tok, err, sizeof(err)) == 0);
	CHECK(rs_tokenizer_encode(tok, "ab", 2, 0, ids, 8) == 2 && ids[0] == 0 && ids[1] == 0);
	rs_tokenizer_free(tok);

	for (int how = FINE; how < N_BREAKAGES; how++) {
		err[0] = '\0';
		int ret = load_broken((enum breakage)how, err, sizeof(err));
		if (how == FINE) {
			CHECK(ret == 0);
			continue;
		}
		if (ret != -EINVAL || !err[0]) {
			fprintf(stderr, "breakage %d: ret %d (%s)\n", how, ret, err);
			test_failures++;
		} else {
			printf("  breakage %d: %s\n", how,
			       strchr(err, ':') ? strchr(err, ':') + 2 : err);
		}
	}
}

int main(void)
{
	test_dir_create();
	test_encode();
	test_pretokenizers();
	test_round_trips();
	test_malformed();
	return test_result("model_tokenizer_bpe");
}
