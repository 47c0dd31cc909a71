/* ringserve-bench serve [--batch N] [--rounds N] [--prompt N] [--new N] [--backend cpu|cuda]
 *
 * End to end through the daemon: a stories15M-shaped random f32 model (CPU backend) or a
 * TinyLlama-1.1B-shaped random f16 one (CUDA), written to a temporary GGUF file,
 * ringserved on that backend, one client submitting `batch` requests at once (`prompt`
 * random token ids, `new` greedy tokens each, EOS ignored) and waiting for all of them,
 * `rounds` times. Reference, measured in the same run: the same work done by the engine
 * directly in this process (prefill every prompt in steps of at most 512 tokens, then
 * decode steps over the whole batch), with no daemon, rings or scheduling in between. The
 * ratio of the two is what the serving path costs. Also reported: the daemon's CPU time
 * per second of serving (its scheduler core sleeps while a GPU step runs). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client-lib/ringserve.h"
#include "kernels/engine/engine.h"
#include "kernels/model/gguf.h"
#include "kernels/model/model_random.h"
#include "shm/clock.h"
#include "tools/ringserve-bench/bench.h"

#define MAX_BATCH   256
#define STEP_TOKENS 512

struct serve_options {
	uint32_t batch, rounds, prompt, new_tokens;
	const char *backend;
};

/* User plus system CPU seconds of process pid so far (/proc/PID/stat), or < 0. */
static double process_cpu_seconds(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1.0;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	/* Fields 14 and 15 (utime, stime) follow the command name's closing parenthesis. */
	const char *p = strrchr(buf, ')');
	unsigned long utime, stime;
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime,
			 &stime) != 2)
		return -1.0;
	return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static void make_prompt(uint32_t *prompt, uint32_t len, uint32_t seed, uint32_t vocab)
{
	for (uint32_t i = 0; i < len; i++)
		prompt[i] = (seed * 7919u + i * 104729u) % vocab;
}

/* Tokens/s of the engine doing the batch directly, or a negative errno. */
static double direct_tokens_per_second(const struct rs_model *model, const struct serve_options *o)
{
	char err[256];
	struct rs_engine_options options;
	rs_engine_options_init(&options);
	options.backend = o->backend;
	uint32_t block_size = 16;
	uint32_t blocks_per_seq = (o->prompt + o->new_tokens + block_size - 1) / block_size;
	options.kv_blocks = o->batch * blocks_per_seq;
	struct rs_engine *engine;
	int ret = rs_engine_create(model, &options, &engine, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "bench serve: engine: %s\n", err);
		return ret;
	}
	uint32_t vocab = model->config.vocab_size;
	uint32_t *blocks = malloc((size_t)o->batch * blocks_per_seq * sizeof(uint32_t));
	uint32_t *prompts = malloc((size_t)o->batch * o->prompt * sizeof(uint32_t));
	uint32_t *last = calloc(o->batch, sizeof(uint32_t));
	struct rs_seq_step *steps = calloc(o->batch, sizeof(*steps));
	uint64_t start = rs_now_ns(), tokens = 0;
	for (uint32_t round = 0; round < o->rounds && ret == 0; round++) {
		for (uint32_t s = 0; s < o->batch * blocks_per_seq && ret == 0; s++) {
			int block = rs_kv_block_alloc(rs_engine_kv(engine));
			if (block < 0)
				ret = block;
			blocks[s] = (uint32_t)block;
		}
		/* Prefill, several prompts per step. */
		for (uint32_t first = 0; first < o->batch && ret == 0;) {
			uint32_t n = 0, budget = STEP_TOKENS;
			while (first + n < o->batch && budget >= o->prompt) {
				uint32_t s = first + n;
				make_prompt(prompts + (size_t)s * o->prompt, o->prompt,
					    round * MAX_BATCH + s, vocab);
				steps[n] = (struct rs_seq_step){
				    .tokens = prompts + (size_t)s * o->prompt,
				    .n_tokens = o->prompt,
				    .block_table = blocks + (size_t)s * blocks_per_seq,
				    .n_blocks = blocks_per_seq,
				    .sample = 1,
				    .out_token = &last[s]};
				budget -= o->prompt;
				n++;
			}
			ret = rs_engine_step(engine, 0, steps, n);
			if (ret == 0)
				ret = rs_engine_step_wait(engine, 0);
			first += n;
		}
		tokens += o->batch;
		/* Decode the rest of the tokens, the whole batch per step. */
		for (uint32_t t = 1; t < o->new_tokens && ret == 0; t++) {
			for (uint32_t s = 0; s < o->batch; s++)
				steps[s] = (struct rs_seq_step){
				    .tokens = &last[s],
				    .n_tokens = 1,
				    .start_pos = o->prompt + t - 1,
				    .block_table = blocks + (size_t)s * blocks_per_seq,
				    .n_blocks = blocks_per_seq,
				    .sample = 1,
				    .out_token = &last[s]};
			ret = rs_engine_step(engine, 0, steps, o->batch);
			if (ret == 0)
				ret = rs_engine_step_wait(engine, 0);
			tokens += o->batch;
		}
		for (uint32_t s = 0; s < o->batch * blocks_per_seq; s++)
			rs_kv_block_unref(rs_engine_kv(engine), blocks[s]);
	}
	double seconds = (double)(rs_now_ns() - start) / 1e9;
	free(blocks);
	free(prompts);
	free(last);
	free(steps);
	rs_engine_destroy(engine);
	return ret ? ret : (double)tokens / seconds;
}

