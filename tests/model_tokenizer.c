/* Tokenizer: merges chosen by score on a hand-written vocabulary (expected ids worked out by
 * hand below), byte fallback, BOS/EOS, decoding, round trips over random text with UTF-8
 * and stray bytes, and the serialized vocabulary (round trip; corrupt buffers rejected). */
#include <math.h>

#include "kernels/model/tokenizer.h"
#include "tests/model_test.h"

#define SP "\xe2\x96\x81" /* U+2581 */

/* The hand vocabulary: <unk> 0, <s> 1, </s> 2, <0x00>..<0xFF> 3..258 (byte b is 3 + b),
 * then these pieces from id 259 (space is "▁" in SentencePiece form, " " in llama2.c form). */
static const struct {
	const char *piece;
	float score;
} hand[] = {
	{ SP, -10 },       /* 259 */
	{ "a", -10 },      /* 260 */
	{ "b", -10 },      /* 261 */
	{ "c", -10 },      /* 262 */
	{ "ab", -1 },      /* 263 */
	{ "bc", -0.5f },   /* 264 */
	{ SP "a", -3 },    /* 265 */
	{ "abc", -2 },     /* 266 */
	{ SP "ab", -4 },   /* 267 */
	{ "\xc3\xa9", -10 }, /* 268 "é" */
	{ SP SP, -5 },     /* 269 */
	{ "ba", -1 },      /* 270: ties with "ab" */
};
#define N_HAND (259 + (int)(sizeof(hand) / sizeof(hand[0])))

/* Build the hand vocabulary; metaspace 0 spells the space " " as llama2.c does. */
static struct rs_tokenizer *hand_tokenizer(int metaspace)
{
	static char storage[N_HAND][16];
	const char *pieces[N_HAND];
	float scores[N_HAND];
	strcpy(storage[0], "<unk>");
	strcpy(storage[1], "<s>");
	strcpy(storage[2], "</s>");
	for (int b = 0; b < 256; b++)
		snprintf(storage[3 + b], 16, "<0x%02X>", b);
	for (int i = 0; i < N_HAND; i++)
		scores[i] = 0;
	for (int i = 259; i < N_HAND; i++) {
		const char *src = hand[i - 259].piece;
		char *dst = storage[i];
		while (*src) {
			if (!metaspace && memcmp(src, SP, 3) == 0) {
				*dst++ = ' ';
				src += 3;
			} else {
				*dst++ = *src++;
			}
		}
		*dst = '\0';
		scores[i] = hand[i - 259].score;
	}
	for (int i = 0; i < N_HAND; i++)
		pieces[i] = storage[i];
	struct rs_tokenizer_vocab v = {
		.n = N_HAND, .pieces = pieces, .scores = scores, .bos = 1, .eos = 2, .unk = 0,
		.flags = RS_TOKENIZER_ADD_SPACE_PREFIX | (metaspace ? RS_TOKENIZER_METASPACE : 0),
	};
	struct rs_tokenizer *tok;
	char err[256];
	int ret = rs_tokenizer_create(&v, &tok, err, sizeof(err));
	if (ret)
		fprintf(stderr, "create: %s\n", err);
	REQUIRE(ret == 0);
	return tok;
}

static void expect_ids_at(const struct rs_tokenizer *tok, const char *text, size_t len,
			  unsigned flags, const uint32_t *want, int n_want, int line)
{
	uint32_t ids[64];
	int n = rs_tokenizer_encode(tok, text, len, flags, ids, 64);
	if (n != n_want || memcmp(ids, want, sizeof(ids[0]) * (size_t)(n > 0 ? n : 0)) != 0) {
		fprintf(stderr, "line %d: encode '%.*s': got %d ids:", line, (int)len, text, n);
		for (int i = 0; i < n; i++)
			fprintf(stderr, " %u", ids[i]);
		fprintf(stderr, "\n");
		test_failures++;
	}
}
#define expect_ids(tok, text, flags, ...)                                                     \
	do {                                                                                  \
		const uint32_t want_[] = { __VA_ARGS__ };                                     \
		expect_ids_at(tok, text, strlen(text), flags, want_,                          \
			      (int)(sizeof(want_) / sizeof(want_[0])), __LINE__);              \
	} while (0)

