/* libringserve's text API against the engine's own tokenizer, through a daemon serving a
 * random model whose vocabulary has multi-character pieces, UTF-8 pieces ("é", "▁日本",
 * "😀") and byte fallback for everything else (other CJK, other emoji):
 *   - rs_tokenize gives the engine's ids (BOS as the model expects), sizes its answer;
 *   - the incremental detokenizer fed one id at a time (and in random splits) gives
 *     exactly the bytes of decoding all at once, and every chunk is valid UTF-8 on its
 *     own: a character spelled by byte tokens is held back until it is complete;
 *   - invalid byte sequences come out as U+FFFD, the same however the ids are split;
 *   - rs_submit_text submits what rs_submit of the tokenized prompt would, and the
 *     detokenizer continues its prompt as ringserve-generate prints it;
 *   - errors: -ENOSPC (all or nothing), -ERANGE, -EINVAL, -E2BIG, -ENOTSUP (null engine);
 *   - libringserve.so exports the text API and not the tokenizer underneath. */
#include <dlfcn.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "client-lib/ringserve.h"
#include "kernels/model/gguf.h"
#include "kernels/model/model_random.h"
#include "kernels/model/tokenizer.h"
#include "tests/harness/harness.h"

#define SP	 "\xe2\x96\x81" /* U+2581, SentencePiece's space */
#define MAX_IDS	 4096
#define MAX_TEXT 16384

/* UTF-8 pieces added to the demo vocabulary (the demo's own are ASCII). */
static const char *const extra_pieces[] = {
    "é", "あ", "い", "日", "本", SP "日", SP "日本", "語", "😀", "€", SP "é",
};

static const char *const fixed_texts[] = {
    "Once upon a time there was a little girl named lily",
    "héllo café, ça va?",
    "日本語のテキスト、東京",
    "emoji 😀 and 🎉 party 👩‍💻",
    "mixed: あい中文 𝄞 €5 Ω≈ç",
    "  leading spaces and  double  spaces ",
    "tabs\tand\nnewlines\r\n",
    " ",
    "a",
    "",
};

/* Fragments that random texts are made of. */
static const char *const fragments[] = {
    "the", " ",	 "little", "girl", "é",	   "日本", "語", "中", "文",   "😀",  "🎉",
    "€",   "あ", "x",	   "  ",   "park", "\n",   "Ω",	 "𝄞",  "ball", "ça",
};

/* Strict UTF-8 (no overlongs, surrogates or code points above U+10FFFF). */
static bool utf8_valid(const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		unsigned char b = s[i];
		size_t len;
		uint32_t cp;
		if (b < 0x80) {
			i++;
			continue;
		} else if ((b & 0xe0) == 0xc0) {
			len = 2;
			cp = b & 0x1f;
		} else if ((b & 0xf0) == 0xe0) {
			len = 3;
			cp = b & 0x0f;
		} else if ((b & 0xf8) == 0xf0) {
			len = 4;
			cp = b & 0x07;
		} else {
			return false;
		}
		if (i + len > n)
			return false;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
		if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += len;
	}
	return true;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rng(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return (uint32_t)(z ^ (z >> 31));
}

/* The demo vocabulary plus extra_pieces (NORMAL, scored above every demo merge). */
static struct rs_tokenizer *build_vocab(void)
{
	struct rs_tokenizer *demo, *tok;
	char err[256];
	CHECK(rs_tokenizer_demo(512, &demo, err, sizeof(err)) == 0, "demo vocabulary: %s", err);
	uint32_t n_extra = sizeof(extra_pieces) / sizeof(extra_pieces[0]);
	uint32_t n = 512 + n_extra;
	const char *pieces[512 + sizeof(extra_pieces) / sizeof(extra_pieces[0])];
	uint32_t lens[sizeof(pieces) / sizeof(pieces[0])];
	float scores[sizeof(pieces) / sizeof(pieces[0])];
	uint8_t types[sizeof(pieces) / sizeof(pieces[0])];
	for (uint32_t i = 0; i < 512; i++) {
		size_t len;
		CHECK(rs_tokenizer_piece(demo, i, &pieces[i], &len) == 0, "piece %u", i);
		lens[i] = (uint32_t)len;
		CHECK(rs_tokenizer_token_info(demo, i, &scores[i], &types[i]) == 0, "info %u", i);
	}
	for (uint32_t k = 0; k < n_extra; k++) {
		pieces[512 + k] = extra_pieces[k];
		lens[512 + k] = (uint32_t)strlen(extra_pieces[k]);
		scores[512 + k] = 1.0f + (float)k;
		types[512 + k] = RS_TOKEN_NORMAL;
	}
	struct rs_tokenizer_vocab v = {
	    .n = n,
	    .pieces = pieces,
	    .lens = lens,
	    .scores = scores,
	    .types = types,
	    .bos = rs_tokenizer_bos(demo),
	    .eos = rs_tokenizer_eos(demo),
	    .unk = rs_tokenizer_unk(demo),
	    .flags = rs_tokenizer_flags(demo),
	};
	CHECK(rs_tokenizer_create(&v, &tok, err, sizeof(err)) == 0, "vocabulary: %s", err);
	rs_tokenizer_free(demo);
	return tok;
}

