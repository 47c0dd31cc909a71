/* libringserve's text API with a byte-level BPE vocabulary, through a daemon serving a
 * random model with that vocabulary in its GGUF file: Llama 3's real one (the reference
 * files of tools/fetch-vocab-refs.sh, with their hard texts), or a small byte-level one
 * built here when they are absent (so that the test always runs).
 *   - rs_tokenize gives the engine's ids (BOS as the vocabulary says);
 *   - the incremental detokenizer fed one id at a time, and in random splits, gives back
 *     exactly the text, and every chunk is valid UTF-8 on its own: a character whose bytes
 *     are split between tokens (byte-level BPE does that to emoji and CJK) is held back
 *     until it is complete; the test checks such splits happened;
 *   - rs_submit_text submits the tokenized text. */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client-lib/ringserve.h"
#include "kernels/model/gguf.h"
#include "kernels/model/model_random.h"
#include "kernels/model/pretokenize.h"
#include "kernels/model/tokenizer.h"
#include "tests/harness/harness.h"

#define MAX_IDS	 8192
#define MAX_TEXT 32768

static uint64_t rng_state = 0x1234567;
static uint32_t rng(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return (uint32_t)(z ^ (z >> 31));
}

/* Well-formed UTF-8 (no overlongs, surrogates, or code points above U+10FFFF). */
static bool utf8_valid(const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		unsigned char b = s[i];
		size_t len = b < 0x80		  ? 1
			     : (b & 0xe0) == 0xc0 ? 2
			     : (b & 0xf0) == 0xe0 ? 3
			     : (b & 0xf8) == 0xf0 ? 4
						  : 0;
		if (!len || i + len > n)
			return false;
		uint32_t cp = len == 1 ? b : b & (0x7f >> len);
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

/* A small byte-level vocabulary: the 256 byte characters of GPT-2's map (in byte order,
 * taken from the bytes' own spelling: id b is byte b), a few merges, BOS. */
static struct rs_tokenizer *small_vocab(void)
{
	static char storage[256][4];
	const char *pieces[264];
	uint8_t types[264];
	for (unsigned b = 0, next = 256; b < 256; b++) {
		int printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
		unsigned cp = printable ? b : next++;
		if (cp < 0x80) {
			storage[b][0] = (char)cp;
		} else {
			storage[b][0] = (char)(0xc0 | (cp >> 6));
			storage[b][1] = (char)(0x80 | (cp & 0x3f));
		}
		pieces[b] = storage[b];
		types[b] = RS_TOKEN_NORMAL;
	}
	/* "\xc3\xa6\xc4\xb9" is bytes E6 97, the first two of 日 (E6 97 A5). */
	static const char *const more[] = {"\xc4\xa0t",
					   "he",
					   "\xc4\xa0the",
					   "in",
					   "\xc4\xa0"
					   "a",
					   "an",
					   "\xc3\xa6\xc4\xb9",
					   "<|begin|>"};
	static const char *const merges[] = {"\xc4\xa0 t", "h e", "\xc4\xa0t he",     "i n",
					     "\xc4\xa0 a", "a n", "\xc3\xa6 \xc4\xb9"};
	for (unsigned k = 0; k < 8; k++) {
		pieces[256 + k] = more[k];
		types[256 + k] = k == 7 ? RS_TOKEN_CONTROL : RS_TOKEN_NORMAL;
	}
	struct rs_tokenizer_vocab v = {.n = 264,
				       .pieces = pieces,
				       .types = types,
				       .bos = 263,
				       .eos = -1,
				       .unk = -1,
				       .flags = RS_TOKENIZER_ADD_BOS,
				       .kind = RS_TOKENIZER_BPE,
				       .pre = RS_PRETOK_LLAMA3,
				       .n_merges = 7,
				       .merges = merges};
	struct rs_tokenizer *tok;
	char err[256];
	CHECK(rs_tokenizer_create(&v, &tok, err, sizeof(err)) == 0, "small vocabulary: %s", err);
	return tok;
}

/* The texts: the reference .inp cases, or a built-in few; *n_out texts. */
static char **load_texts(const char *inp_path, size_t *n_out)
{
	static const char *const fixed[] = {
	    "Hello world",	     " this is 🦙.cpp",
	    "日本語のテキスト",	     "🚀 (normal) 😶‍🌫️ (multiple emojis)",
	    "Äpfel\n\n\tund Birnen", "3333333 3.3 ------======= ''''''```````\"\"\"\"......",
	    "нещо на Български",     "I've been 'told he's there, 'RE you sure?",
	};
	char **texts = calloc(256, sizeof(*texts));
	size_t n = 0;
	FILE *f = inp_path ? fopen(inp_path, "rb") : NULL;
	if (f) {
		static char buf[1 << 16];
		size_t len = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[len] = '\0';
		static const char sep[] = "\n__ggml_vocab_test__\n";
		for (char *p = buf; *p && n < 256;) {
			char *next = strstr(p, sep);
			if (next)
				*next = '\0';
			texts[n++] = strdup(p);
			if (!next)
				break;
			p = next + sizeof(sep) - 1;
		}
	} else {
		for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
			texts[n++] = strdup(fixed[i]);
	}
	*n_out = n;
	return texts;
}

/* Detokenize ids in chunks of 1..max_chunk ids; every chunk must be valid UTF-8. Returns
 * the length of the text in out; *held counts the ids after which bytes were held back. */
static size_t detok_chunked(struct rs_connection *conn, const uint32_t *ids, uint32_t n,
			    uint32_t max_chunk, char *out, size_t *held)
{
	struct rs_detok detok;
	CHECK(rs_detok_init(conn, &detok, RS_DETOK_START) == 0, "detok init");
	static char chunk[RS_DETOK_MAX_OUTPUT(16)];
	size_t used = 0;
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
		*held += detok.pending_len > 0;
		i += take;
	}
	int got = rs_detok_flush(&detok, chunk, sizeof(chunk));
	CHECK(got == 0, "flush: %d bytes held at the end of a valid text", got);
	return used;
}

