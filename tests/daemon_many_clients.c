/* Many client processes, each with many requests in flight: every request completes
 * exactly once, with the right tokens; none is lost or duplicated. */
#include <errno.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client-lib/ringserve.h"
#include "tests/harness/harness.h"

#define VOCAB 4096
#define CLIENTS 8
#define REQUESTS 3000
#define WINDOW 48

static void make_prompt(unsigned client, unsigned i, unsigned *prompt, unsigned *len)
{
	*len = 1 + (client * 7 + i) % 24;
	for (unsigned j = 0; j < *len; j++)
		prompt[j] = (client * 1000003u + i * 7919u + j * 31u) % VOCAB;
}

static int run_client(const char *socket_path, unsigned client)
{
	struct rs_connection *conn;
	int ret = rs_connect(socket_path, NULL, &conn);
	CHECK(ret == 0, "client %u connect: %s", client, strerror(-ret));
	static unsigned char seen[REQUESTS];
	unsigned submitted = 0, completed = 0, inflight = 0;
	while (completed < REQUESTS) {
		while (submitted < REQUESTS && inflight < WINDOW) {
			unsigned prompt[32], len;
			make_prompt(client, submitted, prompt, &len);
			struct rs_generate_params params = {
				.prompt = prompt, .prompt_len = len,
				.max_new_tokens = 1 + submitted % 5, .user_data = submitted};
			int request = rs_submit(conn, &params);
			if (request == -EAGAIN)
				break;
			CHECK(request >= 0, "client %u submit: %s", client, strerror(-request));
			submitted++;
			inflight++;
		}
		struct rs_completion done[WINDOW];
		int n = rs_wait(conn, done, WINDOW, 10000);
		CHECK(n > 0, "client %u wait: %d", client, n);
		for (int k = 0; k < n; k++) {
			uint64_t i = done[k].user_data;
			CHECK(i < submitted, "client %u: unknown completion %llu", client, (unsigned long long)i);
			CHECK(!seen[i], "client %u: request %llu completed twice", client, (unsigned long long)i);
			seen[i] = 1;
			CHECK(done[k].status == 0, "client %u: status %d", client, done[k].status);
			unsigned expected_len = 1 + (unsigned)i % 5;
			CHECK(done[k].output_len == expected_len, "output_len");
			unsigned prompt[32], len;
			make_prompt(client, (unsigned)i, prompt, &len);
			const uint32_t *tokens;
			CHECK(rs_output(conn, done[k].request, &tokens) == (int)expected_len, "output");
			for (unsigned t = 0; t < expected_len; t++)
				CHECK(tokens[t] == test_null_token(prompt, len, t, VOCAB),
				      "client %u request %llu token %u", client, (unsigned long long)i, t);
			CHECK(rs_release(conn, done[k].request) == 0, "release");
			completed++;
			inflight--;
		}
	}
	for (unsigned i = 0; i < REQUESTS; i++)
		CHECK(seen[i], "client %u: request %u lost", client, i);
	rs_close(conn);
	return 0;
}

int main(void)
{
	struct test_daemon daemon;
	const char *args[] = {"--null-vocab", "4096", "--max-batch", "64", NULL};
	test_daemon_start(&daemon, args);
	pid_t children[CLIENTS];
	for (unsigned c = 0; c < CLIENTS; c++) {
		children[c] = fork();
		CHECK(children[c] >= 0, "fork");
		if (children[c] == 0)
			_exit(run_client(daemon.socket_path, c));
	}
	int failures = 0;
	for (unsigned c = 0; c < CLIENTS; c++) {
		int status;
		CHECK(waitpid(children[c], &status, 0) == children[c], "waitpid");
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "client %u failed (status %#x)\n", c, status);
			failures++;
		}
	}
	CHECK(failures == 0, "%d client(s) failed", failures);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit status");
	return T_EXIT_PASS;
}
