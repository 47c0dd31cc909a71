/* A client connects, learns the model, runs requests, and gets the null engine's tokens
 * (computed independently in the harness); handles are released and reused; no-ops. */
#include <errno.h>
#include <string.h>

#include "client-lib/ringserve.h"
#include "tests/harness/harness.h"

#define VOCAB 1000

/* A request with user_data: the completion carries it back. */
static void check_user_data(struct rs_connection *conn, const unsigned *prompt, uint64_t user_data)
{
	struct rs_generate_params params = {
		.prompt = prompt, .prompt_len = 3, .max_new_tokens = 2, .user_data = user_data};
	int request = rs_submit(conn, &params);
	CHECK(request >= 0, "rs_submit: %s", strerror(-request));
	struct rs_completion done;
	CHECK(rs_wait(conn, &done, 1, 5000) == 1, "wait");
	CHECK(done.user_data == user_data && done.status == 0, "user_data %llu",
	      (unsigned long long)done.user_data);
	CHECK(rs_release(conn, request) == 0, "release");
	CHECK(rs_release(conn, request) == -EINVAL, "double release must fail");
}

int main(void)
{
	struct test_daemon daemon;
	const char *args[] = {"--null-vocab", "1000", NULL};
	test_daemon_start(&daemon, args);

	struct rs_connection *conn;
	int ret = rs_connect(daemon.socket_path, NULL, &conn);
	CHECK(ret == 0, "rs_connect: %s", strerror(-ret));
	struct rs_model_info info;
	CHECK(rs_model_info(conn, &info) == 0, "model info");
	CHECK(info.vocab_size == VOCAB, "vocab %u", info.vocab_size);
	CHECK(strcmp(info.engine_name, "null") == 0, "engine %s", info.engine_name);
	CHECK(info.max_prompt_tokens == 4096 && info.max_output_tokens == 4096, "default limits");

	unsigned prompt[64];
	for (unsigned i = 0; i < 64; i++)
		prompt[i] = (i * 37 + 11) % VOCAB;
	test_null_request(conn, prompt, 16, 1, VOCAB);
	test_null_request(conn, prompt, 64, 100, VOCAB);
	check_user_data(conn, prompt, 42);
	check_user_data(conn, prompt, UINT64_MAX);
	/* Many sequential requests: handles get reused, tokens stay right. */
	for (unsigned i = 0; i < 2000; i++) {
		prompt[0] = i % VOCAB;
		test_null_request(conn, prompt, 1 + i % 40, 1 + i % 7, VOCAB);
	}
	/* No-ops complete with request -1. */
	CHECK(rs_submit_nop(conn, 7) == 0, "nop");
	struct rs_completion done;
	CHECK(rs_wait(conn, &done, 1, 5000) == 1, "nop completion");
	CHECK(done.request == -1 && done.status == 0 && done.user_data == 7, "nop result");

	/* Nothing pending: a short wait times out. */
	ret = rs_wait(conn, &done, 1, 20);
	CHECK(ret == -ETIMEDOUT, "idle wait: %d", ret);

	/* Client-side argument checks. */
	struct rs_generate_params bad = {.prompt = prompt, .prompt_len = 0, .max_new_tokens = 1};
	CHECK(rs_submit(conn, &bad) == -EINVAL, "empty prompt");
	bad.prompt_len = 5000;
	CHECK(rs_submit(conn, &bad) == -E2BIG, "prompt over the limit");
	CHECK(rs_output(conn, 3, &(const uint32_t *){0}) == -EINVAL, "output of a free handle");

	rs_close(conn);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit status");
	return T_EXIT_PASS;
}
