/* The simulator (tools/ringserve-sim) against what can be derived without it:
 *   - continuous batching with a constant step time: N requests at once, batches of B,
 *     each request L steps (its prefill samples the first token, L - 1 decodes), so
 *     N / B waves of L steps: the simulated time is exactly N / B * L steps, and every
 *     wave but the last is admitted while later requests wait (N - B contended);
 *   - two tenants backlogged from the start: their weighted service difference stays
 *     within docs/scheduling.md's bounds (vtc D_a + D_b, dlpm 2Q + D_a + D_b), and a
 *     heavier-weighted tenant gets more;
 *   - the same seed gives the same run; a generated workload written as a trace and read
 *     back is the same workload; malformed trace lines are refused with their line;
 *   - a run that cannot go on stops with a message and leaks nothing. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/harness/harness.h"
#include "tools/ringserve-sim/sim.h"

static struct sim_config base_config(void)
{
	return (struct sim_config){.lanes = 1,
				   .max_batch = 8,
				   .max_batch_tokens = 512,
				   .kv_blocks = 4096,
				   .block_size = 16,
				   .prefix_cache = true,
				   .max_in_flight = 1 << 16,
				   .admission = {.policy = RS_ADMISSION_FCFS,
						 .w_prompt = 1,
						 .w_output = 2,
						 .quantum = 256},
				   .cost = {.base_s = 1e-3, .source = "1 ms a step"}};
}

static void lengths(struct sim_lengths *l, const char *spec)
{
	char err[200];
	CHECK(sim_lengths_parse(spec, l, err, sizeof(err)) == 0, "%s", err);
}

static void test_closed_form(void)
{
	enum { N = 800, B = 8, L = 10 };
	struct sim_config c = base_config();
	struct sim_generator_config gen = {.requests = N, .tenants = 1, .skew = 1, .seed = 3};
	lengths(&gen.suffix_len, "fixed:4");
	lengths(&gen.output_len, "fixed:10");
	lengths(&gen.prefix_len, "fixed:1");
	for (int policy = 0; policy < 4; policy++) {
		struct sim_workload w;
		sim_workload_generator(&w, &gen);
		struct sim_result r;
		char err[256];
		c.admission.policy = (enum rs_admission_policy)policy;
		CHECK(sim_run(&c, &w, &r, err, sizeof(err)) == 0, "%s", err);
		/* Each step lasts 1 ms and the simulator's nanosecond of progress. */
		double want = (double)N / B * L * (1e-3 + 1e-9);
		CHECK(r.requests == N && r.output_tokens == (uint64_t)N * L, "%llu requests",
		      (unsigned long long)r.requests);
		CHECK(fabs(r.seconds - want) < 1e-9 * want, "%s: %.9f s, derived %.9f s",
		      rs_admission_policy_name(c.admission.policy), r.seconds, want);
		CHECK(r.steps == N / B * L, "%llu steps", (unsigned long long)r.steps);
		/* Every wave but the last is admitted while later ones wait: the policy chose. */
		CHECK(r.contended_admissions == N - B, "%llu contended admissions, expected %d",
		      (unsigned long long)r.contended_admissions, N - B);
	}
}

static double run_two_tenants(enum rs_admission_policy policy, double weight1, struct sim_result *r)
{
	struct sim_config c = base_config();
	c.admission.policy = policy;
	c.max_batch = 4;
	struct sim_generator_config gen = {
	    .requests = 4000, .tenants = 2, .skew = 1, .seed = 9, .prefixes = 2};
	lengths(&gen.prefix_len, "uniform:16:64");
	lengths(&gen.suffix_len, "uniform:1:40");
	lengths(&gen.output_len, "uniform:1:30");
	struct sim_workload w;
	sim_workload_generator(&w, &gen);
	w.tenant_weights[1] = weight1;
	char err[256];
	CHECK(sim_run(&c, &w, r, err, sizeof(err)) == 0, "%s", err);
	/* D_i = (w_p L + S w_q M) / w_i with L the longest prompt (64 + 40), S the most
	 * running (max_batch), M the longest output. */
	double d0 = (1.0 * 104 + 4 * 2.0 * 30) / 1.0, d1 = (1.0 * 104 + 4 * 2.0 * 30) / weight1;
	return policy == RS_ADMISSION_VTC ? d0 + d1 : 2 * c.admission.quantum + d0 + d1;
}

static void test_fairness(void)
{
	struct sim_result r;
	for (int p = 0; p < 2; p++) {
		enum rs_admission_policy policy = p ? RS_ADMISSION_DLPM : RS_ADMISSION_VTC;
		double bound = run_two_tenants(policy, 1.0, &r);
		printf("%s: service difference %.0f, bound %.0f\n",
		       rs_admission_policy_name(policy), r.max_service_diff, bound);
		CHECK(r.max_service_diff > 0 && r.max_service_diff <= bound,
		      "%s: service difference %.1f outside (0, %.1f]",
		      rs_admission_policy_name(policy), r.max_service_diff, bound);
		/* Weight 3 for t1: it finishes its (equal) share of the requests sooner. */
		run_two_tenants(policy, 3.0, &r);
		CHECK(r.tenants[1].latency_p50_s < r.tenants[0].latency_p50_s,
		      "%s: weight 3 gives p50 %.3f s, weight 1 %.3f s",
		      rs_admission_policy_name(policy), r.tenants[1].latency_p50_s,
		      r.tenants[0].latency_p50_s);
	}
}