static void write_model(const char *path, const struct rs_tokenizer *tok)
{
	struct rs_model_config cfg = {
	    .dim = 32,
	    .hidden_dim = 86,
	    .n_layers = 1,
	    .n_heads = 4,
	    .n_kv_heads = 2,
	    .head_dim = 8,
	    .rope_dim = 8,
	    .vocab_size = rs_tokenizer_vocab_size(tok),
	    .max_seq_len = 256,
	    .rope_theta = 10000.0f,
	    .norm_eps = 1e-5f,
	};
	struct rs_model *model;
	char err[256];
	CHECK(rs_model_random(&cfg, RS_DTYPE_F32, 11, false, &model) == 0, "random model");
	CHECK(rs_gguf_write_model(path, model, tok, err, sizeof(err)) == 0, "write: %s", err);
	rs_model_free(model);
}

/* Detokenize ids[0..n) in chunks of 1..max_chunk ids (1: one at a time), after prev_ids
 * (a prompt, decoded but not returned, as RS_DETOK_START then the prompt). Each chunk must
 * be valid UTF-8. Returns the text's length in out. */
static size_t detok_chunked(struct rs_connection *conn, const uint32_t *ids, uint32_t n,
			    uint32_t max_chunk, char *out)
{
	struct rs_detok detok;
	CHECK(rs_detok_init(conn, &detok, RS_DETOK_START) == 0, "detok init");
	size_t used = 0;
	static char chunk[RS_DETOK_MAX_OUTPUT(64)];
	for (uint32_t i = 0; i < n;) {
		uint32_t take = max_chunk == 1 ? 1 : 1 + rng() % max_chunk;
		if (take > n - i)
			take = n - i;
		int got = rs_detok_feed(&detok, ids + i, take, chunk, sizeof(chunk));
		CHECK(got >= 0, "feed: %d", got);
		CHECK(utf8_valid((unsigned char *)chunk, (size_t)got),
		      "chunk of %d bytes after id %u is not valid UTF-8 on its own", got, i);
		CHECK(used + (size_t)got < MAX_TEXT, "text too long");
		memcpy(out + used, chunk, (size_t)got);
		used += (size_t)got;
		i += take;
	}
	int got = rs_detok_flush(&detok, chunk, sizeof(chunk));
	CHECK(got >= 0 && got <= 3 && utf8_valid((unsigned char *)chunk, (size_t)got), "flush: %d",
	      got);
	memcpy(out + used, chunk, (size_t)got);
	return used + (size_t)got;
}

/* One text: the library's ids are the engine's; decoding them back gives the text, all
 * at once or one id at a time. */
