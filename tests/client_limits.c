/* Per-client limits are enforced by the daemon with error completions: in-flight
 * requests, prompt and output length, token ids out of the vocabulary, bad sampling
 * parameters; the client library refuses what cannot fit its slots. */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "client-lib/connection.h"
#include "client-lib/ringserve.h"
#include "shm/segment.h"
#include "tests/harness/harness.h"

/* Put a raw submission in the ring, bypassing the library's own checks (the daemon must
 * not rely on them). */
static void raw_submit(struct rs_connection *conn, const struct rs_sqe *sqe, const uint32_t *prompt)
{
	if (prompt && sqe->slot < conn->hdr.slot_count)
		memcpy(rs_segment_slot_prompt(conn->segment, &conn->hdr, sqe->slot), prompt,
		       (size_t)(sqe->prompt_len < 64 ? sqe->prompt_len : 64) * 4);
	CHECK(rs_ring_producer_space(&conn->sq) > 0, "ring space");
	*(struct rs_sqe *)rs_ring_producer_slot(&conn->sq, 0) = *sqe;
	rs_ring_producer_publish(&conn->sq, 1);
	rs_conn_ring_doorbell(conn);
}

static int32_t raw_status(struct rs_connection *conn, const struct rs_sqe *sqe,
			  const uint32_t *prompt)
{
	raw_submit(conn, sqe, prompt);
	struct rs_completion done;
	CHECK(rs_wait(conn, &done, 1, 5000) == 1, "completion");
	CHECK(done.user_data == sqe->user_data, "user_data");
	return done.status;
}

