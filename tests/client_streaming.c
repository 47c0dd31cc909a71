/* Streaming and cancelling: tokens appear one step at a time through the progress
 * counter (each one right), the end shows as -ENODATA, and a cancelled request stops
 * early with -ECANCELED and keeps the tokens it produced. */
#include <errno.h>
#include <string.h>

#include "client-lib/ringserve.h"
#include "tests/harness/harness.h"

#define VOCAB 500

int main(void)
{
	struct test_daemon daemon;
	/* 2 ms a step: slow enough that the client sees tokens arrive one by one. */
	const char *args[] = {"--null-vocab", "500", "--null-delay-us", "2000", NULL};
	test_daemon_start(&daemon, args);
	struct rs_connection *conn;
	int ret = rs_connect(daemon.socket_path, NULL, &conn);
	CHECK(ret == 0, "rs_connect: %s", strerror(-ret));

	unsigned prompt[5] = {4, 8, 15, 16, 23};
	/* 250 steps of 2 ms: half a second, so that even a client that was descheduled for
	 * a while sees the output part-way, not only at its end. */
	enum { STREAMED = 250 };
	struct rs_generate_params params = {.prompt = prompt, .prompt_len = 5,
					    .max_new_tokens = STREAMED};
	int request = rs_submit(conn, &params);
	CHECK(request >= 0, "submit: %s", strerror(-request));
	uint32_t have = 0;
	int updates = 0;
	for (;;) {
		int count = rs_wait_output(conn, request, have, 5000);
		if (count == -ENODATA)
			break;
		CHECK(count > (int)have, "rs_wait_output: %d (have %u)", count, have);
		const uint32_t *tokens;
		CHECK(rs_output(conn, request, &tokens) >= count, "rs_output");
		for (int i = (int)have; i < count; i++)
			CHECK(tokens[i] == test_null_token(prompt, 5, (unsigned)i, VOCAB), "token %d", i);
		have = (uint32_t)count;
		updates++;
	}
	CHECK(have == STREAMED, "streamed %u tokens", have);
	/* The client must have seen partial progress, not just the end. */
	CHECK(updates > 1, "only %d progress update(s)", updates);
	struct rs_completion done;
	CHECK(rs_wait(conn, &done, 1, 5000) == 1, "completion");
	CHECK(done.request == request && done.status == 0 && done.output_len == STREAMED, "result");
	CHECK(rs_release(conn, request) == 0, "release");

	/* Cancel a long request once it has produced 3 tokens. */
	params.max_new_tokens = 4000;
	request = rs_submit(conn, &params);
	CHECK(request >= 0, "submit");
	CHECK(rs_release(conn, request) == -EBUSY, "release of a running request");
	ret = rs_wait_output(conn, request, 2, 5000);
	CHECK(ret >= 3, "progress before cancel: %d", ret);
	CHECK(rs_cancel(conn, request) == 0, "cancel");
	CHECK(rs_wait(conn, &done, 1, 5000) == 1, "cancelled completion");
	CHECK(done.request == request, "which");
	CHECK(done.status == -ECANCELED, "status %d", done.status);
	CHECK(done.output_len >= 3 && done.output_len < 4000, "output_len %u", done.output_len);
	const uint32_t *tokens;
	CHECK(rs_output(conn, request, &tokens) == (int)done.output_len, "output count = output_len");
	for (unsigned i = 0; i < done.output_len; i++)
		CHECK(tokens[i] == test_null_token(prompt, 5, i, VOCAB), "token %u", i);
	CHECK(rs_release(conn, request) == 0, "release");
	CHECK(rs_cancel(conn, request) == -EINVAL, "cancel of a released handle");

	rs_close(conn);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit status");
	return T_EXIT_PASS;
}
