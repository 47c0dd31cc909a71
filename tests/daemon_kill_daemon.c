/* The daemon killed with SIGKILL while a client sleeps in rs_wait: the wait returns
 * -ECONNRESET promptly (well within a second), and later calls fail the same way. */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "client-lib/connection.h"
#include "client-lib/ringserve.h"
#include "shm/clock.h"
#include "tests/harness/harness.h"

static struct test_daemon daemon;
static struct rs_connection *conn;
static uint64_t killed_at;

/* Kill the daemon once the client is asleep on its futex (it says so in the segment). */
static void *killer(void *arg)
{
	while (!atomic_load(&conn->shared->client_need_wakeup))
		sched_yield();
	killed_at = rs_now_ns();
	test_daemon_kill(&daemon);
	return NULL;
}

int main(void)
{
	const char *args[] = {"--null-delay-us", "1000000", NULL};
	test_daemon_start(&daemon, args);
	struct rs_connect_options options = {.spin_us = UINT32_MAX}; /* sleep at once */
	CHECK(rs_connect(daemon.socket_path, &options, &conn) == 0, "connect");
	unsigned prompt[2] = {1, 2};
	struct rs_generate_params params = {.prompt = prompt, .prompt_len = 2, .max_new_tokens = 100};
	CHECK(rs_submit(conn, &params) >= 0, "submit");

	pthread_t thread;
	CHECK(pthread_create(&thread, NULL, killer, NULL) == 0, "thread");
	struct rs_completion done;
	int ret = rs_wait(conn, &done, 1, 30000);
	uint64_t returned_at = rs_now_ns();
	pthread_join(thread, NULL);
	CHECK(ret == -ECONNRESET, "rs_wait after the daemon died: %d (%s)", ret, strerror(-ret));
	double seconds = (double)(returned_at - killed_at) / 1e9;
	CHECK(seconds < 1.0, "noticed after %.3f s", seconds);
	fprintf(stderr, "daemon death noticed after %.1f ms\n", seconds * 1e3);

	/* Everything else fails promptly too. */
	CHECK(rs_submit(conn, &params) == -ECONNRESET, "submit after death");
	CHECK(rs_poll(conn, &done, 1) == -ECONNRESET, "poll after death");
	CHECK(rs_wait_output(conn, 0, 0, 1000) == -ECONNRESET, "wait_output after death");
	rs_close(conn);

	/* A fresh connect to the dead socket is refused, not hung. */
	ret = rs_connect(daemon.socket_path, NULL, &conn);
	CHECK(ret == -ENOENT || ret == -ECONNREFUSED, "connect to a dead daemon: %d", ret);
	return T_EXIT_PASS;
}