static void check_text(struct rs_connection *conn, const struct rs_tokenizer *ref, const char *text,
		       size_t len, bool *saw_multi_char, bool *saw_byte_char)
{
	static uint32_t ids[MAX_IDS], ref_ids[MAX_IDS];
	static char all[MAX_TEXT], one[MAX_TEXT], split[MAX_TEXT];
	int n = rs_tokenize(conn, text, len, ids, MAX_IDS, RS_TOKENIZE_BOS);
	int n_ref = rs_tokenizer_encode(ref, text, len, RS_ENCODE_BOS, ref_ids, MAX_IDS);
	CHECK(n > 0 && n == n_ref && memcmp(ids, ref_ids, (size_t)n * 4) == 0,
	      "'%s': %d ids, the engine's tokenizer %d (or they differ)", text, n, n_ref);
	CHECK(ids[0] == (uint32_t)rs_tokenizer_bos(ref), "'%s': BOS first", text);
	CHECK(rs_tokenize(conn, text, len, NULL, 0, RS_TOKENIZE_BOS) == n, "'%s': the query", text);
	CHECK(rs_tokenize(conn, text, len, ids, MAX_IDS, 0) == n - 1 &&
		  (n == 1 || ids[0] == ref_ids[1]),
	      "'%s': without BOS", text);
	for (int i = 1; i < n; i++) {
		const char *piece;
		size_t piece_len;
		uint8_t type;
		float score;
		rs_tokenizer_piece(ref, ref_ids[i], &piece, &piece_len);
		rs_tokenizer_token_info(ref, ref_ids[i], &score, &type);
		size_t chars = 0; /* UTF-8 characters: bytes that are not continuation bytes */
		for (size_t k = 0; k < piece_len; k++)
			chars += ((unsigned char)piece[k] & 0xc0) != 0x80;
		if (type == RS_TOKEN_NORMAL && chars > 1)
			*saw_multi_char = true;
		if (type == RS_TOKEN_BYTE && i + 1 < n) {
			uint8_t next_type;
			rs_tokenizer_token_info(ref, ref_ids[i + 1], &score, &next_type);
			if (next_type == RS_TOKEN_BYTE)
				*saw_byte_char = true;
		}
	}

	/* The engine's decoder, all at once: the text itself (valid UTF-8 goes round). */
	int ref_len = rs_tokenizer_decode(ref, ref_ids, (size_t)n, all, sizeof(all));
	CHECK(ref_len == (int)len && memcmp(all, text, len) == 0, "'%s': the engine's round trip",
	      text);
	size_t one_len = detok_chunked(conn, ref_ids, (uint32_t)n, 1, one);
	CHECK(one_len == len && memcmp(one, text, len) == 0,
	      "'%s': one id at a time gave %zu bytes '%.*s'", text, one_len, (int)one_len, one);
	size_t split_len = detok_chunked(conn, ref_ids, (uint32_t)n, 7, split);
	CHECK(split_len == len && memcmp(split, text, len) == 0, "'%s': random splits", text);
	/* Without BOS: the first token starts the text just the same. */
	one_len = detok_chunked(conn, ref_ids + 1, (uint32_t)n - 1, 1, one);
	CHECK(one_len == len && memcmp(one, text, len) == 0, "'%s': without BOS", text);
}

static void check_texts(struct rs_connection *conn, const struct rs_tokenizer *ref)
{
	bool multi = false, byte_char = false;
	for (size_t i = 0; i < sizeof(fixed_texts) / sizeof(fixed_texts[0]); i++)
		check_text(conn, ref, fixed_texts[i], strlen(fixed_texts[i]), &multi, &byte_char);
	static char text[1024];
	for (int round = 0; round < 300; round++) {
		size_t len = 0;
		int parts = 1 + (int)(rng() % 12);
		for (int p = 0; p < parts; p++) {
			const char *f =
			    fragments[rng() % (sizeof(fragments) / sizeof(fragments[0]))];
			memcpy(text + len, f, strlen(f));
			len += strlen(f);
		}
		text[len] = '\0';
		check_text(conn, ref, text, len, &multi, &byte_char);
	}
	CHECK(multi, "no multi-character piece was exercised");
	CHECK(byte_char, "no character spelled by byte tokens was exercised");
}

/* The token of byte b. */
static uint32_t byte_token(const struct rs_tokenizer *ref, unsigned b)
{
	char piece[8];
	snprintf(piece, sizeof(piece), "<0x%02X>", b);
	int32_t id = rs_tokenizer_find(ref, piece, 6);
	CHECK(id >= 0, "no token %s", piece);
	return (uint32_t)id;
}

static uint32_t piece_token(const struct rs_tokenizer *ref, const char *piece)
{
	int32_t id = rs_tokenizer_find(ref, piece, strlen(piece));
	CHECK(id >= 0, "no token '%s'", piece);
	return (uint32_t)id;
}

/* Feed one id; the bytes it gives must be expected. */
static void feed_expect(struct rs_detok *detok, uint32_t id, const char *expected)
{
	char out[64];
	int n = rs_detok_feed(detok, &id, 1, out, sizeof(out));
	CHECK(n == (int)strlen(expected) && memcmp(out, expected, (size_t)n) == 0,
	      "id %u: got %d bytes '%.*s', expected '%s'", id, n, n > 0 ? n : 0, out, expected);
}

