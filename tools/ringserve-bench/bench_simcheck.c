/* ringserve-bench simcheck [options]: does ringserve-sim predict ringserved?
 *
 * One workload (ringserve-sim's generator with a seed, or a trace file in its JSON-lines
 * format, docs/simulator.md) goes twice through every admission policy (fcfs, lpm, vtc,
 * dlpm): simulated with a cost model calibrated on this machine moments before
 * (sim_cost_calibrate, the code of `ringserve-sim calibrate`), and replayed against a real
 * ringserved serving a random stories15M-shaped model on the CPU engine, with the same
 * core settings on both sides (lanes, max batch, max batch tokens, KV blocks, policy
 * parameters, engine threads). The table gives each metric both ways and the relative
 * error of the simulation.
 *
 * The replay client is sim_replay (tools/ringserve-sim/replay.c): one connection and
 * thread per tenant, requests submitted at their arrival times with sim_prompt_token's ids,
 * measured with the simulator's definitions (requests/s and output tokens/s from the first
 * arrival to the last finish, mean latency and TTFT from the scheduled arrival, cached
 * share of prompt tokens), plus the daemon's own clock and its engine steps.
 *
 * The daemon's turnaround: between two steps the daemon wakes its loop and its lane
 * worker, time the engine's calibration never sees. Before each policy's run, the first
 * --probe-requests requests go through the null engine (2 ms a step, known exactly):
 * the daemon's extra mean latency over the simulator's, divided by the steps a request
 * spans, is the turnaround per step; the "+turnaround" column adds it to the cost
 * model's base.
 *
 * Noise: the machine is shared, so calibration and replay alternate (each policy's run
 * has its own calibration and probe taken just before), the calibration takes the median
 * of 9 runs of each step (--calibrate fastest: the minimum), and with --rounds N the
 * round whose replay took least time (the least disturbed) is reported per policy.
 *
 * --calibrate served: the engine's steps are slower while the daemon loop and the
 * clients share the cores with it than in a quiet calibration. This fits the cost model
 * instead to the steps ringserved logs (--step-log) while serving a calibration workload:
 * the generator's with the next seed, so other requests than the ones checked, replayed
 * under the same settings and policy just before. With --trace it is refused.
 *
 * --null-delay-us D serves with the null engine instead, each step taking D us, and
 * simulates with the cost model base = D, the rest 0: what is left is the difference in
 * how the two sides plan and measure, not the engine. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client-lib/ringserve.h"
#include "kernels/model/gguf.h"
#include "kernels/model/model_random.h"
#include "tools/ringserve-bench/bench.h"
#include "tools/ringserve-sim/sim.h"

#define N_POLICIES     4
#define MAX_ROUNDS     9
#define SEQ_LEN	       512  /* the served model's context */
#define PROBE_DELAY_US 2000 /* the null engine's step in the turnaround probe */

static const char *const policy_names[N_POLICIES] = {"fcfs", "lpm", "vtc", "dlpm"};

/* The metrics both sides report (sim_result's and sim_replay_result's definitions). */
struct metrics {
	double seconds, requests_per_s, tokens_per_s, latency_s, ttft_s, hit_share;
	uint64_t requests, steps;
	/* The simulation only: admissions that left an arrived request waiting (where the
	 * policy chose; none: every policy runs the same schedule). */
	uint64_t contended;
	/* The replay only: the daemon's own clock, from taking the request off the ring. */
	double daemon_latency_s, daemon_ttft_s;
};

struct settings {
	uint32_t lanes, max_batch, max_batch_tokens, kv_blocks, threads, null_delay_us, rounds;
	double quantum, quantile;
	uint32_t probe_requests; /* the turnaround probe's requests; 0: none */
	bool served;		 /* calibrate from a served run's step log (--calibrate served) */
};

