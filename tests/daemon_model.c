/* The daemon serving a real model (a random Llama from ringserve-mkmodel, CPU backend):
 * many concurrent greedy requests, with prompts long enough to be prefilled in chunks
 * and a KV pool small enough that admission has to wait for room, each give the tokens
 * that the engine, run directly on that prompt alone, gives. A request that cannot fit
 * the KV pool even alone fails with -E2BIG; the vocabulary reaches the client. Where a
 * CUDA device is present, the same requests served on the CUDA backend (the device
 * writes each token into the client's shared memory) give the CPU engine's tokens too. */
#include <errno.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "client-lib/ringserve.h"
#include "kernels/engine/engine.h"
#include "kernels/model/tokenizer.h"
#include "tests/harness/harness.h"

#define REQUESTS   12
#define NEW_TOKENS 20

struct reference {
	uint32_t tokens[NEW_TOKENS];
	float gap[NEW_TOKENS]; /* top-1 minus top-2 logit at each step */
};

/* Greedy continuation of a prompt, alone, through the engine's logits. */
static void reference_run(struct rs_engine *engine, const uint32_t *prompt, uint32_t prompt_len,
			  struct reference *out)
{
	const struct rs_model_config *config = rs_engine_config(engine);
	struct rs_kv_cache *kv = rs_engine_kv(engine);
	uint32_t blocks[32], n_blocks = (prompt_len + NEW_TOKENS + 15) / 16;
	for (uint32_t i = 0; i < n_blocks; i++) {
		int block = rs_kv_block_alloc(kv);
		CHECK(block >= 0, "reference blocks");
		blocks[i] = (uint32_t)block;
	}
	float *logits = malloc((size_t)prompt_len * config->vocab_size * sizeof(float));
	struct rs_seq_step step = {.tokens = prompt,
				   .n_tokens = prompt_len,
				   .start_pos = 0,
				   .block_table = blocks,
				   .n_blocks = n_blocks};
	uint32_t token = 0;
	for (uint32_t i = 0; i < NEW_TOKENS; i++) {
		CHECK(rs_engine_forward_logits(engine, &step, 1, logits) == 0, "reference forward");
		const float *row = logits + (size_t)(step.n_tokens - 1) * config->vocab_size;
		uint32_t best = 0;
		float first = -INFINITY, second = -INFINITY;
		for (uint32_t v = 0; v < config->vocab_size; v++) {
			if (row[v] > first) {
				second = first;
				first = row[v];
				best = v;
			} else if (row[v] > second) {
				second = row[v];
			}
		}
		out->tokens[i] = best;
		out->gap[i] = first - second;
		token = best;
		step.start_pos += step.n_tokens;
		step.tokens = &token;
		step.n_tokens = 1;
	}
	for (uint32_t i = 0; i < n_blocks; i++)
		rs_kv_block_unref(kv, blocks[i]);
	free(logits);
}

/* Serve every prompt at once through a daemon on `backend` and compare each output with
 * its reference. */
