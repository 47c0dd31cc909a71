/* ringserved --workers 2 on a random model (CPU backend): the answers are those of one
 * engine, and both workers serve. With the null engine: requests from two connections, with two
 * shared prefixes, all end with their max_new_tokens and the null engine's tokens, and
 * both workers served some (the daemon reports what each served when it exits; its stderr
 * goes to a file here). The same under round-robin and cache-aware dispatch, and with
 * multi-bin batching per worker (static and continuous lanes, d2lpm and least-loaded),
 * and cache-aware dispatch at arrival (--dispatch-at arrival: SGLang's router). An
 * unknown --dispatch is refused at start. A worker whose null engine fails every step
 * (--null-fail-worker) is taken out after --worker-max-failures steps: only the requests
 * of its failed steps fail (-EIO, at most that many steps x max batch), every other ends
 * with the null engine's tokens on the other workers, and the daemon reports it out. */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client-lib/ringserve.h"
#include "tests/harness/harness.h"

#define REQUESTS 64
#define VOCAB	 32000

/* The per-worker served counts the daemon printed to the log at exit. */
static void read_served(int log_fd, const char *log_path, unsigned long served[2])
{
	FILE *log = fdopen(log_fd, "r");
	CHECK(log && fseek(log, 0, SEEK_SET) == 0, "log");
	char line[256];
	served[0] = served[1] = ULONG_MAX;
	while (fgets(line, sizeof(line), log)) {
		unsigned w;
		unsigned long n;
		if (sscanf(line, "ringserved: worker %u served %lu requests", &w, &n) == 2 && w < 2)
			served[w] = n;
	}
	fclose(log);
	unlink(log_path);
}

/* Start ringserved with args, its stderr into a new file (its descriptor in *log_fd). */
static void start_logged(struct test_daemon *daemon, const char *const *args, char *log_path,
			 int *log_fd)
{
	*log_fd = mkstemp(log_path);
	CHECK(*log_fd >= 0, "mkstemp: %s", strerror(errno));
	int saved = dup(2);
	CHECK(saved >= 0 && dup2(*log_fd, 2) == 2, "redirect stderr");
	test_daemon_start(daemon, args);
	CHECK(dup2(saved, 2) == 2, "restore stderr");
	close(saved);
}

