/* A conversation's next turn, submitted the moment the previous turn's completion is in,
 * hits the prefix cache for every full block of the previous turn's prompt and output,
 * in a small KV pool that keeps evicting (ringserved's idle KV reserve and admissions):
 *   - the daemon posts a completion before the scheduling core inserts the request's
 *     prompt + output into the cache (the publish hook); a client that submits at once
 *     must still find that insert done (the daemon reads its ring only afterwards);
 *   - the reserve evicts least recently used leaves, so it takes the older filler
 *     requests' blocks, never the conversation's just-finished turn.
 * Expected hits from the cache's definition (docs/scheduling.md): a finished request
 * caches the full blocks of the positions it computed (prompt + output - 1: the last
 * token is never fed), and a request matches at most its context less its last token. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client-lib/ringserve.h"
#include "tests/harness/harness.h"

#define BLOCK	    16
#define TURNS	    10
#define NEW_TOKENS  24
#define FILLER_LEN  100
#define MAX_CONTEXT 1024

/* One request to completion; its output appended to context (when given). */
static struct rs_completion run(struct rs_connection *conn, const uint32_t *prompt,
				uint32_t prompt_len, uint32_t *append_to)
{
	struct rs_generate_params params = {.prompt = prompt,
					    .prompt_len = prompt_len,
					    .max_new_tokens = NEW_TOKENS,
					    .flags = RS_GENERATE_IGNORE_EOS};
	int handle = rs_submit(conn, &params);
	CHECK(handle >= 0, "submit: %s", strerror(-handle));
	struct rs_completion done;
	int n = rs_wait(conn, &done, 1, 10000);
	CHECK(n == 1 && done.status == 0 && done.output_len == NEW_TOKENS,
	      "completion: %d, status %d, %u tokens", n, n == 1 ? done.status : 0,
	      n == 1 ? done.output_len : 0);
	if (append_to) {
		const uint32_t *tokens;
		CHECK(rs_output(conn, done.request, &tokens) == NEW_TOKENS, "output");
		memcpy(append_to, tokens, sizeof(*tokens) * NEW_TOKENS);
	}
	rs_release(conn, done.request);
	return done;
}

int main(void)
{
	struct test_daemon daemon;
	/* 64 blocks: a reserve of one block (1/64 of the pool), and room for about eight
	 * fillers of 8 blocks, so that admissions and the reserve evict all along. */
	const char *args[] = {"--kv-blocks", "64", NULL};
	test_daemon_start(&daemon, args);
	struct rs_connection *conn;
	CHECK(rs_connect(daemon.socket_path, NULL, &conn) == 0, "connect");
	struct rs_model_info info;
	rs_model_info(conn, &info);

	static uint32_t context[MAX_CONTEXT], filler[FILLER_LEN];
	uint32_t len = 40;
	for (uint32_t i = 0; i < len; i++)
		context[i] = 1 + i;
	uint32_t hits_checked = 0;
	for (uint32_t turn = 0; turn < TURNS; turn++) {
		CHECK(len + NEW_TOKENS + 3 <= MAX_CONTEXT, "context");
		struct rs_completion done = run(conn, context, len, context + len);
		if (turn > 0) {
			/* the previous turn computed len - 3 positions (its prompt and output
			 * but the last token, which is this prompt's third last): all its
			 * full blocks, and this prompt's last token is never matched */
			uint32_t previous = len - 3 - 1;
			uint32_t expected = previous / BLOCK * BLOCK;
			if (expected > (len - 1) / BLOCK * BLOCK)
				expected = (len - 1) / BLOCK * BLOCK;
			CHECK(done.cached_tokens == expected,
			      "turn %u (prompt %u): %u tokens cached, expected %u", turn, len,
			      done.cached_tokens, expected);
			hits_checked++;
		}
		len += NEW_TOKENS;
		for (uint32_t i = 0; i < 3; i++)
			context[len++] = 1000 + turn * 3 + i;
		/* A filler (no prefix in common with anything) after the turn, so the
		 * conversation is the second most recent when its next turn comes: the
		 * pool fills and the older fillers must go first. */
		for (uint32_t i = 0; i < FILLER_LEN; i++)
			filler[i] = 2 + (turn * 7919u + i * 31u) % (info.vocab_size - 2);
		struct rs_completion f = run(conn, filler, FILLER_LEN, NULL);
		CHECK(f.cached_tokens == 0, "filler %u hit %u tokens", turn, f.cached_tokens);
		/* The next turn comes at once after this completion: no pause for the daemon. */
	}
	/* The pool was under pressure (else the turns' hits prove nothing about eviction
	 * order): the first filler, least recently used, is gone, all of it or some. */
	for (uint32_t i = 0; i < FILLER_LEN; i++)
		filler[i] = 2 + (0 * 7919u + i * 31u) % (info.vocab_size - 2);
	struct rs_completion again = run(conn, filler, FILLER_LEN, NULL);
	CHECK(again.cached_tokens < (FILLER_LEN - 1) / BLOCK * BLOCK,
	      "the first filler still fully cached (%u tokens): no eviction happened",
	      again.cached_tokens);
	printf("%u turns checked; the first filler again: %u tokens cached\n", hits_checked,
	       again.cached_tokens);
	rs_close(conn);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit");
	printf("daemon_cache_turns: ok\n");
	return 0;
}
