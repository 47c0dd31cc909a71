/* Malformed model and tokenizer files: truncated at every length, wrong magic and version,
 * absurd counts and lengths, tensors out of range, misaligned, of the wrong shape or type,
 * missing; bad configs and tokenizers. Each must give a negative errno and a message that
 * names the problem, never a crash (this test also runs under ASan/UBSan: each input is
 * copied into a buffer of exactly its size, so any over-read is caught). */
#include <math.h>

#include "kernels/model/gguf.h"
#include "kernels/model/llama2c.h"
#include "kernels/model/model_random.h"
#include "kernels/model/pretokenize.h"
#include "kernels/model/tokenizer.h"
#include "tests/model_test.h"

static uint8_t *good_gguf;
static size_t good_gguf_size;

/* Load bytes through the public in-memory path; expect failure with needle in the message. */
static void expect_fail_at(const void *bytes, size_t size, const char *needle, const char *what,
			   int line)
{
	uint8_t *copy = malloc(size ? size : 1);
	struct rs_model *m = (struct rs_model *)1;
	char err[512] = "";
	REQUIRE(copy);
	memcpy(copy, bytes, size);
	int ret = rs_model_load_memory(copy, size, &m, err, sizeof(err));
	if (ret >= 0 || m != NULL || err[0] == '\0' || (needle && !strstr(err, needle))) {
		fprintf(stderr, "line %d: %s: ret %d, message '%s' (wanted '%s')\n", line, what,
			ret, err, needle ? needle : "any");
		test_failures++;
		if (ret == 0)
			rs_model_free(m);
	}
	free(copy);
}
#define expect_fail(b, s, needle, what) expect_fail_at(b, s, needle, what, __LINE__)

static size_t find_bytes(const uint8_t *data, size_t size, const void *needle, size_t len)
{
	for (size_t i = 0; i + len <= size; i++)
		if (memcmp(data + i, needle, len) == 0)
			return i;
	fprintf(stderr, "pattern '%.*s' not found\n", (int)len, (const char *)needle);
	exit(1);
}

/* A copy of the good file with `len` bytes at `off` replaced by `with`. */
static uint8_t *patched(size_t off, const void *with, size_t len)
{
	uint8_t *copy = malloc(good_gguf_size);
	REQUIRE(copy && off + len <= good_gguf_size);
	memcpy(copy, good_gguf, good_gguf_size);
	memcpy(copy + off, with, len);
	return copy;
}

static void expect_patch_fails_at(size_t off, const void *with, size_t len, const char *needle,
				  const char *what, int line)
{
	uint8_t *copy = patched(off, with, len);
	expect_fail_at(copy, good_gguf_size, needle, what, line);
	free(copy);
}
#define expect_patch_fails(off, with, len, needle, what)                                           \
	expect_patch_fails_at(off, with, len, needle, what, __LINE__)

/* Offset just past a key string in the good file (at the value's type field). */
static size_t after_key(const char *key)
{
	return find_bytes(good_gguf, good_gguf_size, key, strlen(key)) + strlen(key);
}

/* Offsets of a tensor info's fields (2-D tensors). */
struct tinfo {
	size_t n_dims, ne0, ne1, type, offset;
};

static struct tinfo tensor_info(const char *name)
{
	size_t at = after_key(name);
	return (struct tinfo){at, at + 4, at + 12, at + 20, at + 24};
}

static void make_good_gguf(void)
{
	struct rs_model_config cfg = {
	    .dim = 8,
	    .hidden_dim = 16,
	    .n_layers = 2,
	    .n_heads = 2,
	    .n_kv_heads = 1,
	    .head_dim = 4,
	    .vocab_size = 259,
	    .max_seq_len = 16,
	    .rope_dim = 4,
	    .rope_theta = 10000.0f,
	    .norm_eps = 1e-5f,
	};
	struct rs_model *model;
	struct rs_tokenizer *tok;
	char path[512], err[256];
	REQUIRE(rs_model_random(&cfg, RS_DTYPE_F32, 7, false, &model) == 0);
	REQUIRE(rs_tokenizer_demo(259, &tok, err, sizeof(err)) == 0);
	test_path(path, sizeof(path), "good.gguf");
	REQUIRE(rs_gguf_write_model(path, model, tok, err, sizeof(err)) == 0);
	good_gguf = read_whole(path, &good_gguf_size);
	REQUIRE(good_gguf);
	struct rs_model *m;
	REQUIRE(rs_model_load_memory(good_gguf, good_gguf_size, &m, err, sizeof(err)) == 0);
	rs_model_free(m);
	rs_model_free(model);
	rs_tokenizer_free(tok);
}