static void check_byte_fallback(struct rs_connection *conn, const struct rs_tokenizer *ref)
{
	struct rs_detok detok;
	/* あ is E3 81 82; 🎉 is F0 9F 8E 89: nothing until the last byte. */
	CHECK(rs_detok_init(conn, &detok, RS_DETOK_START) == 0, "init");
	feed_expect(&detok, piece_token(ref, SP "a"), "a");
	feed_expect(&detok, byte_token(ref, 0xe3), "");
	feed_expect(&detok, byte_token(ref, 0x81), "");
	feed_expect(&detok, byte_token(ref, 0x82), "あ");
	feed_expect(&detok, byte_token(ref, 0xf0), "");
	feed_expect(&detok, byte_token(ref, 0x9f), "");
	feed_expect(&detok, byte_token(ref, 0x8e), "");
	feed_expect(&detok, byte_token(ref, 0x89), "🎉");
	feed_expect(&detok, piece_token(ref, SP "日本"), " 日本");
	feed_expect(&detok, piece_token(ref, "😀"), "😀");
	feed_expect(&detok, (uint32_t)rs_tokenizer_eos(ref), ""); /* control: nothing */
	char out[8];
	CHECK(rs_detok_flush(&detok, out, sizeof(out)) == 0, "nothing held");

	/* Invalid: a lead byte followed by a piece, a stray continuation byte, an overlong
	 * lead, a surrogate, and a sequence cut by the end of the stream. */
	const char fffd[] = "\xef\xbf\xbd";
	CHECK(rs_detok_init(conn, &detok, RS_DETOK_START) == 0, "init");
	feed_expect(&detok, byte_token(ref, 0xe3), "");
	feed_expect(&detok, byte_token(ref, 0x81), "");
	feed_expect(&detok, piece_token(ref, "a"),
		    "\xef\xbf\xbd"
		    "a");
	feed_expect(&detok, byte_token(ref, 0x80), fffd);
	feed_expect(&detok, byte_token(ref, 0xc0), fffd);
	feed_expect(&detok, byte_token(ref, 0xed), "");
	feed_expect(&detok, byte_token(ref, 0xa0),
		    "\xef\xbf\xbd\xef\xbf\xbd"); /* ED A0: surrogate */
	feed_expect(&detok, byte_token(ref, 0xf0), "");
	feed_expect(&detok, byte_token(ref, 0x9f), "");
	CHECK(rs_detok_flush(&detok, out, 2) == -ENOSPC, "flush into 2 bytes");
	CHECK(rs_detok_flush(&detok, out, sizeof(out)) == 3 && memcmp(out, fffd, 3) == 0,
	      "flush: the cut character becomes U+FFFD");
	CHECK(rs_detok_flush(&detok, out, sizeof(out)) == 0, "flush again: nothing");

	/* Random id streams rich in byte tokens: any split gives the same bytes, every
	 * chunk valid UTF-8; when the raw bytes are valid UTF-8 they are the engine's. */
	static uint32_t ids[256];
	static char a[MAX_TEXT], b[MAX_TEXT], raw[MAX_TEXT];
	static const unsigned interesting[] = {0x80, 0x81, 0x82, 0x9f, 0xa0, 0xbf, 0xc3, 0xa9,
					       0xe3, 0xed, 0xf0, 0xf4, 0x8f, 0x90, 0xff, 'a'};
	uint32_t vocab = rs_tokenizer_vocab_size(ref);
	int valid_streams = 0;
	for (int round = 0; round < 500; round++) {
		uint32_t n = 1 + rng() % 64;
		for (uint32_t i = 0; i < n; i++)
			ids[i] =
			    rng() % 2 ? byte_token(ref, interesting[rng() % 16]) : rng() % vocab;
		size_t a_len = detok_chunked(conn, ids, n, 1, a);
		size_t b_len = detok_chunked(conn, ids, n, 9, b);
		CHECK(a_len == b_len && memcmp(a, b, a_len) == 0, "round %d: splits differ", round);
		int raw_len = rs_tokenizer_decode(ref, ids, n, raw, sizeof(raw));
		CHECK(raw_len >= 0, "engine decode");
		if (utf8_valid((unsigned char *)raw, (size_t)raw_len)) {
			valid_streams++;
			CHECK(a_len == (size_t)raw_len && memcmp(a, raw, a_len) == 0,
			      "round %d: a valid stream differs from the engine's decode", round);
		}
	}
	CHECK(valid_streams > 0, "no valid random stream");
}