static void test_determinism_and_traces(void)
{
	struct sim_config c = base_config();
	c.admission.policy = RS_ADMISSION_DLPM;
	c.kv_blocks = 64; /* preemption and eviction too */
	struct sim_generator_config gen = {.requests = 3000,
					   .rate = 5000,
					   .tenants = 3,
					   .skew = 3,
					   .prefixes = 3,
					   .seed = 17,
					   .hint = true};
	lengths(&gen.prefix_len, "exp:60:200");
	lengths(&gen.suffix_len, "uniform:1:50");
	lengths(&gen.output_len, "exp:30:300");
	struct sim_workload w;
	struct sim_result a, b, t;
	char err[256], path[] = "/tmp/ringserve-sim-trace-XXXXXX";
	sim_workload_generator(&w, &gen);
	CHECK(sim_run(&c, &w, &a, err, sizeof(err)) == 0, "%s", err);
	sim_workload_generator(&w, &gen);
	CHECK(sim_run(&c, &w, &b, err, sizeof(err)) == 0, "%s", err);
	CHECK(a.seconds == b.seconds && a.cached_tokens == b.cached_tokens &&
		  a.preemptions == b.preemptions && a.latency_mean_s == b.latency_mean_s,
	      "the same seed ran differently");
	CHECK(a.preemptions > 0, "no preemption in a 64-block cache");

	int fd = mkstemp(path);
	CHECK(fd >= 0, "mkstemp");
	FILE *f = fdopen(fd, "w");
	sim_workload_generator(&w, &gen);
	CHECK(sim_workload_write_trace(&w, f) == 0, "write trace");
	fclose(f);
	CHECK(sim_workload_trace(&w, path, err, sizeof(err)) == 0, "%s", err);
	CHECK(w.n_trace == gen.requests, "%llu requests read back", (unsigned long long)w.n_trace);
	struct sim_workload g;
	sim_workload_generator(&g, &gen);
	struct sim_request_spec x, y;
	for (uint64_t i = 0; i < w.n_trace; i++) {
		CHECK(sim_workload_next(&g, &x), "generator ended");
		y = w.trace[i];
		CHECK(x.arrival_ns == y.arrival_ns &&
			  strcmp(g.tenant_names[x.tenant], w.tenant_names[y.tenant]) == 0 &&
			  x.prefix == y.prefix && x.prefix_len == y.prefix_len &&
			  x.prompt_len == y.prompt_len && x.output_len == y.output_len &&
			  x.output_hint == y.output_hint,
		      "request %llu differs after the round trip", (unsigned long long)i);
	}
	CHECK(sim_run(&c, &w, &t, err, sizeof(err)) == 0, "%s", err);
	CHECK(t.seconds == a.seconds && t.cached_tokens == a.cached_tokens,
	      "the trace ran differently from its generator");
	sim_workload_free(&w);

	static const char *const bad[] = {
	    "{\"arrival\": 1, \"tenant\": \"a\", \"prompt\": 3}",		 /* no output */
	    "{\"arrival\": 1, \"tenant\": \"a\", \"prompt\": 3, \"output\": 0}", /* output 0 */
	    "{\"arrival\": 1, \"tenant\": \"a\", \"prompt\": 3, \"output\": 2.5}",
	    "{\"arrival\": 1, \"tenant\": \"a\", \"prompt\": 3, \"output\": 2, \"x\": 1}",
	    "{\"arrival\": 1, \"tenant\": \"a\", \"prompt\": 3, \"output\": 2, \"prefix_len\": 2}",
	    "{\"arrival\": 1, \"tenant\": \"a\", \"prompt\": 3, \"output\": 2} trailing",
	    "{\"arrival\": 0.5, \"tenant\": \"a\", \"prompt\": 3, \"output\": 2}", /* earlier */
	    "[1, 2]",
	    "{\"arrival\": 1, \"tenant\": \"a\\u0041\", \"prompt\": 3, \"output\": 2}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		f = fopen(path, "w");
		fprintf(f,
			"{\"arrival\": 1, \"tenant\": \"a\", \"prompt\": 3, \"output\": 2}\n\n%s\n",
			bad[i]);
		fclose(f);
		int rc = sim_workload_trace(&w, path, err, sizeof(err));
		char where[300];
		snprintf(where, sizeof(where), "%s:3: ", path);
		CHECK(rc == -EINVAL && strncmp(err, where, strlen(where)) == 0,
		      "line \"%s\": %d, \"%s\"", bad[i], rc, err);
	}
	unlink(path);
}

/* A run that cannot go on (a request that never fits the KV cache, more requests in
 * flight than allowed) stops with a message and gives back what it had (ASan: no leak). */
static void test_errors(void)
{
	struct sim_config c = base_config();
	c.kv_blocks = 16;
	struct sim_generator_config gen = {
	    .requests = 100, .rate = 1000, .tenants = 2, .skew = 1, .seed = 5};
	lengths(&gen.prefix_len, "fixed:1");
	lengths(&gen.suffix_len, "uniform:1:400");
	lengths(&gen.output_len, "fixed:8");
	struct sim_workload w;
	struct sim_result r;
	char err[256] = "";
	sim_workload_generator(&w, &gen);
	CHECK(sim_run(&c, &w, &r, err, sizeof(err)) == -E2BIG && strstr(err, "can never fit"),
	      "oversized request: \"%s\"", err);
	c.kv_blocks = 4096;
	c.max_in_flight = 3;
	sim_workload_generator(&w, &gen);
	CHECK(sim_run(&c, &w, &r, err, sizeof(err)) == -ENOSPC && strstr(err, "in flight"),
	      "too many in flight: \"%s\"", err);
}

int main(void)
{
	test_errors();
	test_closed_form();
	test_fairness();
	test_determinism_and_traces();
	return T_EXIT_PASS;
}