/* Tokens/s through the daemon, and the mean time to the first token in *ttft_ms. */
static double served_tokens_per_second(const char *socket_path, uint32_t vocab,
				       const struct serve_options *o, double *ttft_ms)
{
	struct rs_connection *conn;
	int ret = rs_connect(socket_path, NULL, &conn);
	if (ret)
		return ret;
	static uint32_t prompts[MAX_BATCH][4096];
	int handles[MAX_BATCH];
	uint64_t start = rs_now_ns(), tokens = 0, first_token_ns = 0;
	for (uint32_t round = 0; round < o->rounds && ret == 0; round++) {
		uint64_t round_start = rs_now_ns();
		for (uint32_t s = 0; s < o->batch && ret == 0; s++) {
			make_prompt(prompts[s], o->prompt, round * MAX_BATCH + s, vocab);
			struct rs_generate_params params = {.prompt = prompts[s],
							    .prompt_len = o->prompt,
							    .max_new_tokens = o->new_tokens,
							    .flags = RS_GENERATE_IGNORE_EOS,
							    .user_data = s};
			handles[s] = rs_submit(conn, &params);
			if (handles[s] < 0)
				ret = handles[s];
		}
		/* Time to first token of the first request (it waits behind no one). */
		if (ret == 0 && rs_wait_output(conn, handles[0], 0, 60000) > 0)
			first_token_ns += rs_now_ns() - round_start;
		for (uint32_t done_count = 0; done_count < o->batch && ret == 0;) {
			struct rs_completion done[MAX_BATCH];
			int n = rs_wait(conn, done, MAX_BATCH, 60000);
			if (n < 0) {
				ret = n;
				break;
			}
			for (int k = 0; k < n; k++) {
				if (done[k].status)
					ret = done[k].status;
				tokens += done[k].output_len;
				rs_release(conn, done[k].request);
			}
			done_count += (uint32_t)n;
		}
	}
	double seconds = (double)(rs_now_ns() - start) / 1e9;
	rs_close(conn);
	*ttft_ms = (double)first_token_ns / 1e6 / o->rounds;
	return ret ? ret : (double)tokens / seconds;
}