static void test_gguf_truncated(void)
{
	/* The file is valid once the last tensor's bytes are there (only padding follows). */
	struct rs_gguf *g;
	char err[256];
	REQUIRE(rs_gguf_parse(good_gguf, good_gguf_size, &g, err, sizeof(err)) == 0);
	uint64_t end = 0;
	for (uint64_t i = 0; i < rs_gguf_n_tensors(g); i++) {
		const struct rs_gguf_tensor *t = rs_gguf_tensor_at(g, i);
		if (rs_gguf_data_offset(g) + t->offset + t->nbytes > end)
			end = rs_gguf_data_offset(g) + t->offset + t->nbytes;
	}
	uint64_t data_offset = rs_gguf_data_offset(g);
	rs_gguf_free(g);
	REQUIRE(end <= good_gguf_size && good_gguf_size - end < 32);
	/* Every length through the metadata and tensor infos, then a stride through data. */
	for (size_t len = 0; len < end; len += len < data_offset + 64 ? 1 : 61)
		expect_fail(good_gguf, len, NULL, "truncated GGUF");
	expect_fail(good_gguf, (size_t)end - 1, "beyond the end", "GGUF missing its last byte");
	expect_fail(good_gguf, (size_t)data_offset, "beyond the end", "GGUF without data");
	expect_fail(good_gguf, 20, "truncated", "GGUF cut in its header");
}

static void test_gguf_header(void)
{
	uint32_t v;
	uint64_t big = UINT64_C(1) << 62;
	expect_patch_fails(0, "GGUX", 4, NULL, "wrong magic");
	uint8_t *copy = patched(0, "GGUX", 4);
	struct rs_gguf *g;
	char err[256] = "";
	CHECK(rs_gguf_parse(copy, good_gguf_size, &g, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "not a GGUF file") != NULL);
	free(copy);
	v = 1;
	expect_patch_fails(4, &v, 4, "version 1 is not supported", "GGUF v1");
	v = 4;
	expect_patch_fails(4, &v, 4, "version 4 is not supported", "GGUF v4");
	v = 0x03000000;
	expect_patch_fails(4, &v, 4, "big-endian", "big-endian GGUF");
	expect_patch_fails(8, &big, 8, "tensor count", "2^62 tensors");
	expect_patch_fails(16, &big, 8, "key/value count", "2^62 key/values");
	uint64_t many = 400; /* a count that passes the quick bound but not the parse */
	expect_patch_fails(16, &many, 8, NULL, "more key/values than written");
}

