/* The same weights written as GGUF and as a llama2.c checkpoint load into equal models,
 * their tokenizers (GGUF vocabulary, tokenizer.bin) encode alike, and greedy generation
 * through the engine gives the same tokens; the tools (ringserve-mkmodel,
 * ringserve-generate) agree with the library. */
#include <sys/stat.h>

#include "kernels/engine/engine.h"
#include "kernels/model/gguf.h"
#include "kernels/model/llama2c.h"
#include "kernels/model/model_random.h"
#include "kernels/model/tokenizer.h"
#include "tests/model_test.h"

#define STEPS 20

static struct rs_model *load(const char *path, const char *tokenizer)
{
	struct rs_model *m;
	char err[512];
	int ret = rs_model_load(path, tokenizer, &m, err, sizeof(err));
	if (ret)
		fprintf(stderr, "load %s: %s\n", path, err);
	REQUIRE(ret == 0);
	return m;
}

/* Greedy generation of STEPS tokens after prompt on the CPU engine. */
static void generate(const struct rs_model *model, const uint32_t *prompt, uint32_t n_prompt,
		     uint32_t *out)
{
	struct rs_engine_options opts;
	struct rs_engine *engine;
	char err[256];
	rs_engine_options_init(&opts);
	opts.backend = "cpu";
	opts.threads = 1;
	opts.block_size = 16;
	opts.kv_blocks = rs_kv_blocks_for(n_prompt + STEPS, 16);
	int ret = rs_engine_create(model, &opts, &engine, err, sizeof(err));
	if (ret)
		fprintf(stderr, "engine: %s\n", err);
	REQUIRE(ret == 0);
	struct rs_kv_cache *kv = rs_engine_kv(engine);
	uint32_t blocks[64];
	uint32_t n_blocks = rs_kv_blocks_for(n_prompt + STEPS, 16);
	REQUIRE(n_blocks <= 64);
	for (uint32_t b = 0; b < n_blocks; b++) {
		int id = rs_kv_block_alloc(kv);
		REQUIRE(id >= 0);
		blocks[b] = (uint32_t)id;
	}
	uint32_t next = 0, token;
	struct rs_seq_step step = {
	    .tokens = prompt,
	    .n_tokens = n_prompt,
	    .start_pos = 0,
	    .block_table = blocks,
	    .n_blocks = n_blocks,
	    .sample = 1,
	    .out_token = &next,
	};
	REQUIRE(rs_engine_step(engine, 0, &step, 1) == 0 && rs_engine_step_wait(engine, 0) == 0);
	for (uint32_t i = 0; i < STEPS; i++) {
		out[i] = next;
		if (i + 1 == STEPS)
			break;
		token = next;
		step.tokens = &token;
		step.n_tokens = 1;
		step.start_pos = n_prompt + i;
		REQUIRE(rs_engine_step(engine, 0, &step, 1) == 0 &&
			rs_engine_step_wait(engine, 0) == 0);
	}
	rs_engine_destroy(engine);
}

static int distinct(const uint32_t *ids, int n)
{
	int count = 0;
	for (int i = 0; i < n; i++) {
		int seen = 0;
		for (int j = 0; j < i; j++)
			seen |= ids[j] == ids[i];
		count += !seen;
	}
	return count;
}

static void test_library(enum rs_dtype dtype, bool tied, uint64_t seed, uint32_t *tokens_out)
{
	struct rs_model_config cfg = {
	    .dim = 64,
	    .hidden_dim = 160,
	    .n_layers = 2,
	    .n_heads = 4,
	    .n_kv_heads = 2,
	    .head_dim = 16,
	    .vocab_size = 512,
	    .max_seq_len = 128,
	    .rope_dim = 16,
	    .rope_theta = 10000.0f,
	    .norm_eps = 1e-5f,
	};
	struct rs_model *model;
	struct rs_tokenizer *tok;
	char gguf[512], l2c[512], tokbin[512], err[256];
	REQUIRE(rs_model_random(&cfg, dtype, seed, tied, &model) == 0);
	REQUIRE(rs_tokenizer_demo(cfg.vocab_size, &tok, err, sizeof(err)) == 0);
	test_path(gguf, sizeof(gguf), "agree.gguf");
	test_path(l2c, sizeof(l2c), "agree.bin");
	test_path(tokbin, sizeof(tokbin), "tokenizer.bin");
	REQUIRE(rs_gguf_write_model(gguf, model, tok, err, sizeof(err)) == 0);
	REQUIRE(rs_llama2c_write(l2c, model, err, sizeof(err)) == 0);
	REQUIRE(rs_tokenizer_write_llama2c(tok, tokbin) == 0);

	struct rs_model *a = load(gguf, NULL), *b = load(l2c, NULL);
	/* GGUF keeps the dtype; llama2.c is float32 with the same values. */
	CHECK(models_same(a, b, dtype == RS_DTYPE_F32));
	CHECK(models_same(a, b, 0));
	CHECK(models_same(model, a, 1));
	CHECK((a->output.data == a->token_embedding.data) == tied);
	CHECK((b->output.data == b->token_embedding.data) == tied);
	REQUIRE(a->tokenizer && b->tokenizer);

	const char *text = "once upon a time the little girl went to the park, caf\xc3\xa9";
	uint32_t pa[128], pb[128];
	int na = rs_tokenizer_encode(a->tokenizer, text, strlen(text), RS_ENCODE_BOS, pa, 128);
	int nb = rs_tokenizer_encode(b->tokenizer, text, strlen(text), RS_ENCODE_BOS, pb, 128);
	CHECK(na > 1 && na == nb && memcmp(pa, pb, sizeof(pa[0]) * (size_t)na) == 0);
	REQUIRE(na > 1);

	uint32_t ga[STEPS], gb[STEPS];
	generate(a, pa, (uint32_t)na, ga);
	generate(b, pb, (uint32_t)nb, gb);
	CHECK(memcmp(ga, gb, sizeof(ga)) == 0);
	CHECK(distinct(ga, STEPS) >= 3); /* a model that does something */
	for (int i = 0; i < STEPS; i++)
		CHECK(ga[i] < cfg.vocab_size);
	if (tokens_out)
		memcpy(tokens_out, ga, sizeof(ga));

	rs_model_free(a);
	rs_model_free(b);
	rs_model_free(model);
	rs_tokenizer_free(tok);
	unlink(gguf);
	unlink(l2c);
	unlink(tokbin);
}

