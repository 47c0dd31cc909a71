/* A tenant that floods the daemon, through two connections, against a light tenant that
 * sends one request at a time (null engine, each step takes STEP_US, BATCH seats, every
 * request 16 prompt tokens and M output tokens).
 *
 * What is checked is what each policy guarantees about the order it admits in: how many
 * other requests are admitted after a light request arrives and before it is (its wait,
 * counted in admissions). The daemon writes its admission order, with each request's
 * arrival and admission on its own clock, to --null-admission-log; the count does not
 * depend on how long the steps take, which a loaded machine (builds beside the test, a
 * sanitizer) stretches unevenly: a wall-clock TTFT, even counted in median steps, once
 * failed here when a step of the wait was stretched and the decode's were not.
 *   - under vtc, a returning tenant is lifted to the smallest backlogged counter, so its
 *     request goes before every other tenant's next admission but those tied with it (by
 *     tenant id): with OTHERS other tenants it waits for at most OTHERS admissions.
 *   - under dlpm (quantum Q), the light tenant comes back with no credit (a tenant that
 *     stops being backlogged keeps a debt, never a credit), so it waits for the next round,
 *     which comes when no backlogged tenant has credit left; then the other backlogged
 *     tenants' older requests go first again while they have credit (ties on the cached
 *     prefix, which is none here, go by arrival). A round gives each of them Q, and each
 *     admission costs it at least w_p * 16, so each admits at most k = ceil(Q / 16) per
 *     round: at most 2 * OTHERS * k admissions before the light one.
 *   - under fcfs it waits behind everything the flooder and the steady tenant have queued
 *     (about 2 * FLOOD_INFLIGHT + STEADY_INFLIGHT requests). The test checks that it is at
 *     least twice the dlpm bound, to show what the fair policies fix.
 * The TTFT in steps (a step's length: the median of the light requests' decode steps) is
 * printed beside it, for the reader: about M steps more than the admission wait, the time
 * a seat takes to free.
 *
 * Opening more connections earns no more service: beside the light tenant, a steady
 * tenant with one connection stays backlogged; while both it and the flooder (two
 * connections) are backlogged (from the first light admission to the last), under vtc and
 * dlpm their admitted requests differ by at most what the fairness bounds of
 * docs/scheduling.md allow, in requests of equal cost.
 * Under fcfs the flooder, with twice the requests queued, gets about twice the service. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client-lib/ringserve.h"
#include "tests/harness/harness.h"

enum {
	STEP_US = 1000,
	BATCH = 4,
	M = 4,
	PROMPT = 16,
	FLOOD_INFLIGHT = 48, /* per flooding connection */
	STEADY_INFLIGHT = 48,
	QUANTUM = 64,
	OTHERS = 2,		  /* backlogged tenants beside the light one */
	LIGHT_REQUESTS = 200,	  /* each checked: the bounds hold for every one */
	FCFS_LIGHT_REQUESTS = 20, /* each waits ~140 steps: its median is enough */
};

struct backlog {
	const char *socket_path;
	const char *tenant;
	int connections;
	int inflight;
	atomic_bool stop;
	atomic_ulong completed;
	pthread_t thread;
};

static void fill_prompt(uint32_t *prompt, uint64_t *seed)
{
	for (int i = 0; i < PROMPT; i++) {
		*seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
		prompt[i] = (uint32_t)(*seed >> 33) % 32000;
	}
}