static void test_gguf_metadata(void)
{
	uint64_t huge = UINT64_C(1) << 63, just_over = good_gguf_size;
	uint32_t u;
	/* The first key's length, at offset 24. */
	expect_patch_fails(24, &huge, 8, "beyond the end of the file", "key length 2^63");
	expect_patch_fails(24, &just_over, 8, "beyond the end of the file", "key length = size");
	uint64_t zero = 0;
	expect_patch_fails(24, &zero, 8, "length 0", "empty key");

	/* The architecture's value string length. */
	size_t arch = after_key("general.architecture");
	expect_patch_fails(arch + 4, &huge, 8, "general.architecture", "string length 2^63");
	expect_patch_fails(arch + 12, "gemma", 5,
			   "general.architecture is 'gemma'; supported: 'llama'",
			   "unsupported architecture");
	/* qwen2 is supported, but reads its own keys (qwen2.*), which this file lacks. */
	expect_patch_fails(arch + 12, "qwen2", 5, "missing key qwen2.embedding_length",
			   "qwen2 with llama.* keys");
	u = 13;
	expect_patch_fails(arch, &u, 4, "unknown value type 13", "value type 13");
	u = RS_GGUF_TYPE_UINT32;
	expect_patch_fails(arch, &u, 4, NULL, "architecture as a number");

	/* The token array: count, element type. */
	size_t tokens = after_key("tokenizer.ggml.tokens");
	uint64_t n = UINT64_C(1) << 61;
	expect_patch_fails(tokens + 8, &n, 8, "more than the file holds", "2^61 strings");
	u = RS_GGUF_TYPE_ARRAY;
	expect_patch_fails(tokens + 4, &u, 4, "array of arrays", "nested array");
	u = 77;
	expect_patch_fails(tokens + 4, &u, 4, "unknown value type 77", "array of type 77");
	size_t scores = after_key("tokenizer.ggml.scores");
	n = UINT64_C(1) << 62;
	expect_patch_fails(scores + 8, &n, 8, "more than the file holds", "2^62 floats");
	n = 258;
	expect_patch_fails(scores + 8, &n, 8, NULL, "scores count off by one");

	/* Duplicate and missing keys, bad values. */
	size_t dup = find_bytes(good_gguf, good_gguf_size, "llama.block_count", 17);
	expect_patch_fails(dup, "general.alignment", 17, "duplicate", "duplicate key");
	expect_patch_fails(dup, "llama.block_cOunt", 17, "missing key llama.block_count",
			   "missing block count");
	size_t blocks = after_key("llama.block_count");
	u = 4000;
	expect_patch_fails(blocks + 4, &u, 4, "needs at least", "4000 layers");
	u = 1000000;
	expect_patch_fails(blocks + 4, &u, 4, "n_layers 1000000 is out of range",
			   "a million layers");
	u = 0;
	expect_patch_fails(blocks + 4, &u, 4, "n_layers 0", "zero layers");
	size_t heads = after_key("llama.attention.head_count");
	expect_patch_fails(heads + 4, &u, 4, "head_count", "zero heads");
	u = 3;
	expect_patch_fails(heads + 4, &u, 4, "does not divide", "3 heads for dim 8");
	size_t kv_heads = after_key("llama.attention.head_count_kv");
	u = 4;
	expect_patch_fails(kv_heads + 4, &u, 4, "n_kv_heads 4", "more kv heads than heads");
	size_t rope = after_key("llama.rope.dimension_count");
	u = 3;
	expect_patch_fails(rope + 4, &u, 4, "rope_dim 3", "odd rope dim");
	size_t align = after_key("general.alignment");
	u = 48;
	expect_patch_fails(align + 4, &u, 4, "general.alignment", "alignment 48");
	u = 0;
	expect_patch_fails(align + 4, &u, 4, "general.alignment", "alignment 0");
	float nan_eps = NAN;
	size_t eps = after_key("llama.attention.layer_norm_rms_epsilon");
	expect_patch_fails(eps + 4, &nan_eps, 4, "norm_eps", "NaN epsilon");

	/* Tokenizer keys. */
	size_t tok_model = after_key("tokenizer.ggml.model");
	expect_patch_fails(tok_model + 12, "gpt_2", 5, "not supported", "gpt2 tokenizer");
	size_t bos = after_key("tokenizer.ggml.bos_token_id");
	u = 100000;
	expect_patch_fails(bos + 4, &u, 4, "bos_token_id", "bos out of range");
	size_t types = after_key("tokenizer.ggml.token_type");
	int32_t t = 9;
	expect_patch_fails(types + 16 + 4 * 100, &t, 4, "token_type[100]", "token type 9");
	t = RS_TOKEN_BYTE; /* token 0 "<unk>" claimed to be a byte token */
	expect_patch_fails(types + 16, &t, 4, "byte token 0", "byte type on <unk>");
	size_t vocab = after_key("llama.vocab_size");
	u = 258;
	expect_patch_fails(vocab + 4, &u, 4, "llama.vocab_size", "vocab_size key disagrees");
}