/* Serve the workload under one policy and replay it. Returns 0 or -errno. */
static int replay_policy(const struct settings *st, const char *policy, const char *model_path,
			 const char *socket_path, const struct sim_workload *w,
			 const char *step_log, FILE *request_log, struct metrics *out)
{
	char lanes[16], batch[16], tokens[16], kv[16], threads[16], delay[16], quantum[32],
	    clients[16];
	snprintf(lanes, sizeof(lanes), "%u", st->lanes);
	snprintf(batch, sizeof(batch), "%u", st->max_batch);
	snprintf(tokens, sizeof(tokens), "%u", st->max_batch_tokens);
	snprintf(kv, sizeof(kv), "%u", st->kv_blocks);
	snprintf(threads, sizeof(threads), "%u", st->threads);
	snprintf(delay, sizeof(delay), "%u", st->null_delay_us);
	snprintf(quantum, sizeof(quantum), "%.0f", st->quantum);
	snprintf(clients, sizeof(clients), "%u", w->n_tenants + 4);
	const char *args[32] = {
	    "--policy",		  policy, "--lanes",	 lanes, "--max-batch", batch,
	    "--max-batch-tokens", tokens, "--kv-blocks", kv,	"--quantum",   quantum,
	    "--max-clients",	  clients};
	int a = 14;
	if (st->null_delay_us) {
		args[a++] = "--engine", args[a++] = "null";
		args[a++] = "--null-delay-us", args[a++] = delay;
	} else {
		args[a++] = "--model", args[a++] = model_path;
		args[a++] = "--backend", args[a++] = "cpu";
		if (st->threads)
			args[a++] = "--threads", args[a++] = threads;
		if (step_log)
			args[a++] = "--step-log", args[a++] = step_log;
	}
	args[a] = NULL;
	pid_t daemon = bench_start_daemon(socket_path, args);
	if (daemon <= 0) {
		fprintf(stderr, "bench simcheck: ringserved did not start\n");
		return -ECHILD;
	}
	struct sim_replay_result r;
	char err[256];
	int ret = sim_replay_log(socket_path, w, &r, request_log, err, sizeof(err));
	if (ret)
		fprintf(stderr, "bench simcheck: %s: %s\n", policy, err);
	else
		*out = (struct metrics){.seconds = r.seconds,
					.requests_per_s = r.requests_per_s,
					.tokens_per_s = r.tokens_per_s,
					.latency_s = r.latency_mean_s,
					.ttft_s = r.ttft_mean_s,
					.hit_share = r.hit_share,
					.requests = r.requests,
					.steps = r.steps,
					.daemon_latency_s = r.daemon_latency_mean_s,
					.daemon_ttft_s = r.daemon_ttft_mean_s};
	kill(daemon, SIGTERM);
	waitpid(daemon, NULL, 0);
	return ret;
}

/* The generated workload's requests as an array (the replay needs one; the simulator
 * reads it as a trace workload). out->trace is NULL when out of memory. */
static void as_array(struct sim_workload *source, uint64_t requests, struct sim_workload *out)
{
	*out = *source;
	out->gen = NULL;
	out->produced = 0;
	out->n_trace = 0;
	out->trace = malloc((requests ? requests : 1) * sizeof(*out->trace));
	struct sim_request_spec s;
	while (out->trace && sim_workload_next(source, &s))
		out->trace[out->n_trace++] = s;
}

/* --calibrate served: replay the calibration workload under the same settings and
 * policy with ringserved --step-log, and fit the cost model to the steps it logged: the
 * engine's steps as they run while the daemon loop and the clients share the cores. */
static int calibrate_served(const struct settings *st, const char *policy, const char *model_path,
			    const char *socket_path, const struct sim_workload *calibration,
			    struct sim_cost_model *cost)
{
	char log_path[64], err[256];
	snprintf(log_path, sizeof(log_path), "/tmp/ringserve-bench-simcheck-%d.steps",
		 (int)getpid());
	struct metrics ignored;
	int ret = replay_policy(st, policy, model_path, socket_path, calibration, log_path, NULL,
				&ignored);
	if (!ret && (ret = sim_cost_fit_step_log(cost, log_path, NULL, err, sizeof(err))))
		fprintf(stderr, "bench simcheck: %s\n", err);
	unlink(log_path);
	return ret;
}