/* Keep `inflight` requests queued on each of the tenant's connections until stopped. */
static void *keep_backlogged(void *arg)
{
	struct backlog *backlog = arg;
	struct rs_connection *conns[4];
	struct rs_connect_options options = {.tenant = backlog->tenant};
	uint64_t seed = (uint64_t)(uintptr_t)backlog;
	for (int c = 0; c < backlog->connections; c++) {
		int ret = rs_connect(backlog->socket_path, &options, &conns[c]);
		CHECK(ret == 0, "%s: connect: %d", backlog->tenant, ret);
	}
	uint32_t prompt[PROMPT];
	int outstanding[4] = {0};
	while (!atomic_load(&backlog->stop)) {
		for (int c = 0; c < backlog->connections; c++) {
			while (outstanding[c] < backlog->inflight) {
				fill_prompt(prompt, &seed);
				struct rs_generate_params params = {.prompt = prompt,
								    .prompt_len = PROMPT,
								    .max_new_tokens = M,
								    .flags =
									RS_GENERATE_IGNORE_EOS};
				int request = rs_submit(conns[c], &params);
				if (request == -EAGAIN)
					break;
				CHECK(request >= 0, "%s: submit: %d", backlog->tenant, request);
				outstanding[c]++;
			}
			struct rs_completion done[64];
			int n = rs_wait(conns[c], done, 64, 10);
			CHECK(n >= 0 || n == -ETIMEDOUT, "%s: wait: %d", backlog->tenant, n);
			for (int i = 0; i < n; i++) {
				if (done[i].request < 0)
					continue;
				CHECK(done[i].status == 0, "%s: status %d", backlog->tenant,
				      done[i].status);
				rs_release(conns[c], done[i].request);
				outstanding[c]--;
				atomic_fetch_add(&backlog->completed, 1);
			}
		}
	}
	for (int c = 0; c < backlog->connections; c++)
		rs_close(conns[c]);
	return NULL;
}

static int compare_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

struct outcome {
	double ttft_p50, ttft_p99; /* in steps, by the clock: printed, not checked */
	/* The light requests' waits in the admission order: how many other requests were
	 * admitted after one arrived and before it (the daemon's own order, from its
	 * --null-admission-log, whatever the steps' lengths on a loaded machine). */
	unsigned rank_p50, rank_max;
	/* Admitted while the light tenant ran: requests of the flooder and of the steady
	 * tenant. */
	unsigned long flood_done, steady_done;
};

struct admission {
	unsigned long long arrived_ns, admitted_ns;
	char tenant[64];
};

static int compare_unsigned(const void *a, const void *b)
{
	unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
	return x < y ? -1 : x > y;
}

/* Read the admission log (admission order) and fill the outcome's ranks and counts. */
static void read_admissions(const char *path, int light_requests, struct outcome *outcome)
{
	FILE *f = fopen(path, "r");
	CHECK(f, "%s", path);
	size_t n = 0, cap = 1024;
	struct admission *log = malloc(cap * sizeof(*log));
	CHECK(log, "malloc");
	while (fscanf(f, "%llu %llu %63s", &log[n].arrived_ns, &log[n].admitted_ns,
		      log[n].tenant) == 3) {
		CHECK(log[n].admitted_ns >= log[n].arrived_ns &&
			  (n == 0 || log[n].admitted_ns >= log[n - 1].admitted_ns),
		      "admission log line %zu out of order", n + 1);
		if (++n == cap) {
			cap *= 2;
			log = realloc(log, cap * sizeof(*log));
			CHECK(log, "realloc");
		}
	}
	fclose(f);
	unlink(path);
	unsigned ranks[LIGHT_REQUESTS];
	int light = 0;
	size_t first_light = n, last_light = 0;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(log[i].tenant, "light") != 0)
			continue;
		/* The others admitted after it arrived, before it: the core admits after it
		 * takes new submissions in a loop, so one admitted at the very ns it arrived
		 * came after it. */
		unsigned rank = 0;
		for (size_t j = i; j-- > 0 && log[j].admitted_ns >= log[i].arrived_ns;)
			rank++;
		CHECK(light < LIGHT_REQUESTS, "more light requests than sent");
		ranks[light++] = rank;
		if (first_light == n)
			first_light = i;
		last_light = i;
	}
	CHECK(light == light_requests, "%d light admissions logged of %d", light, light_requests);
	qsort(ranks, (size_t)light, sizeof(ranks[0]), compare_unsigned);
	outcome->rank_p50 = ranks[light / 2];
	outcome->rank_max = ranks[light - 1];
	outcome->flood_done = outcome->steady_done = 0;
	for (size_t i = first_light; i <= last_light; i++) {
		outcome->flood_done += strcmp(log[i].tenant, "flood") == 0;
		outcome->steady_done += strcmp(log[i].tenant, "steady") == 0;
	}
	free(log);
}