static void test_gguf_tensors(void)
{
	struct tinfo q = tensor_info("blk.0.attn_q.weight");
	uint64_t v;
	uint32_t u;
	v = 4; /* rows 8 -> 4: still inside the file, but not the config's shape */
	expect_patch_fails(q.ne1, &v, 8, "'blk.0.attn_q.weight' has shape", "short wq");
	v = 16;
	expect_patch_fails(q.ne0, &v, 8, NULL, "wide wq");
	v = UINT64_C(1) << 62;
	expect_patch_fails(q.ne0, &v, 8, "too large", "ne0 2^62");
	v = 0;
	expect_patch_fails(q.ne0, &v, 8, "zero or too large", "ne0 0");
	u = 5;
	expect_patch_fails(q.n_dims, &u, 4, "dimensions", "5-D tensor");
	u = 2;
	/* Q4_0 is read now; these rows (8 elements) are not whole blocks of 32. */
	expect_patch_fails(q.type, &u, 4, "is Q4_0, whose rows are blocks of 32 elements",
			   "Q4_0 tensor");
	u = 10;
	expect_patch_fails(q.type, &u, 4, "'blk.0.attn_q.weight' has type 10 (Q2_K)",
			   "Q2_K tensor");
	u = 12;
	expect_patch_fails(q.type, &u, 4, "Q4_K", "Q4_K tensor");
	u = 200;
	expect_patch_fails(q.type, &u, 4, "type 200 (unknown)", "unknown tensor type");

	struct tinfo norm = tensor_info("output_norm.weight");
	/* 1-D: type right after ne[0]; offset after type. */
	size_t norm_offset = norm.ne0 + 8 + 4;
	uint64_t off;
	memcpy(&off, good_gguf + norm_offset, 8);
	v = off + 4;
	expect_patch_fails(norm_offset, &v, 8, "not a multiple of the alignment", "misaligned");
	v = UINT64_C(1) << 40;
	expect_patch_fails(norm_offset, &v, 8, "beyond the end of the file", "offset 2^40");
	v = UINT64_MAX & ~UINT64_C(31);
	expect_patch_fails(norm_offset, &v, 8, "beyond the end of the file", "offset near 2^64");

	size_t name = find_bytes(good_gguf, good_gguf_size, "blk.1.ffn_up.weight", 19);
	expect_patch_fails(name, "blk.1.ffn_xx.weight", 19, "missing tensor 'blk.1.ffn_up.weight'",
			   "missing tensor");
	name = find_bytes(good_gguf, good_gguf_size, "blk.0.attn_k.weight", 19);
	expect_patch_fails(name, "blk.0.attn_v.weight", 19, "duplicate", "duplicate tensor");
	name = find_bytes(good_gguf, good_gguf_size, "output_norm.weight", 18);
	expect_patch_fails(name, "output_norm.weighT", 18, "missing tensor 'output_norm.weight'",
			   "missing output norm");
	uint64_t len = 100;
	expect_patch_fails(name - 8, &len, 8, NULL, "tensor name length 100");

	/* The same good bytes, one byte off natural alignment in memory. */
	uint8_t *shifted = malloc(good_gguf_size + 1);
	struct rs_model *m;
	char err[256] = "";
	REQUIRE(shifted);
	memcpy(shifted + 1, good_gguf, good_gguf_size);
	CHECK(rs_model_load_memory(shifted + 1, good_gguf_size, &m, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "misaligned") != NULL);
	free(shifted);
}

/* A valid llama2.c checkpoint with a separate classifier: dim 8, hidden 12, 1 layer,
 * 2 heads, 1 kv head, vocab 10, seq_len 4 (floats: 80 + 8 + 64 + 32 + 32 + 64 + 8 + 96*3 + 8
 * + 2*4 (freq_cis, 4 * 4 / 2 each) + 80). */
static uint8_t *make_llama2c(int32_t *header, size_t *size)
{
	size_t floats = 80 + 8 + 64 + 32 + 32 + 64 + 8 + 3 * 96 + 8 + 16 + 80;
	*size = 28 + 4 * floats;
	uint8_t *buf = calloc(1, *size);
	REQUIRE(buf);
	memcpy(buf, header, 28);
	return buf;
}