static int simulate_policy(const struct settings *st, enum rs_admission_policy policy,
			   const struct sim_cost_model *cost, struct sim_workload *w,
			   FILE *const logs[2], struct metrics *out)
{
	struct sim_config config = {
	    .lanes = st->lanes,
	    .max_batch = st->max_batch,
	    .max_batch_tokens = st->max_batch_tokens,
	    .kv_blocks = st->kv_blocks,
	    .block_size = 16,
	    .prefix_cache = true,
	    .admission = {.policy = policy,
			  .w_prompt = 1.0,
			  .w_output = 2.0,
			  .quantum = st->quantum},
	    .multibin = {.bins = 4},
	    .cost = *cost,
	    .max_in_flight = 1 << 20,
	    .request_log = logs ? logs[0] : NULL,
	    .step_log = logs ? logs[1] : NULL,
	};
	struct sim_result *r = calloc(1, sizeof(*r));
	char err[256];
	if (!r)
		return -ENOMEM;
	w->produced = 0;
	int ret = sim_run(&config, w, r, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "bench simcheck: simulation: %s\n", err);
	} else {
		*out = (struct metrics){
		    .seconds = r->seconds,
		    .requests_per_s = r->requests_per_s,
		    .tokens_per_s = r->tokens_per_s,
		    .latency_s = r->latency_mean_s,
		    .ttft_s = r->ttft_mean_s,
		    .hit_share = r->prompt_tokens ? (double)r->cached_tokens / r->prompt_tokens : 0,
		    .requests = r->requests,
		    .steps = r->steps,
		    .contended = r->contended_admissions};
	}
	free(r);
	return ret;
}

/* --request-log PREFIX: PREFIX.POLICY.{sim,served}.{requests,steps}; the served steps
 * are the daemon's --step-log, its path in served_steps. Returns 0 or -errno. */
static int open_logs(const char *prefix, const char *policy, FILE *sim_logs[2], FILE **served,
		     char served_steps[PATH_MAX])
{
	char path[PATH_MAX];
	static const char *const names[3] = {"sim.requests", "sim.steps", "served.requests"};
	FILE **files[3] = {&sim_logs[0], &sim_logs[1], served};
	for (int k = 0; k < 3; k++) {
		snprintf(path, sizeof(path), "%s.%s.%s", prefix, policy, names[k]);
		*files[k] = fopen(path, "w");
		if (!*files[k]) {
			int ret = -errno;
			fprintf(stderr, "bench simcheck: %s: %s\n", path, strerror(errno));
			for (int j = 0; j < k; j++)
				fclose(*files[j]), *files[j] = NULL;
			return ret;
		}
	}
	snprintf(served_steps, PATH_MAX, "%s.%s.served.steps", prefix, policy);
	return 0;
}

static double relative(double sim, double real)
{
	return real != 0 ? (sim - real) / real : NAN;
}

static void usage(void)
{
	fprintf(
	    stderr,
	    "usage: ringserve-bench simcheck [--trace FILE | --requests N --rate R --tenants N\n"
	    "         --prefixes N --prefix-len D --suffix-len D --output-len D --seed N]\n"
	    "         [--max-batch N] [--max-batch-tokens N] [--kv-blocks N] [--lanes N]\n"
	    "         [--threads N] [--quantum Q] [--policy P]... [--rounds N]\n"
	    "         [--calibrate median|fastest|served]\n"
	    "         [--null-delay-us D] [--request-log PREFIX]\n");
}

