/* The replay client (tools/ringserve-sim/replay.c) and the simulator measure the same
 * things: one small trace through the simulator with the null engine's cost (every step
 * D, nothing else) and through a real ringserved on the null engine (--null-delay-us D).
 *
 * The trace: two tenants, two shared prefixes of 64 tokens (4 full blocks), requests
 * 150 ms apart, so each runs alone (a few steps of 2 ms). Expected values from the trace
 * itself, not from either side's code:
 * - requests and output tokens: the trace's;
 * - cached share: a request whose prefix an earlier one brought in has its 64 prefix
 *   tokens cached (plenty of KV blocks: nothing is evicted), a first one none;
 * - a request alone takes exactly output_len steps (a prefill that samples the first
 *   token, then output_len - 1 decodes), so the simulator's mean latency is
 *   mean(output_len) x D and its time to first token D; the daemon's can only be
 *   longer (its steps end at their deadline at the earliest), never shorter.
 * The per-request logs (sim_config.request_log, sim_replay_log) say the same request by
 * request: each request once, its cached tokens and output length the trace's; the
 * simulator admits it at its arrival (nothing else runs), its first token one step later
 * and its end output_len steps later; the daemon's times no earlier than that.
 * No upper bound on the daemon's times: that would be a timed assertion. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tests/harness/harness.h"
#include "tools/ringserve-sim/sim.h"

enum { N = 12, DELAY_US = 2000, PREFIX = 64 };

/* One line of a request log (SIM_REQUEST_LOG_HEADER's columns). */
struct logged {
	uint32_t tenant, prompt, cached, output, preemptions;
	int prefix;
	double arrival, admitted, first, done;
	bool seen;
};

/* Read a request log into by_index (N entries); checks each request appears once. */
static void read_request_log(FILE *log, const char *side, struct logged *by_index)
{
	rewind(log);
	char line[512];
	uint32_t lines = 0;
	memset(by_index, 0, N * sizeof(*by_index));
	while (fgets(line, sizeof(line), log)) {
		if (line[0] == '#')
			continue;
		unsigned long long index;
		struct logged l;
		int got = sscanf(line, "%llu %u %d %u %u %u %lf %lf %lf %lf %u", &index, &l.tenant,
				 &l.prefix, &l.prompt, &l.cached, &l.output, &l.arrival,
				 &l.admitted, &l.first, &l.done, &l.preemptions);
		CHECK(got == 11 && index < N && !by_index[index].seen, "%s: log line \"%s\"", side,
		      line);
		l.seen = true;
		by_index[index] = l;
		lines++;
	}
	CHECK(lines == N, "%s: %u requests logged, %d expected", side, lines, N);
}