static void check_errors(struct rs_connection *conn, const struct rs_tokenizer *ref)
{
	uint32_t ids[32];
	const char *text = "the little girl and the ball";
	int need = rs_tokenize(conn, text, strlen(text), NULL, 0, RS_TOKENIZE_BOS);
	CHECK(need > 2 && need <= 32, "need %d", need);
	CHECK(rs_tokenize(conn, text, strlen(text), ids, (uint32_t)need - 1, RS_TOKENIZE_BOS) ==
		  -ENOSPC,
	      "one id short");
	CHECK(rs_tokenize(conn, text, strlen(text), ids, (uint32_t)need, RS_TOKENIZE_BOS) == need,
	      "exactly enough");
	CHECK(rs_tokenize(conn, NULL, 3, ids, 8, 0) == -EINVAL, "NULL text");
	CHECK(rs_tokenize(conn, text, 3, NULL, 8, 0) == -EINVAL, "NULL ids");
	CHECK(rs_tokenize(conn, text, 3, ids, 8, 0x80) == -EINVAL, "unknown flag");
	CHECK(rs_tokenize(conn, NULL, 0, ids, 8, RS_TOKENIZE_BOS) == 1, "empty text: BOS");
	CHECK(rs_tokenize(conn, NULL, 0, ids, 8, 0) == 0, "empty text: nothing");

	/* A feed that does not fit changes nothing. */
	struct rs_detok detok;
	CHECK(rs_detok_init(conn, &detok, RS_DETOK_START) == 0, "init");
	uint32_t word[3] = {piece_token(ref, SP "the"), byte_token(ref, 0xe3),
			    piece_token(ref, SP "日本")};
	char out[64];
	CHECK(rs_detok_feed(&detok, word, 1, out, 2) == -ENOSPC, "'the' into 2 bytes");
	CHECK(rs_detok_feed(&detok, word, 3, out, 6) == -ENOSPC, "3 ids into 6 bytes");
	int n = rs_detok_feed(&detok, word, 1, out, 3);
	CHECK(n == 3 && memcmp(out, "the", 3) == 0, "then into 3 bytes: %d", n);
	n = rs_detok_feed(&detok, word + 1, 2, out, sizeof(out));
	CHECK(n == 10 && memcmp(out, "\xef\xbf\xbd 日本", 10) == 0, "the rest: %d", n);
	uint32_t bad = rs_tokenizer_vocab_size(ref);
	CHECK(rs_detok_feed(&detok, &bad, 1, out, sizeof(out)) == -ERANGE, "id out of range");
	CHECK(rs_detok_feed(&detok, NULL, 1, out, sizeof(out)) == -EINVAL, "NULL ids");
	struct rs_detok zero = {0};
	CHECK(rs_detok_feed(&zero, word, 1, out, sizeof(out)) == -EINVAL, "not initialized");
	CHECK(rs_detok_init(conn, &detok, 0) == -EINVAL, "a handle not in use");
	CHECK(rs_detok_init(conn, &detok, -2) == -EINVAL, "a negative handle");
	CHECK(rs_detok_init(conn, &detok, 1 << 20) == -EINVAL, "a handle out of range");
}

/* Run a request to its end; returns its output length, tokens into out. */
static uint32_t run_request(struct rs_connection *conn, int request, uint32_t *out)
{
	struct rs_completion done;
	CHECK(rs_wait(conn, &done, 1, 10000) == 1, "completion");
	CHECK(done.request == request && done.status == 0, "status %d", done.status);
	const uint32_t *tokens;
	int n = rs_output(conn, request, &tokens);
	CHECK(n == (int)done.output_len, "output");
	memcpy(out, tokens, (size_t)n * 4);
	return (uint32_t)n;
}

