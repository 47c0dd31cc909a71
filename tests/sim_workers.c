/* The simulator with several workers (--workers, --dispatch):
 *   - continuous batching with a constant step time, N requests at once, batches of B on
 *     each of W workers: every dispatch policy fills each worker's B seats per wave
 *     (candidates are the workers with a free seat, and all free up together), so N / (W B)
 *     waves of L steps: the simulated time is exactly N / (W B) L steps, the step count
 *     (over all lanes) N / B L as with one worker;
 *   - the same seed gives the same run with d2lpm over 3 workers (preemption included);
 *   - more lanes than the simulator drives are refused with a message. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/harness/harness.h"
#include "tools/ringserve-sim/sim.h"

static struct sim_config base_config(uint32_t workers, enum rs_dispatch_policy dispatch)
{
	return (struct sim_config){.lanes = 1,
				   .max_batch = 8,
				   .max_batch_tokens = 512,
				   .kv_blocks = 4096,
				   .block_size = 16,
				   .prefix_cache = true,
				   .max_in_flight = 1 << 16,
				   .admission = {.policy = RS_ADMISSION_DLPM,
						 .w_prompt = 1,
						 .w_output = 2,
						 .quantum = 256},
				   .cost = {.base_s = 1e-3, .source = "1 ms a step"},
				   .workers = workers,
				   .dispatch = {.policy = dispatch}};
}

static void lengths(struct sim_lengths *l, const char *spec)
{
	char err[200];
	CHECK(sim_lengths_parse(spec, l, err, sizeof(err)) == 0, "%s", err);
}

static void test_closed_form(void)
{
	enum { N = 800, W = 4, B = 8, L = 10 };
	struct sim_generator_config gen = {.requests = N, .tenants = 1, .skew = 1, .seed = 3};
	lengths(&gen.suffix_len, "fixed:4");
	lengths(&gen.output_len, "fixed:10");
	lengths(&gen.prefix_len, "fixed:1");
	for (int policy = 0; policy < 4; policy++) {
		struct sim_config c = base_config(W, (enum rs_dispatch_policy)policy);
		struct sim_workload w;
		sim_workload_generator(&w, &gen);
		struct sim_result r;
		char err[256];
		CHECK(sim_run(&c, &w, &r, err, sizeof(err)) == 0, "%s", err);
		/* Each step lasts 1 ms and the simulator's nanosecond of progress. */
		double want = (double)N / (W * B) * L * (1e-3 + 1e-9);
		const char *name = rs_dispatch_policy_name(c.dispatch.policy);
		CHECK(r.requests == N && r.output_tokens == (uint64_t)N * L, "%s: %llu requests",
		      name, (unsigned long long)r.requests);
		CHECK(fabs(r.seconds - want) < 1e-9 * want, "%s: %.9f s, derived %.9f s", name,
		      r.seconds, want);
		CHECK(r.steps == N / B * L, "%s: %llu steps", name, (unsigned long long)r.steps);
		sim_workload_free(&w);
	}
	sim_lengths_free(&gen.suffix_len);
	sim_lengths_free(&gen.output_len);
	sim_lengths_free(&gen.prefix_len);
}

static void test_determinism(void)
{
	struct sim_config c = base_config(3, RS_DISPATCH_D2LPM);
	c.kv_blocks = 64; /* preemption and eviction too */
	struct sim_generator_config gen = {
	    .requests = 3000, .rate = 5000, .tenants = 3, .skew = 3, .prefixes = 3, .seed = 17};
	lengths(&gen.prefix_len, "exp:60:200");
	lengths(&gen.suffix_len, "uniform:1:50");
	lengths(&gen.output_len, "exp:30:300");
	struct sim_workload w;
	struct sim_result a, b;
	char err[256];
	sim_workload_generator(&w, &gen);
	CHECK(sim_run(&c, &w, &a, err, sizeof(err)) == 0, "%s", err);
	sim_workload_free(&w);
	sim_workload_generator(&w, &gen);
	CHECK(sim_run(&c, &w, &b, err, sizeof(err)) == 0, "%s", err);
	sim_workload_free(&w);
	CHECK(a.requests == 3000, "%llu requests", (unsigned long long)a.requests);
	CHECK(a.seconds == b.seconds && a.cached_tokens == b.cached_tokens &&
		  a.preemptions == b.preemptions && a.latency_mean_s == b.latency_mean_s,
	      "the same seed ran differently");
	CHECK(a.cached_tokens > 0, "no cache hit with 3 shared prefixes");

	c = base_config(200, RS_DISPATCH_D2LPM);
	c.lanes = 2; /* 400 lanes */
	sim_workload_generator(&w, &gen);
	CHECK(sim_run(&c, &w, &a, err, sizeof(err)) == -EINVAL && strstr(err, "lanes"),
	      "400 lanes: %s", err);
	sim_workload_free(&w);
	sim_lengths_free(&gen.prefix_len);
	sim_lengths_free(&gen.suffix_len);
	sim_lengths_free(&gen.output_len);
}

int main(void)
{
	test_closed_form();
	test_determinism();
	return T_EXIT_PASS;
}