/* Worked by hand (the text is normalized to "▁" + text, spaces to "▁"):
 *  "abc" -> [▁][a][b][c]; pairs ▁a -3, ab -1, bc -0.5: bc wins -> [▁][a][bc];
 *           pairs ▁a -3, abc -2: abc wins -> [▁][abc]; "▁abc" is no piece.  = 259 266
 *  "ab"  -> [▁][a][b]; ▁a -3, ab -1: ab -> [▁][ab]; ▁ab -4 -> [▁ab].     = 267
 *  "cab" -> [▁][c][a][b]; only ab -> [▁][c][ab]; "cab", "▁c" no pieces.   = 259 262 263
 *  "bab" -> [▁][b][a][b]; ba -1 and ab -1 tie: the leftmost, ba -> [▁][ba][b];
 *           "▁ba", "bab" no pieces.                                        = 259 270 261
 *  "a  b" -> [▁][a][▁][▁][b]; ▁a -3 beats ▁▁ -5 -> [▁a][▁][▁][b]; "▁a▁" no piece;
 *           then ▁▁ -> [▁a][▁▁][b].                                        = 265 269 261
 *  "xé"  -> [▁][x][é]: no pair is a piece; x is no piece: byte 0x78 = 123; é = 268
 *                                                                          = 259 123 268
 *  "ü"   -> [▁][ü]: ü (c3 bc) is no piece: bytes 3+0xc3, 3+0xbc            = 259 198 191
 *  "\xff" -> an invalid byte is a character of its own: byte token         = 259 258 */
static void test_hand_merges(int metaspace)
{
	struct rs_tokenizer *tok = hand_tokenizer(metaspace);
	expect_ids(tok, "abc", 0, 259, 266);
	expect_ids(tok, "ab", 0, 267);
	expect_ids(tok, "cab", 0, 259, 262, 263);
	expect_ids(tok, "bab", 0, 259, 270, 261);
	expect_ids(tok, "a  b", 0, 265, 269, 261);
	expect_ids(tok, "x\xc3\xa9", 0, 259, 123, 268);
	expect_ids(tok, "\xc3\xbc", 0, 259, 198, 191);
	expect_ids(tok, "\xff", 0, 259, 258);
	expect_ids(tok, "ab", RS_ENCODE_BOS | RS_ENCODE_EOS, 1, 267, 2);
	expect_ids(tok, "", RS_ENCODE_BOS, 1);
	expect_ids(tok, "", RS_ENCODE_BOS | RS_ENCODE_EOS, 1, 2);
	uint32_t ids[8];
	CHECK(rs_tokenizer_encode(tok, "", 0, 0, ids, 8) == 0);
	/* Spelling a control or byte token does not produce it. A lead byte without its
	 * continuation bytes is a character of its own and does not swallow what follows. */
	expect_ids(tok, "\xe5 a", 0, 259, 3 + 0xe5, 265);
	expect_ids(tok, "<s>", 0, 259, 3 + '<', 3 + 's', 3 + '>');
	/* A NUL inside the text is a byte like any other. */
	expect_ids_at(tok, "a\0b", 3, 0, (const uint32_t[]){ 265, 3, 261 }, 3, __LINE__);
	CHECK(rs_tokenizer_encode(tok, "abc", 3, RS_ENCODE_BOS, ids, 2) == -ENOSPC);
	CHECK(rs_tokenizer_encode(tok, "abc", 3, RS_ENCODE_BOS, ids, 3) == 3);

	/* Decoding: the space after BOS / at the start is dropped, control tokens are empty,
	 * byte tokens give bytes. */
	char buf[64];
	CHECK(rs_tokenizer_decode(tok, (const uint32_t[]){ 1, 267, 2 }, 3, buf, sizeof(buf)) == 2);
	CHECK(strcmp(buf, "ab") == 0);
	CHECK(rs_tokenizer_decode(tok, (const uint32_t[]){ 265, 269, 261 }, 3, buf, 64) == 4);
	CHECK(strcmp(buf, "a  b") == 0);
	CHECK(rs_tokenizer_decode(tok, (const uint32_t[]){ 259, 198, 191 }, 3, buf, 64) == 2);
	CHECK(strcmp(buf, "\xc3\xbc") == 0);
	CHECK(rs_tokenizer_decode_token(tok, 267, 265, buf, sizeof(buf)) == 2);
	CHECK(strcmp(buf, " a") == 0);
	CHECK(rs_tokenizer_decode_token(tok, 1, 265, buf, sizeof(buf)) == 1);
	CHECK(strcmp(buf, "a") == 0);
	CHECK(rs_tokenizer_decode_token(tok, 5, 3 + 'Q', buf, sizeof(buf)) == 1);
	CHECK(strcmp(buf, "Q") == 0);
	CHECK(rs_tokenizer_decode_token(tok, 5, 0, buf, sizeof(buf)) == 0);
	CHECK(rs_tokenizer_decode_token(tok, 5, N_HAND, buf, sizeof(buf)) == -EINVAL);
	CHECK(rs_tokenizer_decode_token(tok, 5, UINT32_MAX, buf, sizeof(buf)) == -EINVAL);
	CHECK(rs_tokenizer_decode_token(tok, 267, 265, buf, 2) == -ENOSPC);
	CHECK(rs_tokenizer_decode_token(tok, 267, 265, buf, 3) == 2);
	CHECK(rs_tokenizer_decode(tok, (const uint32_t[]){ 260, 9999 }, 2, buf, 64) == -EINVAL);
	CHECK(rs_tokenizer_find(tok, "ab", 2) == 263);
	CHECK(rs_tokenizer_find(tok, "<0x41>", 6) == 3 + 0x41);
	CHECK(rs_tokenizer_find(tok, "zz", 2) == -ENOENT);
	rs_tokenizer_free(tok);
}

