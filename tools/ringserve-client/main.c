/* ringserve-client: a command-line client of ringserved, and the demo of `make run`.
 *
 *   ringserve-client [--socket PATH] [--prompt TEXT | --prompt-ids "1 2 3"] [-n N]
 *                    [--temperature T] [--top-p P] [--top-k K] [--seed S]
 *                    [--requests K] [--ids] [--ignore-eos] [--distinct-prompts]
 *                    [--one-at-a-time]
 *
 * Tokenizes on the client side with the vocabulary the daemon shares read-only, submits
 * the prompt (K copies with seeds S, S+1, ... when --requests K), streams the first
 * request's text as it is generated, and prints each request's result and timing.
 *
 * --distinct-prompts: the request with seed s gets the prompt with every token id shifted
 * by s * 7919 (modulo the vocabulary), so that no two requests share a prefix block (as in
 * ringserve-bench ipc's round trips) and each one's end inserts a new prefix-cache node;
 * tools/callgrind-per-request.sh -d uses it.
 *
 * --one-at-a-time: each request is submitted once the previous one's completion is in
 * (ringserve-bench ipc's round trips; callgrind-per-request.sh -s); nothing is streamed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client-lib/ringserve.h"
#include "kernels/model/tokenizer.h"
#include "shm/clock.h"

#define MAX_REQUESTS	    256
#define DISTINCT_PROMPT_MAX 256 /* tokens of a prompt that --distinct-prompts shifts */

static void usage(void)
{
	fprintf(
	    stderr,
	    "usage: ringserve-client [--socket PATH] [--prompt TEXT | --prompt-ids \"1 2 3\"]\n"
	    "       [-n N] [--temperature T] [--top-p P] [--top-k K] [--seed S] [--requests K]\n"
	    "       [--ids] [--ignore-eos] [--distinct-prompts] [--one-at-a-time]\n");
}

static int parse_ids(const char *text, uint32_t *ids, int max)
{
	int n = 0;
	char *end;
	while (*text && n < max) {
		unsigned long id = strtoul(text, &end, 10);
		if (end == text)
			return -EINVAL;
		ids[n++] = (uint32_t)id;
		text = end;
		while (*text == ' ' || *text == ',')
			text++;
	}
	return n;
}

/* Print token `id` (following `prev`) as text, or as a number without a tokenizer. */
static void print_token(const struct rs_tokenizer *tok, int32_t prev, uint32_t id, int as_ids)
{
	if (!tok || as_ids) {
		printf("%u ", id);
		return;
	}
	char piece[256];
	int n = rs_tokenizer_decode_token(tok, prev, id, piece, sizeof(piece));
	if (n > 0)
		fwrite(piece, 1, (size_t)n, stdout);
}

