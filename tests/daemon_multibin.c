/* ringserved with the multi-bin planner (--planner multibin), null engine: requests of
 * two length classes, half with hints, from two connections, all end with exactly their
 * max_new_tokens; a daemon started with a batch larger than --max-batch refuses to start. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client-lib/ringserve.h"
#include "tests/harness/harness.h"

#define REQUESTS 60

int main(void)
{
	struct test_daemon daemon;
	const char *args[] = {"--planner",
			      "multibin",
			      "--bins",
			      "2",
			      "--bin-boundaries",
			      "8",
			      "--bin-batch",
			      "4",
			      "--bin-deadline-ms",
			      "5",
			      "--max-batch",
			      "8",
			      NULL};
	test_daemon_start(&daemon, args);
	struct rs_connection *conn[2];
	for (int c = 0; c < 2; c++)
		CHECK(rs_connect(daemon.socket_path, NULL, &conn[c]) == 0, "connect %d", c);
	static uint32_t prompt[8] = {1, 2, 3, 4, 5, 6, 7, 8};
	uint32_t want[REQUESTS];
	for (int r = 0; r < REQUESTS; r++) {
		want[r] = r % 3 ? 1 + (uint32_t)(r % 7) : 12 + (uint32_t)(r % 9);
		struct rs_generate_params params = {.prompt = prompt,
						    .prompt_len = 1 + (uint32_t)(r % 8),
						    .max_new_tokens = want[r],
						    .output_len_hint = r % 2 ? want[r] : 0,
						    .flags = RS_GENERATE_IGNORE_EOS,
						    .user_data = (uint64_t)r};
		int h = rs_submit(conn[r % 2], &params);
		CHECK(h >= 0, "submit %d: %s", r, strerror(-h));
	}
	bool seen[REQUESTS] = {false};
	for (int c = 0; c < 2; c++)
		for (int got = 0; got < REQUESTS / 2;) {
			struct rs_completion done;
			CHECK(rs_wait(conn[c], &done, 1, 30000) == 1, "completion");
			got++;
			int r = (int)done.user_data;
			CHECK(r >= 0 && r < REQUESTS && !seen[r], "request %d twice or unknown", r);
			seen[r] = true;
			CHECK(done.status == 0 && done.output_len == want[r],
			      "request %d: status %d, %u of %u tokens", r, done.status,
			      done.output_len, want[r]);
			rs_release(conn[c], done.request);
		}
	for (int c = 0; c < 2; c++)
		rs_close(conn[c]);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit status");

	/* A bin batch that can never be seated is refused at start, with the reason. */
	char command[512];
	snprintf(command, sizeof(command),
		 "%s/ringserved --planner multibin --bin-batch 9 --max-batch 8 --socket "
		 "/tmp/ringserve-multibin-refused.sock 2>&1 | grep -q 'more than --max-batch'",
		 test_build_dir());
	CHECK(system(command) == 0, "an impossible --bin-batch was not refused clearly");
	return T_EXIT_PASS;
}