/* Run a command and capture its stdout (at most size - 1 bytes); returns its exit status. */
static int run_capture(const char *cmd, char *out, size_t size)
{
	FILE *p = popen(cmd, "r");
	if (!p)
		return -1;
	size_t n = fread(out, 1, size - 1, p);
	out[n] = '\0';
	return pclose(p);
}

static void test_tools(void)
{
	const char *build = getenv("RS_BUILD_DIR") ? getenv("RS_BUILD_DIR") : "build";
	char mkmodel[512], generate_bin[512], cmd[4096], out_a[4096], out_b[4096];
	struct stat st;
	snprintf(mkmodel, sizeof(mkmodel), "%s/ringserve-mkmodel", build);
	snprintf(generate_bin, sizeof(generate_bin), "%s/ringserve-generate", build);
	/* make test builds the tools next to the tests: missing is a failure. */
	if (stat(mkmodel, &st) || stat(generate_bin, &st)) {
		fprintf(stderr, "tools not built in %s\n", build);
		REQUIRE(!"ringserve-mkmodel and ringserve-generate built");
	}
	snprintf(cmd, sizeof(cmd),
		 "%s --out-gguf %s/t.gguf --out-llama2c %s/t.bin --out-tokenizer %s/tokenizer.bin "
		 "--dim 48 --hidden 100 --layers 2 --heads 4 --kv-heads 1 --vocab 400 --seq-len 64 "
		 "--seed 42 --dtype bf16 2>/dev/null",
		 mkmodel, test_dir, test_dir, test_dir);
	REQUIRE(system(cmd) == 0);

	/* The tool's GGUF holds what the library makes from the same options. */
	char path[512];
	struct rs_model *from_tool = load(test_path(path, sizeof(path), "t.gguf"), NULL);
	struct rs_model_config cfg = from_tool->config;
	CHECK(cfg.dim == 48 && cfg.hidden_dim == 100 && cfg.n_kv_heads == 1 &&
	      cfg.vocab_size == 400);
	struct rs_model *expected;
	REQUIRE(rs_model_random(&cfg, RS_DTYPE_BF16, 42, false, &expected) == 0);
	CHECK(models_same(expected, from_tool, 1));
	rs_model_free(expected);

	snprintf(cmd, sizeof(cmd),
		 "%s %s/t.gguf --prompt-ids '1 300 17 45' -n %d --ids --ignore-eos "
		 "--backend cpu --threads 1 2>/dev/null",
		 generate_bin, test_dir, STEPS);
	CHECK(run_capture(cmd, out_a, sizeof(out_a)) == 0);
	snprintf(cmd, sizeof(cmd),
		 "%s %s/t.bin --prompt-ids '1 300 17 45' -n %d --ids --ignore-eos "
		 "--backend cpu --threads 1 2>/dev/null",
		 generate_bin, test_dir, STEPS);
	CHECK(run_capture(cmd, out_b, sizeof(out_b)) == 0);
	CHECK(strcmp(out_a, out_b) == 0);

	/* ... and the ids it prints are the library's greedy continuation. */
	uint32_t prompt[4] = {1, 300, 17, 45}, ids[STEPS];
	generate(from_tool, prompt, 4, ids);
	char want[4096];
	size_t used = 0;
	for (int i = 0; i < STEPS; i++)
		used +=
		    (size_t)snprintf(want + used, sizeof(want) - used, i ? " %u" : "%u", ids[i]);
	snprintf(want + used, sizeof(want) - used, "\n");
	if (strcmp(out_a, want) != 0) {
		fprintf(stderr, "ringserve-generate printed '%s', the library gives '%s'\n", out_a,
			want);
		test_failures++;
	}
	rs_model_free(from_tool);

	/* Text mode prints the prompt, then the continuation. */
	snprintf(cmd, sizeof(cmd),
		 "%s %s/t.bin --prompt 'the little girl' -n 5 --backend cpu "
		 "--threads 1 2>/dev/null",
		 generate_bin, test_dir);
	CHECK(run_capture(cmd, out_a, sizeof(out_a)) == 0);
	CHECK(strncmp(out_a, "the little girl", 15) == 0);
	/* A malformed model is a clear error, exit status 1. */
	snprintf(cmd, sizeof(cmd), "%s %s/tokenizer.bin -n 1 2>&1", generate_bin, test_dir);
	int status = run_capture(cmd, out_a, sizeof(out_a));
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 1 && strstr(out_a, "tokenizer.bin"));
	unlink(test_path(path, sizeof(path), "t.gguf"));
	unlink(test_path(path, sizeof(path), "t.bin"));
	unlink(test_path(path, sizeof(path), "tokenizer.bin"));
}

