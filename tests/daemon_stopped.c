/* A daemon that stops answering (SIGSTOP) must not hang its clients: a waiting call
 * returns -EHOSTDOWN once the heartbeat is 2 s old, a new connection gives up with
 * -ETIMEDOUT; after SIGCONT the same connection works again. */
#include <errno.h>
#include <signal.h>
#include <string.h>

#include "client-lib/connection.h"
#include "client-lib/ringserve.h"
#include "shm/clock.h"
#include "tests/harness/harness.h"

int main(void)
{
	struct test_daemon daemon;
	const char *args[] = {"--null-delay-us", "20000", NULL};
	test_daemon_start(&daemon, args);
	struct rs_connection *conn;
	CHECK(rs_connect(daemon.socket_path, NULL, &conn) == 0, "connect");
	unsigned prompt[2] = {1, 2};
	struct rs_generate_params params = {.prompt = prompt, .prompt_len = 2, .max_new_tokens = 10};
	int request = rs_submit(conn, &params);
	CHECK(request >= 0, "submit");
	CHECK(rs_wait_output(conn, request, 0, 5000) >= 1, "running");

	kill(daemon.pid, SIGSTOP);
	uint64_t start = rs_now_ns();
	struct rs_completion done;
	int ret;
	/* Completions already published may still come; then the wait must give up. */
	while ((ret = rs_wait(conn, &done, 1, 20000)) == 1)
		;
	double waited = (double)(rs_now_ns() - start) / 1e9;
	CHECK(ret == -EHOSTDOWN, "wait on a stopped daemon: %d (%s)", ret, strerror(-ret));
	CHECK(waited < 4.0, "gave up after %.2f s", waited);

	struct rs_connection *late;
	start = rs_now_ns();
	ret = rs_connect(daemon.socket_path, NULL, &late);
	waited = (double)(rs_now_ns() - start) / 1e9;
	CHECK(ret == -ETIMEDOUT, "connect to a stopped daemon: %d", ret);
	CHECK(waited < 7.0, "connect gave up after %.2f s", waited);

	kill(daemon.pid, SIGCONT);
	/* The daemon shows life again with a fresh heartbeat, soon after it runs. */
	uint64_t deadline = rs_now_ns() + 5ull * 1000 * 1000 * 1000;
	while (rs_now_ns() - atomic_load(&conn->shared->daemon_heartbeat_ns) > 1000000000ull)
		CHECK(rs_now_ns() < deadline, "no fresh heartbeat after SIGCONT");
	/* The request finishes once the daemon runs again; -EHOSTDOWN was not sticky. */
	ret = rs_wait(conn, &done, 1, 10000);
	CHECK(ret == 1 && done.request == request && done.status == 0 && done.output_len == 10,
	      "after SIGCONT: %d, status %d", ret, ret == 1 ? done.status : 0);
	rs_close(conn);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit status");
	return T_EXIT_PASS;
}