int main(void)
{
	struct sim_request_spec specs[N];
	uint64_t prompt = 0, cached = 0, output = 0;
	uint32_t cached_of[N];
	bool seen[2] = {false, false};
	for (uint32_t i = 0; i < N; i++) {
		uint32_t prefix = (i * 7 / 3) % 2;
		specs[i] = (struct sim_request_spec){.arrival_ns = 1000000000ull + i * 150000000ull,
						     .tenant = i % 2,
						     .prefix = prefix,
						     .prefix_len = PREFIX,
						     .prompt_len = PREFIX + 5 + i,
						     .output_len = 1 + i % 6};
		prompt += specs[i].prompt_len;
		output += specs[i].output_len;
		cached_of[i] = seen[prefix] ? PREFIX : 0;
		cached += cached_of[i];
		seen[prefix] = true;
	}
	struct sim_workload w = {.trace = specs, .n_trace = N, .n_tenants = 2};
	strcpy(w.tenant_names[0], "a");
	strcpy(w.tenant_names[1], "b");
	w.tenant_weights[0] = w.tenant_weights[1] = 1.0;
	double expected_share = (double)cached / prompt;
	double expected_latency = (double)output / N * DELAY_US * 1e-6;

	static const char *const policies[] = {"fcfs", "dlpm"};
	for (int p = 0; p < 2; p++) {
		struct sim_config config = {
		    .lanes = 1,
		    .max_batch = 8,
		    .max_batch_tokens = 512,
		    .kv_blocks = 256,
		    .block_size = 16,
		    .prefix_cache = true,
		    .admission = {.w_prompt = 1, .w_output = 2, .quantum = 2048},
		    .multibin = {.bins = 4},
		    .cost = {.base_s = DELAY_US * 1e-6},
		    .max_in_flight = 64};
		CHECK(rs_admission_policy_parse(policies[p], &config.admission.policy) == 0, "%s",
		      policies[p]);
		FILE *sim_log = tmpfile(), *real_log = tmpfile();
		CHECK(sim_log && real_log, "tmpfile");
		config.request_log = sim_log;
		struct sim_result sim;
		char err[256];
		w.produced = 0;
		CHECK(sim_run(&config, &w, &sim, err, sizeof(err)) == 0, "%s", err);
		CHECK(sim.contended_admissions == 0, "%s: %llu contended admissions, none waits",
		      policies[p], (unsigned long long)sim.contended_admissions);

		char delay[16];
		snprintf(delay, sizeof(delay), "%d", DELAY_US);
		const char *args[] = {
		    "--engine",	   "null", "--null-delay-us", delay, "--policy", policies[p],
		    "--max-batch", "8",	   "--kv-blocks",     "256", NULL};
		struct test_daemon daemon;
		test_daemon_start(&daemon, args);
		struct sim_replay_result real;
		int rc = sim_replay_log(daemon.socket_path, &w, &real, real_log, err, sizeof(err));
		CHECK(test_daemon_stop(&daemon) == 0, "the daemon's exit status");
		CHECK(rc == 0, "%s: %s", policies[p], err);

		CHECK(sim.requests == N && real.requests == N, "%s: %llu and %llu requests",
		      policies[p], (unsigned long long)sim.requests,
		      (unsigned long long)real.requests);
		CHECK(sim.output_tokens == output && real.output_tokens == output,
		      "%s: output tokens %llu and %llu, the trace has %llu", policies[p],
		      (unsigned long long)sim.output_tokens, (unsigned long long)real.output_tokens,
		      (unsigned long long)output);
		double sim_share = (double)sim.cached_tokens / sim.prompt_tokens;
		CHECK(fabs(sim_share - expected_share) < 1e-12 &&
			  fabs(real.hit_share - expected_share) < 1e-12,
		      "%s: cached share %.4f (simulated) and %.4f (daemon), expected %.4f",
		      policies[p], sim_share, real.hit_share, expected_share);
		/* The simulator adds 1 ns a step so that time moves: within N x 6 ns. */
		CHECK(fabs(sim.latency_mean_s - expected_latency) < 1e-7,
		      "%s: simulated mean latency %.9f s, expected %.9f", policies[p],
		      sim.latency_mean_s, expected_latency);
		CHECK(fabs(sim.ttft_mean_s - DELAY_US * 1e-6) < 1e-8,
		      "%s: simulated mean TTFT %.9f s, expected one step", policies[p],
		      sim.ttft_mean_s);
		CHECK(real.latency_mean_s >= expected_latency &&
			  real.ttft_mean_s >= DELAY_US * 1e-6,
		      "%s: the daemon faster than its steps: latency %.6f s, TTFT %.6f s",
		      policies[p], real.latency_mean_s, real.ttft_mean_s);
		/* Both measure from the first arrival to the last finish: at least the arrivals'
		 * span plus the last request's steps. */
		double span = (specs[N - 1].arrival_ns - specs[0].arrival_ns) / 1e9 +
			      specs[N - 1].output_len * DELAY_US * 1e-6;
		CHECK(fabs(sim.seconds - span) < 1e-7 && real.seconds >= span,
		      "%s: seconds %.6f (simulated), %.6f (daemon), at least %.6f", policies[p],
		      sim.seconds, real.seconds, span);
		struct logged by_sim[N], by_real[N];
		read_request_log(sim_log, "simulated", by_sim);
		read_request_log(real_log, "daemon", by_real);
		const double step = DELAY_US * 1e-6, t0 = specs[0].arrival_ns / 1e9;
		for (uint32_t i = 0; i < N; i++) {
			const struct logged *s = &by_sim[i], *r = &by_real[i];
			double arrival = specs[i].arrival_ns / 1e9 - t0;
			double steps = specs[i].output_len * step;
			CHECK(s->cached == cached_of[i] && r->cached == cached_of[i] &&
				  s->output == specs[i].output_len &&
				  r->output == specs[i].output_len &&
				  s->tenant == specs[i].tenant && r->tenant == specs[i].tenant,
			      "%s: request %u: cached %u / %u (expected %u), output %u / %u "
			      "(expected %u)",
			      policies[p], i, s->cached, r->cached, cached_of[i], s->output,
			      r->output, specs[i].output_len);
			/* Printed to microseconds; the simulator adds 1 ns a step. */
			CHECK(fabs(s->arrival - arrival) < 2e-6 &&
				  fabs(s->admitted - arrival) < 2e-6 &&
				  fabs(s->first - arrival - step) < 2e-6 &&
				  fabs(s->done - arrival - steps) < 2e-6,
			      "%s: request %u simulated: arrival %.6f admitted %.6f first %.6f "
			      "done %.6f; expected %.6f, %.6f, +%.6f, +%.6f",
			      policies[p], i, s->arrival, s->admitted, s->first, s->done, arrival,
			      arrival, step, steps);
			CHECK(fabs(r->arrival - arrival) < 2e-6 && r->admitted >= arrival - 1e-6 &&
				  r->first >= arrival + step - 1e-6 &&
				  r->done >= arrival + steps - 1e-6 && r->first <= r->done,
			      "%s: request %u served: admitted %.6f first %.6f done %.6f, "
			      "arrival %.6f, %u steps of %.6f",
			      policies[p], i, r->admitted, r->first, r->done, arrival,
			      specs[i].output_len, step);
		}
		fclose(sim_log);
		fclose(real_log);
		printf("%s: latency %.2f ms simulated, %.2f ms daemon; TTFT %.2f / %.2f ms; "
		       "cached %.3f\n",
		       policies[p], sim.latency_mean_s * 1e3, real.latency_mean_s * 1e3,
		       sim.ttft_mean_s * 1e3, real.ttft_mean_s * 1e3, real.hit_share);
	}
	return T_EXIT_PASS;
}