/* ringserve-mkmodel --arch qwen2 / llama3 (byte-level BPE vocabularies): the file holds
 * the library's model of the same options (biases, rope_freqs, back in the engine's layout),
 * and ringserve-generate's greedy ids are the engine's. */
static void test_tools_arch(const char *arch, const struct rs_model_random_extras *extras)
{
	const char *build = getenv("RS_BUILD_DIR") ? getenv("RS_BUILD_DIR") : "build";
	char cmd[4096], out[4096], path[512];
	snprintf(cmd, sizeof(cmd),
		 "%s/ringserve-mkmodel --arch %s --out-gguf %s/a.gguf --dim 48 --hidden 100 "
		 "--layers 2 --heads 4 --kv-heads 2 --vocab 600 --seq-len 64 --seed 7 "
		 "--rope-orig-ctx 32 2>/dev/null",
		 build, arch, test_dir);
	REQUIRE(system(cmd) == 0);
	struct rs_model *from_tool = load(test_path(path, sizeof(path), "a.gguf"), NULL);
	struct rs_model *expected;
	REQUIRE(rs_model_random_arch(&from_tool->config, RS_DTYPE_F32, 7, false, extras,
				     &expected) == 0);
	if (!models_same(expected, from_tool, 1)) {
		fprintf(stderr, "--arch %s: the file's model is not the library's\n", arch);
		test_failures++;
	}
	CHECK(from_tool->tokenizer && rs_tokenizer_kind(from_tool->tokenizer) == RS_TOKENIZER_BPE);
	rs_model_free(expected);

	uint32_t prompt[4] = {5, 300, 17, 45}, ids[STEPS];
	snprintf(cmd, sizeof(cmd),
		 "%s/ringserve-generate %s/a.gguf --prompt-ids '5 300 17 45' -n %d --ids "
		 "--ignore-eos --backend cpu --threads 1 2>/dev/null",
		 build, test_dir, STEPS);
	CHECK(run_capture(cmd, out, sizeof(out)) == 0);
	generate(from_tool, prompt, 4, ids);
	char want[4096];
	size_t used = 0;
	for (int i = 0; i < STEPS; i++)
		used +=
		    (size_t)snprintf(want + used, sizeof(want) - used, i ? " %u" : "%u", ids[i]);
	snprintf(want + used, sizeof(want) - used, "\n");
	if (strcmp(out, want) != 0) {
		fprintf(stderr,
			"--arch %s: ringserve-generate printed '%s', the engine gives '%s'\n", arch,
			out, want);
		test_failures++;
	}
	CHECK(distinct(ids, STEPS) > 3);
	rs_model_free(from_tool);

	/* Text through the byte-level vocabulary: the prompt comes back first. */
	snprintf(cmd, sizeof(cmd),
		 "%s/ringserve-generate %s/a.gguf --prompt 'the little girl' -n 5 --backend cpu "
		 "--threads 1 2>/dev/null",
		 build, test_dir);
	CHECK(run_capture(cmd, out, sizeof(out)) == 0);
	CHECK(strncmp(out, "the little girl", 15) == 0);
	unlink(path);
}

int main(void)
{
	uint32_t first[STEPS], other[STEPS];
	test_dir_create();
	test_library(RS_DTYPE_F32, false, 11, first);
	test_library(RS_DTYPE_F32, true, 12, NULL);
	test_library(RS_DTYPE_BF16, false, 13, NULL);
	test_library(RS_DTYPE_F16, true, 14, NULL);
	/* The tokens depend on the weights: another seed, another continuation. */
	test_library(RS_DTYPE_F32, false, 15, other);
	CHECK(memcmp(first, other, sizeof(first)) != 0);
	test_tools();
	struct rs_model_random_extras qwen2 = {.arch = RS_ARCH_QWEN2};
	test_tools_arch("qwen2", &qwen2);
	struct rs_model_random_extras llama3 = {.arch = RS_ARCH_LLAMA,
						.rope_factor = 8.0f,
						.low_freq_factor = 1.0f,
						.high_freq_factor = 4.0f,
						.original_context = 32};
	test_tools_arch("llama3", &llama3);
	return test_result("model_formats_agree");
}