int main(void)
{
	struct test_daemon daemon;
	const char *args[] = {"--null-vocab",
			      "100",
			      "--max-inflight",
			      "4",
			      "--slots",
			      "8",
			      "--ring-entries",
			      "8",
			      "--max-prompt",
			      "64",
			      "--max-output",
			      "32",
			      "--null-delay-us",
			      "50000",
			      NULL};
	test_daemon_start(&daemon, args);
	struct rs_connection *conn;
	int ret = rs_connect(daemon.socket_path, NULL, &conn);
	CHECK(ret == 0, "rs_connect: %s", strerror(-ret));
	struct rs_model_info info;
	rs_model_info(conn, &info);
	CHECK(info.max_inflight == 4 && info.max_prompt_tokens == 64 &&
		  info.max_output_tokens == 32,
	      "limits announced");

	uint32_t prompt[64];
	for (int i = 0; i < 64; i++)
		prompt[i] = (uint32_t)i;
	/* Library-side: what cannot fit a slot. */
	struct rs_generate_params params = {
	    .prompt = prompt, .prompt_len = 65, .max_new_tokens = 1};
	CHECK(rs_submit(conn, &params) == -E2BIG, "prompt over the limit");
	params.prompt_len = 4;
	params.max_new_tokens = 33;
	CHECK(rs_submit(conn, &params) == -E2BIG, "output over the limit");

	/* Daemon-side, through raw submissions. */
	struct rs_sqe sqe = {.opcode = RS_OP_GENERATE,
			     .slot = 0,
			     .prompt_len = 4,
			     .max_new_tokens = 1,
			     .top_p = 1.0f,
			     .user_data = 1};
	sqe.prompt_len = 65;
	CHECK(raw_status(conn, &sqe, prompt) == -E2BIG, "prompt over the limit (daemon)");
	sqe.prompt_len = 4;
	sqe.max_new_tokens = 1000;
	CHECK(raw_status(conn, &sqe, prompt) == -E2BIG, "output over the limit (daemon)");
	sqe.max_new_tokens = 0;
	CHECK(raw_status(conn, &sqe, prompt) == -EINVAL, "zero output");
	sqe.max_new_tokens = 1;
	sqe.slot = 8;
	CHECK(raw_status(conn, &sqe, prompt) == -EINVAL, "slot out of range");
	sqe.slot = 0xffffffffu;
	CHECK(raw_status(conn, &sqe, prompt) == -EINVAL, "slot far out of range");
	sqe.slot = 1;
	sqe.temperature = NAN;
	CHECK(raw_status(conn, &sqe, prompt) == -EINVAL, "NaN temperature");
	sqe.temperature = -1.0f;
	CHECK(raw_status(conn, &sqe, prompt) == -EINVAL, "negative temperature");
	sqe.temperature = 0.0f;
	sqe.top_p = 1.5f;
	CHECK(raw_status(conn, &sqe, prompt) == -EINVAL, "top_p > 1");
	sqe.top_p = 1.0f;
	sqe.opcode = 77;
	CHECK(raw_status(conn, &sqe, prompt) == -EINVAL, "unknown opcode");
	sqe.opcode = RS_OP_GENERATE;
	uint32_t bad_prompt[4] = {1, 2, 100, 3}; /* 100 == vocab size: out of range */
	CHECK(raw_status(conn, &sqe, bad_prompt) == -ERANGE, "token id out of the vocabulary");
	/* The check goes four tokens at a time, then one by one: a bad id in either part,
	 * and ids with the top bit set (an unsigned comparison, not a signed one). */
	uint32_t long_prompt[7] = {1, 2, 3, 4, 5, 6, 7};
	sqe.prompt_len = 7;
	CHECK(raw_status(conn, &sqe, long_prompt) == 0, "seven ids in range");
	long_prompt[6] = 0xffffffffu;
	CHECK(raw_status(conn, &sqe, long_prompt) == -ERANGE, "bad id among the last three");
	long_prompt[6] = 7;
	long_prompt[1] = 0x80000000u;
	CHECK(raw_status(conn, &sqe, long_prompt) == -ERANGE, "top-bit id among the first four");
	long_prompt[1] = 99;
	CHECK(raw_status(conn, &sqe, long_prompt) == 0, "the largest id in range");
	sqe.prompt_len = 4;

	/* In flight: four long requests run; a fifth is refused with -EAGAIN. */
	params.max_new_tokens = 32;
	int requests[4];
	for (int i = 0; i < 4; i++) {
		params.user_data = 100 + (uint64_t)i;
		requests[i] = rs_submit(conn, &params);
		CHECK(requests[i] >= 0, "submit %d: %s", i, strerror(-requests[i]));
	}
	sqe.slot = 7;
	sqe.user_data = 5;
	CHECK(raw_status(conn, &sqe, prompt) == -EAGAIN, "over the in-flight limit");
	for (int i = 0; i < 4; i++)
		CHECK(rs_cancel(conn, requests[i]) == 0, "cancel");
	struct rs_completion done;
	for (int got = 0; got < 4;) {
		int n = rs_wait(conn, &done, 1, 5000);
		CHECK(n == 1, "cancelled completions");
		CHECK(done.status == -ECANCELED, "status %d", done.status);
		CHECK(rs_release(conn, done.request) == 0, "release");
		got++;
	}
	/* The same slot twice: -EBUSY (raw, on a slot the library does not use). */
	sqe.slot = 6;
	sqe.user_data = 6;
	sqe.max_new_tokens = 32;
	raw_submit(conn, &sqe, prompt);
	sqe.user_data = 7;
	CHECK(raw_status(conn, &sqe, prompt) == -EBUSY, "busy slot");
	struct rs_sqe cancel = {.opcode = RS_OP_CANCEL, .slot = 6};
	raw_submit(conn, &cancel, NULL);
	CHECK(rs_wait(conn, &done, 1, 5000) == 1, "completion of the raw request");
	CHECK(done.user_data == 6 && done.status == -ECANCELED && done.request == -1, "raw cancel");
	/* Still serving after all that. */
	params.max_new_tokens = 2;
	int request = rs_submit(conn, &params);
	CHECK(request >= 0, "submit after errors");
	CHECK(rs_wait(conn, &done, 1, 5000) == 1 && done.status == 0 && done.output_len == 2, "ok");
	rs_close(conn);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit status");
	return T_EXIT_PASS;
}