static void check_text(struct rs_connection *conn, const struct rs_tokenizer *ref, const char *text,
		       size_t *held)
{
	static uint32_t ids[MAX_IDS], ref_ids[MAX_IDS];
	static char one[MAX_TEXT], split[MAX_TEXT];
	size_t len = strlen(text);
	bool bos = rs_tokenizer_flags(ref) & RS_TOKENIZER_ADD_BOS;
	int n = rs_tokenize(conn, text, len, ids, MAX_IDS, RS_TOKENIZE_BOS);
	int n_ref = rs_tokenizer_encode(ref, text, len, bos ? RS_ENCODE_BOS : 0, ref_ids, MAX_IDS);
	CHECK(n >= 0 && n == n_ref && memcmp(ids, ref_ids, (size_t)n * 4) == 0,
	      "'%s': %d ids, the engine's tokenizer %d (or they differ)", text, n, n_ref);
	CHECK(!bos || ids[0] == (uint32_t)rs_tokenizer_bos(ref), "'%s': BOS first", text);
	size_t one_len = detok_chunked(conn, ids, (uint32_t)n, 1, one, held);
	CHECK(one_len == len && memcmp(one, text, len) == 0,
	      "'%s': one id at a time gave %zu bytes '%.*s'", text, one_len, (int)one_len, one);
	size_t split_len = detok_chunked(conn, ids, (uint32_t)n, 5, split, held);
	CHECK(split_len == len && memcmp(split, text, len) == 0, "'%s': random splits", text);
}

static void write_model(const char *path, const struct rs_tokenizer *tok)
{
	struct rs_model_config cfg = {
	    .dim = 16,
	    .hidden_dim = 32,
	    .n_layers = 1,
	    .n_heads = 2,
	    .n_kv_heads = 1,
	    .head_dim = 8,
	    .rope_dim = 8,
	    .vocab_size = rs_tokenizer_vocab_size(tok),
	    .max_seq_len = 256,
	    .rope_theta = 10000.0f,
	    .norm_eps = 1e-5f,
	};
	struct rs_model *model;
	char err[256];
	CHECK(rs_model_random(&cfg, RS_DTYPE_F32, 5, true, &model) == 0, "random model");
	CHECK(rs_gguf_write_model(path, model, tok, err, sizeof(err)) == 0, "write: %s", err);
	rs_model_free(model);
}

int main(void)
{
	char dir[] = "/tmp/ringserve-text-bpe-XXXXXX", model_path[128], err[512], vocab[512],
	     inp[600];
	const char *refs = getenv("RS_VOCAB_REFS") ? getenv("RS_VOCAB_REFS") : ".cache/vocab-refs";
	struct rs_tokenizer *built;
	struct stat st;
	snprintf(vocab, sizeof(vocab), "%s/ggml-vocab-llama-bpe.gguf", refs);
	snprintf(inp, sizeof(inp), "%s.inp", vocab);
	bool real = stat(vocab, &st) == 0 && stat(inp, &st) == 0;
	if (real) {
		CHECK(rs_tokenizer_load_file(vocab, 0, &built, err, sizeof(err)) == 0, "%s", err);
	} else {
		printf("no reference vocabularies in %s: a small byte-level vocabulary instead\n",
		       refs);
		built = small_vocab();
	}
	CHECK(mkdtemp(dir), "mkdtemp");
	snprintf(model_path, sizeof(model_path), "%s/model.gguf", dir);
	write_model(model_path, built);
	rs_tokenizer_free(built);
	struct rs_tokenizer *ref; /* as the engine loads it from the model file */
	CHECK(rs_tokenizer_load_file(model_path, 0, &ref, err, sizeof(err)) == 0, "load: %s", err);
	CHECK(rs_tokenizer_kind(ref) == RS_TOKENIZER_BPE, "a BPE vocabulary");

	struct test_daemon daemon;
	const char *args[] = {"--model", model_path, "--backend", "cpu", "--threads", "1", NULL};
	test_daemon_start(&daemon, args);
	struct rs_connection *conn;
	CHECK(rs_connect(daemon.socket_path, NULL, &conn) == 0, "connect");

	size_t n_texts, held = 0;
	char **texts = load_texts(real ? inp : NULL, &n_texts);
	for (size_t i = 0; i < n_texts; i++)
		check_text(conn, ref, texts[i], &held);
	CHECK(held > 0, "no character was split between tokens: the hold-back went untested");
	printf("%zu texts; bytes held back after %zu of the ids fed\n", n_texts, held);

	/* Submitting text: the prompt is the tokenized text, and the output decodes. */
	struct rs_generate_params params = {.max_new_tokens = 8};
	int request = rs_submit_text(conn, &params, texts[0], strlen(texts[0]));
	CHECK(request >= 0, "submit text: %d", request);
	struct rs_completion done;
	CHECK(rs_wait(conn, &done, 1, 10000) == 1 && done.request == request && done.status == 0,
	      "completion: %d", done.status);
	CHECK(rs_release(conn, request) == 0, "release");
	for (size_t i = 0; i < n_texts; i++)
		free(texts[i]);
	free(texts);

	rs_close(conn);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit status");
	rs_tokenizer_free(ref);
	unlink(model_path);
	rmdir(dir);
	return T_EXIT_PASS;
}
