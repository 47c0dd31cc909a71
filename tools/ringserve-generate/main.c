/* ringserve-generate: run the engine directly on one prompt, without the daemon. Prints the
 * prompt and the generated text (or, with --ids, only the generated ids) on stdout and the
 * speed on stderr. A reference for what the daemon should produce for the same request. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/engine/engine.h"
#include "kernels/model/model.h"
#include "kernels/model/tokenizer.h"

#define PROG "ringserve-generate"

/* Print the usage to f. */
static void usage(FILE *f)
{
	fprintf(f,
		"usage: " PROG " MODEL [--tokenizer FILE] [--prompt TEXT | --prompt-ids \"1 2 3\"]\n"
		"         [-n STEPS] [--temperature T] [--top-p P] [--top-k K] [--seed S]\n"
		"         [--backend auto|cpu|cuda] [--threads N] [--ids] [--ignore-eos] [--no-bos]\n"
		"  MODEL is a GGUF file or a llama2.c checkpoint (its tokenizer.bin is looked for next\n"
		"  to it). Defaults: 64 steps, greedy (temperature 0), seed 0, backend auto.\n"
		"  Without a prompt, generation starts from BOS. Generation stops at EOS (printed as an\n"
		"  id with --ids) unless --ignore-eos, or at the model's context length.\n");
}

/* Monotonic time in seconds. */
static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A float option value; exits on garbage. */
static double parse_float(const char *opt, const char *arg)
{
	char *end;
	double v = strtod(arg, &end);
	if (end == arg || *end) {
		fprintf(stderr, PROG ": %s: bad value '%s'\n", opt, arg);
		exit(2);
	}
	return v;
}

/* An unsigned option value; exits on garbage. */
static unsigned long long parse_uint(const char *opt, const char *arg)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(arg, &end, 0);
	if (errno || end == arg || *end || arg[0] == '-') {
		fprintf(stderr, PROG ": %s: bad value '%s'\n", opt, arg);
		exit(2);
	}
	return v;
}

/* "1 2 3" (spaces or commas) into ids; returns the count. */
static uint32_t parse_ids(const char *s, uint32_t vocab, uint32_t **out)
{
	size_t cap = strlen(s) / 2 + 1;
	uint32_t *ids = malloc(cap * sizeof(*ids)), n = 0;
	if (!ids) {
		fprintf(stderr, PROG ": out of memory\n");
		exit(1);
	}
	while (*s) {
		if (*s == ' ' || *s == ',' || *s == '\t' || *s == '\n') {
			s++;
			continue;
		}
		char *end;
		errno = 0;
		unsigned long v = strtoul(s, &end, 10);
		if (end == s || errno || v >= vocab) {
			fprintf(stderr, PROG ": --prompt-ids: '%.20s' is not a token id below %u\n", s,
				vocab);
			exit(2);
		}
		ids[n++] = (uint32_t)v;
		s = end;
	}
	*out = ids;
	return n;
}