static void run_policy(const char *policy, int light_requests, struct outcome *outcome)
{
	char quantum[16];
	snprintf(quantum, sizeof(quantum), "%d", QUANTUM);
	char step[16], batch[16];
	snprintf(step, sizeof(step), "%d", STEP_US);
	snprintf(batch, sizeof(batch), "%d", BATCH);
	char log_path[] = "/tmp/ringserve-flood-admissions-XXXXXX";
	int log_fd = mkstemp(log_path);
	CHECK(log_fd >= 0, "mkstemp");
	close(log_fd);
	const char *args[] = {"--policy",
			      policy,
			      "--quantum",
			      quantum,
			      "--null-delay-us",
			      step,
			      "--max-batch",
			      batch,
			      "--null-admission-log",
			      log_path,
			      NULL};
	struct test_daemon daemon;
	test_daemon_start(&daemon, args);

	struct backlog flood = {.socket_path = daemon.socket_path,
				.tenant = "flood",
				.connections = 2,
				.inflight = FLOOD_INFLIGHT};
	struct backlog steady = {.socket_path = daemon.socket_path,
				 .tenant = "steady",
				 .connections = 1,
				 .inflight = STEADY_INFLIGHT};
	CHECK(pthread_create(&flood.thread, NULL, keep_backlogged, &flood) == 0, "thread");
	CHECK(pthread_create(&steady.thread, NULL, keep_backlogged, &steady) == 0, "thread");

	struct rs_connection *light;
	struct rs_connect_options options = {.tenant = "light"};
	CHECK(rs_connect(daemon.socket_path, &options, &light) == 0, "light: connect");
	/* Let both backlogs build up: wait until each has completed some requests. */
	for (int i = 0; atomic_load(&flood.completed) < 50 || atomic_load(&steady.completed) < 50;
	     i++) {
		struct rs_completion none;
		CHECK(i < 1000, "the backlogs never started");
		rs_wait(light, &none, 1, 10);
	}
	double ttft_us[LIGHT_REQUESTS], step_us[LIGHT_REQUESTS];
	uint64_t seed = 77;
	uint32_t prompt[PROMPT];
	for (int r = 0; r < light_requests; r++) {
		fill_prompt(prompt, &seed);
		struct rs_generate_params params = {.prompt = prompt,
						    .prompt_len = PROMPT,
						    .max_new_tokens = M,
						    .flags = RS_GENERATE_IGNORE_EOS};
		int request = rs_submit(light, &params);
		CHECK(request >= 0, "light: submit %d", request);
		struct rs_completion done;
		int n = rs_wait(light, &done, 1, 30000);
		CHECK(n == 1 && done.status == 0, "light: wait %d status %d", n, done.status);
		CHECK(done.total_us > done.first_token_us, "light: timings %u %u",
		      done.first_token_us, done.total_us);
		step_us[r] = (double)(done.total_us - done.first_token_us) / (M - 1);
		ttft_us[r] = done.first_token_us;
		rs_release(light, done.request);
	}
	atomic_store(&flood.stop, true);
	atomic_store(&steady.stop, true);
	pthread_join(flood.thread, NULL);
	pthread_join(steady.thread, NULL);
	rs_close(light);
	CHECK(test_daemon_stop(&daemon) == 0, "daemon exit status");
	read_admissions(log_path, light_requests, outcome);
	/* A step's length: the median over the light requests' own decode steps. */
	qsort(step_us, (size_t)light_requests, sizeof(double), compare_double);
	qsort(ttft_us, (size_t)light_requests, sizeof(double), compare_double);
	double step_length_us = step_us[light_requests / 2];
	outcome->ttft_p50 = ttft_us[light_requests / 2] / step_length_us;
	outcome->ttft_p99 = ttft_us[(light_requests * 99) / 100] / step_length_us;
	printf("%-5s light tenant: waited for p50 %u, at most %u admissions; "
	       "TTFT p50 %.1f steps, p99 %.1f steps; meanwhile flood (2 connections) %lu and "
	       "steady (1 connection) %lu requests admitted\n",
	       policy, outcome->rank_p50, outcome->rank_max, outcome->ttft_p50, outcome->ttft_p99,
	       outcome->flood_done, outcome->steady_done);
}