int bench_simcheck(int argc, char **argv, FILE *json)
{
	struct settings st = {.lanes = 1,
			      .max_batch = 8,
			      .max_batch_tokens = 512,
			      .kv_blocks = 160,
			      .threads = 1,
			      .rounds = 1,
			      .quantum = 2048,
			      .quantile = 0.5,
			      .probe_requests = 40};
	struct sim_generator_config gen = {
	    .requests = 120, .rate = 8, .tenants = 4, .skew = 1, .prefixes = 4, .seed = 1};
	const char *request_log = NULL; /* a path prefix */
	const char *trace = NULL, *prefix_len = "fixed:192", *suffix_len = "uniform:8:32",
		   *output_len = "uniform:8:32";
	const char *policies[N_POLICIES];
	uint32_t n_policies = 0;
	for (int i = 1; i < argc; i++) {
		const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		bool used = v != NULL;
		if (!v)
			;
		else if (!strcmp(o, "--trace"))
			trace = v;
		else if (!strcmp(o, "--requests"))
			gen.requests = strtoull(v, NULL, 10);
		else if (!strcmp(o, "--rate"))
			gen.rate = atof(v);
		else if (!strcmp(o, "--tenants"))
			gen.tenants = (uint32_t)atoi(v);
		else if (!strcmp(o, "--prefixes"))
			gen.prefixes = (uint32_t)atoi(v);
		else if (!strcmp(o, "--prefix-len"))
			prefix_len = v;
		else if (!strcmp(o, "--suffix-len"))
			suffix_len = v;
		else if (!strcmp(o, "--output-len"))
			output_len = v;
		else if (!strcmp(o, "--seed"))
			gen.seed = strtoull(v, NULL, 10);
		else if (!strcmp(o, "--max-batch"))
			st.max_batch = (uint32_t)atoi(v);
		else if (!strcmp(o, "--max-batch-tokens"))
			st.max_batch_tokens = (uint32_t)atoi(v);
		else if (!strcmp(o, "--kv-blocks"))
			st.kv_blocks = (uint32_t)atoi(v);
		else if (!strcmp(o, "--lanes"))
			st.lanes = (uint32_t)atoi(v);
		else if (!strcmp(o, "--threads"))
			st.threads = (uint32_t)atoi(v);
		else if (!strcmp(o, "--quantum"))
			st.quantum = atof(v);
		else if (!strcmp(o, "--calibrate"))
			st.served = !strcmp(v, "served"),
			st.quantile = !strcmp(v, "fastest")		  ? 0
				      : !strcmp(v, "median") || st.served ? 0.5
									  : -1;
		else if (!strcmp(o, "--probe-requests"))
			st.probe_requests = (uint32_t)atoi(v);
		else if (!strcmp(o, "--rounds"))
			st.rounds = (uint32_t)atoi(v);
		else if (!strcmp(o, "--null-delay-us"))
			st.null_delay_us = (uint32_t)atoi(v);
		else if (!strcmp(o, "--request-log"))
			request_log = v;
		else if (!strcmp(o, "--policy") && n_policies < N_POLICIES)
			policies[n_policies++] = v;
		else
			used = false;
		if (!used) {
			fprintf(stderr, "bench simcheck: unknown or incomplete option %s\n", o);
			usage();
			fprintf(json, "null");
			return 1;
		}
		i++;
	}
	if (!n_policies)
		for (uint32_t p = 0; p < N_POLICIES; p++)
			policies[n_policies++] = policy_names[p];
	enum rs_admission_policy policy_ids[N_POLICIES];
	for (uint32_t p = 0; p < n_policies; p++) {
		if (rs_admission_policy_parse(policies[p], &policy_ids[p])) {
			fprintf(stderr, "bench simcheck: unknown policy %s\n", policies[p]);
			fprintf(json, "null");
			return 1;
		}
	}
	if (st.quantile < 0 || st.rounds < 1 || st.rounds > MAX_ROUNDS || !st.max_batch ||
	    !st.lanes || !st.kv_blocks || gen.tenants < 1 || gen.tenants > SIM_MAX_TENANTS) {
		fprintf(stderr,
			"bench simcheck: --rounds 1..%d; batch, lanes, KV blocks and "
			"tenants at least 1\n",
			MAX_ROUNDS);
		fprintf(json, "null");
		return 1;
	}

	/* The workload, read whole: the replay needs it as an array, the simulator as a
	 * trace workload over the same array. */
	char err[256];
	struct sim_workload source;
	int ret = 0;
	if (trace) {
		ret = sim_workload_trace(&source, trace, err, sizeof(err));
	} else {
		ret = sim_lengths_parse(prefix_len, &gen.prefix_len, err, sizeof(err));
		if (!ret)
			ret = sim_lengths_parse(suffix_len, &gen.suffix_len, err, sizeof(err));
		if (!ret)
			ret = sim_lengths_parse(output_len, &gen.output_len, err, sizeof(err));
		if (!ret)
			sim_workload_generator(&source, &gen);
	}
	if (ret) {
		fprintf(stderr, "bench simcheck: %s\n", err);
		fprintf(json, "null");
		return 1;
	}
	struct sim_workload w = source, calibration = {0};
	if (!trace)
		as_array(&source, gen.requests, &w);
	if (st.served && !trace) {
		/* Other requests of the same kind: the check's own must not train the model. */
		struct sim_generator_config other = gen;
		other.seed = gen.seed + 1;
		sim_workload_generator(&source, &other);
		as_array(&source, other.requests, &calibration);
		if (!calibration.trace)
			ret = -ENOMEM;
	} else if (st.served) {
		fprintf(stderr, "bench simcheck: --calibrate served needs a generated workload "
				"(its calibration replays other requests of the generator)\n");
		ret = -EINVAL;
	}
	uint64_t prompt_tokens = 0, output_tokens = 0;
	for (uint64_t i = 0; w.trace && i < w.n_trace; i++) {
		prompt_tokens += w.trace[i].prompt_len;
		output_tokens += w.trace[i].output_len;
		if (w.trace[i].prompt_len + w.trace[i].output_len > SEQ_LEN) {
			fprintf(stderr,
				"bench simcheck: request %llu needs %u positions, the "
				"model has %d\n",
				(unsigned long long)i,
				w.trace[i].prompt_len + w.trace[i].output_len, SEQ_LEN);
			ret = -EINVAL;
		}
	}
	if (!w.trace || ret) {
		free(w.trace);
		free(calibration.trace);
		fprintf(json, "null");
		return 1;
	}

	/* The model: ringserve-mkmodel's generator in the stories15M shape (calibrate's). */
	struct rs_model_config config = RS_STORIES15M_CONFIG(SEQ_LEN);
	char model_path[64], socket_path[64];
	snprintf(model_path, sizeof(model_path), "/tmp/ringserve-bench-simcheck-%d.gguf",
		 (int)getpid());
	snprintf(socket_path, sizeof(socket_path), "/tmp/ringserve-bench-simcheck-%d.sock",
		 (int)getpid());
	if (!st.null_delay_us) {
		struct rs_model *model = NULL;
		ret = rs_model_random(&config, RS_DTYPE_F32, 1, true, &model);
		if (!ret && rs_gguf_write_model(model_path, model, NULL, err, sizeof(err))) {
			fprintf(stderr, "bench simcheck: %s\n", err);
			ret = -EIO;
		}
		rs_model_free(model);
	}
	printf("ringserve-bench simcheck: %s, %llu requests from %u tenants (%llu prompt, %llu "
	       "output tokens)\n",
	       st.null_delay_us ? "null engine" : "stories15M-shaped f32 model, CPU engine",
	       (unsigned long long)w.n_trace, w.n_tenants, (unsigned long long)prompt_tokens,
	       (unsigned long long)output_tokens);
	printf("  both sides: lanes %u, max batch %u, max batch tokens %u, KV blocks %u of 16, "
	       "quantum %.0f, threads %u (0: one per CPU), %u round(s); calibration: %s\n\n",
	       st.lanes, st.max_batch, st.max_batch_tokens, st.kv_blocks, st.quantum, st.threads,
	       st.rounds,
	       st.served	 ? "the steps of a served run of other requests (--step-log)"
	       : st.quantile > 0 ? "the median of 9 runs a step"
				 : "the fastest of 9 runs a step");

	struct metrics sim[N_POLICIES], real[N_POLICIES];
	struct sim_cost_model costs[N_POLICIES];
	bool have[N_POLICIES] = {false};
	struct metrics turned[N_POLICIES], own[N_POLICIES];
	double turnaround[N_POLICIES] = {0};
	char measured_steps[PATH_MAX];
	snprintf(measured_steps, sizeof(measured_steps),
		 "/tmp/ringserve-bench-simcheck-%d.measured.steps", (int)getpid());
	for (uint32_t round = 0; round < st.rounds && !ret; round++) {
		/* Each round starts one policy later: a policy's place in the sequence (the
		 * machine's load drifts over minutes) is not always the same. */
		for (uint32_t i = 0; i < n_policies && !ret; i++) {
			uint32_t p = (i + round) % n_policies;
			struct sim_cost_model cost = {.base_s = st.null_delay_us * 1e-6};
			snprintf(cost.source, sizeof(cost.source), "null engine, %u us a step",
				 st.null_delay_us);
			if (!st.null_delay_us && st.served)
				ret = calibrate_served(&st, policies[p], model_path, socket_path,
						       &calibration, &cost);
			else if (!st.null_delay_us)
				ret = sim_cost_calibrate(&cost, "cpu", (int)st.threads, st.quantile,
							 NULL);
			/* The daemon's own time per step (waking its loop and its lane worker),
			 * which the engine's calibration does not see: the start of the
			 * workload on the null engine, whose steps the simulator knows exactly
			 * (PROBE_DELAY_US): the daemon's extra mean latency over the steps a
			 * request spans. */
			double over = 0;
			if (!ret && st.probe_requests && !st.null_delay_us) {
				struct settings probe = st;
				probe.null_delay_us = PROBE_DELAY_US;
				struct sim_cost_model exact = {.base_s = PROBE_DELAY_US * 1e-6};
				struct sim_workload head = w;
				head.n_trace =
				    w.n_trace < st.probe_requests ? w.n_trace : st.probe_requests;
				struct metrics ps, pr;
				ret = simulate_policy(&probe, policy_ids[p], &exact, &head, NULL,
						      &ps);
				if (!ret)
					ret = replay_policy(&probe, policies[p], model_path,
							    socket_path, &head, NULL, NULL, &pr);
				if (!ret && ps.latency_s > 0)
					over = fmax(0, (pr.latency_s - ps.latency_s) /
							   (ps.latency_s / exact.base_s));
			}
			struct metrics s, t, r, o = {0};
			struct sim_cost_model with = cost;
			with.base_s += over;
			/* --request-log: the +turnaround simulation's requests and steps, and
			 * the replay's requests and the daemon's steps (the last round's). */
			FILE *sim_logs[2] = {NULL, NULL}, *served_log = NULL;
			char served_steps[PATH_MAX] = "";
			if (!st.null_delay_us)
				snprintf(served_steps, sizeof(served_steps), "%s", measured_steps);
			if (!ret && request_log)
				ret = open_logs(request_log, policies[p], sim_logs, &served_log,
						served_steps);
			if (st.null_delay_us)
				served_steps[0] = '\0'; /* the null engine logs no steps */
			if (!ret)
				ret = simulate_policy(&st, policy_ids[p], &cost, &w, NULL, &s);
			if (!ret)
				ret = simulate_policy(&st, policy_ids[p], &with, &w,
						      request_log ? sim_logs : NULL, &t);
			if (!ret)
				ret = replay_policy(&st, policies[p], model_path, socket_path, &w,
						    served_steps[0] ? served_steps : NULL,
						    served_log, &r);
			/* A diagnostic: the cost model fitted to the measured replay's own steps
			 * (in-sample), plus the turnaround. What is left of the error is the
			 * simulator's scheduling and queueing, not the calibration's drift from
			 * the engine's speed during the replay. */
			if (!ret && served_steps[0]) {
				struct sim_cost_model fitted;
				char why[256];
				int fit = sim_cost_fit_step_log(&fitted, served_steps, NULL, why,
								sizeof(why));
				if (fit)
					fprintf(stderr, "bench simcheck: %s: own steps: %s\n",
						policies[p], why);
				fitted.base_s += over;
				if (!fit)
					ret = simulate_policy(&st, policy_ids[p], &fitted, &w, NULL,
							      &o);
			}
			if (!request_log && served_steps[0])
				unlink(served_steps);
			for (int k = 0; k < 2; k++)
				if (sim_logs[k])
					fclose(sim_logs[k]);
			if (served_log)
				fclose(served_log);
			/* Keep the least disturbed replay: the one that took least time. */
			if (!ret && (!have[p] || r.seconds < real[p].seconds)) {
				sim[p] = s, turned[p] = t, real[p] = r, costs[p] = cost, own[p] = o;
				turnaround[p] = over, have[p] = true;
			}
		}
	}
	if (!st.null_delay_us)
		unlink(model_path);
	free(w.trace);
	free(calibration.trace);
	if (ret) {
		fprintf(stderr, "bench simcheck: %s\n", strerror(-ret));
		fprintf(json, "null");
		return 1;
	}

	static const char *const metric_names[] = {"req/s", "out tok/s", "mean latency s",
						   "mean TTFT s", "cache hit"};
	printf("%-7s %-15s %10s %10s %10s %8s %8s\n", "policy", "metric", "simulated",
	       "+turnaround", "ringserved", "error", "error+t");
	fprintf(json,
		"{\"requests\": %llu, \"tenants\": %u, \"max_batch\": %u, "
		"\"max_batch_tokens\": %u, \"kv_blocks\": %u, \"lanes\": %u, "
		"\"null_delay_us\": %u, \"rounds\": %u, \"policies\": {",
		(unsigned long long)w.n_trace, w.n_tenants, st.max_batch, st.max_batch_tokens,
		st.kv_blocks, st.lanes, st.null_delay_us, st.rounds);
	double worst = 0, worst_turned = 0;
	for (uint32_t p = 0; p < n_policies; p++) {
		double sv[5] = {sim[p].requests_per_s, sim[p].tokens_per_s, sim[p].latency_s,
				sim[p].ttft_s, sim[p].hit_share};
		double tv[5] = {turned[p].requests_per_s, turned[p].tokens_per_s,
				turned[p].latency_s, turned[p].ttft_s, turned[p].hit_share};
		double rv[5] = {real[p].requests_per_s, real[p].tokens_per_s, real[p].latency_s,
				real[p].ttft_s, real[p].hit_share};
		static const char *const keys[] = {"requests_per_s", "tokens_per_s", "latency_s",
						   "ttft_s", "hit_share"};
		fprintf(json,
			"%s\"%s\": {\"cost\": {\"base_s\": %.9g, \"per_token_s\": %.9g, "
			"\"per_row_s\": %.9g, \"per_pair_s\": %.9g}",
			p ? ", " : "", policies[p], costs[p].base_s, costs[p].per_token_s,
			costs[p].per_row_s, costs[p].per_pair_s);
		fprintf(json, ", \"turnaround_s\": %.6g", turnaround[p]);
		for (int k = 0; k < 5; k++) {
			double e = relative(sv[k], rv[k]), et = relative(tv[k], rv[k]);
			if (isfinite(e))
				worst = fmax(worst, fabs(e));
			if (isfinite(et))
				worst_turned = fmax(worst_turned, fabs(et));
			printf("%-7s %-15s %10.4g %10.4g %10.4g %+7.1f%% %+7.1f%%\n",
			       k ? "" : policies[p], metric_names[k], sv[k], tv[k], rv[k], 100 * e,
			       100 * et);
			fprintf(json,
				", \"%s\": {\"sim\": %.6g, \"sim_turnaround\": %.6g, \"real\": "
				"%.6g, \"error\": %.4f, \"error_turnaround\": %.4f}",
				keys[k], sv[k], tv[k], rv[k], isfinite(e) ? e : 0.0,
				isfinite(et) ? et : 0.0);
		}
		printf("%-7s %-15s %21s %10.4g (the daemon's clock; TTFT %.4g)\n", "",
		       "  daemon-side", "", real[p].daemon_latency_s, real[p].daemon_ttft_s);
		printf("%-7s %-15s %10llu %10llu %10llu %+7.1f%% %+7.1f%%\n", "", "steps",
		       (unsigned long long)sim[p].steps, (unsigned long long)turned[p].steps,
		       (unsigned long long)real[p].steps,
		       100 * relative(sim[p].steps, real[p].steps),
		       100 * relative(turned[p].steps, real[p].steps));
		printf("%-7s %-15s %10.3f ms a step\n", "", "  turnaround", turnaround[p] * 1e3);
		printf("%-7s %-15s %10llu of %llu (simulated; 0: every policy runs the same "
		       "schedule)\n",
		       "", "  policy chose", (unsigned long long)sim[p].contended,
		       (unsigned long long)sim[p].requests);
		if (own[p].requests)
			printf("%-7s %-15s latency %.4g s (%+.1f%%), TTFT %.4g s (%+.1f%%), %llu "
			       "steps (the cost fitted to the replay's own steps)\n",
			       "", "  own steps", own[p].latency_s,
			       100 * relative(own[p].latency_s, real[p].latency_s), own[p].ttft_s,
			       100 * relative(own[p].ttft_s, real[p].ttft_s),
			       (unsigned long long)own[p].steps);
		fprintf(json,
			", \"daemon_latency_s\": %.6g, \"daemon_ttft_s\": %.6g, "
			"\"steps\": {\"sim\": %llu, \"real\": %llu}, \"contended_admissions\": "
			"%llu, \"own_steps\": {\"latency_s\": %.6g, \"ttft_s\": %.6g, \"steps\": "
			"%llu}}",
			real[p].daemon_latency_s, real[p].daemon_ttft_s,
			(unsigned long long)sim[p].steps, (unsigned long long)real[p].steps,
			(unsigned long long)sim[p].contended, own[p].latency_s, own[p].ttft_s,
			(unsigned long long)own[p].steps);
	}
	fprintf(json, "}, \"worst_error\": %.4f, \"worst_error_turnaround\": %.4f}", worst,
		worst_turned);
	printf("worst relative error %.1f%%, with the measured turnaround %.1f%% (the issue's "
	       "target: 15%%)\n",
	       100 * worst, 100 * worst_turned);
	return 0;
}