/* Print one token's text as it streams (raw bytes: a UTF-8 character may span tokens). */
static void print_token(const struct rs_tokenizer *tok, int32_t prev, uint32_t id)
{
	char buf[RS_TOKENIZER_MAX_PIECE + 1];
	int n = tok ? rs_tokenizer_decode_token(tok, prev, id, buf, sizeof(buf)) : -EINVAL;
	if (n > 0)
		fwrite(buf, 1, (size_t)n, stdout);
	else if (n < 0)
		printf("[%u]", id); /* an id the vocabulary does not cover */
	fflush(stdout);
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{ "tokenizer", required_argument, NULL, 'T' },
		{ "prompt", required_argument, NULL, 'p' },
		{ "prompt-ids", required_argument, NULL, 'P' },
		{ "temperature", required_argument, NULL, 't' },
		{ "top-p", required_argument, NULL, 'r' },
		{ "top-k", required_argument, NULL, 'k' },
		{ "seed", required_argument, NULL, 's' },
		{ "backend", required_argument, NULL, 'b' },
		{ "threads", required_argument, NULL, 'j' },
		{ "ids", no_argument, NULL, 'i' },
		{ "ignore-eos", no_argument, NULL, 'E' },
		{ "no-bos", no_argument, NULL, 'B' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *tokenizer_path = NULL, *prompt = NULL, *prompt_ids = NULL, *backend = "auto";
	unsigned long long steps = 64;
	struct rs_sampling_params sampling = { .temperature = 0.0f };
	int ids_only = 0, ignore_eos = 0, no_bos = 0, threads = 0, c;

	while ((c = getopt_long(argc, argv, "n:h", options, NULL)) != -1) {
		switch (c) {
		case 'T': tokenizer_path = optarg; break;
		case 'p': prompt = optarg; break;
		case 'P': prompt_ids = optarg; break;
		case 'n': steps = parse_uint("-n", optarg); break;
		case 't': sampling.temperature = (float)parse_float("--temperature", optarg); break;
		case 'r': sampling.top_p = (float)parse_float("--top-p", optarg); break;
		case 'k': sampling.top_k = (uint32_t)parse_uint("--top-k", optarg); break;
		case 's': sampling.seed = parse_uint("--seed", optarg); break;
		case 'b': backend = optarg; break;
		case 'j': threads = (int)parse_uint("--threads", optarg); break;
		case 'i': ids_only = 1; break;
		case 'E': ignore_eos = 1; break;
		case 'B': no_bos = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind + 1 != argc || (prompt && prompt_ids)) {
		usage(stderr);
		return 2;
	}

	char err[512];
	struct rs_model *model;
	double t0 = now_seconds();
	int ret = rs_model_load(argv[optind], tokenizer_path, &model, err, sizeof(err));
	if (ret) {
		fprintf(stderr, PROG ": %s\n", err);
		return 1;
	}
	const struct rs_model_config *cfg = &model->config;
	const struct rs_tokenizer *tok = model->tokenizer;
	int32_t eos = tok ? rs_tokenizer_eos(tok) : -1;

	/* The prompt as ids. */
	uint32_t *ids = NULL, n_prompt;
	if (prompt_ids) {
		n_prompt = parse_ids(prompt_ids, cfg->vocab_size, &ids);
	} else if (prompt && !tok) {
		fprintf(stderr, PROG ": the model has no tokenizer: give --tokenizer or --prompt-ids\n");
		return 2;
	} else {
		const char *text = prompt ? prompt : "";
		size_t len = strlen(text), cap = rs_tokenizer_max_tokens(len);
		ids = malloc(cap * sizeof(*ids));
		if (!ids)
			return 1;
		if (tok) {
			/* BOS only where the vocabulary asks for it (Llama's do, Qwen2's not). */
			bool bos = !no_bos && (rs_tokenizer_flags(tok) & RS_TOKENIZER_ADD_BOS);
			ret = rs_tokenizer_encode(tok, text, len, bos ? RS_ENCODE_BOS : 0, ids, cap);
			if (ret < 0) {
				fprintf(stderr, PROG ": cannot tokenize the prompt: %s\n", strerror(-ret));
				return 1;
			}
			if (ret == 0) {
				fprintf(stderr, PROG ": the prompt gives no token (give some text)\n");
				return 2;
			}
			n_prompt = (uint32_t)ret;
		} else {
			ids[0] = 1; /* Llama's BOS, for a model that came without a vocabulary */
			n_prompt = 1;
		}
	}
	if (n_prompt == 0) {
		fprintf(stderr, PROG ": empty prompt (use a prompt, or leave out --no-bos)\n");
		return 2;
	}
	if (n_prompt >= cfg->max_seq_len) {
		fprintf(stderr, PROG ": the prompt has %u tokens, the context only %u\n", n_prompt,
			cfg->max_seq_len);
		return 2;
	}
	if (steps > cfg->max_seq_len - n_prompt)
		steps = cfg->max_seq_len - n_prompt;
	uint32_t total = n_prompt + (uint32_t)steps;

	/* One sequence: just enough KV blocks for it. */
	struct rs_engine_options opts;
	rs_engine_options_init(&opts);
	opts.backend = backend;
	opts.threads = threads;
	opts.block_size = 16;
	opts.kv_blocks = rs_kv_blocks_for(total, opts.block_size);
	struct rs_engine *engine;
	ret = rs_engine_create(model, &opts, &engine, err, sizeof(err));
	if (ret) {
		fprintf(stderr, PROG ": %s\n", err);
		return 1;
	}
	uint32_t max_batch = rs_engine_options(engine)->max_batch_tokens;
	struct rs_kv_cache *kv = rs_engine_kv(engine);
	uint32_t n_blocks = rs_kv_blocks_for(total, rs_kv_block_size(kv));
	uint32_t *blocks = malloc(n_blocks * sizeof(*blocks));
	uint32_t *out = malloc(((size_t)steps + 1) * sizeof(*out));
	if (!blocks || !out)
		return 1;
	for (uint32_t b = 0; b < n_blocks; b++) {
		int id = rs_kv_block_alloc(kv);
		if (id < 0) {
			fprintf(stderr, PROG ": KV cache: %s\n", strerror(-id));
			return 1;
		}
		blocks[b] = (uint32_t)id;
	}
	double t_loaded = now_seconds();

	if (!ids_only && prompt)
		fputs(prompt, stdout);
	else if (!ids_only && tok)
		for (uint32_t i = 0; i < n_prompt; i++)
			print_token(tok, i ? (int32_t)ids[i - 1] : -1, ids[i]);

	/* Prefill in chunks of at most max_batch tokens; the last chunk samples. */
	uint32_t next = 0, pos = 0;
	struct rs_seq_step step = {
		.block_table = blocks, .n_blocks = n_blocks, .sampling = sampling, .out_token = &next,
	};
	while (pos < n_prompt && steps > 0) {
		uint32_t chunk = n_prompt - pos < max_batch ? n_prompt - pos : max_batch;
		step.tokens = ids + pos;
		step.n_tokens = chunk;
		step.start_pos = pos;
		step.sample = pos + chunk == n_prompt;
		ret = rs_engine_step(engine, 0, &step, 1);
		if (!ret)
			ret = rs_engine_step_wait(engine, 0);
		if (ret) {
			fprintf(stderr, PROG ": prefill step: %s\n", strerror(-ret));
			return 1;
		}
		pos += chunk;
	}
	double t_prefilled = now_seconds();

	uint32_t generated = 0, prev = ids[n_prompt - 1];
	while (generated < steps) {
		out[generated++] = next;
		if (ids_only)
			printf(generated > 1 ? " %u" : "%u", next);
		else if (!ignore_eos && (int32_t)next == eos)
			break;
		else
			print_token(tok, (int32_t)prev, next);
		if ((!ignore_eos && (int32_t)next == eos) || generated == steps)
			break;
		prev = next;
		step.tokens = &prev;
		step.n_tokens = 1;
		step.start_pos = pos++;
		step.sample = 1;
		ret = rs_engine_step(engine, 0, &step, 1);
		if (!ret)
			ret = rs_engine_step_wait(engine, 0);
		if (ret) {
			fprintf(stderr, PROG ": decode step: %s\n", strerror(-ret));
			return 1;
		}
	}
	printf("\n");
	double t_done = now_seconds();
	double decode_s = t_done - t_prefilled;
	fprintf(stderr,
		PROG ": %s backend; load %.0f ms; prefill %u tokens in %.1f ms (%.1f tok/s); "
		"%u tokens generated, %.1f tok/s\n",
		rs_engine_options(engine)->backend, (t_loaded - t0) * 1e3, n_prompt,
		(t_prefilled - t_loaded) * 1e3, n_prompt / (t_prefilled - t_loaded), generated,
		generated > 1 && decode_s > 0 ? (generated - 1) / decode_s : 0.0);

	for (uint32_t b = 0; b < n_blocks; b++)
		rs_kv_block_unref(kv, blocks[b]);
	rs_engine_destroy(engine);
	rs_model_free(model);
	free(blocks);
	free(out);
	free(ids);
	return 0;
}