int main(void)
{
	/* Admissions a light request waits for (see the top): vtc, at most the OTHERS tied
	 * with it; dlpm, at most 2 * OTHERS * k. */
	const unsigned vtc_rank_bound = OTHERS;
	const unsigned dlpm_rank_bound = 2 * OTHERS * ((QUANTUM + PROMPT - 1) / PROMPT);
	/* Service difference between two backlogged tenants (docs/scheduling.md): D for one
	 * tenant is w_p * L + S * w_q * M with S = BATCH seats; a request costs
	 * w_p * PROMPT + w_q * M. Requests the two may differ by: the bound over that cost,
	 * plus the requests in flight at the window's two ends (BATCH each). */
	const double D = 1.0 * PROMPT + BATCH * 2.0 * M, cost = 1.0 * PROMPT + 2.0 * M;
	const double vtc_requests = 2 * D / cost + 2 * BATCH;
	const double dlpm_requests = (2.0 * QUANTUM + 2 * D) / cost + 2 * BATCH;

	struct outcome vtc, dlpm, fcfs;
	run_policy("vtc", LIGHT_REQUESTS, &vtc);
	run_policy("dlpm", LIGHT_REQUESTS, &dlpm);
	run_policy("fcfs", FCFS_LIGHT_REQUESTS, &fcfs);
	printf("bounds: admissions a light request waits for: vtc %u, dlpm %u; "
	       "backlogged tenants differ by at most %.0f (vtc), %.0f (dlpm) requests\n",
	       vtc_rank_bound, dlpm_rank_bound, vtc_requests, dlpm_requests);

	CHECK(vtc.rank_max <= vtc_rank_bound,
	      "vtc: a light request waited for %u others' admissions (bound %u)", vtc.rank_max,
	      vtc_rank_bound);
	CHECK(dlpm.rank_max <= dlpm_rank_bound,
	      "dlpm: a light request waited for %u others' admissions (bound %u)", dlpm.rank_max,
	      dlpm_rank_bound);
	/* fcfs: it waits for all the backlogs queued before it (about 2 * FLOOD_INFLIGHT +
	 * STEADY_INFLIGHT); at least twice the dlpm bound shows what the fair policies fix. */
	CHECK(fcfs.rank_p50 >= 2 * dlpm_rank_bound,
	      "fcfs: a light request waited for only %u admissions (median): the flood did not "
	      "hurt it",
	      fcfs.rank_p50);
	CHECK(fabs((double)vtc.flood_done - (double)vtc.steady_done) <= vtc_requests,
	      "vtc: two connections got %lu requests done against one connection's %lu",
	      vtc.flood_done, vtc.steady_done);
	CHECK(fabs((double)dlpm.flood_done - (double)dlpm.steady_done) <= dlpm_requests,
	      "dlpm: two connections got %lu requests done against one connection's %lu",
	      dlpm.flood_done, dlpm.steady_done);
	CHECK(fcfs.flood_done > fcfs.steady_done * 3 / 2,
	      "fcfs: connections did not matter (%lu vs %lu)", fcfs.flood_done, fcfs.steady_done);
	printf("ok\n");
	return 0;
}