static void test_llama2c(void)
{
	int32_t h[7] = {8, 12, 1, 2, 1, -10, 4};
	size_t size;
	uint8_t *good = make_llama2c(h, &size);
	struct rs_model *m;
	char err[256];
	REQUIRE(rs_model_load_memory(good, size, &m, err, sizeof(err)) == 0);
	rs_model_free(m);
	for (size_t len = 0; len < size; len++)
		expect_fail(good, len, len < 4 ? "too short" : NULL, "truncated llama2.c");
	expect_fail(good, 27, "too short for its 28-byte header", "27-byte checkpoint");
	uint8_t *longer = calloc(1, size + 4);
	memcpy(longer, good, size);
	expect_fail(longer, size + 4, "implies", "checkpoint with a trailing float");
	free(longer);

	const struct {
		int field;
		int32_t value;
		const char *needle;
	} bad[] = {
	    {0, 0, "dim is 0"},
	    {0, -8, "dim is -8"},
	    {1, -1, "hidden_dim is -1"},
	    {2, 0, "n_layers is 0"},
	    {3, 3, "does not divide dim"},
	    {4, 0, "n_kv_heads is 0"},
	    {4, 2, NULL}, /* 2 kv heads: valid config, but the size no longer matches */
	    {4, 3, "n_kv_heads 3"},
	    {5, 0, "vocab_size is 0"},
	    {5, INT32_MIN, "vocab_size is"},
	    {5, 10, "implies"}, /* claims shared: 80 floats too many */
	    {6, 0, "seq_len is 0"},
	    {0, 1 << 30, "out of range"},
	    {1, INT32_MAX, "out of range"},
	    {2, 1 << 20, "out of range"},
	    {6, INT32_MAX, "out of range"},
	    {3, 8, "rope_dim"}, /* head_dim 1: odd */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint8_t *copy = malloc(size);
		memcpy(copy, good, size);
		memcpy(copy + 4 * bad[i].field, &bad[i].value, 4);
		expect_fail(copy, size, bad[i].needle, "bad llama2.c header");
		free(copy);
	}
	uint8_t *v2 = malloc(size);
	memcpy(v2, good, size);
	memcpy(v2, "ak42", 4);
	expect_fail(v2, size, "ak42", "llama2.c export version 2");
	free(v2);
	expect_fail("GG", 2, "too short", "two bytes");
	free(good);
}

static void test_tokenizer_bin(void)
{
	/* 3 tokens: "<unk>", "<s>", "</s>", then "a" (max length 5). */
	uint8_t buf[256];
	size_t n = 0;
	int32_t max_len = 5;
	memcpy(buf, &max_len, 4);
	n = 4;
	const char *pieces[] = {"<unk>", "<s>", "</s>", "a"};
	for (int i = 0; i < 4; i++) {
		float score = -(float)i;
		int32_t len = (int32_t)strlen(pieces[i]);
		memcpy(buf + n, &score, 4);
		memcpy(buf + n + 4, &len, 4);
		memcpy(buf + n + 8, pieces[i], (size_t)len);
		n += 8 + (size_t)len;
	}
	struct rs_tokenizer *tok;
	char err[256];
	REQUIRE(rs_tokenizer_load_llama2c(buf, n, 4, &tok, err, sizeof(err)) == 0);
	rs_tokenizer_free(tok);
	REQUIRE(rs_tokenizer_load_llama2c(buf, n, 0, &tok, err, sizeof(err)) == 0);
	CHECK(rs_tokenizer_vocab_size(tok) == 4);
	rs_tokenizer_free(tok);
	for (size_t len = 0; len < n; len++) {
		uint8_t *copy = malloc(len ? len : 1);
		memcpy(copy, buf, len);
		err[0] = '\0';
		tok = NULL;
		CHECK(rs_tokenizer_load_llama2c(copy, len, 4, &tok, err, sizeof(err)) == -EINVAL);
		CHECK(tok == NULL && err[0] != '\0');
		free(copy);
	}
	err[0] = '\0';
	CHECK(rs_tokenizer_load_llama2c(buf, n, 3, &tok, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "bytes left") != NULL);
	CHECK(rs_tokenizer_load_llama2c(buf, n, 5, &tok, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "truncated at token 4") != NULL);
	uint8_t bad[256];
	int32_t neg = -1;
	memcpy(bad, buf, n);
	memcpy(bad + 4 + 4, &neg, 4);
	CHECK(rs_tokenizer_load_llama2c(bad, n, 4, &tok, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "token 0 has length -1") != NULL);
	float nan_score = NAN;
	memcpy(bad, buf, n);
	memcpy(bad + 4, &nan_score, 4);
	CHECK(rs_tokenizer_load_llama2c(bad, n, 4, &tok, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "NaN") != NULL);
	memcpy(bad, buf, n);
	memcpy(bad, &neg, 4);
	CHECK(rs_tokenizer_load_llama2c(bad, n, 4, &tok, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "max_token_length") != NULL);
}