int main(int argc, char **argv)
{
	const char *socket_path = NULL, *prompt_text = "Once upon a time", *prompt_ids = NULL;
	struct rs_generate_params params = {.max_new_tokens = 32, .top_p = 1.0f};
	int requests = 1, as_ids = 0, distinct_prompts = 0, one_at_a_time = 0;
	for (int i = 1; i < argc; i++) {
		const char *next = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(argv[i], "--socket") == 0 && next)
			socket_path = argv[++i];
		else if (strcmp(argv[i], "--prompt") == 0 && next)
			prompt_text = argv[++i];
		else if (strcmp(argv[i], "--prompt-ids") == 0 && next)
			prompt_ids = argv[++i];
		else if (strcmp(argv[i], "-n") == 0 && next)
			params.max_new_tokens = (uint32_t)atoi(argv[++i]);
		else if (strcmp(argv[i], "--temperature") == 0 && next)
			params.temperature = strtof(argv[++i], NULL);
		else if (strcmp(argv[i], "--top-p") == 0 && next)
			params.top_p = strtof(argv[++i], NULL);
		else if (strcmp(argv[i], "--top-k") == 0 && next)
			params.top_k = (uint32_t)atoi(argv[++i]);
		else if (strcmp(argv[i], "--seed") == 0 && next)
			params.seed = strtoull(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--requests") == 0 && next)
			requests = atoi(argv[++i]);
		else if (strcmp(argv[i], "--ids") == 0)
			as_ids = 1;
		else if (strcmp(argv[i], "--ignore-eos") == 0)
			params.flags |= RS_GENERATE_IGNORE_EOS;
		else if (strcmp(argv[i], "--distinct-prompts") == 0)
			distinct_prompts = 1;
		else if (strcmp(argv[i], "--one-at-a-time") == 0)
			one_at_a_time = 1;
		else {
			usage();
			return 2;
		}
	}
	if (requests < 1 || requests > MAX_REQUESTS) {
		fprintf(stderr, "ringserve-client: --requests must be 1..%d\n", MAX_REQUESTS);
		return 2;
	}

	struct rs_connection *conn;
	int ret = rs_connect(socket_path, NULL, &conn);
	if (ret) {
		fprintf(stderr, "ringserve-client: connect: %s\n", strerror(-ret));
		return 1;
	}
	struct rs_model_info info;
	rs_model_info(conn, &info);
	struct rs_tokenizer *tok = NULL;
	if (info.vocab && rs_tokenizer_load_serialized(info.vocab, info.vocab_bytes, &tok) < 0)
		fprintf(stderr,
			"ringserve-client: the daemon's vocabulary is unreadable; ids only\n");
	fprintf(stderr, "ringserve-client: model %s on the %s engine, vocabulary %u, context %u\n",
		info.model_name, info.engine_name, info.vocab_size, info.max_seq_len);

	static uint32_t prompt[8192];
	int prompt_len;
	if (prompt_ids) {
		prompt_len = parse_ids(prompt_ids, prompt, 8192);
	} else if (tok) {
		unsigned bos = rs_tokenizer_flags(tok) & RS_TOKENIZER_ADD_BOS ? RS_ENCODE_BOS : 0;
		prompt_len =
		    rs_tokenizer_encode(tok, prompt_text, strlen(prompt_text), bos, prompt, 8192);
	} else {
		fprintf(stderr,
			"ringserve-client: no vocabulary from the daemon: use --prompt-ids\n");
		prompt_len = -EINVAL;
	}
	if (prompt_len <= 0) {
		fprintf(stderr, "ringserve-client: bad prompt\n");
		rs_close(conn);
		return 2;
	}
	params.prompt = prompt;
	params.prompt_len = (uint32_t)prompt_len;

	/* Each request's own prompt (--distinct-prompts), made before the clock starts. */
	static uint32_t shifted[MAX_REQUESTS][DISTINCT_PROMPT_MAX];
	if (distinct_prompts && prompt_len > DISTINCT_PROMPT_MAX) {
		fprintf(stderr,
			"ringserve-client: --distinct-prompts takes prompts of at most %d tokens\n",
			DISTINCT_PROMPT_MAX);
		rs_close(conn);
		return 2;
	}
	uint64_t vocab = info.vocab_size ? info.vocab_size : 32000;
	for (int r = 0; distinct_prompts && r < requests; r++)
		for (int i = 0; i < prompt_len; i++)
			shifted[r][i] =
			    (uint32_t)((prompt[i] + (params.seed + (uint64_t)r) * 7919u) % vocab);

	uint64_t start = rs_now_ns(), first_token_ns = 0;
	uint64_t seed = params.seed;
	if (one_at_a_time) {
		uint64_t total_tokens = 0;
		for (int r = 0; r < requests; r++) {
			params.seed = seed + (uint64_t)r;
			params.user_data = (uint64_t)r;
			if (distinct_prompts)
				params.prompt = shifted[r];
			int handle = rs_submit(conn, &params);
			struct rs_completion done;
			int n = handle < 0 ? handle : rs_wait(conn, &done, 1, 30000);
			if (n != 1 || done.status) {
				fprintf(stderr, "ringserve-client: request %d: %s\n", r,
					strerror(n < 0	  ? -n
						 : n == 0 ? ETIMEDOUT
							  : -done.status));
				rs_close(conn);
				return 1;
			}
			total_tokens += done.output_len;
			rs_release(conn, done.request);
		}
		fprintf(stderr,
			"ringserve-client: %d request(s) one at a time, %llu tokens in %.3f s\n",
			requests, (unsigned long long)total_tokens,
			(double)(rs_now_ns() - start) / 1e9);
		rs_tokenizer_free(tok);
		rs_close(conn);
		return 0;
	}
	int handles[MAX_REQUESTS];
	for (int r = 0; r < requests; r++) {
		params.seed = seed + (uint64_t)r;
		params.user_data = (uint64_t)r;
		if (distinct_prompts)
			params.prompt = shifted[r];
		handles[r] = rs_submit(conn, &params);
		if (handles[r] < 0) {
			fprintf(stderr, "ringserve-client: submit: %s\n", strerror(-handles[r]));
			rs_close(conn);
			return 1;
		}
	}
	/* Stream the first request's output as it arrives. */
	if (!as_ids && tok)
		printf("%s", prompt_text);
	uint32_t shown = 0;
	int32_t prev = (int32_t)(distinct_prompts ? shifted[0] : prompt)[prompt_len - 1];
	for (;;) {
		int count = rs_wait_output(conn, handles[0], shown, 30000);
		if (count == -ENODATA)
			break;
		if (count < 0) {
			fprintf(stderr, "\nringserve-client: %s\n", strerror(-count));
			rs_close(conn);
			return 1;
		}
		if (!first_token_ns)
			first_token_ns = rs_now_ns() - start;
		const uint32_t *tokens;
		rs_output(conn, handles[0], &tokens);
		for (; shown < (uint32_t)count; shown++) {
			print_token(tok, prev, tokens[shown], as_ids);
			prev = (int32_t)tokens[shown];
		}
		fflush(stdout);
	}
	printf("\n");
	/* Collect every completion. */
	uint64_t total_tokens = 0;
	int failed = 0;
	for (int done_count = 0; done_count < requests;) {
		struct rs_completion done[MAX_REQUESTS];
		int n = rs_wait(conn, done, MAX_REQUESTS, 30000);
		if (n < 0) {
			fprintf(stderr, "ringserve-client: wait: %s\n", strerror(-n));
			rs_close(conn);
			return 1;
		}
		for (int k = 0; k < n; k++) {
			if (done[k].status) {
				fprintf(stderr, "ringserve-client: request %llu failed: %s\n",
					(unsigned long long)done[k].user_data,
					strerror(-done[k].status));
				failed++;
			}
			total_tokens += done[k].output_len;
			rs_release(conn, done[k].request);
		}
		done_count += n;
	}
	double seconds = (double)(rs_now_ns() - start) / 1e9;
	fprintf(stderr,
		"ringserve-client: %d request(s), %d prompt tokens each, %llu tokens generated in "
		"%.3f s "
		"(%.0f tokens/s), first token after %.1f ms\n",
		requests, prompt_len, (unsigned long long)total_tokens, seconds,
		(double)total_tokens / seconds, (double)first_token_ns / 1e6);
	rs_tokenizer_free(tok);
	rs_close(conn);
	return failed ? 1 : 0;
}
