/* The statistics count every finish when many end together. The daemon keeps a run of
 * finishes of one tenant with the same end time, time to first token and latency pending
 * and applies it as one (daemon/stats.c): requests submitted together and ended by one
 * step share all three. A daemon on the null engine (each step STEP_US) serves bursts of
 * requests of different lengths from one connection, and two long ones that are
 * cancelled (failures flush the pending run first).
 *
 * Checked against the completions themselves: the tenant's finishes, failures and
 * samples are what the test counted, and its published percentiles are those of the
 * completions' own first_token_us and total_us (the values the daemon records) within
 * the histograms' documented 6.25%. */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client-lib/ringserve.h"
#include "tests/harness/harness.h"

enum {
	STEP_US = 20000,
	PROMPT = 16,
	MAX_DONE = 64,
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int submit(struct rs_connection *conn, uint32_t max_new, uint64_t user_data)
{
	uint32_t prompt[PROMPT];
	for (uint32_t i = 0; i < PROMPT; i++)
		prompt[i] = 1 + i;
	struct rs_generate_params params = {.prompt = prompt,
					    .prompt_len = PROMPT,
					    .max_new_tokens = max_new,
					    .user_data = user_data,
					    .flags = RS_GENERATE_IGNORE_EOS};
	int request = rs_submit(conn, &params);
	CHECK(request >= 0, "submit: %s", strerror(-request));
	return request;
}

static int by_value(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

/* The p-quantile as the daemon defines it: the ceil(p * n)-th smallest, in ms. */
static double quantile_ms(uint32_t *values, uint32_t n, double p)
{
	qsort(values, n, sizeof(*values), by_value);
	uint32_t rank = (uint32_t)(p * n);
	if ((double)rank < p * n)
		rank++;
	return values[(rank ? rank : 1) - 1] / 1000.0;
}

static void check_close(double published, double expected, const char *what)
{
	CHECK(published >= expected * (1 - 0.0625) - 0.001 &&
		  published <= expected * (1 + 0.0625) + 0.001,
	      "%s: published %.3f ms, the completions say %.3f ms", what, published, expected);
}

int main(void)
{
	struct test_daemon daemon;
	char step[32];
	snprintf(step, sizeof(step), "%d", STEP_US);
	const char *args[] = {"--null-delay-us", step, NULL};
	test_daemon_start(&daemon, args);
	struct rs_connection *conn;
	int ret = rs_connect(daemon.socket_path, NULL, &conn);
	CHECK(ret == 0, "rs_connect: %s", strerror(-ret));

	/* Bursts: lengths 1 and 3 together (two latencies in one burst), then lengths 2. */
	static const uint32_t bursts[][2] = {{8, 1}, {8, 3}, {6, 2}};
	uint32_t ttft_us[MAX_DONE], total_us[MAX_DONE], done = 0, failed = 0;
	for (int round = 0; round < 2; round++) {
		uint32_t submitted = 0;
		for (int b = round ? 2 : 0; b < (round ? 3 : 2); b++)
			for (uint32_t i = 0; i < bursts[b][0]; i++, submitted++)
				submit(conn, bursts[b][1], submitted);
		if (round == 1) {
			/* Two that run long, cancelled: failures between the runs. */
			for (int i = 0; i < 2; i++, submitted++)
				CHECK(rs_cancel(conn, submit(conn, 1000, 100 + i)) == 0, "cancel");
		}
		for (uint32_t seen = 0; seen < submitted;) {
			struct rs_completion c[MAX_DONE];
			int n = rs_wait(conn, c, MAX_DONE, 10000);
			CHECK(n > 0, "rs_wait: %s", strerror(-n));
			for (int i = 0; i < n; i++, seen++) {
				if (c[i].status == -ECANCELED) {
					failed++;
				} else {
					CHECK(c[i].status == 0, "status %d", c[i].status);
					ttft_us[done] = c[i].first_token_us;
					total_us[done++] = c[i].total_us;
				}
				rs_release(conn, c[i].request);
			}
		}
	}
	CHECK(done == 22 && failed == 2, "%u done, %u cancelled", done, failed);

	/* Updates come every 100 ms: wait for one that counts them all. */
	struct rs_stats stats;
	struct rs_stats_tenant tenants[RS_STATS_MAX_TENANTS];
	uint64_t deadline = now_ms() + 5000;
	const struct rs_stats_tenant *t;
	for (;;) {
		int n = rs_stats_snapshot(conn, &stats, tenants, RS_STATS_MAX_TENANTS);
		CHECK(n == 1, "rs_stats_snapshot: %d", n);
		t = &tenants[0];
		if (t->requests_finished + t->requests_failed >= done + failed)
			break;
		CHECK(now_ms() < deadline, "the statistics never counted every end (%llu + %llu)",
		      (unsigned long long)t->requests_finished,
		      (unsigned long long)t->requests_failed);
		poll(NULL, 0, 10);
	}
	CHECK(t->requests_finished == done && t->requests_failed == failed,
	      "finished %llu, failed %llu", (unsigned long long)t->requests_finished,
	      (unsigned long long)t->requests_failed);
	CHECK(t->ttft_samples == done && t->latency_samples == done, "samples %u %u",
	      t->ttft_samples, t->latency_samples);
	double latency_p99 = quantile_ms(total_us, done, 0.99);
	check_close(t->latency_p50_ms, quantile_ms(total_us, done, 0.50), "latency p50");
	check_close(t->latency_p99_ms, latency_p99, "latency p99");
	check_close(t->ttft_p50_ms, quantile_ms(ttft_us, done, 0.50), "ttft p50");
	check_close(t->ttft_p99_ms, quantile_ms(ttft_us, done, 0.99), "ttft p99");
	/* The longest requests took three steps: their latency is not the shortest's. */
	CHECK(latency_p99 >= 3 * STEP_US / 1000.0 * 0.9, "latency p99 %.3f ms", latency_p99);

	rs_close(conn);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit");
	return T_EXIT_PASS;
}