/* Deterministic text generator: letters, spaces (runs too), punctuation, multi-byte UTF-8
 * (2, 3 and 4 bytes), control characters and stray bytes. */
static uint64_t rng_state = 0x5eed;
static uint32_t rng(void)
{
	rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
	return (uint32_t)(rng_state >> 33);
}

static size_t random_text(char *buf, size_t max)
{
	static const char *const atoms[] = {
		"the", " ", "  ", "little", "girl", "a", "e", "Q", ",", ".", "\n", "\t",
		"\xc3\xa9", "\xe4\xb8\xad\xe6\x96\x87", "\xf0\x9f\x98\x80", "'", "park", "\x01",
	};
	size_t n = 0, atoms_n = sizeof(atoms) / sizeof(atoms[0]);
	size_t words = rng() % 20;
	for (size_t w = 0; w < words; w++) {
		if (rng() % 8 == 0) {
			uint8_t b = (uint8_t)(0x80 + rng() % 0x80); /* a stray byte */
			if (n + 1 < max)
				buf[n++] = (char)b;
			continue;
		}
		const char *a = atoms[rng() % atoms_n];
		size_t len = strlen(a);
		if (n + len < max) {
			memcpy(buf + n, a, len);
			n += len;
		}
	}
	return n;
}

static void test_round_trip(const struct rs_tokenizer *tok, const char *name)
{
	char text[256], out[1024];
	uint32_t ids[1024];
	for (int i = 0; i < 500; i++) {
		size_t len = random_text(text, sizeof(text));
		int n = rs_tokenizer_encode(tok, text, len, RS_ENCODE_BOS, ids, 1024);
		CHECK(n >= 1 && (size_t)n <= rs_tokenizer_max_tokens(len) && ids[0] == 1);
		if (n < 1)
			continue;
		int m = rs_tokenizer_decode(tok, ids, (size_t)n, out, sizeof(out));
		if (m != (int)len || memcmp(out, text, len) != 0) {
			fprintf(stderr, "%s: round trip of '%.*s' gave %d '%.*s'\n", name, (int)len,
				text, m, m > 0 ? m : 0, out);
			test_failures++;
		}
		/* Streaming decode, token by token, gives the same bytes. */
		size_t used = 0;
		for (int k = 1; k < n; k++) {
			int r = rs_tokenizer_decode_token(tok, (int32_t)ids[k - 1], ids[k], out + used,
							  sizeof(out) - used);
			CHECK(r >= 0);
			used += r > 0 ? (size_t)r : 0;
		}
		CHECK(used == len && memcmp(out, text, len) == 0);
	}
}

