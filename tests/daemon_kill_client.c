/* A client killed with SIGKILL mid-request: its work is cancelled and its resources are
 * freed (its client slot becomes available again), and the other client sees nothing. */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client-lib/ringserve.h"
#include "shm/clock.h"
#include "tests/harness/harness.h"

#define VOCAB 1000

static void run_victim(const char *socket_path, int ready_fd)
{
	/* The previous round's last connection may still be on its way out (the daemon
	 * frees its client slot when it sees the EOF): -EUSERS until then. */
	struct rs_connection *conn;
	int ret;
	uint64_t deadline = rs_now_ns() + 5ull * 1000 * 1000 * 1000;
	while ((ret = rs_connect(socket_path, NULL, &conn)) == -EUSERS && rs_now_ns() < deadline)
		sched_yield();
	if (ret != 0)
		_exit(2);
	unsigned prompt[4] = {1, 2, 3, 4};
	struct rs_generate_params params = {
	    .prompt = prompt, .prompt_len = 4, .max_new_tokens = 4000};
	int first = -1;
	for (int i = 0; i < 8; i++) {
		int request = rs_submit(conn, &params);
		if (request < 0)
			_exit(3);
		if (first < 0)
			first = request;
	}
	/* Tell the parent once the daemon is generating for us, then wait to be killed. */
	if (rs_wait_output(conn, first, 1, 5000) < 2)
		_exit(4);
	if (write(ready_fd, "r", 1) != 1)
		_exit(5);
	for (;;)
		pause();
}

int main(void)
{
	struct test_daemon daemon;
	/* Two client slots: the survivor and one more, so a leaked slot would show. */
	const char *args[] = {"--null-vocab", "1000", "--max-clients", "2", "--null-delay-us",
			      "1000",	      NULL};
	test_daemon_start(&daemon, args);
	struct rs_connection *survivor;
	CHECK(rs_connect(daemon.socket_path, NULL, &survivor) == 0, "survivor connect");

	for (int round = 0; round < 3; round++) {
		int pipefd[2];
		CHECK(pipe(pipefd) == 0, "pipe");
		pid_t victim = fork();
		CHECK(victim >= 0, "fork");
		if (victim == 0) {
			close(pipefd[0]);
			run_victim(daemon.socket_path, pipefd[1]);
		}
		close(pipefd[1]);
		char byte;
		CHECK(read(pipefd[0], &byte, 1) == 1, "victim did not start generating");
		close(pipefd[0]);

		/* The survivor has a request running alongside the victim's. */
		unsigned prompt[3] = {7, 7, (unsigned)round};
		struct rs_generate_params params = {
		    .prompt = prompt, .prompt_len = 3, .max_new_tokens = 30};
		int request = rs_submit(survivor, &params);
		CHECK(request >= 0, "survivor submit");

		kill(victim, SIGKILL);
		int status;
		CHECK(waitpid(victim, &status, 0) == victim && WIFSIGNALED(status),
		      "victim killed");

		struct rs_completion done;
		CHECK(rs_wait(survivor, &done, 1, 10000) == 1, "survivor completion");
		CHECK(done.status == 0 && done.output_len == 30, "survivor status %d", done.status);
		const uint32_t *tokens;
		CHECK(rs_output(survivor, request, &tokens) == 30, "survivor output");
		for (unsigned i = 0; i < 30; i++)
			CHECK(tokens[i] == test_null_token(prompt, 3, i, VOCAB),
			      "survivor token %u", i);
		rs_release(survivor, request);

		/* The victim's client slot is freed once the daemon has seen the EOF and its
		 * running requests have left their lane (one step, 1 ms). Until then a connect
		 * is refused with -EUSERS; anything else is a failure. */
		struct rs_connection *next = NULL;
		uint64_t deadline = rs_now_ns() + 5ull * 1000 * 1000 * 1000;
		int ret;
		while ((ret = rs_connect(daemon.socket_path, NULL, &next)) == -EUSERS &&
		       rs_now_ns() < deadline)
			sched_yield();
		CHECK(ret == 0, "client slot not freed after the kill: %s", strerror(-ret));
		rs_close(next);
	}
	rs_close(survivor);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit status");
	return T_EXIT_PASS;
}