static void check_submit_text(struct rs_connection *conn, const struct rs_tokenizer *ref)
{
	static const char *const prompts[] = {"Once upon a time", "日本語 😀", "the"};
	for (size_t p = 0; p < sizeof(prompts) / sizeof(prompts[0]); p++) {
		const char *text = prompts[p];
		struct rs_generate_params params = {.max_new_tokens = 24,
						    .flags = RS_GENERATE_IGNORE_EOS};
		int request = rs_submit_text(conn, &params, text, strlen(text));
		CHECK(request >= 0, "submit text: %d", request);
		/* The detokenizer continues the prompt: initialized from the handle. */
		struct rs_detok detok;
		CHECK(rs_detok_init(conn, &detok, request) == 0, "init from the request");
		uint32_t text_out[64], ids_out[64], prompt[64];
		uint32_t n = run_request(conn, request, text_out);
		static char streamed[MAX_TEXT], raw[MAX_TEXT];
		size_t streamed_len = 0;
		for (uint32_t i = 0; i < n; i++) {
			int got = rs_detok_feed(&detok, &text_out[i], 1, streamed + streamed_len,
						sizeof(streamed) - streamed_len);
			CHECK(got >= 0, "feed");
			streamed_len += (size_t)got;
		}
		int got = rs_detok_flush(&detok, streamed + streamed_len, 8);
		CHECK(got >= 0, "flush");
		streamed_len += (size_t)got;
		CHECK(utf8_valid((unsigned char *)streamed, streamed_len), "valid text");
		CHECK(rs_release(conn, request) == 0, "release");

		/* The same prompt as ids through rs_submit: the same greedy output. */
		int prompt_len =
		    rs_tokenizer_encode(ref, text, strlen(text), RS_ENCODE_BOS, prompt, 64);
		params.prompt = prompt;
		params.prompt_len = (uint32_t)prompt_len;
		request = rs_submit(conn, &params);
		CHECK(request >= 0, "submit ids");
		CHECK(run_request(conn, request, ids_out) == n &&
			  memcmp(ids_out, text_out, n * 4) == 0,
		      "'%s': rs_submit_text and rs_submit give different tokens", text);
		CHECK(rs_release(conn, request) == 0, "release");

		/* What ringserve-generate prints after the prompt: decode_token with the
		 * previous token, from the last prompt token on. */
		size_t raw_len = 0;
		int32_t prev = (int32_t)prompt[prompt_len - 1];
		for (uint32_t i = 0; i < n; i++) {
			int k = rs_tokenizer_decode_token(ref, prev, text_out[i], raw + raw_len,
							  sizeof(raw) - raw_len);
			CHECK(k >= 0, "decode_token");
			raw_len += (size_t)k;
			prev = (int32_t)text_out[i];
		}
		if (utf8_valid((unsigned char *)raw, raw_len))
			CHECK(raw_len == streamed_len && memcmp(raw, streamed, raw_len) == 0,
			      "'%s': the continuation differs from the engine's", text);
		else
			CHECK(streamed_len >= raw_len, "invalid bytes grow into U+FFFD");
	}
	/* The continuation keeps the first output token's space, the start drops it. */
	int request =
	    rs_submit_text(conn, &(struct rs_generate_params){.max_new_tokens = 1}, "a", 1);
	CHECK(request >= 0, "submit");
	struct rs_detok cont, start;
	CHECK(rs_detok_init(conn, &cont, request) == 0 &&
		  rs_detok_init(conn, &start, RS_DETOK_START) == 0,
	      "init");
	uint32_t the = piece_token(ref, SP "the");
	char out[16];
	CHECK(rs_detok_feed(&cont, &the, 1, out, sizeof(out)) == 4 && memcmp(out, " the", 4) == 0,
	      "continuation: ' the'");
	CHECK(rs_detok_feed(&start, &the, 1, out, sizeof(out)) == 3 && memcmp(out, "the", 3) == 0,
	      "start: 'the'");
	uint32_t tmp[4];
	run_request(conn, request, tmp);
	rs_release(conn, request);

	/* Errors, and no slot lost to them. */
	struct rs_model_info info;
	rs_model_info(conn, &info);
	struct rs_generate_params params = {.max_new_tokens = 4};
	/* A stray byte and a letter: two ids per two bytes, no merges. */
	static char long_text[2 * 8192];
	for (size_t i = 0; i < sizeof(long_text); i += 2) {
		long_text[i] = '\xc3';
		long_text[i + 1] = 'x';
	}
	size_t long_len = sizeof(long_text);
	int long_ids = rs_tokenize(conn, long_text, long_len, NULL, 0, RS_TOKENIZE_BOS);
	CHECK(long_ids > (int)info.max_prompt_tokens, "%d ids, max_prompt_tokens %u", long_ids,
	      info.max_prompt_tokens);
	/* More attempts than there are slots: a failed one must give its slot back. */
	for (uint32_t k = 0; k < 2 * info.max_inflight + 2 && k < 2000; k++) {
		CHECK(rs_submit_text(conn, &params, long_text, long_len) == -E2BIG, "too long");
		params.flags = RS_GENERATE_NO_BOS;
		CHECK(rs_submit_text(conn, &params, "", 0) == -EINVAL, "empty without BOS");
		params.flags = 0;
	}
	CHECK(rs_submit_text(conn, &params, NULL, 1) == -EINVAL, "NULL text");
	params.max_new_tokens = 0;
	CHECK(rs_submit_text(conn, &params, "a", 1) == -EINVAL, "max_new_tokens 0");
	params.max_new_tokens = info.max_output_tokens + 1;
	CHECK(rs_submit_text(conn, &params, "a", 1) == -E2BIG, "max_new_tokens over the limit");
	params.max_new_tokens = 2;
	params.flags = 0x100;
	CHECK(rs_submit_text(conn, &params, "a", 1) == -EINVAL, "unknown flag");
	params.flags = 0;
	request = rs_submit_text(conn, &params, "", 0); /* BOS alone is a prompt */
	CHECK(request >= 0, "BOS-only prompt: %d", request);
	run_request(conn, request, tmp);
	rs_release(conn, request);
}