static void check_same(const struct rs_tokenizer *a, const struct rs_tokenizer *b)
{
	CHECK(rs_tokenizer_vocab_size(a) == rs_tokenizer_vocab_size(b));
	CHECK(rs_tokenizer_bos(a) == rs_tokenizer_bos(b) && rs_tokenizer_eos(a) == rs_tokenizer_eos(b));
	CHECK(rs_tokenizer_unk(a) == rs_tokenizer_unk(b) &&
	      rs_tokenizer_flags(a) == rs_tokenizer_flags(b));
	for (uint32_t i = 0; i < rs_tokenizer_vocab_size(a); i++) {
		const char *pa, *pb;
		size_t la, lb;
		float sa, sb;
		uint8_t ta, tb;
		CHECK(rs_tokenizer_piece(a, i, &pa, &la) == 0 && rs_tokenizer_piece(b, i, &pb, &lb) == 0);
		CHECK(la == lb && memcmp(pa, pb, la) == 0);
		rs_tokenizer_token_info(a, i, &sa, &ta);
		rs_tokenizer_token_info(b, i, &sb, &tb);
		CHECK(sa == sb && ta == tb);
	}
}

/* Load a corrupt copy; it must fail (or, for a harmless change, succeed) without a crash. */
static int load_copy(const uint8_t *buf, size_t size)
{
	uint8_t *copy = malloc(size ? size : 1);
	struct rs_tokenizer *tok;
	memcpy(copy, buf, size);
	int ret = rs_tokenizer_load_serialized(copy, size, &tok);
	free(copy);
	if (ret == 0) {
		/* Whatever loaded must work. */
		uint32_t ids[64];
		char out[512];
		int n = rs_tokenizer_encode(tok, "hello there", 11, RS_ENCODE_BOS, ids, 64);
		if (n > 0)
			rs_tokenizer_decode(tok, ids, (size_t)n, out, sizeof(out));
		rs_tokenizer_free(tok);
	} else {
		CHECK(tok == NULL);
	}
	return ret;
}