/* bin_mode NULL: continuous batching; else multibin, 2 bins, lanes of that mode. */
/* dispatch "cache-aware@arrival": cache-aware with --dispatch-at arrival. */
static void run(const char *dispatch, const char *bin_mode, unsigned long served[2])
{
	bool at_arrival = strcmp(dispatch, "cache-aware@arrival") == 0;
	char log_path[] = "/tmp/ringserve-workers-log-XXXXXX";
	int log_fd;
	struct test_daemon daemon;
	const char *args[] = {"--workers",
			      "2",
			      "--dispatch-at",
			      at_arrival ? "arrival" : "admission",
			      "--dispatch",
			      at_arrival ? "cache-aware" : dispatch,
			      "--max-batch",
			      "4",
			      "--null-delay-us",
			      "200",
			      bin_mode ? "--planner" : NULL,
			      "multibin",
			      "--bins",
			      "2",
			      "--bin-mode",
			      bin_mode,
			      NULL};
	start_logged(&daemon, args, log_path, &log_fd);
	struct rs_connection *conn[2];
	for (int c = 0; c < 2; c++)
		CHECK(rs_connect(daemon.socket_path, NULL, &conn[c]) == 0, "connect %d", c);
	static uint32_t prompts[REQUESTS][40];
	for (int r = 0; r < REQUESTS; r++) {
		for (int i = 0; i < 40; i++) /* two 32-token prefixes, then private tokens */
			prompts[r][i] = i < 32 ? (uint32_t)(100 + (r % 2) * 1000 + i)
					       : (uint32_t)(5000 + r * 40 + i);
		struct rs_generate_params params = {.prompt = prompts[r],
						    .prompt_len = 40,
						    .max_new_tokens = 3 + (uint32_t)(r % 5),
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
			uint32_t want = 3 + (uint32_t)(r % 5);
			CHECK(done.status == 0 && done.output_len == want,
			      "%s: request %d: status %d, %u of %u tokens", dispatch, r,
			      done.status, done.output_len, want);
			const uint32_t *out = NULL;
			CHECK(rs_output(conn[c], done.request, &out) == (int)want, "output view");
			for (uint32_t i = 0; i < want; i++)
				CHECK(out[i] == test_null_token(prompts[r], 40, i, VOCAB),
				      "%s: request %d token %u", dispatch, r, i);
			rs_release(conn[c], done.request);
		}
	for (int c = 0; c < 2; c++)
		rs_close(conn[c]);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit status");
	read_served(log_fd, log_path, served);
	CHECK(served[0] != ULONG_MAX && served[1] != ULONG_MAX,
	      "%s: the daemon did not report its workers", dispatch);
	CHECK(served[0] + served[1] == REQUESTS, "%s: workers served %lu + %lu of %d", dispatch,
	      served[0], served[1], REQUESTS);
	CHECK(served[0] > 0 && served[1] > 0, "%s: a worker served nothing (%lu, %lu)", dispatch,
	      served[0], served[1]);
}

static void test_failing_worker(void)
{
	enum { N = 64, MAX_FAILURES = 2, MAX_BATCH = 4 };
	char log_path[] = "/tmp/ringserve-workers-log-XXXXXX";
	int log_fd;
	struct test_daemon daemon;
	const char *args[] = {"--workers",
			      "3",
			      "--dispatch",
			      "round-robin",
			      "--max-batch",
			      "4",
			      "--null-delay-us",
			      "200",
			      "--null-fail-worker",
			      "0",
			      "--worker-max-failures",
			      "2",
			      NULL};
	start_logged(&daemon, args, log_path, &log_fd);
	struct rs_connection *conn;
	CHECK(rs_connect(daemon.socket_path, NULL, &conn) == 0, "connect");
	static uint32_t prompts[N][8];
	for (int r = 0; r < N; r++) {
		for (int i = 0; i < 8; i++)
			prompts[r][i] = (uint32_t)(7 + r * 8 + i);
		struct rs_generate_params params = {.prompt = prompts[r],
						    .prompt_len = 8,
						    .max_new_tokens = 4,
						    .flags = RS_GENERATE_IGNORE_EOS,
						    .user_data = (uint64_t)r};
		CHECK(rs_submit(conn, &params) >= 0, "submit %d", r);
	}
	int failed = 0;
	for (int got = 0; got < N; got++) {
		struct rs_completion done;
		CHECK(rs_wait(conn, &done, 1, 30000) == 1, "completion %d", got);
		int r = (int)done.user_data;
		if (done.status == -EIO) {
			failed++;
		} else {
			CHECK(done.status == 0 && done.output_len == 4,
			      "request %d: status %d, %u tokens", r, done.status, done.output_len);
			const uint32_t *out = NULL;
			CHECK(rs_output(conn, done.request, &out) == 4, "output view");
			for (uint32_t i = 0; i < 4; i++)
				CHECK(out[i] == test_null_token(prompts[r], 8, i, VOCAB),
				      "request %d token %u", r, i);
		}
		rs_release(conn, done.request);
	}
	rs_close(conn);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit status");
	FILE *log = fdopen(log_fd, "r");
	CHECK(log && fseek(log, 0, SEEK_SET) == 0, "log");
	char line[256];
	bool reported_out = false;
	unsigned long served[3] = {ULONG_MAX, ULONG_MAX, ULONG_MAX};
	while (fgets(line, sizeof(line), log)) {
		unsigned w;
		unsigned long n;
		if (sscanf(line, "ringserved: worker %u served %lu requests", &w, &n) == 2 &&
		    w < 3) {
			served[w] = n;
			reported_out |= w == 0 && strstr(line, "taken out of service") != NULL;
		}
	}
	fclose(log);
	unlink(log_path);
	printf("failing worker: %d requests failed with -EIO (at most %d), workers served %lu, "
	       "%lu, %lu\n",
	       failed, MAX_FAILURES * MAX_BATCH, served[0], served[1], served[2]);
	CHECK(failed > 0 && failed <= MAX_FAILURES * MAX_BATCH, "%d failed", failed);
	CHECK(reported_out && served[0] == 0 &&
		  served[1] + served[2] == (unsigned long)(N - failed),
	      "the failing worker was not reported out (served %lu, %lu, %lu)", served[0],
	      served[1], served[2]);
}

/* A random Llama (ringserve-mkmodel) on the CPU backend: 8 greedy requests with one
 * prompt, served by one engine, then by two workers (two engine instances, a thread
 * each, round-robin): every answer is the single engine's, and both workers served. */
#define MODEL_REQUESTS 8
#define MODEL_TOKENS   12
static void serve_model(const char *model_path, const char *workers,
			uint32_t out[MODEL_REQUESTS][MODEL_TOKENS], unsigned long served[2])
{
	char log_path[] = "/tmp/ringserve-workers-log-XXXXXX";
	int log_fd;
	struct test_daemon daemon;
	const char *args[] = {"--model",    model_path,	   "--backend", "cpu",
			      "--threads",  workers,	   "--workers", workers,
			      "--dispatch", "round-robin", NULL};
	start_logged(&daemon, args, log_path, &log_fd);
	struct rs_connection *conn;
	CHECK(rs_connect(daemon.socket_path, NULL, &conn) == 0, "connect");
	static const uint32_t prompt[10] = {1, 40, 41, 42, 43, 44, 45, 46, 47, 48};
	for (int r = 0; r < MODEL_REQUESTS; r++) {
		struct rs_generate_params params = {.prompt = prompt,
						    .prompt_len = 10,
						    .max_new_tokens = MODEL_TOKENS,
						    .flags = RS_GENERATE_IGNORE_EOS,
						    .user_data = (uint64_t)r};
		CHECK(rs_submit(conn, &params) >= 0, "submit %d", r);
	}
	for (int got = 0; got < MODEL_REQUESTS; got++) {
		struct rs_completion done;
		CHECK(rs_wait(conn, &done, 1, 60000) == 1, "completion");
		int r = (int)done.user_data;
		CHECK(r >= 0 && r < MODEL_REQUESTS && done.status == 0 &&
			  done.output_len == MODEL_TOKENS,
		      "model request %d: status %d, %u tokens", r, done.status, done.output_len);
		const uint32_t *tokens = NULL;
		CHECK(rs_output(conn, done.request, &tokens) == MODEL_TOKENS, "output view");
		memcpy(out[r], tokens, sizeof(out[r]));
		rs_release(conn, done.request);
	}
	rs_close(conn);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit status");
	read_served(log_fd, log_path, served);
}

static void test_model(void)
{
	char dir[] = "/tmp/ringserve-workers-model-XXXXXX", model_path[128], command[512];
	CHECK(mkdtemp(dir), "mkdtemp");
	snprintf(model_path, sizeof(model_path), "%s/model.gguf", dir);
	snprintf(command, sizeof(command), "%s/ringserve-mkmodel --out-gguf %s --seed 7 >/dev/null",
		 test_build_dir(), model_path);
	CHECK(system(command) == 0, "mkmodel");
	static uint32_t one[MODEL_REQUESTS][MODEL_TOKENS], two[MODEL_REQUESTS][MODEL_TOKENS];
	unsigned long served[2];
	serve_model(model_path, "1", one, served);
	serve_model(model_path, "2", two, served);
	for (int r = 0; r < MODEL_REQUESTS; r++) {
		CHECK(memcmp(one[r], one[0], sizeof(one[0])) == 0, "one engine: answers differ");
		CHECK(memcmp(two[r], one[0], sizeof(one[0])) == 0,
		      "two workers: request %d's answer is not the single engine's", r);
	}
	CHECK(served[0] != ULONG_MAX && served[1] != ULONG_MAX && served[0] > 0 && served[1] > 0 &&
		  served[0] + served[1] == MODEL_REQUESTS,
	      "model workers served %lu and %lu", served[0], served[1]);
	printf("model: two workers served %lu and %lu, answers as one engine's\n", served[0],
	       served[1]);
	unlink(model_path);
	rmdir(dir);
}

int main(void)
{
	test_model();
	test_failing_worker();
	unsigned long served[2];
	run("d2lpm", NULL, served);
	printf("d2lpm: workers served %lu and %lu\n", served[0], served[1]);
	run("round-robin", NULL, served);
	printf("round-robin: workers served %lu and %lu\n", served[0], served[1]);
	run("cache-aware", NULL, served);
	printf("cache-aware: workers served %lu and %lu\n", served[0], served[1]);
	run("cache-aware@arrival", NULL, served);
	printf("cache-aware at arrival: workers served %lu and %lu\n", served[0], served[1]);
	run("least-loaded", "static", served);
	printf("least-loaded, multibin static: workers served %lu and %lu\n", served[0], served[1]);
	run("d2lpm", "continuous", served);
	printf("d2lpm, multibin continuous: workers served %lu and %lu\n", served[0], served[1]);

	char command[512];
	snprintf(command, sizeof(command),
		 "%s/ringserved --workers 2 --dispatch random --socket "
		 "/tmp/ringserve-workers-refused.sock >/dev/null 2>&1",
		 test_build_dir());
	CHECK(system(command) != 0, "--dispatch random accepted");
	return T_EXIT_PASS;
}
