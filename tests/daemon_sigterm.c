/* SIGTERM drains: running requests finish normally, new ones are refused with
 * -ESHUTDOWN, the socket file goes away and the daemon exits 0. With a short grace
 * period, requests that would not finish in time complete with -ESHUTDOWN instead. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sched.h>
#include <sys/wait.h>

#include "client-lib/connection.h"
#include "client-lib/ringserve.h"
#include "tests/harness/harness.h"

static void wait_draining(struct rs_connection *conn)
{
	/* The daemon publishes DRAINING in the segment when it handles the signal. */
	while (atomic_load(&conn->shared->daemon_state) != RS_DAEMON_DRAINING)
		sched_yield();
}

int main(void)
{
	unsigned prompt[4] = {9, 8, 7, 6};
	struct rs_generate_params params = {.prompt = prompt, .prompt_len = 4, .max_new_tokens = 20};
	struct rs_completion done;

	/* Drain: 20 steps of 5 ms finish well inside the default 10 s grace. */
	struct test_daemon daemon;
	const char *args[] = {"--null-delay-us", "5000", NULL};
	test_daemon_start(&daemon, args);
	struct rs_connection *conn;
	CHECK(rs_connect(daemon.socket_path, NULL, &conn) == 0, "connect");
	int requests[3];
	for (int i = 0; i < 3; i++)
		CHECK((requests[i] = rs_submit(conn, &params)) >= 0, "submit");
	CHECK(rs_wait_output(conn, requests[0], 0, 5000) >= 1, "running");
	kill(daemon.pid, SIGTERM);
	wait_draining(conn);
	CHECK(rs_submit(conn, &params) == -ESHUTDOWN, "new work while draining");
	for (int got = 0; got < 3;) {
		int n = rs_wait(conn, &done, 1, 10000);
		CHECK(n == 1, "drained completion: %d", n);
		CHECK(done.status == 0 && done.output_len == 20, "drained request: status %d, %u tokens",
		      done.status, done.output_len);
		got++;
	}
	int status;
	CHECK(waitpid(daemon.pid, &status, 0) == daemon.pid, "waitpid");
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %#x", status);
	struct stat st;
	CHECK(stat(daemon.socket_path, &st) < 0 && errno == ENOENT, "socket file removed");
	CHECK(rs_wait(conn, &done, 1, 2000) == -ECONNRESET, "after exit");
	rs_close(conn);

	/* Grace expiry: 4000 steps of 5 ms cannot finish in 100 ms. */
	const char *short_grace[] = {"--null-delay-us", "5000", "--grace-ms", "100", NULL};
	test_daemon_start(&daemon, short_grace);
	CHECK(rs_connect(daemon.socket_path, NULL, &conn) == 0, "connect");
	params.max_new_tokens = 4000;
	int request = rs_submit(conn, &params);
	CHECK(request >= 0, "submit");
	CHECK(rs_wait_output(conn, request, 0, 5000) >= 1, "running");
	kill(daemon.pid, SIGTERM);
	CHECK(rs_wait(conn, &done, 1, 10000) == 1, "completion after the grace period");
	CHECK(done.status == -ESHUTDOWN, "status %d", done.status);
	CHECK(done.output_len >= 1 && done.output_len < 4000, "output_len %u", done.output_len);
	CHECK(waitpid(daemon.pid, &status, 0) == daemon.pid, "waitpid");
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %#x", status);
	rs_close(conn);

	/* A second SIGTERM ends a long grace period at once. */
	const char *long_grace[] = {"--null-delay-us", "5000", "--grace-ms", "600000", NULL};
	test_daemon_start(&daemon, long_grace);
	CHECK(rs_connect(daemon.socket_path, NULL, &conn) == 0, "connect");
	request = rs_submit(conn, &params);
	CHECK(request >= 0, "submit");
	CHECK(rs_wait_output(conn, request, 0, 5000) >= 1, "running");
	kill(daemon.pid, SIGTERM);
	wait_draining(conn);
	kill(daemon.pid, SIGTERM);
	CHECK(rs_wait(conn, &done, 1, 10000) == 1, "completion after the second signal");
	CHECK(done.status == -ESHUTDOWN, "status %d", done.status);
	CHECK(waitpid(daemon.pid, &status, 0) == daemon.pid, "waitpid");
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %#x", status);
	rs_close(conn);
	return T_EXIT_PASS;
}