static void test_files(void)
{
	struct rs_model *m;
	char path[512], err[256] = "";
	test_path(path, sizeof(path), "absent.gguf");
	CHECK(rs_model_load(path, NULL, &m, err, sizeof(err)) == -ENOENT);
	CHECK(m == NULL && strstr(err, "absent.gguf") != NULL);
	test_path(path, sizeof(path), "empty.gguf");
	REQUIRE(write_whole(path, "", 0) == 0);
	CHECK(rs_model_load(path, NULL, &m, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "empty") != NULL);
	CHECK(rs_model_load(test_dir, NULL, &m, err, sizeof(err)) < 0);
	/* A GGUF model with a tokenizer file that has more tokens than the model embeds. */
	test_path(path, sizeof(path), "good.gguf");
	char tok_path[512];
	struct rs_tokenizer *tok;
	REQUIRE(rs_tokenizer_demo(300, &tok, err, sizeof(err)) == 0);
	test_path(tok_path, sizeof(tok_path), "big-tokenizer.bin");
	REQUIRE(rs_tokenizer_write_llama2c(tok, tok_path) == 0);
	rs_tokenizer_free(tok);
	CHECK(rs_model_load(path, tok_path, &m, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "the tokenizer has 300 tokens, the model only 259") != NULL);
}

/* Replace the good file by model's (with tok) for the patches that follow. */
static void use_good_model(const struct rs_model *model, const struct rs_tokenizer *tok)
{
	char path[512], err[256];
	test_path(path, sizeof(path), "arch.gguf");
	REQUIRE(rs_gguf_write_model(path, model, tok, err, sizeof(err)) == 0);
	free(good_gguf);
	good_gguf = read_whole(path, &good_gguf_size);
	REQUIRE(good_gguf);
}

