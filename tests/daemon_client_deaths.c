/* 1,000 clients that die holding work: each connects, submits requests that share a cached
 * prefix (so running ones lock prefix-cache nodes), waits until one of them is producing
 * tokens, and is SIGKILLed with requests running and queued. Meanwhile another client
 * keeps getting exactly the null engine's tokens. Afterwards, read from the daemon's
 * statistics: nothing waits or runs, every request is counted completed or failed (so
 * every one was released), and the only KV blocks in use are the prefix cache's. */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client-lib/connection.h" /* the ring's indices: has the daemon taken them all? */
#include "client-lib/ringserve.h"
#include "shm/atomics.h"
#include "tests/harness/harness.h"

enum { DEATHS = 1000, PER_CLIENT = 8, PROMPT = 40, VOCAB = 32000 };

/* The doomed child: submit, wait for a first token, then tell the parent and hang. */
static void doomed_client(const char *socket_path, int ready_fd, int iteration)
{
	struct rs_connection *conn;
	struct rs_connect_options options = {.tenant = "doomed"};
	if (rs_connect(socket_path, &options, &conn))
		_exit(2);
	uint32_t prompt[PROMPT];
	int first = -1;
	for (int r = 0; r < PER_CLIENT; r++) {
		/* 32 shared tokens (two full blocks), then the request's own. */
		for (int i = 0; i < PROMPT; i++)
			prompt[i] = i < 32 ? (uint32_t)(7 * i + 1)
					   : (uint32_t)(iteration * 131 + r * 17 + i) % VOCAB;
		struct rs_generate_params params = {.prompt = prompt,
						    .prompt_len = PROMPT,
						    .max_new_tokens = 200,
						    .flags = RS_GENERATE_IGNORE_EOS};
		int request = rs_submit(conn, &params);
		if (request < 0)
			_exit(3);
		if (first < 0)
			first = request;
	}
	/* Every submission taken off the ring (the daemon's head catches up with our tail),
	 * so that each is a request the daemon holds when we die. A-head: pairs with the
	 * daemon's release of the SQ head once it has copied the entries. */
	for (int i = 0; rs_load_acquire(&conn->sq.indices->head) != conn->sq.local; i++) {
		struct rs_completion none;
		if (i > 10000)
			_exit(7);
		rs_wait(conn, &none, 1, 1); /* a bounded pause */
	}
	if (rs_wait_output(conn, first, 0, 10000) < 1)
		_exit(4);
	char one = 1;
	if (write(ready_fd, &one, 1) != 1)
		_exit(5);
	pause(); /* killed here, with requests running and waiting */
	_exit(6);
}

static double seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(void)
{
	/* Few seats and few blocks: deaths find requests running, waiting and preempted. */
	const char *args[] = {"--null-delay-us", "100", "--max-batch", "4",
			      "--kv-blocks",	 "96",	NULL};
	struct test_daemon daemon;
	test_daemon_start(&daemon, args);
	struct rs_connection *survivor;
	struct rs_connect_options options = {.tenant = "survivor"};
	CHECK(rs_connect(daemon.socket_path, &options, &survivor) == 0, "survivor: connect");
	unsigned survivor_prompt[PROMPT];
	uint64_t submitted = 0;
	for (int death = 0; death < DEATHS; death++) {
		int pipe_fds[2];
		CHECK(pipe(pipe_fds) == 0, "pipe");
		pid_t child = fork();
		CHECK(child >= 0, "fork");
		if (child == 0) {
			close(pipe_fds[0]);
			doomed_client(daemon.socket_path, pipe_fds[1], death);
		}
		close(pipe_fds[1]);
		char ready;
		ssize_t got = read(pipe_fds[0], &ready, 1);
		close(pipe_fds[0]);
		int status;
		if (got != 1) {
			waitpid(child, &status, 0);
			CHECK(false, "doomed client %d failed before dying (exit %d)", death,
			      WIFEXITED(status) ? WEXITSTATUS(status) : -1);
		}
		kill(child, SIGKILL);
		waitpid(child, &status, 0);
		submitted += PER_CLIENT;
		if (death % 50 == 0) {
			for (int i = 0; i < PROMPT; i++)
				survivor_prompt[i] = (unsigned)(death * 7 + i * 3) % VOCAB;
			test_null_request(survivor, survivor_prompt, PROMPT, 12, VOCAB);
			submitted++;
		}
	}
	/* Orphans leave at their step's end: poll the statistics until nothing is left. */
	struct rs_stats stats;
	double deadline = seconds() + 30;
	for (;;) {
		int n = rs_stats_snapshot(survivor, &stats, NULL, 0);
		CHECK(n >= 0 || n == -EAGAIN, "stats: %d", n);
		if (n >= 0 && stats.requests_waiting == 0 && stats.requests_running == 0 &&
		    stats.requests_completed + stats.requests_failed == submitted)
			break;
		CHECK(seconds() < deadline,
		      "not released: %u waiting, %u running, %llu completed + %llu failed of %llu",
		      stats.requests_waiting, stats.requests_running,
		      (unsigned long long)stats.requests_completed,
		      (unsigned long long)stats.requests_failed, (unsigned long long)submitted);
		struct rs_completion none;
		rs_wait(survivor, &none, 1, 5); /* a bounded pause that also watches the daemon */
	}
	printf(
	    "%d deaths: %llu requests completed, %llu failed; KV blocks used %u = cached %u of %u; "
	    "%llu preemptions\n",
	    DEATHS, (unsigned long long)stats.requests_completed,
	    (unsigned long long)stats.requests_failed, stats.kv_blocks_used, stats.kv_blocks_cached,
	    stats.kv_blocks_total, (unsigned long long)stats.preemptions);
	CHECK(stats.kv_blocks_used == stats.kv_blocks_cached,
	      "KV blocks held outside the cache: %u used, %u cached", stats.kv_blocks_used,
	      stats.kv_blocks_cached);
	CHECK(stats.requests_failed >= (uint64_t)DEATHS, "the deaths failed no request?");
	/* Still serving, with the shared prefix cached by the dead. */
	test_null_request(survivor, survivor_prompt, PROMPT, 12, VOCAB);
	rs_close(survivor);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit status");
	printf("ok\n");
	return 0;
}
