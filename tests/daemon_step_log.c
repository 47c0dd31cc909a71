/* ringserved --step-log: one line per engine step with its shape (rows, tokens, attention
 * pairs) and seconds, which `ringserve-sim calibrate --step-log` fits its cost model to.
 *
 * The shapes are checked against what the requests must have cost, derived from them
 * alone: without the prefix cache and without KV pressure every position of a request
 * but its last sampled token is computed exactly once, so the steps' tokens add up to
 * sum(prompt_len + output_len - 1), and the position p (counted from 1) of a request
 * attends to p keys, so the pairs add up to sum(n (n + 1) / 2) with n that count. No step
 * exceeds the token budget or the batch. Bad uses are refused with a message: a log for
 * the null engine, an unwritable log, a malformed log given to the simulator. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "client-lib/ringserve.h"
#include "tests/harness/harness.h"

#define REQUESTS 10
#define BUDGET	 16 /* --max-batch-tokens */
#define BATCH	 4  /* --max-batch */

static int run(const char *command)
{
	int status = system(command);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

int main(void)
{
	char dir[] = "/tmp/ringserve-steplog-XXXXXX", model[128], log[128], command[1024];
	CHECK(mkdtemp(dir), "mkdtemp");
	snprintf(model, sizeof(model), "%s/model.gguf", dir);
	snprintf(log, sizeof(log), "%s/steps.txt", dir);
	snprintf(command, sizeof(command), "%s/ringserve-mkmodel --out-gguf %s --seed 7 >/dev/null",
		 test_build_dir(), model);
	CHECK(run(command) == 0, "mkmodel");

	struct test_daemon daemon;
	const char *args[] = {"--model",     model, "--backend",	  "cpu",
			      "--threads",   "1",   "--max-batch-tokens", "16",
			      "--max-batch", "4",   "--no-prefix-cache",  "--step-log",
			      log,	     NULL};
	test_daemon_start(&daemon, args);
	struct rs_connection *conn;
	CHECK(rs_connect(daemon.socket_path, NULL, &conn) == 0, "connect");
	static uint32_t prompts[REQUESTS][64];
	double want_tokens = 0, want_pairs = 0;
	for (int r = 0; r < REQUESTS; r++) {
		uint32_t length = 1 + (uint32_t)(r * 23 % 50), output = 1 + (uint32_t)(r * 7 % 20);
		for (uint32_t i = 0; i < length; i++)
			prompts[r][i] = 1 + (uint32_t)(r * 131 + i * 17) % 500;
		struct rs_generate_params params = {.prompt = prompts[r],
						    .prompt_len = length,
						    .max_new_tokens = output,
						    .flags = RS_GENERATE_IGNORE_EOS};
		CHECK(rs_submit(conn, &params) >= 0, "submit %d", r);
		double n = length + output - 1;
		want_tokens += n;
		want_pairs += n * (n + 1) / 2;
	}
	for (int got = 0; got < REQUESTS; got++) {
		struct rs_completion done;
		CHECK(rs_wait(conn, &done, 1, 60000) == 1, "completion");
		CHECK(done.status == 0, "status %d", done.status);
		rs_release(conn, done.request);
	}
	rs_close(conn);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit status"); /* the log is complete */

	FILE *f = fopen(log, "r");
	CHECK(f, "%s: %s", log, strerror(errno));
	char line[256];
	CHECK(fgets(line, sizeof(line), f) && line[0] == '#', "the header comes first");
	double tokens = 0, pairs = 0;
	unsigned steps = 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned rows, n;
		double p, seconds;
		CHECK(sscanf(line, "%u %u %lf %lf", &rows, &n, &p, &seconds) == 4, "line: %s",
		      line);
		CHECK(rows >= 1 && rows <= BATCH && n >= rows && n <= BUDGET,
		      "step %u: %u rows, %u tokens", steps, rows, n);
		CHECK(seconds > 0 && seconds < 60, "step %u: %g s", steps, seconds);
		tokens += n, pairs += p, steps++;
	}
	fclose(f);
	CHECK(tokens == want_tokens, "%.0f tokens logged, the requests needed %.0f", tokens,
	      want_tokens);
	CHECK(pairs == want_pairs, "%.0f pairs logged, the requests needed %.0f", pairs,
	      want_pairs);

	/* The simulator fits its cost model to the log and writes a model it can load. */
	char cost[128];
	snprintf(cost, sizeof(cost), "%s/cost.txt", dir);
	snprintf(command, sizeof(command),
		 "%s/ringserve-sim calibrate --step-log %s --out %s >/dev/null", test_build_dir(),
		 log, cost);
	CHECK(run(command) == 0, "ringserve-sim calibrate --step-log (%u steps)", steps);
	snprintf(command, sizeof(command),
		 "%s/ringserve-sim run --requests 20 --cost %s >/dev/null", test_build_dir(), cost);
	CHECK(run(command) == 0, "ringserve-sim run with the fitted cost model");

	/* A malformed log: refused, naming the line. */
	f = fopen(log, "a");
	CHECK(f && fputs("4 3 1.5 0.001\n", f) >= 0 && fclose(f) == 0,
	      "append"); /* rows > tokens */
	snprintf(command, sizeof(command),
		 "%s/ringserve-sim calibrate --step-log %s 2>&1 | grep -q ':%u: expected'",
		 test_build_dir(), log, steps + 2);
	CHECK(run(command) == 0, "a malformed line is refused by its number");

	/* The null engine has no steps to log; an unwritable log stops the daemon at once. */
	snprintf(command, sizeof(command),
		 "%s/ringserved --socket %s/x.sock --step-log %s 2>/dev/null", test_build_dir(),
		 dir, log);
	CHECK(run(command) == 2, "--step-log with the null engine is a usage error");
	snprintf(command, sizeof(command),
		 "%s/ringserved --socket %s/x.sock --model %s --step-log %s/missing/steps.txt "
		 "2>/dev/null",
		 test_build_dir(), dir, model, dir);
	CHECK(run(command) == 1, "an unwritable --step-log");

	snprintf(command, sizeof(command), "rm -rf %s", dir);
	CHECK(run(command) == 0, "cleanup");
	return T_EXIT_PASS;
}