static void check_exports(void)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/libringserve.so.0", test_build_dir());
	void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	CHECK(lib, "dlopen %s: %s", path, dlerror());
	static const char *const exported[] = {"rs_tokenize", "rs_submit_text", "rs_detok_init",
					       "rs_detok_feed", "rs_detok_flush"};
	static const char *const hidden[] = {"rs_tokenizer_encode", "rs_tokenizer_load_serialized",
					     "rs_tokenizer_decode_token", "rs_conn_take_slot",
					     "rs_conn_free_text"};
	for (size_t i = 0; i < sizeof(exported) / sizeof(exported[0]); i++)
		CHECK(dlsym(lib, exported[i]), "%s is not exported", exported[i]);
	for (size_t i = 0; i < sizeof(hidden) / sizeof(hidden[0]); i++)
		CHECK(!dlsym(lib, hidden[i]), "%s must not be exported", hidden[i]);
	dlclose(lib);
}

static void check_no_vocabulary(void)
{
	struct test_daemon daemon;
	const char *args[] = {"--null-vocab", "1000", NULL};
	test_daemon_start(&daemon, args);
	struct rs_connection *conn;
	CHECK(rs_connect(daemon.socket_path, NULL, &conn) == 0, "connect");
	uint32_t ids[8];
	struct rs_detok detok;
	struct rs_generate_params params = {.max_new_tokens = 2};
	CHECK(rs_tokenize(conn, "a", 1, ids, 8, 0) == -ENOTSUP, "tokenize: -ENOTSUP");
	CHECK(rs_submit_text(conn, &params, "a", 1) == -ENOTSUP, "submit_text: -ENOTSUP");
	CHECK(rs_detok_init(conn, &detok, RS_DETOK_START) == -ENOTSUP, "detok: -ENOTSUP");
	/* The ids path still works, and no slot was taken. */
	unsigned prompt[2] = {3, 4};
	test_null_request(conn, prompt, 2, 3, 1000);
	rs_close(conn);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit status");
}

int main(void)
{
	char dir[] = "/tmp/ringserve-text-XXXXXX", model_path[128], err[256];
	CHECK(mkdtemp(dir), "mkdtemp");
	snprintf(model_path, sizeof(model_path), "%s/model.gguf", dir);
	struct rs_tokenizer *built = build_vocab();
	write_model(model_path, built);
	rs_tokenizer_free(built);
	/* The reference: the engine's tokenizer, loaded from the model file as the engine does. */
	struct rs_tokenizer *ref;
	CHECK(rs_tokenizer_load_file(model_path, 0, &ref, err, sizeof(err)) == 0, "load: %s", err);

	check_exports();
	struct test_daemon daemon;
	const char *args[] = {"--model", model_path, "--backend", "cpu", "--threads", "1", NULL};
	test_daemon_start(&daemon, args);
	struct rs_connection *conn;
	CHECK(rs_connect(daemon.socket_path, NULL, &conn) == 0, "connect");
	check_texts(conn, ref);
	check_byte_fallback(conn, ref);
	check_errors(conn, ref);
	check_submit_text(conn, ref);
	rs_close(conn);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit status");
	check_no_vocabulary();

	rs_tokenizer_free(ref);
	unlink(model_path);
	rmdir(dir);
	return T_EXIT_PASS;
}