/* Architectures: Qwen2's biases, Llama 3's rope_freqs, RoPE scaling keys. */
static void test_architectures(void)
{
	struct rs_model_config cfg = {
	    .dim = 8,
	    .hidden_dim = 16,
	    .n_layers = 2,
	    .n_heads = 2,
	    .n_kv_heads = 1,
	    .head_dim = 4,
	    .vocab_size = 300,
	    .max_seq_len = 16,
	    .rope_dim = 4,
	    .rope_theta = 10000.0f,
	    .norm_eps = 1e-5f,
	};
	struct rs_model *model, *m;
	struct rs_tokenizer *tok;
	char err[256];
	uint64_t v;

	/* Qwen2: loads as qwen2, with its biases; then wrong-shaped and missing biases. */
	struct rs_model_random_extras qwen2 = {.arch = RS_ARCH_QWEN2};
	REQUIRE(rs_model_random_arch(&cfg, RS_DTYPE_F32, 3, false, &qwen2, &model) == 0);
	REQUIRE(rs_tokenizer_demo_bpe(300, RS_PRETOK_QWEN2, &tok, err, sizeof(err)) == 0);
	use_good_model(model, tok);
	rs_tokenizer_free(tok);
	CHECK(rs_model_load_memory(good_gguf, good_gguf_size, &m, err, sizeof(err)) == 0);
	if (m) {
		CHECK(m->arch == RS_ARCH_QWEN2 && m->layers[1].bv.data && m->layers[0].bq.data);
		CHECK(m->tokenizer && rs_tokenizer_kind(m->tokenizer) == RS_TOKENIZER_BPE);
		rs_model_free(m);
	}
	/* llama2.c files hold none of it: the writer refuses rather than drop the biases. */
	char l2c[512];
	CHECK(rs_llama2c_write(test_path(l2c, sizeof(l2c), "q.bin"), model, err, sizeof(err)) ==
		  -EINVAL &&
	      strstr(err, "plain Llama 2 models only"));
	struct tinfo bq = tensor_info("blk.0.attn_q.bias");
	v = 6;
	expect_patch_fails(bq.ne0, &v, 8, "'blk.0.attn_q.bias' has shape", "short q bias");
	size_t name = find_bytes(good_gguf, good_gguf_size, "blk.1.attn_v.bias", 17);
	expect_patch_fails(name, "blk.1.attn_v.biaZ", 17, "missing tensor 'blk.1.attn_v.bias'",
			   "qwen2 without its v bias");
	rs_model_free(model);
	size_t blocks = after_key("qwen2.block_count");
	uint32_t u = 0;
	expect_patch_fails(blocks + 4, &u, 4, "n_layers 0", "qwen2 zero layers");

	/* Llama 3: rope_freqs of the wrong length, or with a divisor that is not positive. */
	struct rs_model_random_extras llama3 = {.arch = RS_ARCH_LLAMA,
						.rope_factor = 8.0f,
						.low_freq_factor = 1.0f,
						.high_freq_factor = 4.0f,
						.original_context = 8};
	REQUIRE(rs_model_random_arch(&cfg, RS_DTYPE_F32, 4, false, &llama3, &model) == 0);
	REQUIRE(rs_tokenizer_demo_bpe(300, RS_PRETOK_LLAMA3, &tok, err, sizeof(err)) == 0);
	use_good_model(model, tok);
	CHECK(rs_model_load_memory(good_gguf, good_gguf_size, &m, err, sizeof(err)) == 0);
	if (m) {
		CHECK(m->rope_freqs.data && m->rope_freqs.cols == 2);
		rs_model_free(m);
	}
	/* 1-D: ne[0] right after n_dims; type and offset follow. */
	size_t freqs_ne0 = after_key("rope_freqs.weight") + 4;
	v = 3;
	expect_patch_fails(freqs_ne0, &v, 8, "'rope_freqs.weight' has shape", "rope_freqs of 3");
	const float *divisors = model->rope_freqs.data;
	size_t data = find_bytes(good_gguf, good_gguf_size, divisors, 8);
	float bad[] = {-1.0f, 0.0f, NAN, INFINITY};
	for (int i = 0; i < 4; i++)
		expect_patch_fails(data + 4, &bad[i], 4, "rope_freqs[1] is", "bad divisor");
	rs_model_free(model);
	rs_tokenizer_free(tok);

	/* RoPE scaling keys: linear loads; other types are refused, naming key and value. */
	cfg.rope_scale = 2.0f;
	REQUIRE(rs_model_random(&cfg, RS_DTYPE_F32, 5, false, &model) == 0);
	use_good_model(model, NULL);
	rs_model_free(model);
	CHECK(rs_model_load_memory(good_gguf, good_gguf_size, &m, err, sizeof(err)) == 0);
	if (m) {
		CHECK(m->config.rope_scale == 2.0f);
		rs_model_free(m);
	}
	size_t type = after_key("llama.rope.scaling.type");
	expect_patch_fails(type + 12, "llama3", 6,
			   "llama.rope.scaling.type is 'llama3'; supported: 'none', 'linear'",
			   "scaling type llama3 as a key");
	expect_patch_fails(type + 12, "yarn\0\0", 6, "llama.rope.scaling.type is 'yarn", "yarn");
	float nan = NAN;
	size_t factor = after_key("llama.rope.scaling.factor");
	expect_patch_fails(factor + 4, &nan, 4, "llama.rope.scaling.factor is nan",
			   "NaN scaling factor");
}

int main(void)
{
	test_dir_create();
	make_good_gguf();
	test_gguf_truncated();
	test_gguf_header();
	test_gguf_metadata();
	test_gguf_tensors();
	test_llama2c();
	test_tokenizer_bin();
	test_files();
	test_architectures();
	free(good_gguf);
	return test_result("model_malformed");
}