int bench_serve(int argc, char **argv, FILE *json)
{
	struct serve_options o = {
	    .batch = 32, .rounds = 3, .prompt = 128, .new_tokens = 32, .backend = "cpu"};
	for (int i = 1; i < argc; i++) {
		uint32_t *field = NULL;
		if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc) {
			o.backend = argv[++i];
			continue;
		}
		if (strcmp(argv[i], "--batch") == 0)
			field = &o.batch;
		else if (strcmp(argv[i], "--rounds") == 0)
			field = &o.rounds;
		else if (strcmp(argv[i], "--prompt") == 0)
			field = &o.prompt;
		else if (strcmp(argv[i], "--new") == 0)
			field = &o.new_tokens;
		if (!field || i + 1 >= argc) {
			fprintf(stderr,
				"bench serve: options: [--batch N] [--rounds N] [--prompt N] "
				"[--new N] [--backend cpu|cuda]\n");
			fprintf(json, "null");
			return 1;
		}
		*field = (uint32_t)atoi(argv[++i]);
	}
	bool cuda = strcmp(o.backend, "cuda") == 0;
	struct rs_model_config config = RS_STORIES15M_CONFIG(256);
	if (cuda)
		config = (struct rs_model_config)RS_TINYLLAMA_CONFIG(2048);
	if (o.batch < 1 || o.batch > MAX_BATCH || o.rounds < 1 || o.prompt < 1 || o.prompt > 4096 ||
	    o.new_tokens < 1 || o.prompt > STEP_TOKENS ||
	    o.prompt + o.new_tokens > config.max_seq_len ||
	    (!cuda && strcmp(o.backend, "cpu") != 0)) {
		fprintf(stderr,
			"bench serve: batch 1..%d, prompt 1..%d, prompt + new <= %u, backend "
			"cpu or cuda\n",
			MAX_BATCH, STEP_TOKENS, config.max_seq_len);
		fprintf(json, "null");
		return 1;
	}
	struct rs_model *model;
	char err[256], model_path[64], socket_path[64];
	if (rs_model_random(&config, cuda ? RS_DTYPE_F16 : RS_DTYPE_F32, 1, !cuda, &model)) {
		fprintf(json, "null");
		return 1;
	}
	snprintf(model_path, sizeof(model_path), "/tmp/ringserve-bench-serve-%d.gguf",
		 (int)getpid());
	snprintf(socket_path, sizeof(socket_path), "/tmp/ringserve-bench-serve-%d.sock",
		 (int)getpid());
	if (rs_gguf_write_model(model_path, model, NULL, err, sizeof(err))) {
		fprintf(stderr, "bench serve: %s\n", err);
		rs_model_free(model);
		fprintf(json, "null");
		return 1;
	}
	double direct = direct_tokens_per_second(model, &o);
	rs_model_free(model);
	double served = -1, ttft_ms = 0;
	/* The same KV room as the direct run: every request of the batch fits at once. */
	char batch_arg[16], kv_arg[16];
	snprintf(batch_arg, sizeof(batch_arg), "%u", o.batch);
	snprintf(kv_arg, sizeof(kv_arg), "%u", o.batch * ((o.prompt + o.new_tokens + 15) / 16));
	const char *daemon_args[] = {"--model",	    model_path,	   "--backend",
				     o.backend,	    "--max-batch", batch_arg,
				     "--kv-blocks", kv_arg,	   NULL};
	pid_t daemon = bench_start_daemon(socket_path, daemon_args);
	double cpu_per_s = -1.0;
	if (daemon > 0) {
		double cpu0 = process_cpu_seconds(daemon);
		uint64_t t0 = rs_now_ns();
		served = served_tokens_per_second(socket_path, config.vocab_size, &o, &ttft_ms);
		double cpu1 = process_cpu_seconds(daemon);
		if (cpu0 >= 0 && cpu1 >= 0)
			cpu_per_s = (cpu1 - cpu0) / ((double)(rs_now_ns() - t0) / 1e9);
		kill(daemon, SIGTERM);
		waitpid(daemon, NULL, 0);
	}
	unlink(model_path);
	if (direct < 0 || served < 0) {
		fprintf(stderr, "bench serve: failed (direct %.0f, served %.0f)\n", direct, served);
		fprintf(json, "null");
		return 1;
	}
	printf(
	    "ringserve-bench serve: %s model, %s backend, %u requests at once, prompt %u, %u new "
	    "tokens, %u rounds\n",
	    cuda ? "TinyLlama-1.1B-shaped f16" : "stories15M-shaped f32", o.backend, o.batch,
	    o.prompt, o.new_tokens, o.rounds);
	printf("  %-40s %10.0f tokens/s\n", "engine directly (same work)", direct);
	printf("  %-40s %10.0f tokens/s (%.0f%% of direct)\n", "through ringserved", served,
	       100.0 * served / direct);
	printf("  %-40s %10.1f ms\n", "first token of the first request", ttft_ms);
	printf("  %-40s %10.2f s/s\n", "daemon CPU time per second serving", cpu_per_s);
	fprintf(json,
		"{\"backend\": \"%s\", \"batch\": %u, \"prompt\": %u, \"new_tokens\": %u, "
		"\"rounds\": %u, \"direct_tokens_per_s\": %.1f, \"served_tokens_per_s\": %.1f, "
		"\"served_vs_direct\": %.3f, \"first_token_ms\": %.2f, "
		"\"daemon_cpu_s_per_s\": %.3f}",
		o.backend, o.batch, o.prompt, o.new_tokens, o.rounds, direct, served,
		served / direct, ttft_ms, cpu_per_s);
	return 0;
}