static void serve_and_compare(const char *backend, const char *model_path,
			      const struct rs_model *model, uint32_t (*prompts)[64],
			      const uint32_t *lengths, const struct reference *references)
{
	float near_tie = strcmp(backend, "cpu") == 0 ? 1e-3f : 1e-2f;
	uint32_t vocab = model->config.vocab_size;
	/* The daemon: 16-token prefill budget per step, 12 KV blocks (192 positions). */
	struct test_daemon daemon;
	const char *args[] = {
	    "--model", model_path,    "--backend", backend, "--threads", "1", "--max-batch-tokens",
	    "16",      "--kv-blocks", "12",	   NULL};
	test_daemon_start(&daemon, args);
	struct rs_connection *conn;
	CHECK(rs_connect(daemon.socket_path, NULL, &conn) == 0, "connect");
	struct rs_model_info info;
	rs_model_info(conn, &info);
	CHECK(info.vocab_size == vocab && info.max_seq_len == model->config.max_seq_len,
	      "model info");
	CHECK(strcmp(info.engine_name, backend) == 0, "engine %s", info.engine_name);
	/* The vocabulary the daemon shares tokenizes like the model's own tokenizer. */
	struct rs_tokenizer *shared_tok;
	CHECK(info.vocab &&
		  rs_tokenizer_load_serialized(info.vocab, info.vocab_bytes, &shared_tok) == 0,
	      "shared vocabulary");
	const char *text = "Once upon a time, there was a tiny model.";
	uint32_t ids_a[128], ids_b[128];
	int n_a = rs_tokenizer_encode(shared_tok, text, strlen(text), RS_ENCODE_BOS, ids_a, 128);
	int n_b =
	    rs_tokenizer_encode(model->tokenizer, text, strlen(text), RS_ENCODE_BOS, ids_b, 128);
	CHECK(n_a > 1 && n_a == n_b && memcmp(ids_a, ids_b, (size_t)n_a * 4) == 0,
	      "same tokenization");
	rs_tokenizer_free(shared_tok);

	int handles[REQUESTS];
	for (int r = 0; r < REQUESTS; r++) {
		struct rs_generate_params params = {.prompt = prompts[r],
						    .prompt_len = lengths[r],
						    .max_new_tokens = NEW_TOKENS,
						    .flags = RS_GENERATE_IGNORE_EOS,
						    .user_data = (uint64_t)r};
		handles[r] = rs_submit(conn, &params);
		CHECK(handles[r] >= 0, "submit %d: %s", r, strerror(-handles[r]));
	}
	/* Too big for the whole KV pool: 200 + 50 positions need 16 blocks of 12. */
	static uint32_t long_prompt[200];
	struct rs_generate_params too_big = {
	    .prompt = long_prompt, .prompt_len = 200, .max_new_tokens = 50, .user_data = 99};
	CHECK(rs_submit(conn, &too_big) >= 0, "submit the oversized request");

	int divergent = 0;
	for (int got = 0; got < REQUESTS + 1;) {
		struct rs_completion done;
		CHECK(rs_wait(conn, &done, 1, 60000) == 1, "completion");
		got++;
		if (done.user_data == 99) {
			CHECK(done.status == -E2BIG, "oversized request: status %d", done.status);
			rs_release(conn, done.request);
			continue;
		}
		int r = (int)done.user_data;
		CHECK(done.status == 0 && done.output_len == NEW_TOKENS,
		      "request %d: status %d, %u tokens", r, done.status, done.output_len);
		const uint32_t *tokens;
		CHECK(rs_output(conn, done.request, &tokens) == NEW_TOKENS, "output");
		for (uint32_t i = 0; i < NEW_TOKENS; i++) {
			if (tokens[i] == references[r].tokens[i])
				continue;
			/* Batched and chunked sums round differently from the lone run; that may
			 * flip a near tie, and nothing else. After a flip the texts differ. */
			CHECK(
			    references[r].gap[i] < near_tie,
			    "%s: request %d token %u: %u, the CPU engine alone gives %u (logit gap "
			    "%g)",
			    backend, r, i, tokens[i], references[r].tokens[i],
			    references[r].gap[i]);
			divergent++;
			break;
		}
		rs_release(conn, done.request);
	}
	CHECK(divergent <= 2, "%s: %d requests diverged at near ties", backend, divergent);
	rs_close(conn);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit status");
}

int main(void)
{
	char dir[] = "/tmp/ringserve-model-XXXXXX", model_path[128], command[512];
	CHECK(mkdtemp(dir), "mkdtemp");
	snprintf(model_path, sizeof(model_path), "%s/model.gguf", dir);
	snprintf(command, sizeof(command), "%s/ringserve-mkmodel --out-gguf %s --seed 7 >/dev/null",
		 test_build_dir(), model_path);
	CHECK(system(command) == 0, "mkmodel");

	/* The reference: the engine run directly, one prompt at a time. */
	struct rs_model *model;
	char err[256];
	CHECK(rs_model_load(model_path, NULL, &model, err, sizeof(err)) == 0, "load: %s", err);
	struct rs_engine_options options;
	rs_engine_options_init(&options);
	options.backend = "cpu";
	options.threads = 1;
	struct rs_engine *engine;
	CHECK(rs_engine_create(model, &options, &engine, err, sizeof(err)) == 0, "engine: %s", err);
	uint32_t vocab = model->config.vocab_size;

	static uint32_t prompts[REQUESTS][64];
	uint32_t lengths[REQUESTS];
	struct reference references[REQUESTS];
	for (int r = 0; r < REQUESTS; r++) {
		lengths[r] = 1 + (uint32_t)(r * 37 % 60); /* 1 .. 60 tokens */
		prompts[r][0] = 1;			  /* BOS */
		for (uint32_t i = 1; i < lengths[r]; i++)
			prompts[r][i] = (uint32_t)(r * 131 + i * 17) % vocab;
		reference_run(engine, prompts[r], lengths[r], &references[r]);
	}
	rs_engine_destroy(engine);

	serve_and_compare("cpu", model_path, model, prompts, lengths, references);
	/* The CUDA backend where it can run (f32 weights: logits within ~1e-4 of the CPU's
	 * relative to their size, so only nearer ties may flip). */
	options.backend = "cuda";
	if (rs_engine_create(model, &options, &engine, err, sizeof(err)) == 0) {
		rs_engine_destroy(engine);
		serve_and_compare("cuda", model_path, model, prompts, lengths, references);
	} else {
		printf("CUDA backend: %s (not served)\n", err);
	}
	rs_model_free(model);
	unlink(model_path);
	rmdir(dir);
	return T_EXIT_PASS;
}