static void test_serialized(void)
{
	struct rs_tokenizer *tok, *back;
	char err[256];
	REQUIRE(rs_tokenizer_demo(700, &tok, err, sizeof(err)) == 0);
	size_t size = rs_tokenizer_serialized_size(tok);
	uint8_t *buf = malloc(size + 8);
	REQUIRE(buf);
	CHECK(rs_tokenizer_serialize(tok, buf, size - 1) == -ENOSPC);
	CHECK(rs_tokenizer_serialize(tok, buf, size + 8) == (int64_t)size);
	CHECK(memcmp(buf, "RSTK", 4) == 0);
	REQUIRE(rs_tokenizer_load_serialized(buf, size, &back) == 0);
	check_same(tok, back);
	test_round_trip(back, "serialized");
	rs_tokenizer_free(back);

	/* Layout (see tokenizer.h): header 48, scores 4n, offsets 4(n+1), types n, pad, blob,
	 * pad, merges (none here). */
	uint32_t n = 700;
	size_t offsets = 48 + 4 * (size_t)n, types = offsets + 4 * ((size_t)n + 1);
	for (size_t len = 0; len < size; len += len < 200 ? 1 : 97)
		CHECK(load_copy(buf, len) == -EINVAL);
	CHECK(load_copy(buf, size - 1) == -EINVAL);
	uint8_t *longer = calloc(1, size + 1);
	memcpy(longer, buf, size);
	CHECK(load_copy(longer, size + 1) == -EINVAL);
	free(longer);

	const struct {
		size_t off;
		uint32_t value;
	} bad[] = {
		{ 0, 0x4b545353 },           /* magic */
		{ 4, 1 },                    /* version 1 (no merges) */
		{ 4, 3 },                    /* version from the future */
		{ 8, 40 },                   /* header size */
		{ 12, 0 },                   /* n = 0 */
		{ 12, 701 },                 /* n off by one: sizes no longer match */
		{ 12, 0xffffffff },          /* n absurd */
		{ 16, 0x80 },                /* unknown flag */
		{ 20, 700 },                 /* bos out of range */
		{ 24, (uint32_t)-2 },        /* eos below -1 */
		{ 32, 0xffffffff },          /* blob size absurd */
		{ offsets, 1 },              /* offsets[0] != 0 */
		{ offsets + 4 * 100, 0xfffffff0 }, /* offset beyond the blob */
		{ offsets + 4 * 700, 0 },    /* offsets[n] != blob size */
		{ types, 7 },                /* token type 7 */
		{ types + 5, 0x00000003 },   /* byte token 5 ("<0x02>") typed CONTROL: allowed */
		{ 36, 2 },                   /* unknown kind */
		{ 40, 1 },                   /* a pre-tokenizer for SentencePiece */
		{ 44, 1 },                   /* merges for SentencePiece (and sizes no longer match) */
		{ 48, 0x7fc00000 },          /* NaN score */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint8_t *copy = malloc(size);
		memcpy(copy, buf, size);
		memcpy(copy + bad[i].off, &bad[i].value, 4);
		int ret = load_copy(copy, size);
		if (bad[i].off == types + 5)
			CHECK(ret == 0);
		else if (ret != -EINVAL) {
			fprintf(stderr, "corruption %zu at %zu: ret %d\n", i, bad[i].off, ret);
			test_failures++;
		}
		free(copy);
	}
	/* Offsets decreasing: piece 10 would have a negative length. */
	uint8_t *copy = malloc(size);
	memcpy(copy, buf, size);
	uint32_t o11;
	memcpy(&o11, copy + offsets + 4 * 11, 4);
	uint32_t o10 = o11 + 1;
	memcpy(copy + offsets + 4 * 10, &o10, 4);
	CHECK(load_copy(copy, size) == -EINVAL);
	/* Random single-byte corruptions: whatever happens, no crash, and a loaded tokenizer
	 * works (load_copy exercises it). */
	for (int i = 0; i < 3000; i++) {
		memcpy(copy, buf, size);
		copy[rng() % size] = (uint8_t)rng();
		load_copy(copy, size);
	}
	free(copy);
	free(buf);
	rs_tokenizer_free(tok);
}

static void test_create_errors(void)
{
	const char *pieces[4] = { "<unk>", "<s>", "</s>", "x" };
	uint8_t types[4] = { RS_TOKEN_UNKNOWN, RS_TOKEN_CONTROL, RS_TOKEN_CONTROL, RS_TOKEN_BYTE };
	struct rs_tokenizer_vocab v = { .n = 4, .pieces = pieces, .bos = 1, .eos = 2, .unk = 0 };
	struct rs_tokenizer *tok;
	char err[256] = "";
	REQUIRE(rs_tokenizer_create(&v, &tok, err, sizeof(err)) == 0);
	/* No byte tokens, no dummy prefix (flags 0): unknown characters become <unk>. */
	expect_ids(tok, "xy", 0, 3, 0);
	rs_tokenizer_free(tok);
	v.types = types;
	CHECK(rs_tokenizer_create(&v, &tok, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "byte token 3") != NULL);
	v.types = NULL;
	v.bos = 4;
	CHECK(rs_tokenizer_create(&v, &tok, err, sizeof(err)) == -EINVAL);
	v.bos = 1;
	v.n = 0;
	CHECK(rs_tokenizer_create(&v, &tok, err, sizeof(err)) == -EINVAL);
	/* Without <unk> and byte tokens, an unknown character cannot be encoded. */
	v.n = 4;
	v.unk = -1;
	REQUIRE(rs_tokenizer_create(&v, &tok, err, sizeof(err)) == 0);
	uint32_t ids[8];
	CHECK(rs_tokenizer_encode(tok, "y", 1, 0, ids, 8) == -EILSEQ);
	rs_tokenizer_free(tok);
}

int main(void)
{
	test_hand_merges(1);
	test_hand_merges(0);
	struct rs_tokenizer *demo;
	char err[256];
	REQUIRE(rs_tokenizer_demo(512, &demo, err, sizeof(err)) == 0);
	test_round_trip(demo, "demo");
	rs_tokenizer_free(demo);
	test_serialized();
	test_create_errors();
	return test_result("model_tokenizer");
}
